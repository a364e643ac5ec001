"""Stage evaluate: predictions of one evaluation set vs its ground truth -> metrics JSON + PR curves."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import click
import numpy as np
from PIL import Image

from pipeline import datasets, metrics
from pipeline.errors import PipelineError
from pipeline.files import atomic_write, write_json
from stages.common import load_params, one_line_errors, params_option
from stages.extract import dataset_samples
from stages.predict import MAP_METHODS


def _score(job: tuple[str, list[str]]) -> list[dict]:
    gt_path, pred_paths = job
    gt = datasets.load_mask(gt_path)
    out = []
    for path in pred_paths:
        pred = np.asarray(Image.open(path).convert("L"))
        if pred.shape != gt.shape:
            raise PipelineError(f"{path}: prediction is {pred.shape[::-1]} but the mask {gt_path} is "
                                f"{gt.shape[::-1]} (width x height)")
        out.append(metrics.image_scores(pred, gt, cod=True))
    return out


@click.command("evaluate")
@params_option
@click.option("--name", required=True, help="Evaluation set (a key of data.eval).")
@click.option("--predictions", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--metrics", "metrics_path", type=click.Path(path_type=Path), required=True, help="Metrics JSON.")
@click.option("--pr", "pr_dir", type=click.Path(path_type=Path), required=True, help="PR curves (one CSV per method).")
@one_line_errors
def evaluate(params_path: Path, name: str, predictions: Path, metrics_path: Path, pr_dir: Path) -> None:
    """F_max (conventions A and B), IoU, Acc and the PySODMetrics COD metrics per method."""
    p = load_params(params_path)
    samples = [s for s in dataset_samples(p, "eval", name) if s.mask is not None]
    if not samples:
        raise PipelineError(f"evaluation set {name!r} has no ground-truth masks to evaluate against")
    jobs = []
    for s in samples:
        paths = [predictions / m / f"{s.stem}.png" for m in MAP_METHODS]
        missing = [str(q) for q in paths if not q.exists()]
        if missing:
            raise PipelineError(f"{missing[0]}: prediction missing (run the predict stage)")
        jobs.append((str(s.mask), [str(q) for q in paths]))
    with ProcessPoolExecutor(max_workers=p["evaluate"]["workers"],
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        per_image = list(pool.map(_score, jobs, chunksize=16))
    result = {"n_images": len(samples)}
    for k, m in enumerate(MAP_METHODS):
        scores = [s[k] for s in per_image]
        result[m] = metrics.aggregate(scores)
        atomic_write(pr_dir / f"{m}.csv", lambda f, c=metrics.pr_curve(scores): c.to_csv(f, index=False))
    write_json(metrics_path, result)
    click.echo(f"{name}: " + ", ".join(f"{m} F_max(B) {result[m]['fmax_image']:.3f}" for m in MAP_METHODS))
