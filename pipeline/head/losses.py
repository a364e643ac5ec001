"""Per-image self-supervised losses (paper Sec. 3.3, Eq. 10-13).

All functions take one image: logits (N, 2), embeddings z (N, E), pseudo-labels y (N,) (bool or
0/1 float, 1 = foreground).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.core.params import LossParams


def _labels(y, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(y, device=like.device).reshape(-1)


def bce_loss(logits: torch.Tensor, y) -> torch.Tensor:
    """Eq. 12: mean binary cross-entropy of sigmoid(l^(1)) on the foreground logit l^(1) = logits[:, 1]."""
    y = _labels(y, logits).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits[:, 1], y)


def dice_loss(p: torch.Tensor, y, eps: float = 1e-6, squared: bool = True) -> torch.Tensor:
    """Eq. 11 soft Dice on foreground probabilities p (callers pass softmax(logits)[:, 1]).

    ``squared=True`` (paper): 1 - (2 sum p y + eps) / (sum p^2 + sum y^2 + eps);
    ``squared=False`` (official code): denominator sum p + sum y + eps. They agree for binary p.
    An all-background mask with p ~ 0 gives ~0 loss thanks to eps.
    """
    p = p.reshape(-1)
    y = _labels(y, p).to(p.dtype)
    inter = (p * y).sum()
    den = (p * p).sum() + (y * y).sum() if squared else p.sum() + y.sum()
    return 1.0 - (2.0 * inter + eps) / (den + eps)


class _MeanRowLogSumExp(torch.autograd.Function):
    """mean_i log sum_k exp(<z_i, z_k> / T) over k != i (or all k), holding one N x N buffer.

    Autograd through ``torch.logsumexp(z @ z.T / T)`` keeps several N x N temporaries and recomputes
    the exponentials in backward; here the buffer becomes the row softmax P in place and the gradient
    is (P + P^T) z / (N T), two matrix products.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, temperature: float, include_self: bool) -> torch.Tensor:
        s = z @ (z / temperature).T
        if not include_self:
            s.diagonal().fill_(float("-inf"))
        row_max = s.amax(1, keepdim=True)
        row_sum = s.sub_(row_max).exp_().sum(1, keepdim=True)
        ctx.save_for_backward(z, s.div_(row_sum))
        ctx.temperature = temperature
        return (row_max + row_sum.log()).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, p = ctx.saved_tensors
        scale = grad / (z.shape[0] * ctx.temperature)
        return (p @ z).add_(p.T @ z).mul_(scale), None, None


def contrastive_loss(z: torch.Tensor, y, temperature: float = 0.05, include_self: bool = False) -> torch.Tensor:
    """Eq. 10 supervised contrastive (SupCon) loss over all patches of one image.

    z is L2-normalised, S = z z^T / temperature. Each anchor i's log-probabilities use the row
    denominator sum_{k != i} exp(S_ik) (paper, ``include_self=False``) or sum_k exp(S_ik) including the
    self term (official code, ``include_self=True``). Loss = -mean_i mean_{j in P_i} log prob_ij with
    P_i = {j != i : y_j = y_i}. If either class has fewer than 2 patches some anchor has no positive, and
    the loss is a zero that keeps the graph (so backward and DDP still work).
    Only the denominators touch N^2 memory, one float32 N x N buffer (:class:`_MeanRowLogSumExp`):
    the positives need no label mask, as sum_{j in P_i} S_ij = z_i . (sum of z over i's class) - S_ii.
    ~21 MB at N = 2304 (768 px / 16), 164 MB at N = 6400 (1280 px).
    """
    y = _labels(y, z).bool()
    n = y.numel()
    n_fg = int(y.sum())
    if n_fg < 2 or n - n_fg < 2:
        return z.sum() * 0.0
    z = F.normalize(z, dim=1)
    self_sim = (z * z).sum(1) / temperature
    # (N, E): sum of z over i's class, by products: indexing's backward is a scatter-add, slow and summed
    # in a different order on every call (training runs would differ)
    onehot = torch.stack([~y, y], 1).to(z.dtype)   # (N, 2): background, foreground
    class_sum = onehot @ (onehot.T @ z)
    positives = ((z * class_sum).sum(1) / temperature - self_sim) / torch.where(y, n_fg - 1, n - n_fg - 1)
    return _MeanRowLogSumExp.apply(z, temperature, include_self) - positives.mean()


def total_loss(logits: torch.Tensor, z: torch.Tensor, y, p: LossParams = LossParams()) -> tuple[torch.Tensor, dict]:
    """Eq. 13: w_con L_con + w_dice L_Dice + w_bce L_BCE (paper weights 0.1 / 1.0 / 1.0).

    Returns (total, {"bce", "dice", "con"} as Python floats of the unweighted components). A component
    with weight 0 is not computed and is reported as None.
    """
    y = _labels(y, logits)
    total = logits.sum() * 0.0
    parts: dict[str, float | None] = {"bce": None, "dice": None, "con": None}
    if p.w_bce:
        v = bce_loss(logits, y)
        total = total + p.w_bce * v
        parts["bce"] = float(v.detach())
    if p.w_dice:
        v = dice_loss(torch.softmax(logits, dim=-1)[:, 1], y, squared=p.dice_squared)
        total = total + p.w_dice * v
        parts["dice"] = float(v.detach())
    if p.w_con:
        v = contrastive_loss(z, y, temperature=p.temperature, include_self=p.include_self)
        total = total + p.w_con * v
        parts["con"] = float(v.detach())
    return total, parts
