"""``selfment segment``: saliency maps for your own images with a trained head (features on the fly)."""
from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import click
import torch

from pipeline.backbone import backbone_info, load_backbone, preprocess
from pipeline.datasets import DatasetError, load_image
from pipeline.errors import PipelineError
from pipeline.head import load_head, predict_map
from pipeline.maps import save_png
from pipeline.runner import Resume, Unit, Work, claim_dir, file_digest, fingerprint, run_units, stage


@dataclass
class SegmentWork(Work):
    backbone: str
    dtype: str
    device: str
    resolution: int
    head_path: str
    out: str

    def open(self) -> None:
        self.model = load_backbone(self.backbone, self.dtype, self.device)
        self.head = load_head(self.head_path, device=self.model.device)

    def __call__(self, path: str) -> str | None:
        """Write the map of one image; the reason it was skipped, or None."""
        try:
            image = load_image(path)
        except DatasetError as exc:
            return str(exc)
        with torch.no_grad():
            patches, _ = self.model(torch.from_numpy(preprocess(image, self.resolution))[None])
        save_png(predict_map(self.head, patches[0], image.shape[:2]), Path(self.out) / f"{Path(path).stem}.png")
        return None


@stage("segment", reads=("backbone.name", "backbone.eval_resolution", "backbone.dtype"))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--head", "head_path", type=click.Path(path_type=Path), required=True, help="Trained head.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder of PNG maps.")
@click.option("--backbone", help="Backbone (HF id or directory); default backbone.name of the params.")
@click.option("--resolution", type=int, help="Input size; default backbone.eval_resolution.")
def segment(p, images: tuple[Path, ...], head_path: Path, out: Path, backbone: str | None,
            resolution: int | None) -> None:
    """Write OUT/<stem>.png for every image; unreadable files are reported, skipped, and make the exit
    status 1 once the others are done. An interrupted run resumes."""
    b = p.backbone
    name, resolution = backbone or b.name, resolution or b.eval_resolution
    load_head(head_path)  # cheap checks first: head file, output folder, stems, resolution
    twice = [s for s, n in Counter(i.stem for i in images).items() if n > 1]
    if twice:
        raise PipelineError(f"two input images share the stem {twice[0]!r}: their maps would overwrite each other")
    out = claim_dir(out)
    backbone_info(name).grid(resolution)
    work = SegmentWork(name, b.dtype, b.device, resolution, str(head_path), str(out))
    units = [Unit(f"{k:06d}", (str(path),)) for k, path in enumerate(images)]
    resume = Resume(out, fingerprint(name, b.dtype, resolution, file_digest(head_path), units))
    skipped = [r for r in run_units(work, units, resume, desc="segment") if r]
    resume.close()
    for reason in skipped:
        click.echo(f"skipped: {reason}", err=True)
    click.echo(f"{out}: {len(images) - len(skipped)} maps written, {len(skipped)} skipped")
    if skipped:
        sys.exit(1)
