"""Extraction benchmark: backbone forward time vs whole-stage time, bytes per image, write MB/s.

    python benchmarks/bench_extract.py --model MODEL --data DUTS-TR --n 100 --resolution 756 \
        [--device cuda] [--dtype bfloat16] [--images-per-shard 16]

Runs the real extraction (decode + resize threads, forward, background shard writes) on the first
``--n`` DUTS-TR images with the given backbone, timing its forward section (the model and the copy
to host memory, as in ``--timing``); then re-writes the same features with each codec to compare
size and write speed. Overhead is
(stage time - forward time) / forward time, measured in the same process.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.core import timing
from pipeline.core.datasets import resolve, validate
from pipeline.core.params import CompressorParams, DatasetSpec
from pipeline.features.backbone import backbone_info, load_backbone
from pipeline.features.extract import extract_dataset, make_spec
from pipeline.features.store import FeatureStore, StoreWriter
from pipeline.features.views import View

CODECS = {
    "none": CompressorParams(name="none"),
    "blosc-lz4": CompressorParams(name="blosc", cname="lz4", clevel=5),
    "blosc-zstd": CompressorParams(name="blosc", cname="zstd", clevel=3),
    "zstd-1": CompressorParams(name="zstd", clevel=1),
}


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--resolution", type=int, default=756)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--model", required=True, help="Backbone: Hugging Face id or local directory.")
    ap.add_argument("--data", required=True, help="A DUTS-TR folder in its official layout.")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--images-per-shard", type=int, default=50)
    a = ap.parse_args()

    samples = resolve(DatasetSpec(root=a.data, preset="DUTS-TR"))[: a.n]
    validate(samples, backbone_info(a.model).patch_size)
    backbone = load_backbone(a.model, a.dtype, a.device)
    tmp = Path(tempfile.mkdtemp())
    spec = make_spec(samples, backbone, View(a.resolution), a.images_per_shard, CODECS["blosc-lz4"], a.dtype)
    t = time.perf_counter()
    extract_dataset(samples, backbone, tmp / "f.zarr", spec, batch_size=a.batch_size, progress=False)
    stage = time.perf_counter() - t
    fwd = timing.sections()["forward_s"]  # the extract code's own forward section
    print(f"{a.n} images at {a.resolution} px, {torch.get_num_threads()} threads, device {backbone.device}")
    print(f"forward {fwd:.1f} s ({fwd / a.n * 1000:.0f} ms/img), stage {stage:.1f} s ({a.n / stage:.2f} images/s); "
          f"overhead (stage - forward) / forward = {(stage - fwd) / fwd:.1%}")
    if backbone.device.type == "cuda":
        print(f"GPU memory: peak allocated {torch.cuda.max_memory_allocated(backbone.device) / 2**30:.2f} GiB, "
              f"peak reserved {torch.cuda.max_memory_reserved(backbone.device) / 2**30:.2f} GiB")

    st = FeatureStore(tmp / "f.zarr")
    feats = np.stack([st.features(i) for i in range(len(st))])
    cls, sizes = np.stack([st.cls(i) for i in range(len(st))]), st.sizes()
    raw_mb = feats.nbytes / 1e6
    print("\n| codec | bytes/image | ratio | write MB/s | read ms/image |\n|---|---|---|---|---|")
    for name, codec in CODECS.items():
        path = tmp / f"{name}.zarr"
        s = make_spec(samples, backbone, View(a.resolution), a.images_per_shard, codec, a.dtype)
        w = StoreWriter(path, s)
        t = time.perf_counter()
        for k in range(s.n_shards):
            r = s.shard_range(k)
            w.write_shard(k, feats[r.start:r.stop], cls[r.start:r.stop], sizes[r.start:r.stop])
        write = time.perf_counter() - t
        w.finalize()
        rd = FeatureStore(path)
        t = time.perf_counter()
        for i in range(len(rd)):
            rd.features(i)
        read = (time.perf_counter() - t) / len(rd) * 1000
        size = du(path)
        print(f"| {name} | {size / a.n / 1e6:.2f} MB | {feats.nbytes / size:.3f} | {raw_mb / write:.0f} | {read:.1f} |")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
