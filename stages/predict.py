"""Stage predict: evaluation feature store + head -> full-size uint8 PNG saliency maps of the head and
of every bipartition baseline (data/predictions/<dataset>/<method>/<stem>.png)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from pipeline.head import load_head
from pipeline.maps import save_png
from pipeline.params import MAP_METHODS, IPOParams, NCutParams
from pipeline.pseudo import saliency_maps
from pipeline.runner import Resume, Work, chunked, claim_dir, file_digest, fingerprint, run_units, stage
from pipeline.store import FeatureStore


@dataclass
class PredictWork(Work):
    store_path: str
    head_path: str
    ncut: NCutParams
    ipo: IPOParams
    kmeans_seed: int
    out: str

    def open(self) -> None:
        self.store, self.head = FeatureStore(self.store_path), load_head(self.head_path)
        self.sizes = self.store.sizes()

    def __call__(self, indices: list[int]) -> int:
        for i in indices:
            maps = saliency_maps(self.store.features(i), self.store.cls(i), self.sizes[i], self.head, self.ncut,
                                 self.ipo, self.kmeans_seed)
            for m in MAP_METHODS:
                save_png(maps[m], Path(self.out) / m / f"{self.store.stems[i]}.png")
        return len(indices)


@stage("predict", reads=("ncut", "ipo", "pseudo.kmeans_seed"))
@click.option("--features", type=click.Path(exists=True, path_type=Path), required=True, help="Evaluation store.")
@click.option("--head", "head_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Prediction directory.")
def predict(p, features: Path, head_path: Path, out: Path) -> None:
    """Saliency maps at each image's original size (README "Method: inference"); resumable."""
    store = FeatureStore(features)
    load_head(head_path)  # a bad head file fails here, with one line, before any work
    work = PredictWork(str(features), str(head_path), p.ncut, p.ipo, p.pseudo.kmeans_seed, str(out))
    units = chunked(range(len(store)), p.predict.chunk_size)
    key = fingerprint(work.ncut, work.ipo, work.kmeans_seed, store.attrs["fingerprint"], file_digest(head_path))
    out = claim_dir(out, key)
    for m in MAP_METHODS:
        (out / m).mkdir(exist_ok=True)
    resume = Resume(out, fingerprint(key, units))
    run_units(work, units, resume, workers=p.predict.workers, desc=f"predict {out.name}")
    resume.close()
    click.echo(f"{out}: {len(store)} images x {len(MAP_METHODS)} methods")
