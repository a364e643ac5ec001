"""Lightweight patch head (paper Sec. 3.3, Eq. 9) and its inference (docs/method.md "Method: inference").

The head sees one patch feature at a time, so it runs on any grid size (any input resolution that
is a multiple of the patch size). Weights are saved as a safetensors file whose metadata holds the
JSON config needed to rebuild the module.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.core.arrays import l2_normalize
from pipeline.core.errors import PipelineError
from pipeline.core.files import atomic_write
from pipeline.core.maps import upsample

HEAD_FORMAT = "selfment-head/1"


class HeadError(PipelineError):
    pass


def as_tensor(x) -> torch.Tensor:
    """numpy array / tensor -> tensor without a copy when possible (read-only arrays are copied)."""
    if isinstance(x, torch.Tensor):
        return x
    a = np.asarray(x)
    if not a.flags.writeable or not a.flags.c_contiguous:
        a = np.array(a, order="C")
    return torch.from_numpy(a)


class Head(nn.Module):
    """Projection phi_theta (Eq. 9: z = W2 relu(W1 f + b1) + b2) followed by the classifier l = Wc z + bc.

    ``forward`` L2-normalises the raw patch features in float32 first (docs/method.md "Method: head and losses": the head's input
    is L2-normalised features), so callers pass features straight from the store (float16 is fine).
    For dim 4096 and the defaults this has 541,186 parameters (the paper's 0.54M).
    """

    def __init__(self, dim: int, hidden: int = 128, embed: int = 128, n_classes: int = 2):
        super().__init__()
        self._config = {"dim": int(dim), "hidden": int(hidden), "embed": int(embed), "n_classes": int(n_classes)}
        self.proj = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, embed))
        self.classifier = nn.Linear(embed, n_classes)

    @property
    def config(self) -> dict:
        """Constructor arguments (``Head(**head.config)`` rebuilds the architecture)."""
        return dict(self._config)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., N, d) raw features -> (logits (..., N, n_classes), embeddings z (..., N, embed))."""
        w = self.classifier.weight
        f = as_tensor(features).to(device=w.device, dtype=torch.float32)
        if f.shape[-1] != self._config["dim"]:
            raise ValueError(f"head expects feature dim {self._config['dim']}, got {f.shape[-1]}")
        z = self.proj(l2_normalize(f, axis=-1))
        return self.classifier(z), z


def fg_prob(logits: torch.Tensor) -> torch.Tensor:
    """Foreground probability p = softmax(l)[..., 1] (docs/method.md "Method: inference")."""
    return torch.softmax(logits, dim=-1)[..., 1]


def save_head(head: Head, path) -> Path:
    """Write the head's weights + JSON config (safetensors metadata) atomically to ``path``."""
    from safetensors.torch import save

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    # one metadata key: safetensors writes several in hash order, so the same head gave different bytes
    meta = {HEAD_FORMAT: json.dumps(head.config, sort_keys=True)}
    atomic_write(path, lambda f: f.write(save(state, metadata=meta)))
    return path


def load_head(path, device="cpu") -> Head:
    """Rebuild a :class:`Head` saved by :func:`save_head`; raises HeadError naming the file if unreadable."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise HeadError(f"head weights file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
        if HEAD_FORMAT not in meta:
            raise ValueError(f"metadata is not a {HEAD_FORMAT} file")
        head = Head(**json.loads(meta[HEAD_FORMAT]))
        head.load_state_dict(state, strict=True)
    except Exception as e:  # safetensors, json and state-dict errors all mean "not a valid head file"
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise HeadError(f"cannot read head weights {path}: {reason}") from None
    return head.to(device).eval()


def predict_map(head: Head, features_hw_d, size: tuple[int, int], chunk: int = 65536) -> np.ndarray:
    """Foreground probability map (docs/method.md "Method: inference").

    p = softmax(head(f))[:, 1] on the h x w patch grid, bilinearly upsampled (align_corners=False) to
    ``size`` = (H, W), clamped to [0, 1]; float32 (H, W). Patches are pushed through the head ``chunk``
    rows at a time (each chunk is converted to float32 on its own), so 160 x 160 grids at 2560 px with
    d = 4096 stay within memory.
    """
    if features_hw_d.ndim != 3:
        raise ValueError(f"predict_map expects (h, w, d) features, got shape {tuple(features_hw_d.shape)}")
    h, w, d = (int(s) for s in features_hw_d.shape)
    H, W = (int(s) for s in size)
    return upsample(patch_probs(head, features_hw_d.reshape(h * w, d), chunk).reshape(h, w), (H, W))


def patch_probs(head: Head, features, chunk: int = 65536) -> torch.Tensor:
    """Foreground probability of each of N patches, (N, d) features -> (N,) float32 tensor on the head's
    device; ``chunk`` rows at a time, each converted to float32 on its own."""
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    device = head.classifier.weight.device
    probs = []
    with torch.no_grad():
        for s in range(0, features.shape[0], chunk):
            part = features[s : s + chunk]
            if not isinstance(part, torch.Tensor):
                part = torch.from_numpy(np.array(part, dtype=np.float32))
            logits, _ = head(part.to(device))
            probs.append(fg_prob(logits))
    return torch.cat(probs)


def fuse_views(head: Head, views, size: tuple[int, int]) -> np.ndarray:
    """Multi-view inference (docs/results.md "Beyond the paper"): the mean over ``views`` = [(features (h, w, d),
    mirrored)] of :func:`predict_map` at the image size, each mirrored view's map flipped back first.
    One unmirrored view gives exactly :func:`predict_map` (the paper)."""
    if not views:
        raise ValueError("fuse_views needs at least one view")

    def unmirrored(features, mirrored: bool) -> np.ndarray:
        prob = predict_map(head, features, size)
        return prob[:, ::-1] if mirrored else prob

    return sum(unmirrored(*view) for view in views) / len(views)
