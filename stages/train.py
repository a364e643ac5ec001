"""Stages train and self-train: cached training features + pseudo-masks -> segmentation head (paper
Sec. 3.3, 4.1), then ``train.rounds - 1`` self-training rounds on the head's own labels (docs/results.md "Beyond
the paper"), a stage of its own so that changing the rounds never retrains round 1."""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import pandas as pd

from pipeline.core.files import atomic_write
from pipeline.core.runner import Dist, Resume, file_digest, fingerprint, stage
from pipeline.features.backbone import resolve_device
from pipeline.features.store import FeatureStore
from pipeline.head.model import load_head, save_head
from pipeline.head.train import PseudoLabelled, self_train, train_head

TRAINING = ("head", "loss", "train.epochs", "train.lr", "train.weight_decay", "train.seed")


def _save(head, log: list[dict], out: Path, loss_csv: Path, columns: list[str]) -> None:
    save_head(head, out)
    atomic_write(loss_csv, lambda f: pd.DataFrame(log, columns=columns).to_csv(f, index=False))


@stage("train", reads=("pseudo.method", *TRAINING))
@click.option("--features", type=click.Path(exists=True, path_type=Path), required=True, help="Training store.")
@click.option("--pseudo", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Head (.safetensors).")
@click.option("--loss-csv", type=click.Path(path_type=Path), required=True, help="Loss curve CSV.")
def train(p, features: Path, pseudo: Path, out: Path, loss_csv: Path) -> None:
    """Train the head on pseudo-masks (Adam, one image per step per process; DDP under torchrun)."""
    store = FeatureStore(features)
    images = PseudoLabelled(store, pseudo, p.pseudo.method, keep_gb=p.train.cache_gb)
    d = Dist()
    # a killed run resumes at its last finished epoch (state beside the output, docs/params.md "Faults")
    key = fingerprint(store.attrs["fingerprint"], file_digest(pseudo), p.pseudo.method, p.head, p.loss, p.train.epochs,
                      p.train.lr, p.train.weight_decay, p.train.seed, d.world_size)
    resume = Resume(out, key, owner=d.rank == 0)
    d.barrier()  # rank 0 has cleared stale state before any rank reads
    state = resume.load("epoch") if resume.done("epoch") else None
    if state is not None and d.rank == 0:
        click.echo(f"{out}: resuming after epoch {state['epoch']} of {p.train.epochs}")
    try:
        head, log = train_head(images, dim=store.dim, train=p.train, head=p.head, loss=p.loss, rank=d.rank,
                               world_size=d.world_size, device=resolve_device(p.train.device), state=state,
                               on_epoch=(lambda s: resume.save("epoch", s)) if d.rank == 0 else None)
    finally:
        d.close()
    if d.rank == 0:
        _save(head, log, out, loss_csv, list(log[0]))
        resume.close()
        last = np.mean([r["loss"] for r in log if r["epoch"] == p.train.epochs - 1])
        click.echo(f"{out}: {len(images)} images x {p.train.epochs} epochs on {d.world_size} process(es), "
                   f"last-epoch mean loss {last:.4f}")


@stage("self-train", reads=("train.rounds", "train.round_threshold", *TRAINING))
@click.option("--features", type=click.Path(exists=True, path_type=Path), required=True, help="Training store.")
@click.option("--head", "head_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The round-1 head (stage train).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Final head (.safetensors).")
@click.option("--loss-csv", type=click.Path(path_type=Path), required=True, help="Loss curve CSV of rounds 2+.")
def self_train_cmd(p, features: Path, head_path: Path, out: Path, loss_csv: Path) -> None:
    """Rounds 2..train.rounds, each a fresh head trained on the previous head's labels p > round_threshold;
    with train.rounds = 1 the final head is the round-1 file, byte for byte."""
    device = resolve_device(p.train.device)
    head = load_head(head_path, device=device)
    store = FeatureStore(features)
    d = Dist()
    try:
        head, log = self_train(store, head, p.train.rounds, p.train.round_threshold,
                               keep_gb=p.train.cache_gb, train=p.train, head=p.head,
                               loss=p.loss, rank=d.rank, world_size=d.world_size, device=device)
    finally:
        d.close()
    if d.rank == 0:
        columns = ["round", "epoch", "step", "image", "loss", "bce", "dice", "con"]
        if p.train.rounds == 1:  # the paper: the final head is round 1's
            data = head_path.read_bytes()
            atomic_write(out, lambda f: f.write(data))
            atomic_write(loss_csv, lambda f: pd.DataFrame(columns=columns).to_csv(f, index=False))
        else:
            _save(head, log, out, loss_csv, columns)
        click.echo(f"{out}: {p.train.rounds} round(s)")
