"""Stage predict: an evaluation set -> full-size uint8 PNG saliency maps at each image's original size,
``<out>/<method>/<stem>.png``, of the bipartition baselines (CLS, k-means, NCut, NCut + IPO, on the base
view) and of the trained head (fused over the set's inference views), and of the authors' released head
(``predict.release_head``; the same views) when one is named. ``--maps`` picks every group (the DVC stage)
or one. Each method's folder is stamped with exactly its inputs and marked finished, so a rerun recomputes
only the methods whose inputs changed: a new head never recomputes NCut. The bipartition methods' patch masks
are kept in ``<out>/grids`` (:mod:`pipeline.bipartition.kept`): an ``ipo.*`` change runs IPO from the kept
NCut masks and solves no eigenproblem; ``--metrics`` says how many images each method was computed for.

Features come from the set's stores, or with ``predict.cache_features: false`` straight from the images
through the backbone, every view once per image, in the batches extraction uses (so the maps are
byte-identical; docs/data.md "Disk"). ``--masks DIR`` also writes the head's binary 0/255 object masks,
``DIR/<stem>.png`` (foreground where p > ``predict.threshold``)."""
from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import click
import numpy as np

from pipeline.bipartition.kept import counters, method_keys, save_kept, split_kept
from pipeline.bipartition.methods import bipartitions
from pipeline.bipartition.pseudo import empty, mask_map, merge, record
from pipeline.core import datasets, timing
from pipeline.core.datasets import Sample, load_image
from pipeline.core.errors import PipelineError
from pipeline.core.files import write_json
from pipeline.core.maps import save_mask, save_png
from pipeline.core.params import MAP_METHODS, METHODS, RELEASE, BackboneParams, BilateralParams, IPOParams, NCutParams
from pipeline.core.runner import (
    Dist,
    Work,
    check_out_dir,
    chunked,
    claim_dir,
    file_digest,
    fingerprint,
    finish,
    finished,
    run_shared,
    stage,
)
from pipeline.features.backbone import backbone_info, load_backbone
from pipeline.features.extract import encode, make_spec
from pipeline.features.store import FeatureStore, StoreError
from pipeline.features.views import View, set_views, view_store, views_folder
from pipeline.head.coco import annotate, document
from pipeline.head.model import fuse_views, load_head
from pipeline.head.postprocess import bilateral_solve
from pipeline.head.release import read_release

GROUPS = {**{m: (m,) for m in METHODS}, "head": ("head",), RELEASE: (RELEASE,)}  # each stamped with its inputs
GRIDS = "grids"  # the bipartition methods' kept masks (pipeline.bipartition.kept)
NO_RELEASE = "no release head"  # the key of an empty release folder (predict.release_head unset)


@dataclass
class PredictWork(Work):
    out: str
    head_path: str | None                           # head maps (None: no head maps)
    maps_of: tuple[str, ...]                        # bipartition methods whose maps are written
    compute: tuple[str, ...]                        # bipartition methods computed (the others' masks: kept)
    grids: str                                      # the kept masks' folder
    bipartition: tuple[NCutParams, IPOParams, int] | None
    stores: list[tuple[str, bool]] | None           # (store, mirrored) per view, [0] the base view; or
    images: tuple[list[Sample], list[View], BackboneParams] | None = None  # no feature cache: from the images
    masks: tuple[str, float] | None = None          # binary masks (head): folder, foreground p > threshold
    coco: float | None = None                       # COCO annotations of the head's masks p > this threshold
    release_path: str | None = None                 # the released head's maps (None: none)
    refine: tuple[list[str], BilateralParams] | None = None  # the heads' maps refined along each image's edges

    def open(self) -> None:
        self.head = load_head(self.head_path) if self.head_path else None
        self.kept = {}
        for m in {*self.maps_of, *(["ncut"] if "ncut_ipo" in self.compute else [])} - set(self.compute):
            with np.load(Path(self.grids) / f"{m}.npz") as z:
                self.kept[m] = z["masks"]
        self.release = read_release(self.release_path)[0] if self.release_path else None
        if self.images:
            b = self.images[2]
            self.backbone = load_backbone(b.name, b.dtype, b.device, features=b.features)
            self.loaders = ThreadPoolExecutor(b.workers)
        else:
            self.views = [(FeatureStore(path), mirrored) for path, mirrored in self.stores]
            self.sizes = self.views[0][0].sizes()

    def _inputs(self, indices: list[int]) -> Iterator[tuple[str, tuple[int, int], list, np.ndarray]]:
        """(stem, original size, [(features, mirrored)] per view, base view's CLS) of each image."""
        if not self.images:
            base = self.views[0][0]
            for i in indices:
                yield base.stems[i], self.sizes[i], [(s.features(i), m) for s, m in self.views], base.cls(i)
            return
        samples, views, b = self.images
        encoded = [list(encode(samples, indices, self.backbone, v, b.batch_size, self.loaders)) for v in views]
        features = [np.concatenate([f for f, _, _ in e]) for e in encoded]
        cls = np.concatenate([c for _, c, _ in encoded[0]])
        sizes = [size for _, _, batch in encoded[0] for size in batch]
        for k, i in enumerate(indices):
            yield samples[i].stem, sizes[k], [(f[k], v.hflip) for f, v in zip(features, views)], cls[k]

    def __call__(self, indices: list[int]) -> tuple[dict, list[tuple[str, dict]]]:
        """Writes the maps of ``indices``; returns the masks and statistics of the bipartition methods computed
        (:func:`~pipeline.bipartition.pseudo.empty`) and, with ``coco``, (stem, COCO annotation) of each image."""
        computed, annotations = None, []
        for k, (stem, size, views, cls) in enumerate(self._inputs(indices)):
            maps = {}
            if self.compute:
                b = bipartitions(views[0][0], cls, self.compute, *self.bipartition,
                                 ncut_mask=self.kept["ncut"][indices[k]] if "ncut" in self.kept else None)
                computed = computed or empty(self.compute, len(indices), b.masks[self.compute[0]].shape,
                                             self.bipartition[1].iters)
                record(computed, k, b)
            for m in self.maps_of:
                maps[m] = mask_map(computed[m]["masks"][k] if m in self.compute else self.kept[m][indices[k]], size)
            if self.head:
                maps["head"] = fuse_views(self.head, views, size)
            if self.release:
                maps[RELEASE] = fuse_views(self.release, views, size)
            if self.refine and (self.head or self.release):
                paths, b = self.refine
                pixels = load_image(paths[indices[k]])
                for m in ("head", RELEASE):
                    if m in maps:
                        with timing.section("postprocess"):
                            maps[m] = bilateral_solve(pixels, maps[m], **b.model_dump())
            for m, prob in maps.items():
                save_png(prob, Path(self.out) / m / f"{stem}.png")
            if self.masks:
                folder, threshold = self.masks
                save_mask(maps["head"], threshold, Path(folder) / f"{stem}.png")
            if self.coco is not None:
                annotations.append((stem, annotate(maps["head"], self.coco)))
        return computed, annotations


def _reads(o: dict) -> list[str]:
    bip = ["ncut", "ipo", "pseudo.kmeans_seed"] if o["maps"] not in ("head", RELEASE) else []
    if o["name"] is None:
        return bip
    release = (["predict.release_head", "predict.release_sha256", "predict.postprocess", "predict.bilateral"]
               if o["maps"] != "bipartitions" else [])
    return [*bip, *release, f"data.eval.{o['name']}", "predict.resolutions", "predict.hflip", "predict.cache_features",
            "backbone.name", "backbone.dtype", "backbone.features", "store",
            *(["predict.threshold"] if o["masks"] or o["coco"] else [])]


@stage("predict", reads=_reads)
@click.option("--maps", type=click.Choice(["all", "head", "bipartitions", RELEASE]), default="all", show_default=True,
              help="Every method's maps, or one group's: the head's, the bipartition methods', the released head's.")
@click.option("--features", type=click.Path(path_type=Path), required=True,
              help="The set's base store; its other views are read from <store stem>.views/ beside it.")
@click.option("--name", help="Evaluation set (a key of data.eval): its views, and its images without a feature "
              "cache; needed for head maps.")
@click.option("--head", "head_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Trained head (for head maps).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Prediction directory of the set.")
@click.option("--masks", type=click.Path(path_type=Path), help="Also write the head's binary 0/255 masks here.")
@click.option("--coco", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the head's masks as COCO-style JSON (RLE, one annotation per image) to this file.")
@click.option("--metrics", "metrics_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write how many images each bipartition method was computed for in this run here (JSON).")
def predict(p, maps: str, features: Path, name: str | None, head_path: Path | None, out: Path,
            masks: Path | None, coco: Path | None, metrics_path: Path | None) -> None:
    """Saliency maps at each image's original size (docs/method.md "Method: inference"); resumable."""
    groups = ([g for g in GROUPS if g != RELEASE or name is not None] if maps == "all" else
              list(METHODS) if maps == "bipartitions" else [maps])
    if "head" in groups and (head_path is None or name is None):
        raise PipelineError(f"predict --maps {maps} needs --head and --name")
    if RELEASE in groups and name is None:
        raise PipelineError(f"predict --maps {maps} needs --name")
    release = _release(p.predict) if RELEASE in groups else None
    if (masks or coco) and "head" not in groups:
        raise PipelineError("predict --masks and --coco go with the head's maps")
    if "head" in groups:
        load_head(head_path)  # a bad head file fails here, with one line, before any work
    cached = name is None or p.predict.cache_features
    spec = p.data.eval[name] if name else None
    views = (set_views(spec, p.predict.resolutions, p.predict.hflip)[: 1 if set(groups) <= set(METHODS) else None]
             if spec else [])
    paths = [(features, False)] + [(view_store(views_folder(features), v), v.hflip) for v in views[1:]]
    if cached:
        stores = [FeatureStore(path) for path, _ in paths]
        for (path, _), other in zip(paths[1:], stores[1:]):
            if other.stems != stores[0].stems:
                raise StoreError(f"{path}: holds other images than {features}; rerun extract")
        prints, n = [s.attrs["fingerprint"] for s in stores], len(stores[0])
    else:  # the fingerprints the stores would have: a switch of predict.cache_features keeps finished maps
        samples, b = datasets.eval_samples(spec), p.backbone
        info = backbone_info(b.name, b.features)
        datasets.validate(samples, min_side=info.patch_size)
        prints = [make_spec(samples, info, v, p.store.images_per_shard, p.store.compressor, b.dtype).fingerprint()
                  for v in views]
        n = len(samples)
    mask_to = (str(masks), p.predict.threshold) if masks else None
    coco_at = p.predict.threshold if coco else None
    # post-processing is in the heads' keys only when on: maps made without it keep their keys
    refine = ((p.predict.postprocess, p.predict.bilateral) if ({"head", RELEASE} & set(groups))
              and p.predict.postprocess != "none" else ())
    grid_keys = (method_keys(prints[0], p.ncut, p.ipo, p.pseudo.kmeans_seed)  # the base view's features
                 if set(groups) & set(METHODS) else {})
    keys = {g: grid_keys[g] if g in METHODS else
            (fingerprint(prints, p.predict.release_sha256, *refine) if release else NO_RELEASE) if g == RELEASE else
            fingerprint(prints, file_digest(head_path), *(mask_to or ()), *([str(coco), coco_at] if coco else []),
                        *refine)
            for g in groups}
    if release and release[0].config["dim"] != (stores[0].dim if cached else info.hidden_size):
        raise PipelineError(f"{p.predict.release_head}: the released head takes {release[0].config['dim']}-wide "
                            f"features, the set's are {stores[0].dim if cached else info.hidden_size}-wide")
    folders = {g: [out / m for m in GROUPS[g]] + ([masks] if g == "head" and masks else []) for g in groups}
    # the set's folder holds every method folder and the kept masks (DVC outputs, listed in DVC's .gitignore),
    # and the resume state of any groups run together (named in GROUPS order, as todo lists them)
    combos = {"+".join(c) for r in range(1, len(GROUPS) + 1) for c in combinations(GROUPS, r)}
    check_out_dir(out, allow=frozenset({*MAP_METHODS, RELEASE, GRIDS, ".gitignore", *(f".{c}.partial" for c in combos),
                                        *([coco.name] if coco and coco.parent.resolve() == out.resolve() else [])}))
    for g in groups:  # every folder is checked before any is written
        for f in folders[g]:
            check_out_dir(f)
    # a bipartition method's maps and its kept masks go together: either missing recomputes both. Every rank
    # reads what is done before rank 0 changes anything, so all agree on the work
    stems = stores[0].stems if cached else [s.stem for s in samples]
    kept, missing = split_kept(out / GRIDS, grid_keys, stems) if grid_keys else ({}, [])
    todo = [g for g in groups if not all(finished(f, keys[g]) for f in folders[g]) or g in missing
            or (g == "head" and coco and not coco.is_file())]
    d = Dist()
    d.barrier()
    if d.rank == 0:
        if grid_keys:
            claim_dir(out / GRIDS)
        for g in todo:
            for f in folders[g]:
                claim_dir(f, keys[g])
        if RELEASE in todo and not release:  # no released head: an empty folder that says so (a DVC output)
            finish(out / RELEASE, NO_RELEASE)
    d.barrier()
    if RELEASE in todo and not release:
        todo.remove(RELEASE)
    maps_of = tuple(m for m in METHODS if m in todo)
    compute = [m for m in missing if m in maps_of or m == "ncut" and "ncut_ipo" in maps_of]
    kept = {m: a for m, a in kept.items() if m in maps_of or m == "ncut" and "ncut_ipo" in compute}  # used
    computed = {}
    if todo:
        work = PredictWork(str(out), str(head_path) if "head" in todo else None, maps_of, tuple(compute),
                           str(out / GRIDS), (p.ncut, p.ipo, p.pseudo.kmeans_seed) if maps_of else None,
                           [(str(path), m) for path, m in paths] if cached else None,
                           None if cached else (samples, views, p.backbone), mask_to if "head" in todo else None,
                           coco_at if "head" in todo else None,
                           p.predict.release_head if RELEASE in todo and release else None,
                           ([str(s.image) for s in datasets.eval_samples(spec)], p.predict.bilateral)
                           if refine and {"head", RELEASE} & set(todo) else None)
        # without a cache, units are the store's shards (the batches extraction forwards), one process per rank
        units = chunked(range(n), p.predict.chunk_size if cached else p.store.images_per_shard)
        gather, close = run_shared(work, units, out / "+".join(todo), fingerprint([keys[g] for g in todo], compute,
                                    units), d, workers=p.predict.workers if cached and d.world_size == 1 else 1,
                                    desc=f"predict {'+'.join(todo)} {out.name}")
        if d.rank == 0:
            results = list(gather())
            if compute:
                computed = merge([grids for grids, _ in results])
                for m in compute:
                    save_kept(out / GRIDS, m, grid_keys[m], stems, computed[m])
            if coco and "head" in todo:
                files = {s.stem: s.image.name for s in (datasets.eval_samples(spec) if cached else samples)}
                write_json(coco, document([(files[stem], ann) for _, anns in results for stem, ann in anns],
                                          coco_at, f"evaluation set {name}, head {head_path.name}"))
            for g in todo:
                for f in folders[g]:
                    finish(f, keys[g])
        close()
    d.close()
    if d.rank != 0:
        return
    fallbacks = int(computed["ncut"]["fallback"].sum()) if "ncut" in computed else 0
    if metrics_path:
        write_json(metrics_path, {name or out.name: {"computed": counters({m: n for m in compute}),
                                                     "ncut_dense_fallbacks": fallbacks}})
    click.echo(f"{out}: {n} images; " + "; ".join(
        f"{g}: " + ("none named" if g == RELEASE and not release else "written" if g in todo else "up to date")
        for g in groups) + (f"; masks in {masks}" if masks else "") + (f"; COCO masks in {coco}" if coco else "")
        + (f"; computed: {', '.join(compute)}, NCut dense fallbacks: {fallbacks}" if compute else "")
        + (f"; kept: {', '.join(kept)}" if kept else "")
        + ("" if cached else "; features from the images (predict.cache_features: false)"))


def _release(pr) -> tuple | None:
    """The released head named by ``predict.release_head`` and its args, checked against
    ``predict.release_sha256`` (one line on a mismatch); None when no head is named."""
    if not pr.release_head:
        return None
    path = Path(pr.release_head)
    if not path.is_file():
        raise PipelineError(f"{path}: predict.release_head names no such file")
    digest = file_digest(path)
    if digest != pr.release_sha256:
        raise PipelineError(f"{path}: sha256 is {digest}, predict.release_sha256 says {pr.release_sha256}; "
                            f"set it to the file's if the file is the one you mean")
    return read_release(path)

