"""Frozen ViT backbones (DINOv3, DINOv2 with or without registers, DINO v1) through transformers.

``load_backbone(name)`` accepts a Hugging Face id (``facebook/dinov3-vit7b16-pretrain-lvd1689m``,
``facebook/dinov2-small``, ``facebook/dino-vits16``) or a local model directory. DINO v1 is transformers'
``ViTModel`` (TokenCut's, FOUND's and SelfMask's backbone): its position embeddings are interpolated to any
resolution that is a multiple of its patch. The model is always in ``eval()`` mode
(DINOv3's RoPE jitter applies in train mode only and would corrupt features). Preprocessing follows
docs/method.md "Method": RGB, square resize to ``resolution`` (bilinear, aspect ratio not kept), ImageNet
mean/std. The forward returns the final-normed patch tokens as an (h, w, d) grid per image (CLS and
register tokens dropped) and the CLS token (for the CLS baseline of paper Table 4). With ``features="keys"``
the grid holds instead the last block's attention keys (its key projection's output, all heads side by side,
as TokenCut and FOUND build their graph from): one hook on that projection, same shapes.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image

from pipeline.core.errors import PipelineError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SUPPORTED_MODEL_TYPES = ("dinov3_vit", "dinov2", "dinov2_with_registers", "vit")
FEATURES = ("tokens", "keys")  # backbone.features: the last layer's output tokens (the paper's) or its keys
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class BackboneError(PipelineError):
    pass


def vit7b16_config(layers: int = 40, **overrides):
    """transformers' ``DINOv3ViTConfig`` of the paper's backbone (released ViT-7B/16, LVD-1689M): width
    4096, 32 heads, gated SiLU MLP of 8192, patch 16, 4 register tokens, LayerScale 1e-5, no query/key/
    value biases, RoPE theta 100 with coordinate rescale 2; ``layers`` of its 40 blocks. With random
    weights it stands in for the real checkpoint where only shapes and cost matter (benchmarks, tests)."""
    from transformers import DINOv3ViTConfig

    cfg = dict(hidden_size=4096, num_attention_heads=32, intermediate_size=8192, num_hidden_layers=layers,
               patch_size=16, num_register_tokens=4, use_gated_mlp=True, hidden_act="silu", layerscale_value=1e-5,
               query_bias=False, key_bias=False, value_bias=False, rope_theta=100.0, pos_embed_rescale=2.0,
               image_size=224)
    return DINOv3ViTConfig(**{**cfg, **overrides})


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present (the local rank's GPU under torchrun), else the CPU."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    return torch.device(device)


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _from_pretrained(loader, name: str, **kw):
    """``loader.from_pretrained`` (AutoConfig or AutoModel) on a local directory, the local Hugging Face
    cache, or the hub, with one-line errors."""
    if Path(name).is_dir():
        return loader.from_pretrained(name, local_files_only=True, **kw)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:  # a path, not an owner/model id
        raise BackboneError(f"backbone.name {name!r}: no such model directory")
    try:  # a hub id already in the local cache loads without any network traffic
        return loader.from_pretrained(name, local_files_only=True, **kw)
    except OSError:
        pass
    if not _hub_reachable():
        raise BackboneError(
            f"backbone.name {name!r} is not in the local Hugging Face cache and the hub is unreachable; "
            f"download it elsewhere and point backbone.name at the local directory "
            f"(e.g. dvc exp run -S backbone.name=/path/to/model)"
        )
    try:
        return loader.from_pretrained(name, **kw)
    except OSError as exc:  # gated (DINOv3 needs the licence accepted) or misspelt ids
        raise BackboneError(f"backbone.name {name!r}: {str(exc).splitlines()[0]}") from None


@dataclass
class BackboneInfo:
    """The token layout of a ViT, known from its config alone (no weights loaded)."""

    name: str
    patch_size: int
    num_prefix_tokens: int  # CLS + registers
    hidden_size: int
    features: str = "tokens"  # FEATURES: what the patch grid holds

    @classmethod
    def from_config(cls, cfg, name: str, features: str = "tokens") -> "BackboneInfo":
        if cfg.model_type not in SUPPORTED_MODEL_TYPES:
            raise BackboneError(f"backbone.name {name!r}: model type {cfg.model_type!r} is not one of "
                                f"{', '.join(SUPPORTED_MODEL_TYPES)}")
        if features not in FEATURES:
            raise BackboneError(f"backbone.features {features!r}: not one of {', '.join(FEATURES)}")
        registers = getattr(cfg, "num_register_tokens", 0) or 0
        return cls(name, int(cfg.patch_size), 1 + registers, int(cfg.hidden_size), features)

    def grid(self, resolution: int) -> int:
        """Patches per side at ``resolution``; the resolution must be a multiple of the patch size."""
        if resolution <= 0 or resolution % self.patch_size:
            raise BackboneError(
                f"backbone.resolution {resolution} is not a positive multiple of the patch size "
                f"{self.patch_size} of {self.name} (nearest: {max(1, round(resolution / self.patch_size)) * self.patch_size})"
            )
        return resolution // self.patch_size


def backbone_info(name: str, features: str = "tokens") -> BackboneInfo:
    """Patch size, prefix tokens and width from the model's config only: cheap checks (resolution, image
    sizes) run on it before the weights are loaded."""
    from transformers import AutoConfig

    return BackboneInfo.from_config(_from_pretrained(AutoConfig, name), name, features)


def last_key_projection(model: torch.nn.Module) -> torch.nn.Module:
    """The attention key projection of the model's last block (``key`` in ViT and DINOv2, ``k_proj`` in
    DINOv3): the last such module in the model's order."""
    keys = [m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in ("key", "k_proj")]
    if not keys:
        raise BackboneError(f"{type(model).__name__}: no attention key projection (key / k_proj) found")
    return keys[-1]


@dataclass
class Backbone(BackboneInfo):
    """A loaded frozen ViT and the facts about its token layout."""

    model: torch.nn.Module = None
    device: torch.device = None
    dtype: torch.dtype = None
    key_projection: torch.nn.Module | None = None  # hooked when features == "keys" (found once, at load)

    @torch.inference_mode()
    def __call__(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) normalised pixels -> patch tokens (B, h, w, d) and CLS tokens (B, d)."""
        b, _, s, _ = pixel_values.shape
        g = self.grid(s)
        pixel_values = pixel_values.to(self.device, self.dtype)
        kw = {"interpolate_pos_encoding": True} if self.model.config.model_type == "vit" else {}  # DINO v1
        keys = []
        hook = (self.key_projection.register_forward_hook(lambda m, i, out: keys.append(out))
                if self.key_projection is not None else None)
        try:
            tokens = self.model(pixel_values=pixel_values, **kw).last_hidden_state
        finally:
            if hook is not None:
                hook.remove()
        grid = keys[0] if keys else tokens
        patches = grid[:, self.num_prefix_tokens :].reshape(b, g, g, self.hidden_size)
        return patches, tokens[:, 0]


def from_model(model: torch.nn.Module, name: str, device: str = "auto", features: str = "tokens") -> Backbone:
    """Wrap an already-built transformers ViT (tests build tiny random ones in code)."""
    info = BackboneInfo.from_config(model.config, name, features)
    dev = resolve_device(device)
    model = model.to(dev).eval().requires_grad_(False)
    return Backbone(**vars(info), model=model, device=dev, dtype=next(model.parameters()).dtype,
                    key_projection=last_key_projection(model) if features == "keys" else None)


def load_backbone(name: str, dtype: str = "float32", device: str = "auto", revision: str | None = None,
                  features: str = "tokens") -> Backbone:
    """Load a frozen DINOv3/DINOv2/DINO v1 by Hugging Face id or local directory (``dtype`` as in backbone.dtype,
    ``features`` as backbone.features); ``revision``: a hub commit (ignored for a local directory)."""
    from transformers import AutoConfig, AutoModel

    pinned = {"revision": revision} if revision and not Path(name).is_dir() else {}
    cfg = _from_pretrained(AutoConfig, name, **pinned)
    BackboneInfo.from_config(cfg, name, features)  # an unsupported model type fails before any weight is read
    extra = {"add_pooling_layer": False} if cfg.model_type == "vit" else {}  # DINO v1: no pooler weights
    return from_model(_from_pretrained(AutoModel, name, dtype=DTYPES[dtype], **pinned, **extra), name, device, features)


def backbone_revision(name: str) -> str | None:
    """The hub commit of a backbone id in the local Hugging Face cache (its snapshot that ``refs/main`` names,
    where extraction loaded it from); None for a local directory or an id not in the cache."""
    from huggingface_hub import try_to_load_from_cache

    path = None if Path(name).is_dir() else try_to_load_from_cache(name, "config.json")
    return Path(path).parent.name if isinstance(path, str) else None


def preprocess(image: np.ndarray, resolution: int, hflip: bool = False) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (3, S, S): bilinear square resize, ImageNet mean/std; mirrored left
    to right after the resize when ``hflip`` (so the mirrored view is exactly the flipped input)."""
    resized = Image.fromarray(image).resize((resolution, resolution), Image.BILINEAR)
    x = np.asarray(resized, dtype=np.float32) / 255.0
    x = ((x - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    return np.ascontiguousarray(x[:, :, ::-1]) if hflip else x
