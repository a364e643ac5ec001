"""NCut/IPO benchmark on real cached features: fast vs dense solver, high resolution, IPO share.

    python benchmarks/bench_ncut.py --store STORE_756 [--dense-images 100] [--highres STORE ...]

STORE_756 is a feature store of >= 100 DUTS-TR images (README "Benchmarks" shows how to make it).
Dense and fast solvers run on the same images in the same process; figures are ratios of the two.
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
import torch

from pipeline.ipo import ipo
from pipeline.ncut import ncut
from pipeline.params import NCutParams
from pipeline.store import FeatureStore


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def solvers(store: FeatureStore, n: int) -> dict:
    t_dense = t_fast = t_ipo = 0.0
    ious, repeated = [], 0
    for i in range(min(n, len(store))):
        f = store.features(i).astype(np.float32)
        t = time.perf_counter()
        dense = ncut(f, NCutParams(solver="dense"))
        t_dense += time.perf_counter() - t
        t = time.perf_counter()
        fast, fv = ncut(f, NCutParams(solver="lanczos"), return_vector=True)
        t_fast += time.perf_counter() - t
        t = time.perf_counter()
        ipo(f, fast)
        t_ipo += time.perf_counter() - t
        ious.append(iou(dense, fast))
        repeated += fv.degenerate
    k = len(ious)
    return {"images": k, "grid": list(store.grid), "dense_s_per_image": t_dense / k, "fast_s_per_image": t_fast / k,
            "speedup": t_dense / t_fast, "mean_iou_fast_vs_dense": float(np.mean(ious)),
            "min_iou_fast_vs_dense": float(np.min(ious)), "images_iou_below_0.99": int(np.sum(np.array(ious) < 0.99)),
            "repeated_or_uniform": repeated, "ipo_s_per_image": t_ipo / k, "ipo_share_of_ncut": t_ipo / t_fast}


def highres(path: str) -> dict:
    """Fast NCut on every image of a high-resolution store; run in a child for a clean peak-RSS figure."""
    store = FeatureStore(path)
    times = []
    for i in range(len(store)):
        f = store.features(i).astype(np.float32)
        t = time.perf_counter()
        ncut(f, NCutParams(solver="lanczos"))
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    h, w = store.grid
    return {"store": path, "resolution": store.attrs["resolution"], "patches": h * w, "images": len(store),
            "mean_s": float(np.mean(times)), "max_s": float(np.max(times)), "peak_rss_gib": peak,
            "affinity_gib": (h * w) ** 2 * 4 / 2**30}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", help="768-px-class store for the dense-vs-fast comparison")
    ap.add_argument("--dense-images", type=int, default=100)
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
        report["solvers"] = solvers(FeatureStore(a.store), a.dense_images)
        print(json.dumps(report["solvers"], indent=1), flush=True)
    for path in a.highres:
        out = subprocess.run([sys.executable, __file__, "--child", path, "--threads", str(a.threads)],
                             capture_output=True, text=True, check=True)
        report.setdefault("highres", []).append(json.loads(out.stdout))
        print(out.stdout, flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
