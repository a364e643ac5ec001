"""Iterative Patch Optimization (paper Sec. 3.2, Eq. 5-8)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.core.arrays import l2_normalize
from pipeline.core.params import IPOParams


@dataclass(frozen=True)
class IPOResult:
    mask: np.ndarray          # (h, w) bool refined foreground
    changed: np.ndarray       # (iters,) patches whose label changed in iteration t (0 once stopped)
    fg_fraction: np.ndarray   # (iters,) foreground fraction after iteration t (held once stopped)
    flipped: np.ndarray       # (iters,) bool: labels reversed by orientation consistency in iteration t
    iterations: int           # relabelling iterations carried out (Eq. 6-7)
    stop: str                 # "iters" | "converged" | "small_cluster" | "degenerate" | "trivial_init"


def ipo(features: np.ndarray, init_mask: np.ndarray, p: IPOParams = IPOParams()) -> IPOResult:
    """Refine an NCut mask by 2-means in feature space with orientation consistency.

    features (h, w, d) are L2-normalised here (not the centroids, Eq. 5/7). Each iteration labels a
    patch foreground iff <f_i, mu_f> > <f_i, mu_b> (Eq. 6, ties to background), recomputes the means
    (Eq. 7) and flips the labels when <mu_f - mu_b, r> < 0 with r = mu_f(0) - mu_b(0) (Sec. 3.2).
    Runs at most ``p.iters`` iterations (T). Stops before an iteration whose clusters hold < ``p.min_cluster`` patches, and when labels no longer
    change (a fixed point: the remaining iterations would repeat it). Unlike the official code, a
    degenerate relabelling (one cluster empty) is never returned: the last non-degenerate labels are.
    """
    h, w, d = features.shape
    iters, min_cluster = p.iters, p.min_cluster
    # torch, not numpy BLAS: alternating with NCut's torch kernels, two thread pools would contend
    f = l2_normalize(torch.as_tensor(np.asarray(features, np.float32)).reshape(h * w, d))
    y = np.asarray(init_mask, bool).reshape(h * w).copy()
    changed = np.zeros(iters, np.int64)
    flipped = np.zeros(iters, bool)
    fg = np.full(iters, y.mean())
    total = f.sum(0).double().numpy()

    def means(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_f = int(lab.sum())
        s_f = (f.T @ torch.from_numpy(lab.astype(np.float32))).numpy()
        return s_f / n_f, (total - s_f) / (len(lab) - n_f)

    if y.all() or not y.any():
        return IPOResult(y.reshape(h, w), changed, fg, flipped, 0, "trivial_init")
    mu_f, mu_b = means(y)
    r = mu_f - mu_b
    stop, done = "iters", 0
    for t in range(iters):
        n_f = int(y.sum())
        if min(n_f, len(y) - n_f) < min_cluster:
            stop = "small_cluster"
            break
        new = (f @ torch.from_numpy((mu_f - mu_b).astype(np.float32))).numpy() > 0
        if new.all() or not new.any():
            stop = "degenerate"
            break
        mu_f, mu_b = means(new)
        if np.dot(mu_f - mu_b, r) < 0:
            new, flipped[t] = ~new, True
            mu_f, mu_b = mu_b, mu_f
        changed[t] = int(np.count_nonzero(new != y))
        y, done = new, done + 1
        fg[t:] = y.mean()
        if changed[t] == 0:
            stop = "converged"
            break
    return IPOResult(y.reshape(h, w), changed, fg, flipped, done, stop)
