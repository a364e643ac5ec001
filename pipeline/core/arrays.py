"""Small feature utilities shared by NCut, IPO and the head."""
from __future__ import annotations

import numpy as np
import torch


def l2_normalize(x, axis: int = -1, eps: float = 1e-12):
    """L2-normalise along ``axis`` (paper Eq. 5); works on numpy arrays and torch tensors.

    Raises ValueError on non-finite input, which would otherwise poison every later step.
    """
    if isinstance(x, torch.Tensor):
        norm = x.norm(dim=axis, keepdim=True).clamp_min(eps)
        finite = bool(torch.isfinite(norm).all())
    else:
        x = np.asarray(x, dtype=np.float32)
        norm = np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), eps)
        finite = bool(np.isfinite(norm).all())
    if not finite:  # a NaN or Inf anywhere reaches its row's norm; checked there, no full-size mask
        raise ValueError("features contain NaN or Inf values")
    return x / norm
