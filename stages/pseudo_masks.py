"""Stage pseudo_masks: training feature store -> patch-grid masks of every bipartition method, their
quality against ground truth (metrics JSON) and the IPO convergence curve (plot CSV)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from pipeline.bipartition.pseudo import convergence, merge, quality
from pipeline.bipartition.pseudo import pseudo_masks as masks_of
from pipeline.core.datasets import training_set
from pipeline.core.errors import PipelineError
from pipeline.core.files import atomic_write, write_json
from pipeline.core.params import METHODS, IPOParams, NCutParams
from pipeline.core.runner import Resume, Work, chunked, fingerprint, run_units, stage
from pipeline.features.store import FeatureStore


@dataclass
class PseudoWork(Work):
    store_path: str
    ncut: NCutParams
    ipo: IPOParams
    kmeans_seed: int
    gt_paths: list[str] | None   # one ground-truth mask per store image, or None

    def open(self) -> None:
        self.store = FeatureStore(self.store_path)

    def __call__(self, indices: list[int]) -> dict:
        gt = [self.gt_paths[i] for i in indices] if self.gt_paths else None
        return masks_of(self.store, indices, self.ncut, self.ipo, self.kmeans_seed, gt)


@stage("pseudo-masks", reads=("data.train", "ncut", "ipo", "pseudo.kmeans_seed"))
@click.option("--features", type=click.Path(exists=True, path_type=Path), required=True, help="Training store.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Masks (.npz).")
@click.option("--metrics", "metrics_path", type=click.Path(path_type=Path), required=True, help="Quality JSON.")
@click.option("--plot", type=click.Path(path_type=Path), required=True, help="IPO convergence CSV.")
def pseudo_masks(p, features: Path, out: Path, metrics_path: Path, plot: Path) -> None:
    """NCut, NCut+IPO, CLS and k-means masks of every training image (paper Sec. 3.1-3.2, Tables 3-4).

    Work runs in chunks kept beside ``--out`` until it is written, so an interrupted run resumes."""
    store = FeatureStore(features)
    by_stem = {s.stem: s.mask for s in training_set(p.data.train)[0]}
    if set(store.stems) - set(by_stem):
        raise PipelineError(f"{features}: its images are not the data.train sample; rerun extract")
    gt = [by_stem[s] for s in store.stems]
    work = PseudoWork(str(features), p.ncut, p.ipo, p.pseudo.kmeans_seed,
                      [str(m) for m in gt] if all(m is not None for m in gt) else None)
    units = chunked(range(len(store)), p.pseudo.chunk_size)
    resume = Resume(out, fingerprint(work.ncut, work.ipo, work.kmeans_seed, work.gt_paths,
                                     store.attrs["fingerprint"], units))
    result = merge(run_units(work, units, resume, workers=p.pseudo.workers, desc="pseudo-masks"))

    arrays = {k: v for k, v in result.items() if k != "scores"}
    atomic_write(out, lambda f: np.savez_compressed(f, stems=np.array(store.stems), **arrays))
    report = {"n_images": len(store), "ncut_repeated_eigenvalue": int(result["degenerate"].sum()),
              "ncut_dense_fallbacks": int(result["fallback"].sum()),
              "ipo_mean_iterations_changed": float((result["changed"] > 0).sum(1).mean())}
    report.update(quality(result["scores"]) if work.gt_paths else {"ground_truth": False})
    write_json(metrics_path, report)
    atomic_write(plot, lambda f: convergence(result).to_csv(f, index=False))
    resume.close()
    summary = ", ".join(f"{m} F_max(B) {report[m]['fmax_image']:.3f}" for m in METHODS if m in report)
    click.echo(f"{out}: {len(store)} images; NCut dense fallbacks: {report['ncut_dense_fallbacks']}; "
               f"{summary or 'no ground truth'}")
