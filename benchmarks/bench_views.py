"""Inference cost of the inference variants (docs/results.md "Beyond the paper"), per image, relative to the paper.

    python benchmarks/bench_views.py --backbone ../shared/models/dinov2-small-imgfocus \
        --images ../shared/datasets/DUTS-TE/DUTS-TE-Image --n 5 [--base 756] [--extra 1274 448] [--threads 2]

Each variant runs `selfment segment`'s own per-image work (decode, one backbone forward per view, the
head on every view, fusion at the image size, PNG writing) on the first ``n`` images (sorted names), in
this process, after one warm-up image; the figure is seconds per image and its ratio to the paper's
single view. The head's weights do not change the cost, so a random head of the backbone's width is used.
A self-training round changes the head's weights only: its inference costs what the paper's does.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from pipeline.features.backbone import backbone_info
from pipeline.features.views import views
from pipeline.head.model import Head, save_head
from stages.segment import SegmentWork


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--base", type=int, default=756)
    ap.add_argument("--extra", type=int, nargs="*", default=[1274, 448], help="second resolutions to try")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    images = sorted(str(p) for p in a.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: a.n + 1]
    variants = {"paper": views([a.base], False), "flip": views([a.base], True)}
    for r in a.extra:
        variants[f"multi-scale {a.base}+{r}"] = views([a.base, r], False)
        variants[f"multi-scale {a.base}+{r} + flip"] = views([a.base, r], True)
    out = Path(tempfile.mkdtemp())
    head = save_head(Head(backbone_info(a.backbone).hidden_size), out / "head.safetensors")
    work = SegmentWork(a.backbone, "float32", "cpu", [], str(head), str(out), None)
    work.open()
    work.views = variants["paper"]
    work(images[0])  # warm-up
    rows = {}
    for name, v in variants.items():
        work.views = v
        t = time.perf_counter()
        for path in images[1:]:
            work(path)
        rows[name] = (time.perf_counter() - t) / (len(images) - 1)
    result = {name: {"views": [x.name for x in variants[name]], "s_per_image": round(s, 3),
                     "relative": round(s / rows["paper"], 2)} for name, s in rows.items()}
    print(json.dumps({"n": len(images) - 1, "threads": a.threads, "variants": result}, indent=1))


if __name__ == "__main__":
    main()
