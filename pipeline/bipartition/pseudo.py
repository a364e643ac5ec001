"""Pseudo-masks of a feature store (Sec. 3.1-3.2), their quality against ground truth (Table 3), and
the full-size maps of every bipartition method for evaluation."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.bipartition.methods import METHODS, all_methods
from pipeline.core import metrics
from pipeline.core.datasets import load_mask
from pipeline.core.maps import upsample
from pipeline.core.params import IPOParams, NCutParams
from pipeline.features.store import FeatureStore


def mask_map(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A {0, 1} patch mask upsampled bilinearly to (H, W) like the head's probabilities, so baselines,
    pseudo-masks and the head are scored by the same code (docs/method.md "Choices")."""
    return upsample(mask.astype(np.float32), size)


def pseudo_masks(store: FeatureStore, indices: list[int], ncut_p: NCutParams, ipo_p: IPOParams, kmeans_seed: int,
                 gt_paths: list | None = None) -> dict:
    """Masks of every method for store images ``indices`` plus NCut/IPO statistics; with ``gt_paths``
    (one ground-truth mask per index) also each method's per-image scores (`metrics.image_scores`) of
    the mask bilinearly upsampled to the image's original size."""
    iters = ipo_p.iters
    out = {m: np.zeros((len(indices), *store.grid), bool) for m in METHODS}
    out.update(changed=np.zeros((len(indices), iters), np.int64), fg_fraction=np.zeros((len(indices), iters)),
               flipped=np.zeros((len(indices), iters), bool), eigenvalues=np.zeros((len(indices), 2)),
               degenerate=np.zeros(len(indices), bool), fallback=np.zeros(len(indices), bool))
    scores = {m: [] for m in METHODS}
    sizes = store.sizes()
    for j, i in enumerate(indices):
        b = all_methods(store.features(i), store.cls(i), ncut_p, ipo_p, kmeans_seed)
        for m in METHODS:
            out[m][j] = b.masks[m]
        out["changed"][j], out["fg_fraction"][j], out["flipped"][j] = b.ipo.changed, b.ipo.fg_fraction, b.ipo.flipped
        out["eigenvalues"][j] = b.fiedler.eigenvalues[:2]
        out["degenerate"][j] = b.fiedler.degenerate
        out["fallback"][j] = b.fiedler.fallback
        if gt_paths is not None:
            gt = load_mask(gt_paths[j])
            for m in METHODS:
                pred = metrics.to_uint8(mask_map(b.masks[m], sizes[i]))
                scores[m].append(metrics.image_scores(pred, gt))
    out["scores"] = scores
    return out


def merge(parts: list[dict]) -> dict:
    """Concatenate `pseudo_masks` results of consecutive index chunks."""
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "scores"}
    merged["scores"] = {m: [s for p in parts for s in p["scores"][m]] for m in METHODS}
    return merged


def quality(scores: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Per method: F_max in both conventions (named apart), IoU, Acc of the upsampled pseudo-masks."""
    keep = ("fmax_dataset", "fmax_image", "fmax_toolbox", "iou", "acc")
    return {m: {k: v for k, v in metrics.aggregate(s).items() if k in keep} for m, s in scores.items() if s}


def convergence(result: dict) -> pd.DataFrame:
    """IPO convergence curve: per iteration, mean patches changed, foreground fraction, flip rate."""
    t = np.arange(1, result["changed"].shape[1] + 1)
    return pd.DataFrame({"iteration": t, "mean_changed": result["changed"].mean(0),
                         "fg_fraction": result["fg_fraction"].mean(0), "flip_rate": result["flipped"].mean(0)})


def bipartition_maps(features: np.ndarray, cls: np.ndarray, size: tuple[int, int], ncut_p: NCutParams,
                     ipo_p: IPOParams, kmeans_seed: int) -> tuple[dict[str, np.ndarray], bool]:
    """Full-size (H, W) float32 maps of every bipartition method (Tables 3-4), upsampled like the head's
    probabilities (:func:`mask_map`), so one table holds the whole ablation; and whether NCut fell
    back to the dense solver."""
    b = all_methods(features, cls, ncut_p, ipo_p, kmeans_seed)
    return {m: mask_map(b.masks[m], size) for m in METHODS}, b.fiedler.fallback
