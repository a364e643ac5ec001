"""Head benchmark (issue 4): training time over cached features, inference + upsampling per image, and
memory of inference on a 2560-px-class grid.

    python benchmarks/bench_head.py --store TRAIN.zarr --pseudo MASKS.npz [--epochs 3] \
        [--infer-store EVAL.zarr] [--highres HIGHRES.zarr]

Training runs the train stage's own code (`train_head` on the store + pseudo-masks). Inference times
`predict_map` (head + bilinear upsampling to the original image size) from cached features.
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

from pipeline.head import Head, predict_map
from pipeline.store import FeatureStore
from pipeline.train import train_head
from stages.train import PseudoLabelled


def training(store: FeatureStore, pseudo: str, epochs: int) -> dict:
    images = PseudoLabelled(store, pseudo, "ncut_ipo")
    t = time.perf_counter()
    _, log = train_head(images, dim=store.dim, epochs=epochs, progress=False)
    s = time.perf_counter() - t
    return {"images": len(images), "patches": int(np.prod(store.grid)), "epochs": epochs, "steps": len(log),
            "seconds": s, "ms_per_step": 1000 * s / len(log)}


def inference(store: FeatureStore, n: int = 100) -> dict:
    head = Head(store.dim).eval()
    sizes = store.sizes()
    times = []
    for i in range(min(n, len(store))):
        f = store.features(i)
        t = time.perf_counter()
        predict_map(head, f, sizes[i])
        times.append(time.perf_counter() - t)
    return {"images": len(times), "grid": list(store.grid), "mean_ms": 1000 * float(np.mean(times)),
            "p95_ms": 1000 * float(np.percentile(times, 95))}


def highres(path: str, dim: int | None) -> dict:
    """Inference on one high-resolution grid (real features, or random ones of width ``dim``) to 2560 px."""
    store = FeatureStore(path)
    f = store.features(0)
    if dim:
        f = np.random.default_rng(0).standard_normal((*store.grid, dim)).astype(np.float16)
    head = Head(f.shape[-1]).eval()
    t = time.perf_counter()
    predict_map(head, f, (2560, 2560))
    s = time.perf_counter() - t
    return {"grid": list(store.grid), "dim": int(f.shape[-1]), "seconds": s,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "features_gib": f.nbytes / 2**30}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store")
    ap.add_argument("--pseudo")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--infer-store")
    ap.add_argument("--highres")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child-dim", type=int, default=-1, help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.child_dim >= 0:
        print(json.dumps(highres(a.highres, a.child_dim or None)))
        return
    report = {"torch_threads": a.threads}
    if a.store:
        report["training"] = training(FeatureStore(a.store), a.pseudo, a.epochs)
        print(json.dumps(report["training"]), flush=True)
    if a.infer_store:
        report["inference"] = inference(FeatureStore(a.infer_store))
        print(json.dumps(report["inference"]), flush=True)
    if a.highres:
        for dim in (0, 4096):  # the store's own width, then the 7B's
            out = subprocess.run([sys.executable, __file__, "--highres", a.highres, "--child-dim", str(dim),
                                  "--threads", str(a.threads)], capture_output=True, text=True, check=True)
            report.setdefault("highres", []).append(json.loads(out.stdout))
            print(out.stdout, flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
