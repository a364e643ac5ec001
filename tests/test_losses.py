"""Losses (Eq. 10-13): hand-computed values, the plain SupCon formula, gradients."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.core.params import LossParams
from pipeline.head.losses import bce_loss, contrastive_loss, dice_loss, total_loss

torch.set_num_threads(1)


Y4 = torch.tensor([1.0, 1.0, 0.0, 0.0])


def test_bce_hand_computed():
    # foreground logits 0, ln3, -ln3, 0 -> sigmoid .5, .75, .25, .5; the background logit is ignored
    l1 = torch.tensor([0.0, math.log(3.0), -math.log(3.0), 0.0])
    logits = torch.stack([torch.tensor([5.0, -3.0, 2.0, 0.0]), l1], dim=1)
    # -(1/4)[ln .5 + ln .75 + ln(1 - .25) + ln(1 - .5)] = (ln 2 + ln 4/3) / 2 = ln(8/3) / 2
    expected = math.log(8 / 3) / 2
    assert expected == pytest.approx(0.490414, abs=1e-6)
    assert bce_loss(logits, Y4).item() == pytest.approx(expected, rel=1e-6)
    assert bce_loss(logits, Y4.bool()).item() == pytest.approx(expected, rel=1e-6)


def test_dice_hand_computed():
    p = torch.tensor([0.5, 0.75, 0.25, 0.5])
    # sum p y = 1.25, sum p^2 = 1.125, sum y^2 = 2, sum p = 2, sum y = 2
    sq = dice_loss(p, Y4)                    # 1 - 2.5 / 3.125 = 0.2
    lin = dice_loss(p, Y4, squared=False)    # 1 - 2.5 / 4     = 0.375
    assert sq.item() == pytest.approx(1 - (2.5 + 1e-6) / (3.125 + 1e-6), rel=1e-6)
    assert sq.item() == pytest.approx(0.2, abs=1e-6)
    assert lin.item() == pytest.approx(0.375, abs=1e-6)
    # p^2 <= p, so the paper's squared denominator is smaller and its loss lower; equal for binary p
    pb = torch.tensor([1.0, 0.0, 1.0, 0.0])
    assert dice_loss(pb, Y4).item() == pytest.approx(dice_loss(pb, Y4, squared=False).item(), abs=1e-7)
    assert dice_loss(pb, Y4).item() == pytest.approx(0.5, abs=1e-6)
    # eps keeps an all-background mask with p = 0 finite (and zero)
    assert dice_loss(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(0.0, abs=1e-7)


def naive_supcon(z, y, temperature, include_self):
    z = np.asarray(z, np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    y = np.asarray(y).astype(bool)
    n = len(y)
    per_anchor = []
    for i in range(n):
        denom = 0.0
        for k in range(n):
            if k != i or include_self:
                denom += math.exp(z[i] @ z[k] / temperature)
        terms = [math.log(math.exp(z[i] @ z[j] / temperature) / denom) for j in range(n) if j != i and y[j] == y[i]]
        per_anchor.append(sum(terms) / len(terms))
    return -sum(per_anchor) / n


@pytest.mark.parametrize("include_self", [False, True])
@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_contrastive_matches_naive(include_self, temperature):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(9, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([1, 0, 0, 1, 1, 0, 1, 0, 0], dtype=torch.bool)
    got = contrastive_loss(z, y, temperature=temperature, include_self=include_self).item()
    assert got == pytest.approx(naive_supcon(z.numpy(), y.numpy(), temperature, include_self), rel=1e-9)


@pytest.mark.parametrize("include_self", [False, True])
def test_contrastive_gradient_matches_autograd_reference(include_self):
    """The fused denominator's hand-written backward equals autograd through the plain formula."""
    g = torch.Generator().manual_seed(4)
    z0 = torch.randn(12, 6, generator=g, dtype=torch.float64)
    y = torch.tensor([1, 0, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0], dtype=torch.bool)
    t = 0.1
    z = z0.clone().requires_grad_(True)
    contrastive_loss(z, y, temperature=t, include_self=include_self).backward()
    ref = z0.clone().requires_grad_(True)
    zn = torch.nn.functional.normalize(ref, dim=1)
    s = zn @ zn.T / t
    eye = torch.eye(12, dtype=torch.bool)
    log_prob = s - torch.logsumexp(s if include_self else s.masked_fill(eye, float("-inf")), 1, keepdim=True)
    pos = (y[:, None] == y[None, :]) & ~eye
    (-((log_prob * pos).sum(1) / pos.sum(1)).mean()).backward()
    assert torch.allclose(z.grad, ref.grad, atol=1e-12)
    assert ref.grad.abs().max() > 1e-3  # a real gradient, not two zeros


def test_contrastive_self_term_changes_value():
    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([1, 1, 1, 0, 0, 0, 0, 1])
    a = contrastive_loss(z, y, include_self=False).item()
    b = contrastive_loss(z, y, include_self=True).item()
    assert b > a + 1e-3  # the extra exp(1/tau) term in every denominator lowers each log-probability


def test_contrastive_degenerate_and_separated():
    z = torch.randn(6, 4, requires_grad=True)
    for y in ([1, 0, 0, 0, 0, 0], [0] * 6, [1] * 6):
        loss = contrastive_loss(z, torch.tensor(y))
        assert loss.item() == 0.0
        loss.backward()  # grad-compatible zero
        assert z.grad is not None and float(z.grad.abs().sum()) == 0.0
    y = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    onehot = F.one_hot(y, 2).float()
    rand = torch.randn(10, 2, generator=torch.Generator().manual_seed(1))
    sep = contrastive_loss(onehot, y).item()
    assert sep < contrastive_loss(rand, y).item() - 0.5
    # separated: S = 20 within class, 0 across -> loss ~ mean_i log(|P_i|), the minimum
    expected = (4 * math.log(3) + 6 * math.log(5)) / 10
    assert sep == pytest.approx(expected, abs=1e-6)


def test_contrastive_finite_gradients_at_low_temperature():
    z = torch.randn(50, 8, requires_grad=True)
    y = torch.arange(50) % 3 == 0
    loss = contrastive_loss(z, y, temperature=0.001)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_total_loss_weights():
    g = torch.Generator().manual_seed(0)
    logits, z = torch.randn(12, 2, generator=g), torch.randn(12, 6, generator=g)
    y = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0], dtype=torch.bool)
    b = bce_loss(logits, y).item()
    d = dice_loss(torch.softmax(logits, -1)[:, 1], y).item()
    c = contrastive_loss(z, y).item()
    total, parts = total_loss(logits, z, y)
    assert parts == pytest.approx({"bce": b, "dice": d, "con": c})
    assert total.item() == pytest.approx(1.0 * b + 1.0 * d + 0.1 * c, rel=1e-6)
    total, parts = total_loss(logits, z, y, LossParams(w_bce=0.5, w_dice=2.0, w_con=0.3, dice_squared=False,
                                                   include_self=True, temperature=0.2))
    d_lin = dice_loss(torch.softmax(logits, -1)[:, 1], y, squared=False).item()
    c2 = contrastive_loss(z, y, temperature=0.2, include_self=True).item()
    assert total.item() == pytest.approx(0.5 * b + 2.0 * d_lin + 0.3 * c2, rel=1e-6)
    total, parts = total_loss(logits, z, y, LossParams(w_con=0.0))
    assert parts["con"] is None and total.item() == pytest.approx(b + d, rel=1e-6)
    total, parts = total_loss(logits, z, y, LossParams(w_bce=0.0, w_dice=0.0))
    assert parts["bce"] is None and parts["dice"] is None and total.item() == pytest.approx(0.1 * c, rel=1e-6)


def test_the_contrastive_gradient_is_the_same_on_every_call():
    """Indexing by labels had a backward (a parallel scatter-add) whose sums came out in a different order
    on every call, so training runs differed; the class sums are products now."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = torch.Generator().manual_seed(0)
        z0, y = torch.randn(2048, 128, generator=g), torch.rand(2048, generator=g) < 0.3
        grads = set()
        for _ in range(8):
            z = z0.clone().requires_grad_()
            contrastive_loss(z, y).backward()
            grads.add(z.grad.numpy().tobytes())
        assert len(grads) == 1
    finally:
        torch.set_num_threads(threads)
