"""Pseudo-masks of a feature store (Sec. 3.1-3.2) with NCut's and IPO's statistics, their quality against
ground truth (Table 3), and the masks upsampled to full-size maps for evaluation."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.bipartition.methods import METHODS, Bipartitions, bipartitions
from pipeline.core import metrics
from pipeline.core.datasets import load_mask
from pipeline.core.maps import upsample
from pipeline.core.params import IPOParams, NCutParams
from pipeline.features.store import FeatureStore


def mask_map(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A {0, 1} patch mask upsampled bilinearly to (H, W) like the head's probabilities, so baselines,
    pseudo-masks and the head are scored by the same code (docs/method.md "Choices")."""
    return upsample(mask.astype(np.float32), size)


STATS = {"ncut": ("eigenvalues", "degenerate", "fallback"),      # per image, of the methods that have them
         "ncut_ipo": ("changed", "fg_fraction", "flipped")}


def empty(methods: tuple[str, ...], n: int, grid: tuple[int, int], iters: int) -> dict[str, dict[str, np.ndarray]]:
    """Per method, ``masks`` (n, h, w) and the method's statistics (:data:`STATS`) of n images, to be filled
    by :func:`record`."""
    shapes = {"eigenvalues": ((n, 2), float), "degenerate": ((n,), bool), "fallback": ((n,), bool),
              "changed": ((n, iters), np.int64), "fg_fraction": ((n, iters), float), "flipped": ((n, iters), bool)}
    return {m: {"masks": np.zeros((n, *grid), bool), **{k: np.zeros(*shapes[k]) for k in STATS.get(m, ())}}
            for m in methods}


def record(out: dict[str, dict[str, np.ndarray]], j: int, b: Bipartitions) -> None:
    """Row ``j`` of :func:`empty`'s arrays from one image's bipartitions (the methods ``out`` holds)."""
    for m, arrays in out.items():
        arrays["masks"][j] = b.masks[m]
    if "ncut" in out:
        o, f = out["ncut"], b.fiedler
        o["eigenvalues"][j], o["degenerate"][j], o["fallback"][j] = f.eigenvalues[:2], f.degenerate, f.fallback
    if "ncut_ipo" in out:
        o, r = out["ncut_ipo"], b.ipo
        o["changed"][j], o["fg_fraction"][j], o["flipped"][j] = r.changed, r.fg_fraction, r.flipped


def pseudo_masks(store: FeatureStore, indices: list[int], ncut_p: NCutParams, ipo_p: IPOParams, kmeans_seed: int,
                 gt_paths: list | None = None, methods: tuple[str, ...] = METHODS,
                 ncut_masks: np.ndarray | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per method of ``methods``, the masks of store images ``indices`` and that method's statistics
    (:func:`empty`). IPO starts from ``ncut_masks`` (NCut's kept masks of ``indices``) when NCut is not among
    ``methods``. With ``gt_paths`` (one ground-truth mask per index) also each method's per-image scores
    (``score/<name>``, `metrics.image_scores`) of the mask bilinearly upsampled to the image's original size."""
    out = empty(methods, len(indices), store.grid, ipo_p.iters)
    scores = {m: [] for m in methods}
    sizes = store.sizes()
    for j, i in enumerate(indices):
        b = bipartitions(store.features(i), store.cls(i), methods, ncut_p, ipo_p, kmeans_seed,
                         None if ncut_masks is None else ncut_masks[j])
        record(out, j, b)
        if gt_paths is not None:
            gt = load_mask(gt_paths[j])
            for m in methods:
                scores[m].append(metrics.image_scores(metrics.to_uint8(mask_map(b.masks[m], sizes[i])), gt))
    if gt_paths is not None and indices:
        for m in methods:
            out[m].update({f"score/{k}": np.stack([s[k] for s in scores[m]]) for k in scores[m][0]})
    return out


def merge(parts: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Concatenate `pseudo_masks` results of consecutive index chunks."""
    return {m: {k: np.concatenate([p[m][k] for p in parts]) for k in parts[0][m]} for m in parts[0]}


def image_scores(arrays: dict[str, np.ndarray]) -> list[dict]:
    """The per-image scores (`metrics.image_scores` dicts) kept in one method's `pseudo_masks` arrays."""
    keys = [k for k in arrays if k.startswith("score/")]
    return [{k[len("score/"):]: arrays[k][j] for k in keys} for j in range(len(arrays["masks"]))] if keys else []


def quality(result: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Per method with scores: F_max in each convention (named apart), IoU, Acc of the upsampled pseudo-masks."""
    keep = ("fmax_dataset", "fmax_image", "fmax_toolbox", "iou", "acc")
    scored = {m: image_scores(a) for m, a in result.items()}
    return {m: {k: v for k, v in metrics.aggregate(s).items() if k in keep} for m, s in scored.items() if s}


def convergence(ipo_stats: dict[str, np.ndarray]) -> pd.DataFrame:
    """IPO convergence curve from NCut + IPO's statistics: per iteration, mean patches changed, foreground
    fraction, flip rate."""
    t = np.arange(1, ipo_stats["changed"].shape[1] + 1)
    return pd.DataFrame({"iteration": t, "mean_changed": ipo_stats["changed"].mean(0),
                         "fg_fraction": ipo_stats["fg_fraction"].mean(0), "flip_rate": ipo_stats["flipped"].mean(0)})
