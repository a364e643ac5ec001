"""Stage extract: one dataset -> sharded Zarr feature store (GPU when present; torchrun for many)."""
from pathlib import Path

import click

from pipeline import datasets
from pipeline.backbone import backbone_info, load_backbone
from pipeline.errors import PipelineError
from pipeline.extract import extract_dataset, make_spec
from pipeline.runner import Dist, stage
from pipeline.store import check_store_path


def _reads(o: dict) -> list[str]:
    split = ["data.train", "backbone.resolution"] if o["split"] == "train" else [
        f"data.eval.{o['name']}", "backbone.eval_resolution"]
    return [*split, "backbone.name", "backbone.dtype", "store"]


@stage("extract", reads=_reads)
@click.option("--split", type=click.Choice(["train", "eval"]), required=True)
@click.option("--name", help="Evaluation set (a key of data.eval); only with --split eval.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Feature store (.zarr).")
def extract(p, split: str, name: str | None, out: Path) -> None:
    """Cache frozen-backbone patch features of a dataset in a sharded Zarr store (resumable).

    Everything cheap is checked before the weights are loaded: params, dataset pairing, every image
    and mask header, the resolution against the model's patch size, and the output path."""
    b = p.backbone
    if split == "train":
        samples, total = datasets.training_set(p.data.train)
        if total <= p.data.train.sample_size:
            click.echo(f"train: dataset has {total} images <= sample_size {p.data.train.sample_size}: using all")
        resolution = b.resolution
    else:
        if not name:
            raise PipelineError("extract --split eval needs --name (a key of data.eval)")
        spec = p.data.eval[name]
        samples, resolution = datasets.eval_samples(spec), spec.resolution or b.eval_resolution
    check_store_path(out)
    info = backbone_info(b.name)
    info.grid(resolution)
    datasets.validate(samples, min_side=info.patch_size)
    backbone = load_backbone(b.name, b.dtype, b.device)
    spec = make_spec(samples, backbone, resolution, p.store.images_per_shard, p.store.compressor, b.dtype)
    d = Dist()
    try:
        written = extract_dataset(samples, backbone, out, spec, rank=d.rank, world_size=d.world_size,
                                  barrier=d.barrier, batch_size=b.batch_size, workers=b.workers)
    finally:
        d.close()
    click.echo(f"{out}: {len(samples)} images, {spec.n_shards} shards ({written} written by rank {d.rank})")
