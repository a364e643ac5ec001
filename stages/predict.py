"""Stage predict: evaluation feature stores -> full-size uint8 PNG saliency maps at each image's original
size, ``<out>/<method>/<stem>.png``: either the trained head's (``--maps head``, fused over the set's
inference views) or every bipartition baseline's on the base view (``--maps bipartitions``), two DVC
stages so that a change of the head never recomputes NCut. ``--masks DIR`` also writes the head's
binary 0/255 object masks, ``DIR/<stem>.png`` (foreground where p > ``predict.threshold``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from pipeline.errors import PipelineError
from pipeline.head import fuse_views, load_head
from pipeline.maps import save_mask, save_png
from pipeline.params import MAP_METHODS, METHODS, IPOParams, NCutParams
from pipeline.pseudo import bipartition_maps
from pipeline.runner import (Resume, Work, check_out_dir, chunked, claim_dir, file_digest, fingerprint, run_units,
                             stage)
from pipeline.store import FeatureStore, StoreError
from pipeline.views import set_views, view_store, views_folder


@dataclass
class PredictWork(Work):
    stores: list[tuple[str, bool]]                  # (store, mirrored) per view; [0] is the base view
    out: str
    head_path: str | None                           # head maps; else bipartition maps with:
    bipartition: tuple[NCutParams, IPOParams, int] | None
    masks: tuple[str, float] | None = None          # binary masks (head): folder, foreground p > threshold

    def open(self) -> None:
        self.views = [(FeatureStore(path), mirrored) for path, mirrored in self.stores]
        self.head = load_head(self.head_path) if self.head_path else None
        self.sizes = self.views[0][0].sizes()

    def __call__(self, indices: list[int]) -> int:
        """Writes the maps of ``indices``; returns how many of them NCut solved densely."""
        base, fallbacks = self.views[0][0], 0
        for i in indices:
            size, stem = self.sizes[i], base.stems[i]
            if self.head:
                maps = {"head": fuse_views(self.head, [(s.features(i), m) for s, m in self.views], size)}
            else:
                maps, fallback = bipartition_maps(base.features(i), base.cls(i), size, *self.bipartition)
                fallbacks += fallback
            for m, prob in maps.items():
                save_png(prob, Path(self.out) / m / f"{stem}.png")
            if self.masks:
                folder, threshold = self.masks
                save_mask(maps["head"], threshold, Path(folder) / f"{stem}.png")
        return fallbacks


def _reads(o: dict) -> list[str]:
    if o["maps"] == "bipartitions":
        return ["ncut", "ipo", "pseudo.kmeans_seed"]
    return [f"data.eval.{o['name']}", "predict.resolutions", "predict.hflip",
            *(["predict.threshold"] if o["masks"] else [])]


@stage("predict", reads=_reads)
@click.option("--maps", type=click.Choice(["head", "bipartitions"]), required=True,
              help="The head's maps, or those of every bipartition method (CLS, k-means, NCut, NCut + IPO).")
@click.option("--features", type=click.Path(exists=True, path_type=Path), required=True,
              help="The set's base store; its other views are read from <store stem>.views/ beside it.")
@click.option("--name", help="Evaluation set (a key of data.eval; with --maps head: its views).")
@click.option("--head", "head_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Trained head (with --maps head).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Prediction directory of the set.")
@click.option("--masks", type=click.Path(path_type=Path),
              help="Also write the head's binary 0/255 masks here (with --maps head).")
def predict(p, maps: str, features: Path, name: str | None, head_path: Path | None, out: Path,
            masks: Path | None) -> None:
    """Saliency maps at each image's original size (README "Method: inference"); resumable."""
    store = FeatureStore(features)
    if maps == "head":
        if head_path is None or name is None:
            raise PipelineError("predict --maps head needs --head and --name")
        load_head(head_path)  # a bad head file fails here, with one line, before any work
        _, *extra = set_views(p.data.eval[name], p.predict.resolutions, p.predict.hflip)
        views = [(features, False)] + [(view_store(views_folder(features), v), v.hflip) for v in extra]
        stores = [store] + [FeatureStore(path) for path, _ in views[1:]]
        for path, other in zip(views[1:], stores[1:]):
            if other.stems != store.stems:
                raise StoreError(f"{path[0]}: holds other images than {features}; rerun extract")
        methods = ("head",)
        mask_to = (str(masks), p.predict.threshold) if masks else None
        key = fingerprint([s.attrs["fingerprint"] for s in stores], file_digest(head_path), *(mask_to or ()))
        work = PredictWork([(str(v), m) for v, m in views], str(out), str(head_path), None, mask_to)
    else:
        if masks:
            raise PipelineError("predict --masks goes with --maps head")
        bip = (p.ncut, p.ipo, p.pseudo.kmeans_seed)
        methods, key = METHODS, fingerprint(store.attrs["fingerprint"], *bip)
        work = PredictWork([(str(features), False)], str(out), None, bip)
    # the set's folder holds both predict stages' method folders (DVC outputs, listed in DVC's .gitignore)
    check_out_dir(out, allow=frozenset({*MAP_METHODS, ".head.partial", ".bipartitions.partial", ".gitignore"}))
    for m in methods:  # every folder is checked before any is written
        check_out_dir(out / m)
    if masks:
        check_out_dir(masks)
    for m in methods:
        claim_dir(out / m, key)
    if masks:
        claim_dir(masks, key)
    units = chunked(range(len(store)), p.predict.chunk_size)
    resume = Resume(out / maps, fingerprint(key, units))
    fallbacks = sum(run_units(work, units, resume, workers=p.predict.workers, desc=f"predict {maps} {out.name}"))
    resume.close()
    click.echo(f"{out}: {len(store)} images x {', '.join(methods)}" + (f"; masks in {masks}" if masks else "")
               + (f"; NCut dense fallbacks: {fallbacks}" if maps == "bipartitions" else ""))
