"""Stage extract: one dataset -> sharded Zarr feature store(s) (GPU when present; torchrun for many).

An evaluation set's base view (its first resolution, unmirrored) is its own store; ``--views extra``
writes every other inference view (docs/results.md "Beyond the paper") as ``<out>/<view>.zarr``, so adding a
view never re-extracts the base store nor reruns the baselines that read it.

Inside a DVC repository each store is written once into the shared store folder under its fingerprint, and
``--out`` is a tree of hard links to it (:mod:`pipeline.features.shared`): params that a store does not depend on
(a queued experiment's, another branch's) find it there and extract nothing; the model is loaded only when a
shard is to be written."""
import shutil
from pathlib import Path

import click

from pipeline.core import datasets
from pipeline.core.errors import PipelineError
from pipeline.core.files import write_json
from pipeline.core.runner import Dist, check_out_dir, claim_dir, stage
from pipeline.features.backbone import backbone_info, load_backbone
from pipeline.features.extract import Deferred, extract_dataset, make_spec
from pipeline.features.shared import link_tree, shared_root
from pipeline.features.store import check_store_path
from pipeline.features.views import View, set_views, view_store


def _reads(o: dict) -> list[str]:
    split = ["data.train", "backbone.resolution"] if o["split"] == "train" else [
        f"data.eval.{o['name']}", "predict.resolutions", "predict.cache_features",
        *(["predict.hflip"] if o["views"] == "extra" else [])]
    return [*split, "backbone.name", "backbone.dtype", "backbone.features", "store"]


def _no_stores(out: Path, folder: bool) -> None:
    """``predict.cache_features: false``: the output is an empty folder (predict reads the images); stores
    this project wrote there before are removed, anything else there stops the stage."""
    for path in sorted(check_out_dir(out).glob("*.zarr")) if folder else [out]:
        if check_store_path(path):  # one of this project's stores (a folder of yours raises)
            shutil.rmtree(path)
    if folder:
        claim_dir(out)
    else:
        out.mkdir(parents=True, exist_ok=True)
    click.echo(f"{out}: no feature store (predict.cache_features is false: predict reads the images)")


@stage("extract", reads=_reads)
@click.option("--split", type=click.Choice(["train", "eval"]), required=True)
@click.option("--name", help="Evaluation set (a key of data.eval); only with --split eval.")
@click.option("--views", type=click.Choice(["base", "extra"]), default="base", show_default=True,
              help="Evaluation set: its base view as one store, or every other view as stores in a folder.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Feature store (.zarr) or folder.")
@click.option("--manifest", "manifest_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write each store's fingerprint here (JSON: output path -> fingerprint; `selfment stores`).")
def extract(p, split: str, name: str | None, views: str, out: Path, manifest_path: Path | None) -> None:
    """Cache frozen-backbone patch features of a dataset in sharded Zarr stores (resumable).

    Everything cheap is checked before the weights are loaded: params, dataset pairing, every image
    and mask header, every resolution against the model's patch size, and the output paths."""
    b = p.backbone
    if split == "train":
        samples, total = datasets.training_set(p.data.train)
        if total <= p.data.train.sample_size:
            click.echo(f"train: dataset has {total} images <= sample_size {p.data.train.sample_size}: using all")
        stores = {out: View(b.resolution)}
    else:
        if not name:
            raise PipelineError("extract --split eval needs --name (a key of data.eval)")
        spec = p.data.eval[name]
        samples = datasets.eval_samples(spec)
        base, *extra = set_views(spec, p.predict.resolutions, views == "extra" and p.predict.hflip)
        stores = {view_store(check_out_dir(out), v): v for v in extra} if views == "extra" else {out: base}
    if split == "eval" and not p.predict.cache_features:
        d = Dist()
        if d.rank == 0:  # one process removes (under torchrun every rank runs this command)
            _no_stores(out, views == "extra")
            if manifest_path:
                write_json(manifest_path, {})
        d.barrier()
        d.close()
        return
    info = backbone_info(b.name, b.features)
    for path, view in stores.items():
        check_store_path(path)
        info.grid(view.resolution)
    datasets.validate(samples, min_side=info.patch_size)
    if views == "extra" and split == "eval":
        claim_dir(out)
    root = shared_root(out)  # None outside a DVC repository: each store is written at its path
    d = Dist()
    model = Deferred(lambda: load_backbone(b.name, b.dtype, b.device, features=b.features))
    manifest = {}
    try:
        for path, view in stores.items():
            spec = make_spec(samples, info, view, p.store.images_per_shard, p.store.compressor, b.dtype)
            target = root / f"{spec.fingerprint()}.zarr" if root else path
            if root and d.rank == 0:
                _adopt(path, target, spec.fingerprint())
            written = extract_dataset(samples, model, target, spec, rank=d.rank, world_size=d.world_size,
                                      barrier=d.barrier, batch_size=b.batch_size, workers=b.workers, label=path.name)
            linked = link_tree(target, path) if root and d.rank == 0 else 0
            manifest[path.as_posix()] = spec.fingerprint()
            click.echo(f"{path}: {len(samples)} images, {spec.n_shards} shards ({written} written by rank {d.rank})"
                       + (f"; shared store {target.name[:12]}, {linked} files linked" if root and d.rank == 0 else ""))
    finally:
        d.close()
    if manifest_path and d.rank == 0:
        write_json(manifest_path, manifest)
    if not stores:
        click.echo(f"{out}: no view beyond the base one")


def _adopt(path: Path, target: Path, fp: str) -> None:
    """A complete store of fingerprint ``fp`` written at ``path`` before stores were shared moves to ``target``
    (a rename, same file system) instead of being extracted again."""
    if target.exists() or not path.is_dir() or (path / "zarr.json").stat().st_nlink > 1:
        return
    attrs = check_store_path(path)
    if attrs.get("fingerprint") == fp and attrs.get("complete"):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.rename(target)
        except OSError:  # another file system: extracted again into the shared folder
            pass
