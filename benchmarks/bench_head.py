"""Head benchmark: training time over cached features, inference + upsampling per image, and
memory of inference on a 2560-px-class grid.

    python benchmarks/bench_head.py --store TRAIN.zarr --pseudo MASKS.npz [--epochs 3] \
        [--infer-store EVAL.zarr] [--highres HIGHRES.zarr] [--device cuda]

Training runs the train stage's own code (`train_head` on the store + pseudo-masks). `--loss-patches`
times forward + backward of the contrastive loss (Eq. 10) against plain autograd through
`torch.logsumexp` in the same process, and against its floor (the N x N similarities, their
exponentials and the gradient's two N x N x E products, nothing else). Inference times `predict_map` (head + bilinear upsampling to
the original image size) from cached features.
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

from pipeline.core.params import TrainParams
from pipeline.features.backbone import resolve_device
from pipeline.features.store import FeatureStore
from pipeline.head.losses import contrastive_loss
from pipeline.head.model import Head, predict_map
from pipeline.head.train import PseudoLabelled, train_head


def training(store: FeatureStore, pseudo: str, epochs: int, device: torch.device) -> dict:
    images = PseudoLabelled(store, pseudo, "ncut_ipo", keep_gb=TrainParams().cache_gb)  # as the stage
    t = time.perf_counter()
    _, log = train_head(images, dim=store.dim, train=TrainParams(epochs=epochs), progress=False, device=device)
    s = time.perf_counter() - t
    return {"images": len(images), "patches": int(np.prod(store.grid)), "epochs": epochs, "steps": len(log),
            "seconds": s, "ms_per_step": 1000 * s / len(log), "images_per_s": len(log) / s, **gpu_memory(device)}


def gpu_memory(device: torch.device) -> dict:
    """Peak GPU memory since the last call (empty on CPU)."""
    if device.type != "cuda":
        return {}
    torch.cuda.synchronize(device)
    out = {"gpu_peak_allocated_gib": torch.cuda.max_memory_allocated(device) / 2**30}
    torch.cuda.reset_peak_memory_stats(device)
    return out


def plain_contrastive(z: torch.Tensor, y: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Baseline: Eq. 10 written directly with autograd (N x N masks and log-probabilities)."""
    z = torch.nn.functional.normalize(z, dim=1)
    s = z @ z.T / temperature
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    log_prob = s - torch.logsumexp(s.masked_fill(eye, float("-inf")), 1, keepdim=True)
    pos = (y[:, None] == y[None, :]) & ~eye
    return -((log_prob * pos).sum(1) / pos.sum(1)).mean()


def loss_speed(n: int, device: torch.device, reps: int = 10) -> dict:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, 128, generator=g).to(device).requires_grad_()
    y = (torch.rand(n, generator=g) < 0.3).to(device)
    out = {"patches": n}
    for name, fn in (("plain_autograd", plain_contrastive), ("fused", contrastive_loss)):
        fn(z, y).backward()
        sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            fn(z, y).backward()
        sync(device)
        out[f"{name}_ms"] = 1000 * (time.perf_counter() - t) / reps
    zd = z.detach()
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        floor(zd)
    sync(device)
    out["floor_ms"] = 1000 * (time.perf_counter() - t) / reps
    out["speedup"] = out["plain_autograd_ms"] / out["fused_ms"]
    out["fused_over_floor"] = out["fused_ms"] / out["floor_ms"]
    return out


def floor(z: torch.Tensor) -> torch.Tensor:
    """What any exact Eq. 10 forward + backward must do: the N x N similarities, their exponentials
    and the two N x N x E products of the gradient."""
    s = (z @ z.T).exp_()
    return (s @ z).add_(s.T @ z)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def inference(store: FeatureStore, device: torch.device, n: int = 100) -> dict:
    head = Head(store.dim).to(device).eval()
    sizes = store.sizes()
    times = []
    for i in range(min(n, len(store))):
        f = store.features(i)
        t = time.perf_counter()
        predict_map(head, f, sizes[i])  # returns a numpy map: includes the copy back from the GPU
        times.append(time.perf_counter() - t)
    return {"images": len(times), "grid": list(store.grid), "mean_ms": 1000 * float(np.mean(times)),
            "p95_ms": 1000 * float(np.percentile(times, 95)), "images_per_s": len(times) / float(np.sum(times)),
            **gpu_memory(device)}


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
    ap.add_argument("--loss-patches", type=int, nargs="*", default=[])
    ap.add_argument("--infer-store")
    ap.add_argument("--highres")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (training, loss, inference)")
    ap.add_argument("--child-dim", type=int, default=-1, help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.child_dim >= 0:
        print(json.dumps(highres(a.highres, a.child_dim or None)))
        return
    device = resolve_device(a.device)
    report = {"torch_threads": a.threads, "device": str(device)}
    if a.store:
        report["training"] = training(FeatureStore(a.store), a.pseudo, a.epochs, device)
        print(json.dumps(report["training"]), flush=True)
    for n in a.loss_patches:
        report.setdefault("contrastive", []).append(loss_speed(n, device))
        print(json.dumps(report["contrastive"][-1]), flush=True)
    if a.infer_store:
        report["inference"] = inference(FeatureStore(a.infer_store), device)
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
