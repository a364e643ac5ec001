"""Small feature utilities shared by NCut, IPO and the head."""
from __future__ import annotations

import numpy as np
import torch


def l2_normalize(x, axis: int = -1, eps: float = 1e-12):
    """L2-normalise along ``axis`` (paper Eq. 5); works on numpy arrays and torch tensors.

    Raises ValueError on non-finite input, which would otherwise poison every later step.
    """
    if isinstance(x, torch.Tensor):
        if not torch.isfinite(x).all():
            raise ValueError("features contain NaN or Inf values")
        return x / x.norm(dim=axis, keepdim=True).clamp_min(eps)
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or Inf values")
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), eps)
