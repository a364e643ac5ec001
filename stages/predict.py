"""Stage predict: evaluation feature store -> full-size uint8 PNG saliency maps at each image's original
size, ``<out>/<method>/<stem>.png``: either the trained head's (``--maps head``) or every bipartition
baseline's (``--maps bipartitions``), two DVC stages so that a change of the head never recomputes NCut."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from pipeline.errors import PipelineError
from pipeline.head import load_head, predict_map
from pipeline.maps import save_png
from pipeline.params import MAP_METHODS, METHODS, IPOParams, NCutParams
from pipeline.pseudo import bipartition_maps
from pipeline.runner import (Resume, Work, check_out_dir, chunked, claim_dir, file_digest, fingerprint, run_units,
                             stage)
from pipeline.store import FeatureStore


@dataclass
class PredictWork(Work):
    store_path: str
    out: str
    head_path: str | None                           # head maps; else bipartition maps with:
    bipartition: tuple[NCutParams, IPOParams, int] | None

    def open(self) -> None:
        self.store = FeatureStore(self.store_path)
        self.head = load_head(self.head_path) if self.head_path else None
        self.sizes = self.store.sizes()

    def __call__(self, indices: list[int]) -> int:
        for i in indices:
            f, size, stem = self.store.features(i), self.sizes[i], self.store.stems[i]
            maps = ({"head": predict_map(self.head, f, size)} if self.head else
                    bipartition_maps(f, self.store.cls(i), size, *self.bipartition))
            for m, prob in maps.items():
                save_png(prob, Path(self.out) / m / f"{stem}.png")
        return len(indices)


def _reads(o: dict) -> list[str]:
    return ["ncut", "ipo", "pseudo.kmeans_seed"] if o["maps"] == "bipartitions" else []


@stage("predict", reads=_reads)
@click.option("--maps", type=click.Choice(["head", "bipartitions"]), required=True,
              help="The head's maps, or those of every bipartition method (CLS, k-means, NCut, NCut + IPO).")
@click.option("--features", type=click.Path(exists=True, path_type=Path), required=True, help="Evaluation store.")
@click.option("--head", "head_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Trained head (with --maps head).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Prediction directory of the set.")
def predict(p, maps: str, features: Path, head_path: Path | None, out: Path) -> None:
    """Saliency maps at each image's original size (README "Method: inference"); resumable."""
    store = FeatureStore(features)
    if maps == "head":
        if head_path is None:
            raise PipelineError("predict --maps head needs --head")
        load_head(head_path)  # a bad head file fails here, with one line, before any work
        methods, key = ("head",), fingerprint(store.attrs["fingerprint"], file_digest(head_path))
        work = PredictWork(str(features), str(out), str(head_path), None)
    else:
        bip = (p.ncut, p.ipo, p.pseudo.kmeans_seed)
        methods, key = METHODS, fingerprint(store.attrs["fingerprint"], *bip)
        work = PredictWork(str(features), str(out), None, bip)
    # the set's folder holds both predict stages' method folders (DVC outputs, listed in DVC's .gitignore)
    check_out_dir(out, allow=frozenset({*MAP_METHODS, ".head.partial", ".bipartitions.partial", ".gitignore"}))
    for m in methods:  # every folder is checked before any is written
        check_out_dir(out / m)
    for m in methods:
        claim_dir(out / m, key)
    units = chunked(range(len(store)), p.predict.chunk_size)
    resume = Resume(out / maps, fingerprint(key, units))
    run_units(work, units, resume, workers=p.predict.workers, desc=f"predict {maps} {out.name}")
    resume.close()
    click.echo(f"{out}: {len(store)} images x {', '.join(methods)}")
