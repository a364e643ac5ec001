"""`selfment segment` on a folder of real photos, one process against two (docs/benchmarks.md "Segment at
corpus scale").

    python benchmarks/bench_segment.py --images ../shared/datasets/DUTS-TR/DUTS-TR-Image --n 200 \
        --backbone ../shared/models/dinov2-small-imgfocus --resolution 448 --work /tmp/selfment-segment

Runs the real command on a folder of links to the first ``--n`` photos (sorted): once as one process (torch on
every core), once under ``torchrun --standalone --nproc_per_node=2`` (one thread each), into fresh output
folders, with binary masks and one COCO file as a corpus run writes them. The model directory holds a head
of random weights (the time does not depend on them) and the ``--backbone``. Prints images per second of each
(the whole command: start-up, listing, COCO merge included) and, from rank 0's ``--timing`` sections, where
its time went: decode, forward (resize, normalise, the backbone), head (every view, upsampled), write.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pipeline.features.backbone import backbone_info
from pipeline.head.model import Head
from pipeline.head.segmenter import Segmenter

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(launch: list[str], folder: Path, model: Path, work: Path, tag: str, threads: int) -> dict:
    timing = work / f"{tag}.timing.json"
    t = time.perf_counter()
    r = subprocess.run([*launch, "selfment", "segment", str(folder), "--model", str(model), "--out", str(work / tag),
                        "--binary", "--coco", str(work / f"{tag}.coco.json"), "--params", str(ROOT / "params.yaml"),
                        "--timing", str(timing)], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    seconds = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(r.stdout[-2000:] + r.stderr[-2000:])
    return {"seconds": round(seconds, 1), **json.loads(timing.read_text())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--resolution", type=int, default=448)
    ap.add_argument("--work", type=Path, required=True)
    a = ap.parse_args()
    folder = a.work / "photos"
    folder.mkdir(parents=True, exist_ok=False)
    for f in sorted(a.images.iterdir())[: a.n]:
        (folder / f.name).symlink_to(f.resolve())
    model = a.work / "model"
    Segmenter.from_head(Head(backbone_info(a.backbone).hidden_size), backbone=str(Path(a.backbone).resolve()),
                        resolutions=[a.resolution]).save_pretrained(model)
    report = {"images": a.n, "resolution": a.resolution,
              "1 process": run([], folder, model, a.work, "one", os.cpu_count()),
              "2 processes": run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "--no-python"],
                                 folder, model, a.work, "two", 1)}
    for k in ("1 process", "2 processes"):
        report[k]["images_per_s"] = round(a.n / report[k]["seconds"], 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
