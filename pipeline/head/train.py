"""Head training on cached features + pseudo-masks (paper Sec. 3.3 Eq. 13, Sec. 4.1).

One image per optimisation step per process; with torchrun, each of ``world_size`` processes takes
its own image and DistributedDataParallel averages the gradients, i.e. a global batch of
``world_size`` images per step (the paper: 8 GPUs x 1 image). Adam, lr 1e-3, weight decay 1e-5,
3 epochs, no augmentation.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline.core.errors import PipelineError
from pipeline.core.params import METHODS, HeadParams, LossParams, TrainParams
from pipeline.features.store import FeatureStore
from pipeline.head.losses import total_loss
from pipeline.head.model import Head, as_tensor, patch_probs


class Labelled:
    """images[i] -> ((N, d) cached features of ``store``, read lazily; (N,) labels ``masks[i]``).

    When the decoded features of the whole store fit in ``keep_gb`` GiB, each image read is kept, so
    epochs after the first decode nothing (decoding is most of a step's read time)."""

    def __init__(self, store: FeatureStore, masks, keep_gb: float = 0):
        self.store, self.masks = store, masks
        fits = keep_gb and len(store) * math.prod(store.grid) * store.dim * 2 <= keep_gb * 2**30  # float16
        self._kept: dict[int, np.ndarray] | None = {} if fits else None

    def __len__(self) -> int:
        return len(self.store)

    def features(self, i: int) -> np.ndarray:
        if self._kept is None:
            return self.store.features(i).reshape(-1, self.store.dim)
        if i not in self._kept:
            self._kept[i] = self.store.features(i).reshape(-1, self.store.dim)
        return self._kept[i]

    def __getitem__(self, i: int):
        return self.features(i), self.masks[i].reshape(-1)


class PseudoLabelled(Labelled):
    """The pseudo-masks of ``method`` (stage pseudo_masks) as labels."""

    def __init__(self, store: FeatureStore, pseudo_path: Path, method: str, keep_gb: float = 0):
        with np.load(pseudo_path) as z:
            if method not in z.files:
                raise PipelineError(f"{pseudo_path}: no {method!r} masks (pseudo.method must be one of "
                                    f"{', '.join(METHODS)})")
            if list(z["stems"]) != store.stems:
                raise PipelineError(f"{pseudo_path}: its images differ from {store.path}; rerun pseudo_masks")
            masks = z[method]
        super().__init__(store, masks, keep_gb)


class HeadLabelled(Labelled):
    """A trained head's labels p > ``threshold`` on the store's own features: the training set of a
    self-training round (docs/results.md "Beyond the paper"), computed once, here. ``store`` is a
    :class:`FeatureStore` or anything with ``len``, ``features(i)`` and ``dim``."""

    def __init__(self, store: FeatureStore, head: Head, threshold: float, keep_gb: float = 0):
        super().__init__(store, [], keep_gb)
        self.masks = [(patch_probs(head, self.features(i)) > threshold).cpu().numpy() for i in range(len(store))]


def rank_order(n: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """Image indices a rank visits in ``epoch``: permutation entries [rank::world_size], wrapped.

    The epoch order is ``numpy.random.default_rng(seed + epoch).permutation(n)``; every rank gets
    ceil(n / world_size) entries (the last ones wrap to the start of the permutation), so all ranks
    run the same number of steps, as DDP requires.
    """
    order = np.random.default_rng(seed + epoch).permutation(n)
    steps = math.ceil(n / world_size)
    return [int(order[(k * world_size + rank) % n]) for k in range(steps)]


def train_head(images: Sequence, *, dim: int, train: TrainParams = TrainParams(), head: HeadParams = HeadParams(),
               loss: LossParams = LossParams(), rank: int = 0, world_size: int = 1, progress: bool = True,
               on_step: Callable[[dict], None] | None = None, device="cpu", state: dict | None = None,
               on_epoch: Callable[[dict], None] | None = None) -> tuple[Head, list[dict]]:
    """Train a :class:`Head` with the Eq. 13 loss; returns (unwrapped head, per-step log).

    ``images[i]`` returns (features (N, d) float16/float32, labels (N,) bool) and is read lazily, one
    image per step. Deterministic for a given seed: ``torch.manual_seed(train.seed)`` before the head
    is built, epoch order ``default_rng(seed + epoch).permutation(n)`` (see :func:`rank_order`).
    With ``world_size > 1`` the caller must have initialised the default process group (torchrun);
    the head is wrapped in DistributedDataParallel. Log entries are
    {epoch, step (global, 0-based), image, loss, bce, dice, con}; losses are this rank's own image.
    Empty or full masks train on BCE + Dice (the contrastive term is 0 there).
    ``on_epoch`` gets the training state after each epoch ({head, optimizer, epoch, log}); passed back as
    ``state``, training continues from there exactly as if it had not stopped (nothing else is random).
    """
    n = len(images)
    if n == 0:
        raise PipelineError("no training images: the pseudo-mask set is empty")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    device = torch.device(device)
    epochs, seed = train.epochs, train.seed
    # Subnormal floats (gradients of ever more confident logits) made CPU steps 3x slower as training
    # went on; they are flushed to zero (only values below 1.2e-38 change; no effect on a GPU).
    torch.set_flush_denormal(True)

    torch.manual_seed(seed)
    net = Head(dim, hidden=head.hidden, embed=head.embed).to(device)
    model: torch.nn.Module = net
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" and device.index is not None else None
        model = DistributedDataParallel(net, device_ids=ids)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)

    steps_per_epoch = math.ceil(n / world_size)
    start, log = 0, []
    if state is not None:
        net.load_state_dict(state["head"])
        opt.load_state_dict(state["optimizer"])
        start, log = state["epoch"], list(state["log"])
    step = start * steps_per_epoch
    bar = tqdm(total=epochs * steps_per_epoch, initial=step, unit="step", disable=not (progress and rank == 0),
               desc="train head")
    for epoch in range(start, epochs):
        for idx in rank_order(n, epoch, seed, rank, world_size):
            feats, labels = images[idx]
            f = as_tensor(feats)
            y = as_tensor(labels).reshape(-1)
            if f.ndim != 2 or f.shape[1] != dim or f.shape[0] != y.shape[0]:
                raise PipelineError(f"training image {idx}: features {tuple(f.shape)} and labels "
                                    f"{tuple(y.shape)} do not match (N, {dim}) and (N,)")
            y = y.to(device=device, dtype=torch.bool)
            logits, z = model(f.to(device))
            value, parts = total_loss(logits, z, y, loss)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            rec = {"epoch": epoch, "step": step, "image": idx, "loss": float(value.detach()), **parts}
            log.append(rec)
            if on_step is not None:
                on_step(rec)
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", refresh=False)
            step += 1
        if on_epoch is not None:
            on_epoch({"head": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1, "log": log})
    bar.close()
    return net.eval(), log


def self_train(store: FeatureStore, first: Head, rounds: int, threshold: float, keep_gb: float = 0,
               **kwargs) -> tuple[Head, list[dict]]:
    """Rounds 2..``rounds`` of self-training (as SelfMask and FOUND do): each round trains a fresh head
    (:func:`train_head` with ``kwargs``) on the previous head's labels (:class:`HeadLabelled`) of the same
    training images, starting from ``first``. Returns the last head and the log of every round (entries
    carry ``round``); ``rounds == 1`` returns ``first`` itself (the paper: one round)."""
    head, log = first, []
    for r in range(2, rounds + 1):
        head, entries = train_head(HeadLabelled(store, head, threshold, keep_gb), dim=store.dim, **kwargs)
        log += [{"round": r, **e} for e in entries]
    return head, log
