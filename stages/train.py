"""Stage train: cached training features + pseudo-masks -> segmentation head (paper Sec. 3.3, 4.1)."""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import pandas as pd

from pipeline.backbone import resolve_device
from pipeline.files import atomic_write
from pipeline.head import save_head
from pipeline.runner import Dist, stage
from pipeline.store import FeatureStore
from pipeline.train import PseudoLabelled, train_head


@stage("train", reads=("pseudo.method", "head", "loss", "train.epochs", "train.lr", "train.weight_decay",
                        "train.seed"))
@click.option("--features", type=click.Path(exists=True, path_type=Path), required=True, help="Training store.")
@click.option("--pseudo", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Head (.safetensors).")
@click.option("--loss-csv", type=click.Path(path_type=Path), required=True, help="Loss curve CSV.")
def train(p, features: Path, pseudo: Path, out: Path, loss_csv: Path) -> None:
    """Train the head on pseudo-masks (Adam, one image per step per process; DDP under torchrun)."""
    store = FeatureStore(features)
    images = PseudoLabelled(store, pseudo, p.pseudo.method)
    d = Dist()
    try:
        head, log = train_head(images, dim=store.dim, train=p.train, head=p.head, loss=p.loss, rank=d.rank,
                               world_size=d.world_size, device=resolve_device(p.train.device))
    finally:
        d.close()
    if d.rank == 0:
        save_head(head, out)
        atomic_write(loss_csv, lambda f: pd.DataFrame(log).to_csv(f, index=False))
        last = np.mean([r["loss"] for r in log if r["epoch"] == p.train.epochs - 1])
        click.echo(f"{out}: {len(images)} images x {p.train.epochs} epochs on {d.world_size} process(es), "
                   f"last-epoch mean loss {last:.4f}")
