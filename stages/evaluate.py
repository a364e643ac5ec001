"""Stage evaluate: predictions of one evaluation set vs its ground truth -> metrics JSON + PR curves."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pandas as pd
from PIL import Image

from pipeline.core import datasets, metrics, timing
from pipeline.core.errors import PipelineError
from pipeline.core.files import atomic_write, write_json
from pipeline.core.params import map_methods
from pipeline.core.runner import STAMP, Resume, Work, chunked, fingerprint, run_units, stage
from pipeline.evaluation.intervals import intervals, per_image_arrays, resample_counts, save_scores, stored


@dataclass
class ScoreWork(Work):
    """Per-image scores (:func:`pipeline.core.metrics.image_scores`) of every method's map, image by image:
    ``pairs[i]`` = (ground-truth mask, one map per method)."""

    pairs: list[tuple[str, list[str]]]
    cod: bool

    def __call__(self, indices: list[int]) -> list[list[dict]]:
        out = []
        for i in indices:
            gt_path, pred_paths = self.pairs[i]
            gt = datasets.load_mask(gt_path)
            scores = []
            for path in pred_paths:
                pred = np.asarray(Image.open(path).convert("L"))
                if pred.shape != gt.shape:
                    raise PipelineError(f"{path}: prediction is {pred.shape[::-1]} but the mask {gt_path} is "
                                        f"{gt.shape[::-1]} (width x height)")
                scores.append(metrics.image_scores(pred, gt, cod=self.cod))
            out.append(scores)
        return out


@stage("evaluate", reads=("data.eval.{name}", "evaluate.bootstrap", "predict.release_head"))
@click.option("--name", required=True, help="Evaluation set (a key of data.eval).")
@click.option("--predictions", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--metrics", "metrics_path", type=click.Path(path_type=Path), required=True, help="Metrics JSON.")
@click.option("--pr", "pr_dir", type=click.Path(path_type=Path), required=True, help="PR curves (one CSV per method).")
@click.option("--per-image", type=click.Path(path_type=Path), required=True,
              help="CSV of every image's IoU and F_max (B) per method.")
@click.option("--scores", "scores_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Every per-image array the metrics are statistics of (npz; selfment compare reads it).")
@click.option("--intervals", "intervals_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Bootstrap interval of every metric per method (JSON).")
def evaluate(p, name: str, predictions: Path, metrics_path: Path, pr_dir: Path, per_image: Path, scores_path: Path,
             intervals_path: Path) -> None:
    """F_max (conventions A and B), IoU, Acc per method, and PySODMetrics' COD metrics where the set asks
    for them (``cod_metrics``: by default the COD benchmarks, as in the paper), each with its bootstrap
    interval over images; resumable."""
    spec = p.data.eval[name]
    samples = [s for s in datasets.eval_samples(spec) if s.mask is not None]
    if not samples:
        raise PipelineError(f"evaluation set {name!r} has no ground-truth masks to evaluate against")
    methods = map_methods(p.predict.release_head)
    pairs = []
    for s in samples:
        paths = [predictions / m / f"{s.stem}.png" for m in methods]
        missing = [str(q) for q in paths if not q.exists()]
        if missing:
            raise PipelineError(f"{missing[0]}: prediction missing (run the predict stage)")
        pairs.append((str(s.mask), [str(q) for q in paths]))
    made_with = [(predictions / m / STAMP).read_text() if (predictions / m / STAMP).is_file() else None
                 for m in methods]
    work = ScoreWork(pairs, spec.scores_cod)
    units = chunked(range(len(pairs)), p.evaluate.chunk_size)
    resume = Resume(metrics_path, fingerprint(made_with, pairs, work.cod, units))
    scored = [s for part in run_units(work, units, resume, workers=p.evaluate.workers, desc=f"evaluate {name}")
              for s in part]
    result, table = {"n_images": len(samples)}, {"stem": [s.stem for s in samples]}
    boot = p.evaluate.bootstrap
    arrays = {}
    for k, m in enumerate(methods):
        scores = [s[k] for s in scored]
        arrays[m] = stored(per_image_arrays(scores))
        table[f"{m}_iou"], table[f"{m}_fmax_image"] = arrays[m]["iou"], arrays[m]["fmax_image"]
        result[m] = metrics.aggregate(scores)
        atomic_write(pr_dir / f"{m}.csv", lambda f, c=metrics.pr_curve(scores): c.to_csv(f, index=False))
    write_json(metrics_path, result)
    save_scores(scores_path, table["stem"], arrays)
    with timing.section("bootstrap"):  # its share of the stage: docs/experiments.md "Intervals and paired comparisons"
        counts = resample_counts(len(samples), boot.resamples, boot.seed)
        bounds = {m: intervals(a, counts, boot.level) for m, a in arrays.items()}
    write_json(intervals_path, {"level": boot.level, "resamples": boot.resamples, "seed": boot.seed, **bounds})
    atomic_write(per_image, lambda f: pd.DataFrame(table).to_csv(f, index=False, float_format="%.6f"))
    resume.close()
    click.echo(f"{name}: " + ", ".join(f"{m} F_max(B) {result[m]['fmax_image']:.3f}" for m in methods))
