"""Deterministic synthetic demo data: textured objects on textured backgrounds with exact masks.

Each image has 1-3 objects (ellipses, rectangles, triangles) of varied size and position, each with
its own colour and texture (stripes, checks or dots), over a smooth multi-scale colour-noise
background. The ground-truth mask is the union of the objects, exact to the pixel. Same seed, same
bytes: no third-party images, no downloads.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import zoom

SIZES = ((320, 240), (256, 256), (240, 320), (384, 288))  # (width, height)


def _smooth_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Multi-scale value noise in [0, 1], (h, w)."""
    out = np.zeros((h, w))
    for cells, weight in ((3, 0.6), (8, 0.3), (24, 0.1)):
        coarse = rng.random((cells + 1, cells + 1))
        out += weight * zoom(coarse, (h / (cells + 1), w / (cells + 1)), order=3)[:h, :w]
    return np.clip(out, 0, 1)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = rng.uniform(0.25, 0.75, 3)
    tint = rng.uniform(-0.25, 0.25, 3)
    n = _smooth_noise(rng, h, w)[..., None]
    grain = rng.normal(0, 0.03, (h, w, 1))
    return base + tint * (n - 0.5) * 2 + grain


def _shape_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    size = rng.uniform(0.15, 0.45) * min(h, w)
    cy, cx = rng.uniform(size * 0.6, h - size * 0.6), rng.uniform(size * 0.6, w - size * 0.6)
    kind = rng.integers(3)
    if kind == 0:  # ellipse
        ry, rx = size * rng.uniform(0.5, 1.0), size * rng.uniform(0.5, 1.0)
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    if kind == 1:  # axis-aligned rectangle
        ry, rx = size * rng.uniform(0.4, 0.9), size * rng.uniform(0.4, 0.9)
        return (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
    angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
    py, px = cy + size * np.sin(angles), cx + size * np.cos(angles)
    inside = np.ones((h, w), bool)
    for i in range(3):  # the same side of each edge as the opposite vertex
        j, k = (i + 1) % 3, (i + 2) % 3
        side = (px[j] - px[i]) * (yy - py[i]) - (py[j] - py[i]) * (xx - px[i])
        ref = (px[j] - px[i]) * (py[k] - py[i]) - (py[j] - py[i]) * (px[k] - px[i])
        inside &= side * ref >= 0
    return inside


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    period = rng.uniform(6, 16)
    kind = rng.integers(3)
    if kind == 0:
        theta = rng.uniform(0, np.pi)
        t = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period) > 0
    elif kind == 1:
        t = ((xx // period).astype(int) + (yy // period).astype(int)) % 2 == 0
    else:
        t = (np.hypot((xx % period) - period / 2, (yy % period) - period / 2)) < period / 3
    return t.astype(float)[..., None]


def make_image(seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index`` of the demo set: uint8 (H, W, 3) RGB and its bool (H, W) mask."""
    rng = np.random.default_rng([seed, index])
    w, h = SIZES[index % len(SIZES)]
    image = _background(rng, h, w)
    mask = np.zeros((h, w), bool)
    for _ in range(1 + index % 3 if index % 4 else 1):
        obj = _shape_mask(rng, h, w)
        c1 = rng.uniform(0, 1, 3)
        c2 = np.clip(c1 + rng.choice([-1, 1], 3) * rng.uniform(0.3, 0.5, 3), 0, 1)
        t = _texture(rng, h, w)
        image = np.where(obj[..., None], c1 * t + c2 * (1 - t), image)
        mask |= obj
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), mask


def make_demo(n_images: int, seed: int):
    """Yield (stem, image, mask) for the whole demo set."""
    for i in range(n_images):
        image, mask = make_image(seed, i)
        yield f"demo_{i:03d}", image, mask
