"""Head (Eq. 9), losses (Eq. 10-13), training determinism / DDP, and inference maps."""
from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.head import Head, HeadError, fg_prob, load_head, predict_map, save_head
from pipeline.losses import bce_loss, contrastive_loss, dice_loss, total_loss
from pipeline.train import rank_order, train_head

torch.set_num_threads(1)


def synth(n=6, N=64, d=16, seed=0, centers_seed=0):
    """n images of N patches: two planted class centres (shared by all images) + noise."""
    mu = np.random.default_rng(centers_seed).normal(size=(2, d))
    rng = np.random.default_rng(1000 + seed)
    out = []
    for _ in range(n):
        y = np.zeros(N, bool)
        y[rng.permutation(N)[: rng.integers(N // 4, 3 * N // 4)]] = True
        f = mu[y.astype(int)] + 0.5 * rng.normal(size=(N, d))
        out.append((f.astype(np.float16), y))
    return out


# ---------------------------------------------------------------- head

def test_param_count():
    assert sum(p.numel() for p in Head(4096).parameters()) == 541_186
    d, h, e = 384, 128, 128
    assert sum(p.numel() for p in Head(d).parameters()) == (d * h + h) + (h * e + e) + (e * 2 + 2) == 66_050
    assert Head(384).config == {"dim": 384, "hidden": 128, "embed": 128, "n_classes": 2}


def test_forward_l2_normalises_input():
    torch.manual_seed(0)
    head = Head(16, hidden=8, embed=8)
    x = torch.randn(3, 10, 16)
    logits, z = head(x)
    assert logits.shape == (3, 10, 2) and z.shape == (3, 10, 8)
    logits7, z7 = head(7 * x)
    torch.testing.assert_close(logits7, logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(z7, z, rtol=0, atol=1e-6)
    # a float16 input gives the same result as float32 (normalised in float32)
    lh, _ = head(x.half())
    torch.testing.assert_close(lh, head(x.half().float())[0])
    with pytest.raises(ValueError):
        head(torch.full((2, 16), float("nan")))


def test_fg_prob():
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)], [2.0, 2.0 - math.log(3.0)]])
    torch.testing.assert_close(fg_prob(logits), torch.tensor([0.5, 0.75, 0.25]))


# ---------------------------------------------------------------- losses

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
    total, parts = total_loss(logits, z, y, w_bce=0.5, w_dice=2.0, w_con=0.3, dice_squared=False,
                              include_self=True, temperature=0.2)
    d_lin = dice_loss(torch.softmax(logits, -1)[:, 1], y, squared=False).item()
    c2 = contrastive_loss(z, y, temperature=0.2, include_self=True).item()
    assert total.item() == pytest.approx(0.5 * b + 2.0 * d_lin + 0.3 * c2, rel=1e-6)
    total, parts = total_loss(logits, z, y, w_con=0.0)
    assert parts["con"] is None and total.item() == pytest.approx(b + d, rel=1e-6)
    total, parts = total_loss(logits, z, y, w_bce=0.0, w_dice=0.0)
    assert parts["bce"] is None and parts["dice"] is None and total.item() == pytest.approx(0.1 * c, rel=1e-6)


# ---------------------------------------------------------------- training

def test_rank_order_partitions_and_pads():
    n = 7
    full = rank_order(n, epoch=1, seed=5)
    assert sorted(full) == list(range(n))
    assert full == list(np.random.default_rng(6).permutation(n))
    r0, r1 = rank_order(n, 1, 5, 0, 2), rank_order(n, 1, 5, 1, 2)
    assert len(r0) == len(r1) == 4
    assert r0 == full[0::2] and r1 == full[1::2] + [full[0]]  # rank 1 wraps to fill its 4th step


def _accuracy(head, images):
    with torch.no_grad():
        return float(np.mean([((fg_prob(head(f)[0]) > 0.5).numpy() == y).mean() for f, y in images]))


def test_training_deterministic_and_recovers_planted_labels():
    images = synth()
    h1, log1 = train_head(images, dim=16, seed=0, progress=False)
    h2, log2 = train_head(images, dim=16, seed=0, progress=False)
    s1, s2 = h1.state_dict(), h2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert [r["loss"] for r in log1] == [r["loss"] for r in log2]
    assert len(log1) == 3 * 6 and set(log1[0]) >= {"epoch", "step", "loss", "bce", "dice", "con"}
    assert [r["step"] for r in log1] == list(range(18)) and log1[-1]["epoch"] == 2
    h3, _ = train_head(images, dim=16, seed=1, progress=False)
    assert not all(torch.equal(s1[k], h3.state_dict()[k]) for k in s1)
    assert np.mean([r["loss"] for r in log1[-6:]]) < np.mean([r["loss"] for r in log1[:6]])
    assert _accuracy(h1, images) > 0.95
    assert _accuracy(h1, synth(n=4, seed=7)) > 0.95  # held-out images with the same planted split


def test_training_with_empty_and_full_masks():
    images = synth(n=3)
    f = images[0][0]
    images += [(f, np.zeros(64, bool)), (f, np.ones(64, bool))]
    seen = []
    head, log = train_head(images, dim=16, epochs=1, progress=False, on_step=seen.append)
    assert seen == log and len(log) == 5
    assert all(math.isfinite(r["loss"]) for r in log)
    degenerate = [r for r in log if r["image"] >= 3]
    assert len(degenerate) == 2 and all(r["con"] == 0.0 for r in degenerate)
    assert all(torch.isfinite(p).all() for p in head.parameters())


def test_training_rejects_mismatched_shapes():
    from pipeline.errors import PipelineError

    bad = [(np.zeros((4, 16), np.float32), np.zeros(5, bool))]
    with pytest.raises(PipelineError, match="training image 0"):
        train_head(bad, dim=16, epochs=1, progress=False)


# ---------------------------------------------------------------- save / load

def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    head = Head(16, hidden=8, embed=4)
    path = save_head(head, tmp_path / "sub" / "head.safetensors")
    loaded = load_head(path)
    assert loaded.config == head.config
    x = torch.randn(20, 16)
    for a, b in zip(head(x), loaded(x)):
        assert torch.equal(a, b)


def test_saved_head_bytes_are_reproducible(tmp_path):
    """The same weights give the same file (DVC hashes it): safetensors orders several metadata keys
    by a randomly seeded hash, so a two-key header differed between saves about half the time."""
    torch.manual_seed(0)
    head = Head(16)
    blobs = {save_head(head, tmp_path / f"h{k}.safetensors").read_bytes() for k in range(12)}
    assert len(blobs) == 1


def test_load_corrupt_or_missing_raises_head_error(tmp_path):
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header at all")
    with pytest.raises(HeadError, match="corrupt.safetensors") as ei:
        load_head(bad)
    assert "\n" not in str(ei.value)
    with pytest.raises(HeadError, match="missing.safetensors"):
        load_head(tmp_path / "missing.safetensors")
    # a valid safetensors file without a head config is rejected too
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(HeadError, match="other.safetensors"):
        load_head(other)


# ---------------------------------------------------------------- predict_map

def test_predict_map_shape_range_and_constant():
    torch.manual_seed(0)
    head = Head(16, hidden=8, embed=8)
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(5, 7, 16)).astype(np.float16)
    m = predict_map(head, feats, (37, 53))
    assert m.shape == (37, 53) and m.dtype == np.float32
    assert m.min() >= 0.0 and m.max() <= 1.0 and m.std() > 0
    const = np.broadcast_to(rng.normal(size=16).astype(np.float32), (4, 6, 16))  # read-only view
    mc = predict_map(head, const, (64, 96))
    p = fg_prob(head(torch.from_numpy(const[0, :1].copy()))[0]).item()
    assert np.abs(mc - p).max() < 1e-6


def test_predict_map_bilinear_edges_and_chunking():
    torch.manual_seed(0)
    head = Head(8, hidden=8, embed=8)
    a, b = np.eye(8, dtype=np.float32)[0], np.eye(8, dtype=np.float32)[1]
    feats = np.stack([np.stack([a, b])] * 3)  # (3, 2, 8): left column a, right column b
    pa, pb = (fg_prob(head(torch.from_numpy(v[None]))[0]).item() for v in (a, b))
    m = predict_map(head, feats, (6, 8))
    # align_corners=False: output pixels within half a patch of the border copy the border patch
    np.testing.assert_allclose(m[:, :2], pa, atol=1e-6)
    np.testing.assert_allclose(m[:, -2:], pb, atol=1e-6)
    assert min(pa, pb) - 1e-6 <= m[:, 3].min() and m[:, 3].max() <= max(pa, pb) + 1e-6
    big = np.random.default_rng(1).normal(size=(13, 11, 8)).astype(np.float32)
    full = predict_map(head, big, (50, 40))
    np.testing.assert_allclose(predict_map(head, big, (50, 40), chunk=10), full, rtol=0, atol=1e-6)
    np.testing.assert_allclose(predict_map(head, torch.from_numpy(big), (50, 40), chunk=7), full, atol=1e-6)


# ---------------------------------------------------------------- DDP

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world_size, port, images, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        head, log = train_head(images, dim=16, epochs=2, seed=3, rank=rank, world_size=world_size,
                               progress=False)
        torch.save({"state": head.state_dict(), "images": [r["image"] for r in log]},
                   f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _reference_global_batch(images, epochs, seed, world_size):
    """Single process: each step averages the gradients of world_size images (what DDP must do)."""
    torch.manual_seed(seed)
    head = Head(16)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3, weight_decay=1e-5)
    for epoch in range(epochs):
        per_rank = [rank_order(len(images), epoch, seed, r, world_size) for r in range(world_size)]
        for batch in zip(*per_rank):
            grads = []
            for i in batch:
                head.zero_grad()
                f, y = images[i]
                logits, z = head(f)
                total_loss(logits, z, y)[0].backward()
                grads.append([p.grad.clone() for p in head.parameters()])
            for p, *gs in zip(head.parameters(), *grads):
                p.grad = sum(gs) / world_size
            opt.step()
    return head.state_dict()


@pytest.mark.slow
def test_ddp_two_ranks_identical_weights(tmp_path):
    import torch.multiprocessing as mp

    images = synth(n=5)  # odd count: rank 1 wraps around to keep the step counts equal
    mp.spawn(_ddp_worker, args=(2, _free_port(), images, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["images"] != r1["images"]  # the ranks saw different images ...
    assert all(torch.equal(r0["state"][k], r1["state"][k]) for k in r0["state"])  # ... yet agree exactly
    ref = _reference_global_batch(images, epochs=2, seed=3, world_size=2)
    for k, v in ref.items():
        torch.testing.assert_close(r0["state"][k], v, rtol=1e-5, atol=1e-6)
    torch.manual_seed(3)
    init = Head(16).state_dict()
    assert not all(torch.equal(init[k], r0["state"][k]) for k in init)
