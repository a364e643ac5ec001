"""``selfment segment``: saliency maps (or binary object masks) for your own images with a trained head
(features on the fly)."""
from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import click
import torch

from pipeline.backbone import backbone_info, load_backbone, preprocess
from pipeline.datasets import DatasetError, load_photo
from pipeline.errors import PipelineError
from pipeline.head import fuse_views, load_head
from pipeline.maps import save_mask, save_png
from pipeline.runner import Resume, Unit, Work, claim_dir, file_digest, fingerprint, run_units, stage
from pipeline.views import View, views


@dataclass
class SegmentWork(Work):
    backbone: str
    dtype: str
    device: str
    views: list[View]
    head_path: str
    out: str
    threshold: float | None   # binary 0/255 masks (p > threshold) instead of maps

    def open(self) -> None:
        self.model = load_backbone(self.backbone, self.dtype, self.device)
        self.head = load_head(self.head_path, device=self.model.device)

    def __call__(self, path: str) -> tuple[str | None, str | None]:
        """Write the map of one image (as viewers orient it); (the reason it was skipped, a note), each or None."""
        try:
            image, size, note = load_photo(path, max(v.resolution for v in self.views))
        except DatasetError as exc:
            return str(exc), None
        features = []
        with torch.no_grad():
            for view in self.views:
                patches, _ = self.model(torch.from_numpy(preprocess(image, *view))[None])
                features.append((patches[0], view.hflip))
        prob, out = fuse_views(self.head, features, size), Path(self.out) / f"{Path(path).stem}.png"
        if self.threshold is None:
            save_png(prob, out)
        else:
            save_mask(prob, self.threshold, out)
        return None, note


@stage("segment", reads=("backbone.name", "backbone.dtype", "predict.resolutions", "predict.hflip",
                         "predict.threshold"))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--head", "head_path", type=click.Path(path_type=Path), required=True, help="Trained head.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder of PNGs.")
@click.option("--backbone", help="Backbone (HF id or directory); default backbone.name of the params.")
@click.option("--resolution", type=int, help="One input size instead of predict.resolutions.")
@click.option("--binary", is_flag=True,
              help="0/255 object masks (foreground where p > predict.threshold) instead of saliency maps.")
def segment(p, images: tuple[Path, ...], head_path: Path, out: Path, backbone: str | None,
            resolution: int | None, binary: bool) -> None:
    """Write OUT/<stem>.png for every image (views of predict.resolutions and predict.hflip, fused) at
    the image's size as viewers show it (EXIF orientation applied); unreadable files are reported,
    skipped, and make the exit status 1 once the others are done. An interrupted run resumes."""
    b, pr = p.backbone, p.predict
    name = backbone or b.name
    wanted = views([resolution] if resolution else pr.resolutions, pr.hflip)
    threshold = pr.threshold if binary else None
    load_head(head_path)  # cheap checks first: head file, output folder, stems, resolutions
    twice = [s for s, n in Counter(i.stem for i in images).items() if n > 1]
    if twice:
        raise PipelineError(f"two input images share the stem {twice[0]!r}: their maps would overwrite each other")
    out = claim_dir(out)
    info = backbone_info(name)
    for v in wanted:
        info.grid(v.resolution)
    work = SegmentWork(name, b.dtype, b.device, wanted, str(head_path), str(out), threshold)
    units = [Unit(f"{k:06d}", (str(path),)) for k, path in enumerate(images)]
    resume = Resume(out, fingerprint(name, b.dtype, wanted, threshold, file_digest(head_path), units))
    results = run_units(work, units, resume, desc="segment")
    resume.close()
    skipped = [reason for reason, _ in results if reason]
    for _, note in results:
        if note:
            click.echo(f"note: {note}", err=True)
    for reason in skipped:
        click.echo(f"skipped: {reason}", err=True)
    click.echo(f"{out}: {len(images) - len(skipped)} {'masks' if binary else 'maps'} written, "
               f"{len(skipped)} skipped")
    if skipped:
        sys.exit(1)
