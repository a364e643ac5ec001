"""Stage export: the final head as a Hugging Face model directory, ``config.json`` + ``model.safetensors`` +
``README.md`` (a model card), that :class:`~pipeline.head.segmenter.Segmenter` loads without the pipeline
(docs/own-images.md "Trained model")."""
from __future__ import annotations

import shutil
import tempfile
from functools import reduce
from pathlib import Path

import click

from pipeline.core.runner import fingerprint, stage
from pipeline.features.backbone import backbone_revision
from pipeline.head.model import load_head
from pipeline.head.segmenter import MODEL_FILES, Segmenter

# the params that decide the model's weights and its inference: hashed into its config
PROVENANCE = ("data.train", "backbone.name", "backbone.resolution", "backbone.dtype", "backbone.features", "ncut", "ipo", "pseudo.method",
              "pseudo.kmeans_seed", "head", "loss", "train.epochs", "train.lr", "train.weight_decay", "train.seed",
              "train.rounds", "train.round_threshold", "predict.resolutions", "predict.hflip", "predict.threshold")


@stage("export", reads=PROVENANCE)
@click.option("--head", "head_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The final head (stage self_train).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Model directory (its config.json, model.safetensors and README.md are replaced).")
def export(p, head_path: Path, out: Path) -> None:
    """Save the head with its backbone, revision, views, threshold and params hash (save_pretrained)."""
    b, pr = p.backbone, p.predict
    model = Segmenter.from_head(load_head(head_path), backbone=b.name, backbone_revision=backbone_revision(b.name),
                                dtype=b.dtype, features=b.features, resolutions=list(pr.resolutions), hflip=pr.hflip,
                                threshold=pr.threshold,
                                params_hash=fingerprint({k: reduce(getattr, k.split("."), p) for k in PROVENANCE}))
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out))  # whole files only: each is renamed into place
    try:
        model.save_pretrained(tmp, model_card_kwargs=model.card_kwargs())
        for name in MODEL_FILES:
            (tmp / name).replace(out / name)
    finally:
        shutil.rmtree(tmp)
    click.echo(f"{out}: Segmenter of {head_path} on {b.name} (params {model.params_hash[:12]})")
