"""Head training (Sec. 3.3, 4.1): determinism, planted labels, DDP equals the global-batch reference."""
from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch

from pipeline.core.errors import PipelineError
from pipeline.core.params import TrainParams
from pipeline.head.losses import total_loss
from pipeline.head.model import Head, fg_prob
from pipeline.head.train import HeadLabelled, Labelled, rank_order, self_train, train_head

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
    h1, log1 = train_head(images, dim=16, train=TrainParams(seed=0), progress=False)
    h2, log2 = train_head(images, dim=16, train=TrainParams(seed=0), progress=False)
    s1, s2 = h1.state_dict(), h2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert [r["loss"] for r in log1] == [r["loss"] for r in log2]
    assert len(log1) == 3 * 6 and set(log1[0]) >= {"epoch", "step", "loss", "bce", "dice", "con"}
    assert [r["step"] for r in log1] == list(range(18)) and log1[-1]["epoch"] == 2
    h3, _ = train_head(images, dim=16, train=TrainParams(seed=1), progress=False)
    assert not all(torch.equal(s1[k], h3.state_dict()[k]) for k in s1)
    assert np.mean([r["loss"] for r in log1[-6:]]) < np.mean([r["loss"] for r in log1[:6]])
    assert _accuracy(h1, images) > 0.95
    assert _accuracy(h1, synth(n=4, seed=7)) > 0.95  # held-out images with the same planted split


def test_training_with_empty_and_full_masks():
    images = synth(n=3)
    f = images[0][0]
    images += [(f, np.zeros(64, bool)), (f, np.ones(64, bool))]
    seen = []
    head, log = train_head(images, dim=16, train=TrainParams(epochs=1), progress=False, on_step=seen.append)
    assert seen == log and len(log) == 5
    assert all(math.isfinite(r["loss"]) for r in log)
    degenerate = [r for r in log if r["image"] >= 3]
    assert len(degenerate) == 2 and all(r["con"] == 0.0 for r in degenerate)
    assert all(torch.isfinite(p).all() for p in head.parameters())


def test_training_rejects_mismatched_shapes():
    bad = [(np.zeros((4, 16), np.float32), np.zeros(5, bool))]
    with pytest.raises(PipelineError, match="training image 0"):
        train_head(bad, dim=16, train=TrainParams(epochs=1), progress=False)

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world_size, port, images, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        head, log = train_head(images, dim=16, train=TrainParams(epochs=2, seed=3), rank=rank, world_size=world_size,
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


class Images:
    """A feature store look-alike over synth(): len, features(i), dim."""

    def __init__(self, images):
        self.images, self.dim = images, images[0][0].shape[1]

    def __len__(self):
        return len(self.images)

    def features(self, i):
        return self.images[i][0]


def test_self_training_round_trains_on_the_previous_heads_labels():
    images = synth(n=8)
    inverted = [(f, ~y) for f, y in images]   # a planted round-1 head that labels the background
    h1, _ = train_head(inverted, dim=16, progress=False)
    assert _accuracy(h1, inverted) > 0.98
    labelled = HeadLabelled(Images(images), h1, threshold=0.5)
    for (f, _), labels in zip(images, labelled.masks):
        with torch.no_grad():
            np.testing.assert_array_equal(labels, (fg_prob(h1(f)[0]) > 0.5).numpy())
    h2, log = self_train(Images(images), h1, rounds=2, threshold=0.5, train=TrainParams(seed=3), progress=False)
    assert h2 is not h1 and {r["round"] for r in log} == {2} and len(log) == 3 * 8
    assert _accuracy(h2, inverted) > 0.98 and _accuracy(h2, images) < 0.02  # it learnt round 1's labels
    same, log1 = self_train(Images(images), h1, rounds=1, threshold=0.5, progress=False)
    assert same is h1 and log1 == []
    strict = HeadLabelled(Images(images), h1, threshold=0.999)
    assert sum(m.sum() for m in strict.masks) < sum(m.sum() for m in labelled.masks)


class CountingStore(Images):
    """Images with a grid, counting feature reads."""

    def __init__(self, images, grid):
        super().__init__(images)
        self.grid, self.reads = grid, 0

    def features(self, i):
        self.reads += 1
        return super().features(i)


@pytest.mark.parametrize("keep_bytes, reads", [(0, 3 * 8), (8 * 64 * 16 * 2, 8), (8 * 64 * 16 * 2 - 1, 3 * 8)])
def test_features_are_kept_in_memory_only_when_the_whole_store_fits(keep_bytes, reads):
    keep_gb = keep_bytes / 2**30
    images = synth(n=8)   # 8 images of 64 patches x 16 dims: 16 KiB in float16
    store = CountingStore(images, (8, 8))
    labelled = Labelled(store, [y for _, y in images], keep_gb)
    head, _ = train_head(labelled, dim=16, progress=False)
    assert store.reads == reads
    reference, _ = train_head(images, dim=16, progress=False)
    for a, b in zip(head.state_dict().values(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_training_flushes_subnormal_floats_to_zero():
    train_head(synth(n=2), dim=16, train=TrainParams(epochs=1), progress=False)
    assert float(torch.tensor(1e-39) * torch.tensor(1.0)) == 0.0
