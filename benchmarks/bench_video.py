"""Video segmentation speed and memory (docs/benchmarks.md "Video").

    python benchmarks/bench_video.py --backbone ../shared/models/dinov2-small-imgfocus --resolution 448 \
        --frames 48 --long-frames 300 3000 --work /tmp/selfment-video

Runs the real command, ``selfment segment CLIP --model DIR --out OUT``, in a subprocess on generated clips (a
textured square moving over a gradient, 640 x 360 at 25 fps): the model directory holds a head of random weights
(speed does not depend on them) and the ``--backbone`` given. Reports frames per second at ``--resolution`` (the
whole command, start-up and the three videos' encoding included) and the peak resident memory of two longer
clips at 112 px, whose equality is the claim that memory does not grow with the clip's length.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.features.backbone import backbone_info
from pipeline.head.model import Head
from pipeline.head.segmenter import Segmenter
from pipeline.head.video import VideoWriter

ROOT = Path(__file__).resolve().parents[1]


def clip(path: Path, frames: int, width: int = 640, height: int = 360) -> Path:
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 60, (120, 160, 3), dtype=np.uint8)
    with VideoWriter(path, 25, width, height) as w:
        for t in range(frames):
            f = np.tile(np.linspace(20, 120, width, dtype=np.uint8), (height, 1))[..., None].repeat(3, 2)
            x = (7 * t) % (width - 160)
            f[100:220, x:x + 160] = 140 + texture
            w.write(f)
    return path


PEAK = """import resource, sys
from stages.cli import main
try:
    main(sys.argv[1:])
finally:
    print("peak_rss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def run(model: Path, video: Path, out: Path, resolution: int) -> dict:
    """Wall time and peak resident memory of one `selfment segment` process (the process's own peak)."""
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", PEAK, "segment", str(video), "--model", str(model), "--out", str(out),
                        "--resolution", str(resolution), "--params", str(ROOT / "params.yaml")],
                       capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(r.stderr)
    peak = int(r.stderr.rsplit("peak_rss_kb", 1)[1].split()[0])
    return {"seconds": time.perf_counter() - t, "peak_rss_mb": peak / 1024}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--resolution", type=int, default=448)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--long-frames", type=int, nargs=2, default=[300, 3000])
    ap.add_argument("--work", type=Path, required=True)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    model = a.work / "model"
    Segmenter.from_head(Head(backbone_info(a.backbone).hidden_size), backbone=str(Path(a.backbone).resolve()),
                        resolutions=[a.resolution]).save_pretrained(model)
    speed = run(model, clip(a.work / "speed.mp4", a.frames), a.work / "speed", a.resolution)
    report = {"resolution": a.resolution, "frames": a.frames, "size": "640x360", **speed,
              "frames_per_s": a.frames / speed["seconds"], "memory_at_112_px": {}}
    for n in a.long_frames:
        report["memory_at_112_px"][n] = run(model, clip(a.work / f"long{n}.mp4", n), a.work / f"long{n}", 112)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
