"""Overlay drawing (pipeline/core/overlay.py): exact pixels on a tiny planted image."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.errors import PipelineError
from pipeline.core.overlay import overlay

WHITE = (255, 255, 255)


@pytest.fixture
def planted() -> tuple[np.ndarray, np.ndarray]:
    """A 9 x 9 image of colour (100, 50, 240) with a 5 x 5 object (rows and columns 2..6) in the map."""
    image = np.empty((9, 9, 3), np.uint8)
    image[:] = (100, 50, 240)
    prob = np.zeros((9, 9))
    prob[2:7, 2:7] = 0.9
    return image, prob


def test_background_object_and_outline_pixels(planted):
    image, prob = planted
    out = overlay(image, prob, outline=(0, 255, 0))
    assert out.dtype == np.uint8 and out.shape == (9, 9, 3)
    assert tuple(out[0, 0]) == (40, 20, 96)           # 0.4 x: background darkened
    assert tuple(out[4, 4]) == (110, 55, 255)         # 1.1 x, 264 clipped to 255: interior brightened
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7], ring[3:6, 3:6] = True, False      # the object's 1-px inner boundary
    assert (out[ring] == (0, 255, 0)).all()
    assert (out[3:6, 3:6] == (110, 55, 255)).all()
    assert (out[~ring & (prob == 0)] == (40, 20, 96)).all()


def test_outline_width_and_none(planted):
    image, prob = planted
    wide = overlay(image, prob, outline_width=2)
    two_rings = np.zeros((9, 9), bool)
    two_rings[2:7, 2:7], two_rings[4, 4] = True, False  # a 5 x 5 object less its centre, 3 px in
    assert (wide[two_rings] == WHITE).all() and tuple(wide[4, 4]) == (110, 55, 255)
    bare = overlay(image, prob, outline_width=0)
    assert (bare[2:7, 2:7] == (110, 55, 255)).all()


def test_threshold_is_strict(planted):
    image, prob = planted
    assert tuple(overlay(image, prob, threshold=0.9)[4, 4]) == (40, 20, 96)   # 0.9 is not > 0.9
    assert tuple(overlay(image, prob, threshold=0.89)[4, 4]) == (110, 55, 255)


def test_object_at_the_picture_edge_has_no_outline_there(planted):
    image, _ = planted
    prob = np.zeros((9, 9))
    prob[:, :4] = 1                                   # touches the top, bottom and left edges
    out = overlay(image, prob)
    assert (out[:, 3] == WHITE).all()                 # its edge against the background
    assert (out[1:8, :3] == (110, 55, 255)).all()     # no outline along the picture's border
    assert (out[0, :3] == (110, 55, 255)).all() and (out[8, :3] == (110, 55, 255)).all()


def test_empty_mask_darkens_everything(planted):
    image, _ = planted
    out = overlay(image, np.zeros((9, 9)))
    assert (out == (40, 20, 96)).all()


def test_wrong_shapes_raise(planted):
    image, prob = planted
    with pytest.raises(PipelineError, match="does not match"):
        overlay(image, prob[:8])
    with pytest.raises(PipelineError, match="uint8"):
        overlay(image.astype(np.float32), prob)
