"""Initial bipartitions of paper Table 4 (CLS token, k-means, NCut) and NCut + IPO (Table 3).

The paper does not say how CLS or k-means picks the foreground side; the rules here are documented
in docs/method.md ("Choices the paper leaves open").
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.cluster.vq

from pipeline.bipartition.ipo import IPOResult, ipo
from pipeline.bipartition.ncut import Fiedler, ncut
from pipeline.core.arrays import l2_normalize
from pipeline.core.params import METHODS, IPOParams, NCutParams


def cls_bipartition(features: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """Foreground = patches whose cosine similarity to the CLS token exceeds the image's mean."""
    s = l2_normalize(features.astype(np.float32)) @ l2_normalize(cls.astype(np.float32))
    return s > s.mean()


def border_share(mask: np.ndarray) -> float:
    """Fraction of the grid's border patches that are in ``mask``."""
    border = np.concatenate([mask[0], mask[-1], mask[1:-1, 0], mask[1:-1, -1]])
    return float(border.mean())


def kmeans_bipartition(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """k-means (k = 2, k-means++ seeded) on L2-normalised patch features; foreground = the cluster
    holding the smaller share of the border patches (ties: the smaller cluster)."""
    h, w, d = features.shape
    f = l2_normalize(features.reshape(h * w, d).astype(np.float64))
    with warnings.catch_warnings():  # an empty cluster is a legitimate (degenerate) outcome
        warnings.simplefilter("ignore")
        _, labels = scipy.cluster.vq.kmeans2(f, 2, minit="++", seed=seed)
    mask = (labels == 1).reshape(h, w)
    key, key_inv = (border_share(mask), mask.mean()), (border_share(~mask), (~mask).mean())
    return mask if key <= key_inv else ~mask


@dataclass(frozen=True)
class Bipartitions:
    masks: dict[str, np.ndarray]   # method -> (h, w) bool, for the methods asked
    fiedler: Fiedler | None        # NCut's eigenproblem, when NCut was solved here
    ipo: IPOResult | None          # IPO's run, when IPO ran here


def bipartitions(features: np.ndarray, cls: np.ndarray, methods: tuple[str, ...] = METHODS,
                 ncut_p: NCutParams = NCutParams(), ipo_p: IPOParams = IPOParams(), kmeans_seed: int = 0,
                 ncut_mask: np.ndarray | None = None) -> Bipartitions:
    """``methods`` (of ``METHODS``) on one (h, w, d) feature grid. NCut is solved at most once: IPO starts
    from ``ncut_mask`` (NCut's mask of this grid, kept from an earlier run) when NCut itself is not asked,
    else from NCut's mask solved here."""
    masks, fv, refined = {}, None, None
    if "cls" in methods:
        masks["cls"] = cls_bipartition(features, cls)
    if "kmeans" in methods:
        masks["kmeans"] = kmeans_bipartition(features, kmeans_seed)
    if "ncut" in methods or ("ncut_ipo" in methods and ncut_mask is None):
        ncut_mask, fv = ncut(features, ncut_p, return_vector=True)
        if "ncut" in methods:
            masks["ncut"] = ncut_mask
    if "ncut_ipo" in methods:
        refined = ipo(features, ncut_mask, ipo_p)
        masks["ncut_ipo"] = refined.mask
    return Bipartitions(masks, fv, refined)
