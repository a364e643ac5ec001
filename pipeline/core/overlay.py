"""A saliency map drawn over its image: background darkened, object brightened, object outlined.

The look of the authors' demos (``visualize_mask_clean`` in the Selfment release's ``inference.py``,
used by its ``demo/demo_video.py``): background x 0.4, object x 1.1, a white outline. Differences: the
mask is ``prob > threshold`` (the release thresholds with Otsu), the outline is the object's inner
boundary band of ``outline_width`` px (the release draws the mask's 1-px Canny edges), values are rounded,
not truncated.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from pipeline.core.errors import PipelineError


def overlay(image: np.ndarray, prob: np.ndarray, threshold: float = 0.5, *, dim: float = 0.4,
            brighten: float = 1.1, outline: tuple[int, int, int] = (255, 255, 255),
            outline_width: int = 1) -> np.ndarray:
    """(H, W, 3) uint8 image and (H, W) map in [0, 1] -> (H, W, 3) uint8 picture.

    Object pixels (``prob > threshold``) become round(min(brighten x, 255)), the others round(dim x). The
    object pixels within ``outline_width`` px of the background (the mask minus its 4-connected binary
    erosion repeated ``outline_width`` times; the picture's border is not an edge) take the ``outline``
    colour; ``outline_width`` 0 draws none. An empty mask gives the whole image darkened, with no outline.
    """
    image, prob = np.asarray(image), np.asarray(prob)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise PipelineError(f"overlay: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if prob.shape != image.shape[:2]:
        raise PipelineError(f"overlay: map {prob.shape} does not match image {image.shape[:2]}")
    if outline_width < 0:
        raise PipelineError(f"overlay: outline_width must be >= 0, got {outline_width}")
    mask = prob > threshold
    scale = np.where(mask, brighten, dim)[..., None]
    out = np.rint(np.clip(image * scale, 0, 255)).astype(np.uint8)
    if outline_width:
        inner = ndimage.binary_erosion(mask, iterations=outline_width, border_value=1)
        out[mask & ~inner] = outline
    return out
