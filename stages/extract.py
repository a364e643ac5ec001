"""Stage extract: one dataset -> sharded Zarr feature store (GPU when present; torchrun for many)."""
from pathlib import Path

import click

from pipeline import datasets
from pipeline.backbone import load_backbone
from pipeline.extract import extract_dataset, make_spec
from stages.common import Dist, load_params, one_line_errors, params_option


def dataset_samples(p: dict, split: str, name: str | None) -> list[datasets.Sample]:
    """The samples of the training corpus (sampled, paper Sec. 4.1) or of one evaluation set."""
    if split == "train":
        t = p["data"]["train"]
        samples = datasets.resolve(t["dataset"])
        chosen = datasets.sample_subset(samples, t["sample_size"], t["sample_seed"])
        if len(chosen) < t["sample_size"]:
            click.echo(f"train: dataset has {len(samples)} images <= sample_size {t['sample_size']}: using all")
        return chosen
    if name not in p["data"]["eval"]:
        raise click.BadParameter(f"{name!r} is not in data.eval ({', '.join(p['data']['eval'])})")
    return datasets.resolve(p["data"]["eval"][name])


@click.command("extract")
@params_option
@click.option("--split", type=click.Choice(["train", "eval"]), required=True)
@click.option("--name", help="Evaluation set (a key of data.eval); only with --split eval.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Feature store (.zarr).")
@one_line_errors
def extract(params_path: Path, split: str, name: str | None, out: Path) -> None:
    """Cache frozen-backbone patch features of a dataset in a sharded Zarr store (resumable)."""
    p = load_params(params_path)
    b = p["backbone"]
    resolution = b["resolution"] if split == "train" else b["eval_resolution"]
    samples = dataset_samples(p, split, name)
    backbone = load_backbone(b["name"], b["dtype"], b["device"])
    backbone.grid(resolution)  # a bad resolution fails before the slow dataset check
    datasets.validate(samples, min_side=backbone.patch_size)
    spec = make_spec(samples, backbone, resolution, p["store"]["images_per_shard"], p["store"]["compressor"],
                     b["dtype"])
    d = Dist()
    try:
        written = extract_dataset(samples, backbone, out, spec, rank=d.rank, world_size=d.world_size,
                                  barrier=d.barrier, batch_size=b["batch_size"], workers=b["workers"])
    finally:
        d.close()
    click.echo(f"{out}: {len(samples)} images, {spec.n_shards} shards ({written} written by rank {d.rank})")
