"""Head training on cached features + pseudo-masks (paper Sec. 3.3 Eq. 13, Sec. 4.1).

One image per optimisation step per process; with torchrun, each of ``world_size`` processes takes
its own image and DistributedDataParallel averages the gradients, i.e. a global batch of
``world_size`` images per step (the paper: 8 GPUs x 1 image). Adam, lr 1e-3, weight decay 1e-5,
3 epochs, no augmentation.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from pipeline.errors import PipelineError
from pipeline.head import Head, as_tensor
from pipeline.losses import total_loss


def rank_order(n: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """Image indices a rank visits in ``epoch``: permutation entries [rank::world_size], wrapped.

    The epoch order is ``numpy.random.default_rng(seed + epoch).permutation(n)``; every rank gets
    ceil(n / world_size) entries (the last ones wrap to the start of the permutation), so all ranks
    run the same number of steps, as DDP requires.
    """
    order = np.random.default_rng(seed + epoch).permutation(n)
    steps = math.ceil(n / world_size)
    return [int(order[(k * world_size + rank) % n]) for k in range(steps)]


def train_head(images: Sequence, *, dim: int, epochs: int = 3, lr: float = 1e-3, weight_decay: float = 1e-5,
               seed: int = 0, loss_kw: dict | None = None, rank: int = 0, world_size: int = 1,
               progress: bool = True, on_step: Callable[[dict], None] | None = None, device="cpu",
               hidden: int = 128, embed: int = 128) -> tuple[Head, list[dict]]:
    """Train a :class:`Head` with the Eq. 13 loss; returns (unwrapped head, per-step log).

    ``images[i]`` returns (features (N, d) float16/float32, labels (N,) bool) and is read lazily, one
    image per step. Deterministic for a given seed: ``torch.manual_seed(seed)`` before the head is
    built, epoch order ``default_rng(seed + epoch).permutation(n)`` (see :func:`rank_order`).
    With ``world_size > 1`` the caller must have initialised the default process group (torchrun);
    the head is wrapped in DistributedDataParallel. Log entries are
    {epoch, step (global, 0-based), image, loss, bce, dice, con}; losses are this rank's own image.
    ``loss_kw`` goes to :func:`pipeline.losses.total_loss`. Empty or full masks train on BCE + Dice
    (the contrastive term is 0 there).
    """
    n = len(images)
    if n == 0:
        raise PipelineError("no training images: the pseudo-mask set is empty")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    loss_kw = dict(loss_kw or {})
    device = torch.device(device)

    torch.manual_seed(seed)
    head = Head(dim, hidden=hidden, embed=embed).to(device)
    model: torch.nn.Module = head
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" and device.index is not None else None
        model = DistributedDataParallel(head, device_ids=ids)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)

    steps_per_epoch = math.ceil(n / world_size)
    bar = tqdm(total=epochs * steps_per_epoch, unit="step", disable=not (progress and rank == 0),
               desc="train head")
    log: list[dict] = []
    step = 0
    for epoch in range(epochs):
        for idx in rank_order(n, epoch, seed, rank, world_size):
            feats, labels = images[idx]
            f = as_tensor(feats)
            y = as_tensor(labels).reshape(-1)
            if f.ndim != 2 or f.shape[1] != dim or f.shape[0] != y.shape[0]:
                raise PipelineError(f"training image {idx}: features {tuple(f.shape)} and labels "
                                    f"{tuple(y.shape)} do not match (N, {dim}) and (N,)")
            y = y.to(device=device, dtype=torch.bool)
            logits, z = model(f.to(device))
            loss, parts = total_loss(logits, z, y, **loss_kw)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            rec = {"epoch": epoch, "step": step, "image": idx, "loss": float(loss.detach()), **parts}
            log.append(rec)
            if on_step is not None:
                on_step(rec)
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", refresh=False)
            step += 1
    bar.close()
    return head.eval(), log
