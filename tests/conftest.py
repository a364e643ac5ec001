"""Shared fixtures: tiny random DINOv2/DINOv3 models built in code and small on-disk datasets."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_MODEL = SHARED / "models" / "dinov2-small-imgfocus"
SHARED_DUTS = SHARED / "datasets" / "DUTS-TR"
needs_shared_model = pytest.mark.skipif(not SHARED_MODEL.is_dir(), reason="../shared model not present")
needs_shared_duts = pytest.mark.skipif(not SHARED_DUTS.is_dir(), reason="../shared DUTS-TR not present")


def tiny_dinov2(registers: int = 0):
    from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    torch.manual_seed(0)
    kw = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
              patch_size=14, image_size=56)
    if registers:
        return Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=registers, **kw)).eval()
    return Dinov2Model(Dinov2Config(mlp_ratio=2, **kw)).eval()


def tiny_dinov3():
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(0)
    cfg = DINOv3ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          patch_size=16, num_register_tokens=4, image_size=64)
    return DINOv3ViTModel(cfg).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random DINOv2 saved as a local Hugging Face directory (the offline loading path)."""
    d = tmp_path_factory.mktemp("tiny-dinov2")
    tiny_dinov2().save_pretrained(d)
    return d


def write_pairs(root: Path, n: int = 5, size=(60, 45), images="images", masks="masks", seed=0) -> Path:
    """n random RGB JPEGs + binary PNG masks under root/images, root/masks; returns root."""
    rng = np.random.default_rng(seed)
    (root / images).mkdir(parents=True, exist_ok=True)
    (root / masks).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        w, h = size
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / images / f"im{i:02d}.jpg")
        m = np.zeros((h, w), np.uint8)
        m[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255
        Image.fromarray(m).save(root / masks / f"im{i:02d}.png")
    return root


@pytest.fixture
def pairs(tmp_path) -> Path:
    return write_pairs(tmp_path / "ds")
