"""What another machine's rounding can change: every bipartition method on real cached features, as
computed here and with a rounding-level change, mask by mask.

    python benchmarks/bench_rounding.py --store STORE [--images 300]

Three runs of the pseudo-mask code on the same images: as it is; with every feature multiplied by
(1 + 1e-6 u), u uniform in [-1, 1] (another CPU, BLAS kernel or thread count rounds every product
differently by about this much: the similarities, NCut's products, IPO's and k-means' distances);
and with NCut's float32 proposal products off by 1e-3 (TF32 on a GPU). Prints, per method, how many
masks differ from the first run and their lowest IoU, and the dense-fallback counts.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from bench_ncut import iou

import pipeline.bipartition.ncut as ncut_module
from pipeline.bipartition.pseudo import pseudo_masks
from pipeline.core.params import METHODS, IPOParams, NCutParams
from pipeline.features.store import FeatureStore


class Jittered:
    """A store whose features are multiplied by (1 + delta u), u uniform in [-1, 1], fixed seed."""

    def __init__(self, store: FeatureStore, delta: float):
        self.store, self.delta, self.grid = store, delta, store.grid

    def features(self, i: int) -> np.ndarray:
        f = self.store.features(i).astype(np.float32)
        return f * (1 + self.delta * np.random.default_rng(i).uniform(-1, 1, f.shape)).astype(np.float32)

    def cls(self, i: int) -> np.ndarray:
        return self.store.cls(i)

    def sizes(self):
        return self.store.sizes()


def compare(ref: dict, other: dict) -> dict:
    out = {}
    for m in METHODS:
        ious = np.array([iou(a, b) for a, b in zip(ref[m]["masks"], other[m]["masks"])])
        out[m] = {"masks_differing": int((ious < 1).sum()), "min_iou": float(ious.min())}
    out["ncut_dense_fallbacks"] = int(other["ncut"]["fallback"].sum())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    store = FeatureStore(a.store)
    idx = list(range(min(a.images, len(store))))
    run = lambda s: pseudo_masks(s, idx, NCutParams(), IPOParams(), 0)  # noqa: E731
    ref = run(store)
    report = {"images": len(idx), "grid": list(store.grid), "ncut_dense_fallbacks": int(ref["ncut"]["fallback"].sum()),
              "features_x_(1+1e-6u)": compare(ref, run(Jittered(store, 1e-6)))}
    gen, exact = torch.Generator().manual_seed(0), ncut_module._product32
    ncut_module._product32 = lambda m, y: exact(m, y).mul_(1 + 1e-3 * (2 * torch.rand(y.shape, generator=gen) - 1))
    report["ncut_proposal_products_tf32"] = compare(ref, run(store))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
