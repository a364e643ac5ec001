"""A short clip panning across a photo (a camera moving over a still scene), to try `selfment segment CLIP`
and to draw the video figure of docs/own-images.md:

    python benchmarks/pan_clip.py PHOTO clip.mp4 [--frames 48] [--size 320x240]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline.core.datasets import load_image
from pipeline.head.video import VideoWriter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("photo", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", default="320x240")
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    pixels = load_image(a.photo)
    if pixels.shape[0] < h or pixels.shape[1] < w:
        raise SystemExit(f"{a.photo}: smaller than {a.size}")
    with VideoWriter(a.out, 12, w, h) as video:
        for t in np.linspace(0, 1, a.frames):  # left to right, top to bottom, at a constant pace
            y, x = round(t * (pixels.shape[0] - h)), round(t * (pixels.shape[1] - w))
            video.write(np.ascontiguousarray(pixels[y:y + h, x:x + w]))


if __name__ == "__main__":
    main()
