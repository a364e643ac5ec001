"""Stage pseudo_masks: training feature store -> patch-grid masks of every bipartition method, their
quality against ground truth (metrics JSON) and the IPO convergence curve (plot CSV)."""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import click
import numpy as np
import torch
from tqdm import tqdm

from pipeline.bipartition import METHODS
from pipeline.files import atomic_write, write_json
from pipeline.pseudo import convergence, merge, pseudo_masks, quality
from pipeline.store import FeatureStore
from stages.common import load_params, one_line_errors, params_option
from stages.extract import dataset_samples

_STORE: FeatureStore | None = None


def _init(store_path: str) -> None:
    global _STORE
    torch.set_num_threads(1)
    _STORE = FeatureStore(store_path)


def _chunk(indices: list[int], kw: dict, gt_paths: list | None) -> dict:
    return pseudo_masks(_STORE, indices, gt_paths=gt_paths, **kw)


def pseudo_config(p: dict) -> dict:
    """Keyword arguments of the bipartition methods, from params (ncut, ipo, pseudo.kmeans_seed)."""
    return {"ncut_kw": dict(p["ncut"]), "ipo_kw": dict(p["ipo"]), "kmeans_seed": p["pseudo"]["kmeans_seed"]}


def partial_dir(cfg: dict, store: FeatureStore, has_gt: bool) -> Path:
    """Where finished chunks wait for the final merge; named by everything that shapes their content."""
    key = hashlib.sha256(json.dumps([cfg, store.attrs["fingerprint"], has_gt], sort_keys=True).encode()).hexdigest()
    path = Path("data/tmp/pseudo_masks") / key[:16]
    path.mkdir(parents=True, exist_ok=True)
    return path


@click.command("pseudo-masks")
@params_option
@click.option("--features", type=click.Path(exists=True, path_type=Path), required=True, help="Training store.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Masks (.npz).")
@click.option("--metrics", "metrics_path", type=click.Path(path_type=Path), required=True, help="Quality JSON.")
@click.option("--plot", type=click.Path(path_type=Path), required=True, help="IPO convergence CSV.")
@one_line_errors
def pseudo_masks_cmd(params_path: Path, features: Path, out: Path, metrics_path: Path, plot: Path) -> None:
    """NCut, NCut+IPO, CLS and k-means masks of every training image (paper Sec. 3.1-3.2, Tables 3-4).

    Work is done in chunks saved under data/tmp, so an interrupted run resumes where it stopped."""
    p = load_params(params_path)
    cfg, ps = pseudo_config(p), p["pseudo"]
    store = FeatureStore(features)
    by_stem = {s.stem: s for s in dataset_samples(p, "train", None)}
    has_gt = all(by_stem[s].mask is not None for s in store.stems)
    partial = partial_dir(cfg, store, has_gt)
    n, size = len(store), ps["chunk_size"]
    chunks = [list(range(s, min(s + size, n))) for s in range(0, n, size)]
    todo = [k for k in range(len(chunks)) if not (partial / f"{k:05d}.pkl").exists()]
    bar = tqdm(total=n, initial=n - sum(len(chunks[k]) for k in todo), desc="pseudo-masks", unit="img")
    with ProcessPoolExecutor(max_workers=ps["workers"], mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init, initargs=(str(features),)) as pool:
        jobs = {pool.submit(_chunk, chunks[k], cfg,
                            [by_stem[store.stems[i]].mask for i in chunks[k]] if has_gt else None): k for k in todo}
        for job in as_completed(jobs):
            k = jobs[job]
            atomic_write(partial / f"{k:05d}.pkl", lambda f, r=job.result(): pickle.dump(r, f))
            bar.update(len(chunks[k]))
    bar.close()
    result = merge([pickle.loads((partial / f"{k:05d}.pkl").read_bytes()) for k in range(len(chunks))])

    arrays = {k: v for k, v in result.items() if k != "scores"}
    atomic_write(out, lambda f: np.savez_compressed(f, stems=np.array(store.stems), **arrays))
    report = {"n_images": n, "ncut_repeated_eigenvalue": int(result["degenerate"].sum()),
              "ipo_mean_iterations_changed": float((result["changed"] > 0).sum(1).mean())}
    report.update(quality(result["scores"]) if has_gt else {"ground_truth": False})
    write_json(metrics_path, report)
    atomic_write(plot, lambda f: convergence(result).to_csv(f, index=False))
    for f in partial.iterdir():
        f.unlink()
    partial.rmdir()
    summary = ", ".join(f"{m} F_max(B) {report[m]['fmax_image']:.3f}" for m in METHODS if m in report)
    click.echo(f"{out}: {n} images; {summary or 'no ground truth'}")
