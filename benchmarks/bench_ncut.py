"""NCut/IPO benchmark on real cached features: TokenCut's dense call vs the project's NCut, IPO's share,
high resolution.

    python benchmarks/bench_ncut.py --store STORE_756 [--images 100] [--highres STORE ...]

STORE_756 is a feature store of >= 100 DUTS-TR images (docs/benchmarks.md "Benchmarks" shows how to make it).
Both run on the same images in the same process; figures are ratios of the two. ``gram`` is the floor
of any NCut on these features: the N x N product f f^T alone.
Each --highres store is timed with the fast solver only, with peak memory measured in a subprocess.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import scipy.linalg
import torch

from pipeline.bipartition.ipo import ipo
from pipeline.bipartition.ncut import bipartition, ncut
from pipeline.core.arrays import l2_normalize
from pipeline.core.params import NCutParams
from pipeline.features.store import FeatureStore


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def tokencut(features: np.ndarray, p: NCutParams) -> np.ndarray:
    """TokenCut's NCut as its code runs it, the baseline of the speed-up: cosine affinity as a float32
    torch product moved to numpy, the binary graph as a float64 array (eps where not above tau),
    D = np.diag(degrees), scipy.linalg.eigh(D - A, D, subset_by_index=[1, 2]), x2 = the first of the two
    eigenvectors, then the same mean split, seed and 4-connected component (Eq. 4)."""
    h, w, d = features.shape
    f = torch.nn.functional.normalize(torch.as_tensor(features.reshape(h * w, d)), dim=1)
    a = (f @ f.T).numpy()
    a = np.where((a > p.tau).astype(float) == 0, p.eps, a > p.tau)
    dm = np.diag(a.sum(1))
    _, vectors = scipy.linalg.eigh(dm - a, dm, subset_by_index=[1, 2])
    return bipartition(vectors[:, 0], (h, w))


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def solvers(store: FeatureStore, n: int) -> dict:
    """TokenCut's call, then the project's NCut and IPO, on the same images in one process. The loops are
    separate: numpy's BLAS threads spin for a while after each dense call and would slow torch beside them."""
    p = NCutParams()
    feats = [store.features(i).astype(np.float32) for i in range(min(n, len(store)))]
    k = len(feats)
    refs, t_ref = timed(lambda: [tokencut(f, p) for f in feats])
    fast, t_fast = timed(lambda: [ncut(f, p, return_vector=True) for f in feats])
    _, t_ipo = timed(lambda: [ipo(f, m) for f, (m, _) in zip(feats, fast)])
    grams = [torch.as_tensor(l2_normalize(f.reshape(-1, f.shape[-1]))) for f in feats]
    buf = torch.empty(len(grams[0]), len(grams[0]))
    _, t_gram = timed(lambda: [torch.matmul(g, g.T, out=buf) for g in grams])
    ious = np.array([iou(r, m) for r, (m, _) in zip(refs, fast)])
    unique = np.array([not fv.degenerate for _, fv in fast])  # TokenCut's mask is arbitrary on the others
    return {"images": k, "grid": list(store.grid), "tokencut_s_per_image": t_ref / k, "fast_s_per_image": t_fast / k,
            "speedup": t_ref / t_fast, "gram_s_per_image": t_gram / k, "fast_over_gram": t_fast / t_gram,
            "mean_iou_fast_vs_tokencut": float(ious.mean()), "min_iou_fast_vs_tokencut": float(ious.min()),
            "images_iou_below_0.99": int((ious < 0.99).sum()),
            "min_iou_unique_fiedler": float(ious[unique].min()), "images_unique_fiedler": int(unique.sum()),
            "repeated_or_uniform": int((~unique).sum()), "dense_fallbacks": int(sum(fv.fallback for _, fv in fast)),
            "ipo_s_per_image": t_ipo / k, "ipo_share_of_ncut": t_ipo / t_fast}


def highres(path: str) -> dict:
    """Fast NCut on every image of a high-resolution store; run in a child for a clean peak-RSS figure."""
    store = FeatureStore(path)
    times = []
    for i in range(len(store)):
        f = store.features(i).astype(np.float32)
        t = time.perf_counter()
        ncut(f)
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    h, w = store.grid
    return {"store": path, "resolution": store.attrs["resolution"], "patches": h * w, "images": len(store),
            "mean_s": float(np.mean(times)), "max_s": float(np.max(times)), "peak_rss_gib": peak,
            "affinity_gib": (h * w) ** 2 * 4 / 2**30}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", help="768-px-class store for the comparison with TokenCut's call")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--highres", nargs="*", default=[])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.child:
        print(json.dumps(highres(a.child)))
        return
    report = {"torch_threads": a.threads}
    if a.store:
        report["solvers"] = solvers(FeatureStore(a.store), a.images)
        print(json.dumps(report["solvers"], indent=1), flush=True)
    for path in a.highres:
        out = subprocess.run([sys.executable, __file__, "--child", path, "--threads", str(a.threads)],
                             capture_output=True, text=True, check=True)
        report.setdefault("highres", []).append(json.loads(out.stdout))
        print(out.stdout, flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
