"""Fast bilateral solver (pipeline/head/postprocess.py): a planted object's edge recovered from a patch-level map."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pipeline.core.errors import PipelineError
from pipeline.core.maps import upsample
from pipeline.head.postprocess import bilateral_solve

H = W = 128
PATCH = 8  # a 16 x 16 patch grid, as a ViT/16 sees a 256-px image


@pytest.fixture(scope="module")
def planted() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, mask, coarse map): a red ellipse on a grey striped, noisy background, and the mask's patch
    coverage (16 x 16 block means) upsampled bilinearly: what a patch-level saliency map looks like."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:H, :W]
    mask = ((yy - 60) / 41) ** 2 + ((xx - 70) / 29) ** 2 <= 1
    stripes = 110 + 35 * np.sin(xx / 5.0)[..., None] * np.ones(3)
    image = np.where(mask[..., None], [200, 40, 50], stripes) + rng.normal(0, 6, (H, W, 3))
    coarse = mask.reshape(H // PATCH, PATCH, W // PATCH, PATCH).mean(axis=(1, 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask, upsample(coarse, (H, W))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_recovers_the_planted_edge(planted):
    image, mask, coarse = planted
    refined = bilateral_solve(image, coarse)
    before, after = _iou(coarse > 0.5, mask), _iou(refined > 0.5, mask)
    assert before < 0.985                  # the blocky map misses the ellipse's outline (0.968)
    assert after > 0.99                    # the solver snaps it to the colour edge (1.0)
    assert 1 - after < (1 - before) / 4    # IoU error cut at least 4x (observed: to 0)
    band = ndimage.binary_dilation(mask, iterations=3) ^ ndimage.binary_erosion(mask, iterations=3)
    err_before = np.abs(coarse - mask)[band].mean()
    err_after = np.abs(refined - mask)[band].mean()
    assert err_after < err_before / 2      # boundary band: 0.38 -> 0.076


def test_output_shape_dtype_range(planted):
    image, _, coarse = planted
    out = bilateral_solve(image[:100, :90], coarse[:100, :90], np.ones((100, 90)), max_iter=5)
    assert out.shape == (100, 90) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1


def test_constant_target_stays_constant(planted):
    image, _, _ = planted
    out = bilateral_solve(image, np.full((H, W), 0.3))
    np.testing.assert_allclose(out, 0.3, atol=1e-5)


def test_zero_confidence_takes_the_neighbours_value(planted):
    """Pixels with no confidence get their value from the confident pixels of the same colour region."""
    image, mask, _ = planted
    confidence = np.ones((H, W))
    confidence[:, 64:] = 0                 # the right half has no say: its target is garbage
    target = np.where(np.arange(W) < 64, mask.astype(float), 0.5 - mask)
    out = bilateral_solve(image, target, confidence)
    right = np.s_[:, 72:]                  # away from the cut
    assert _iou(out[right] > 0.5, mask[right]) > 0.9  # 0.998; 0.0 where the garbage had full confidence


@pytest.mark.parametrize("image_shape, target_shape, match", [
    ((32, 32, 3), (32, 31), "target"),
    ((32, 32), (32, 32), "image must be"),
    ((32, 32, 4), (32, 32), "image must be"),
])
def test_wrong_shapes_raise(image_shape, target_shape, match):
    with pytest.raises(PipelineError, match=match):
        bilateral_solve(np.zeros(image_shape, np.uint8), np.zeros(target_shape))


def test_bad_confidence_raises():
    image, target = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8))
    with pytest.raises(PipelineError, match="confidence"):
        bilateral_solve(image, target, np.ones((8, 7)))
    with pytest.raises(PipelineError, match="negative"):
        bilateral_solve(image, target, -np.ones((8, 8)))
