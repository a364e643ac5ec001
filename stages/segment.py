"""``selfment segment``: saliency maps for your own images with a trained head (features on the fly)."""
from __future__ import annotations

import sys
from pathlib import Path

import click
import torch
from tqdm import tqdm

from pipeline.backbone import load_backbone, preprocess
from pipeline.datasets import DatasetError, load_image
from pipeline.head import load_head, predict_map
from pipeline.maps import save_png
from stages.common import load_params, one_line_errors, params_option


@click.command("segment")
@params_option
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--head", "head_path", type=click.Path(path_type=Path), required=True, help="Trained head.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder of PNG maps.")
@click.option("--backbone", help="Backbone (HF id or directory); default backbone.name of the params.")
@click.option("--resolution", type=int, help="Input size; default backbone.eval_resolution.")
@one_line_errors
def segment(params_path: Path, images: tuple[Path, ...], head_path: Path, out: Path, backbone: str | None,
            resolution: int | None) -> None:
    """Write OUT/<stem>.png for every image; unreadable files are reported, skipped, and make the exit
    status 1 once the others are done."""
    b = load_params(params_path)["backbone"]
    model = load_backbone(backbone or b["name"], b["dtype"], b["device"])
    resolution = resolution or b["eval_resolution"]
    model.grid(resolution)
    head = load_head(head_path, device=model.device)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in tqdm(images, desc="segment", unit="img"):
        try:
            image = load_image(path)
        except DatasetError as exc:
            tqdm.write(f"skipped: {exc}", file=sys.stderr)
            failed += 1
            continue
        with torch.no_grad():
            patches, _ = model(torch.from_numpy(preprocess(image, resolution))[None])
        save_png(predict_map(head, patches[0], image.shape[:2]), out / f"{path.stem}.png")
    click.echo(f"{out}: {len(images) - failed} maps written, {failed} skipped")
    if failed:
        sys.exit(1)
