"""Stage pseudo_masks: training feature store -> patch-grid masks of every bipartition method, their
quality against ground truth and how many images each method was computed for in this run (metrics JSON),
and the IPO convergence curve (plot CSV)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from pipeline.bipartition.kept import counters, method_keys, save_kept, split_kept
from pipeline.bipartition.pseudo import STATS, convergence, merge, quality
from pipeline.bipartition.pseudo import pseudo_masks as masks_of
from pipeline.core.datasets import training_set
from pipeline.core.errors import PipelineError
from pipeline.core.files import atomic_write, save_npz, write_json
from pipeline.core.params import METHODS, IPOParams, NCutParams
from pipeline.core.runner import Resume, Work, chunked, claim_dir, file_digest, fingerprint, run_units, stage
from pipeline.features.store import FeatureStore


@dataclass
class PseudoWork(Work):
    store_path: str
    methods: tuple[str, ...]     # the methods computed (the others are kept)
    ncut: NCutParams
    ipo: IPOParams
    kmeans_seed: int
    gt_paths: list[str] | None   # one ground-truth mask per store image, or None
    ncut_kept: str | None = None  # kept NCut masks, where NCut + IPO is computed and NCut is not

    def open(self) -> None:
        self.store = FeatureStore(self.store_path)
        self.ncut_masks = None
        if self.ncut_kept:
            with np.load(self.ncut_kept) as z:
                self.ncut_masks = z["masks"]

    def __call__(self, indices: list[int]) -> dict:
        gt = [self.gt_paths[i] for i in indices] if self.gt_paths else None
        return masks_of(self.store, indices, self.ncut, self.ipo, self.kmeans_seed, gt, self.methods,
                        None if self.ncut_masks is None else self.ncut_masks[indices])


@stage("pseudo-masks", reads=("data.train", "ncut", "ipo", "pseudo.kmeans_seed"))
@click.option("--features", type=click.Path(exists=True, path_type=Path), required=True, help="Training store.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Masks (.npz).")
@click.option("--grids", type=click.Path(path_type=Path), required=True,
              help="Each method's masks, kept by the params it reads (<method>.npz).")
@click.option("--metrics", "metrics_path", type=click.Path(path_type=Path), required=True, help="Quality JSON.")
@click.option("--plot", type=click.Path(path_type=Path), required=True, help="IPO convergence CSV.")
def pseudo_masks(p, features: Path, out: Path, grids: Path, metrics_path: Path, plot: Path) -> None:
    """NCut, NCut+IPO, CLS and k-means masks of every training image (paper Sec. 3.1-3.2, Tables 3-4).

    Each method is computed only when its kept masks in ``--grids`` were made with other inputs
    (:mod:`pipeline.bipartition.kept`); work runs in chunks kept beside ``--out`` until it is written, so
    an interrupted run resumes."""
    store = FeatureStore(features)
    by_stem = {s.stem: s.mask for s in training_set(p.data.train)[0]}
    if set(store.stems) - set(by_stem):
        raise PipelineError(f"{features}: its images are not the data.train sample; rerun extract")
    gt = [by_stem[s] for s in store.stems]
    gt_paths = [str(m) for m in gt] if all(m is not None for m in gt) else None
    # keyed by the masks' content, not their paths: a queued run's copy of the repository finds the kept masks
    truth = [file_digest(m) for m in gt_paths] if gt_paths else None
    keys = method_keys(fingerprint(store.attrs["fingerprint"], truth), p.ncut, p.ipo, p.pseudo.kmeans_seed)
    kept, todo = split_kept(claim_dir(grids), keys, store.stems)
    result = dict(kept)
    if todo:
        work = PseudoWork(str(features), tuple(todo), p.ncut, p.ipo, p.pseudo.kmeans_seed, gt_paths,
                          str(grids / "ncut.npz") if "ncut_ipo" in todo and "ncut" in kept else None)
        units = chunked(range(len(store)), p.pseudo.chunk_size)
        resume = Resume(out, fingerprint([keys[m] for m in todo], units))
        result.update(merge(run_units(work, units, resume, workers=p.pseudo.workers,
                                      desc=f"pseudo-masks {'+'.join(todo)}")))
        for m in todo:
            save_kept(grids, m, keys[m], store.stems, result[m])
        resume.close()

    ncut, ipo = result["ncut"], result["ncut_ipo"]
    save_npz(out, {"stems": np.array(store.stems, dtype=str), **{m: result[m]["masks"] for m in METHODS},
                   **{k: ncut[k] for k in STATS["ncut"]}, **{k: ipo[k] for k in STATS["ncut_ipo"]}})
    report = {"n_images": len(store), "computed": counters({m: len(store) for m in todo}),
              "ncut_repeated_eigenvalue": int(ncut["degenerate"].sum()),
              "ncut_dense_fallbacks": int(ncut["fallback"].sum()),
              "ipo_mean_iterations_changed": float((ipo["changed"] > 0).sum(1).mean())}
    report.update(quality(result) if gt_paths else {"ground_truth": False})
    write_json(metrics_path, report)
    atomic_write(plot, lambda f: convergence(ipo).to_csv(f, index=False))
    summary = ", ".join(f"{m} F_max(B) {report[m]['fmax_image']:.3f}" for m in METHODS if m in report)
    click.echo(f"{out}: {len(store)} images; computed: {', '.join(todo) or 'none'}, kept: "
               f"{', '.join(kept) or 'none'}; NCut dense fallbacks: {report['ncut_dense_fallbacks']}; "
               f"{summary or 'no ground truth'}")
