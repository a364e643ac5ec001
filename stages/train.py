"""Stage train: cached training features + pseudo-masks -> segmentation head (paper Sec. 3.3, 4.1)."""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import pandas as pd

from pipeline.backbone import resolve_device
from pipeline.bipartition import METHODS
from pipeline.errors import PipelineError
from pipeline.files import atomic_write
from pipeline.head import save_head
from pipeline.store import FeatureStore
from pipeline.train import train_head
from stages.common import Dist, load_params, one_line_errors, params_option


class PseudoLabelled:
    """images[i] -> ((N, d) cached features, (N,) pseudo-labels of ``method``), read lazily."""

    def __init__(self, store: FeatureStore, pseudo_path: Path, method: str):
        with np.load(pseudo_path) as z:
            if method not in z.files:
                raise PipelineError(f"{pseudo_path}: no {method!r} masks (pseudo.method must be one of "
                                    f"{', '.join(METHODS)})")
            if list(z["stems"]) != store.stems:
                raise PipelineError(f"{pseudo_path}: its images differ from {store.path}; rerun pseudo_masks")
            self.masks = z[method]
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int):
        return self.store.features(i).reshape(-1, self.store.dim), self.masks[i].reshape(-1)


@click.command("train")
@params_option
@click.option("--features", type=click.Path(exists=True, path_type=Path), required=True, help="Training store.")
@click.option("--pseudo", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Head (.safetensors).")
@click.option("--log", "log_path", type=click.Path(path_type=Path), required=True, help="Loss curve CSV.")
@one_line_errors
def train(params_path: Path, features: Path, pseudo: Path, out: Path, log_path: Path) -> None:
    """Train the head on pseudo-masks (Adam, one image per step per process; DDP under torchrun)."""
    p = load_params(params_path)
    t = p["train"]
    store = FeatureStore(features)
    images = PseudoLabelled(store, pseudo, p["pseudo"]["method"])
    d = Dist()
    try:
        head, log = train_head(images, dim=store.dim, epochs=t["epochs"], lr=t["lr"], weight_decay=t["weight_decay"],
                               seed=t["seed"], loss_kw=p["loss"], rank=d.rank, world_size=d.world_size,
                               device=resolve_device(t["device"]), **p["head"])
    finally:
        d.close()
    if d.rank == 0:
        save_head(head, out)
        atomic_write(log_path, lambda f: pd.DataFrame(log).to_csv(f, index=False))
        click.echo(f"{out}: {len(images)} images x {t['epochs']} epochs, last-epoch mean loss "
                   f"{np.mean([r['loss'] for r in log if r['epoch'] == t['epochs'] - 1]):.4f}")
