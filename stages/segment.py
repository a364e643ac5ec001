"""``selfment segment``: saliency maps (or binary object masks) for your own images, a thin wrapper of
:class:`~pipeline.head.segmenter.Segmenter` (features on the fly): a model directory (``--model``, stage export)
or a head file with the params' backbone and views (``--head``)."""
from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import click

from pipeline.core.datasets import DatasetError
from pipeline.core.errors import PipelineError
from pipeline.core.files import write_json
from pipeline.core.maps import save_mask, save_png
from pipeline.core.runner import Resume, Work, chunked, claim_dir, file_digest, fingerprint, run_units, stage
from pipeline.features.backbone import backbone_info
from pipeline.head.coco import annotate, document
from pipeline.head.model import load_head
from pipeline.head.segmenter import Segmenter, load_segmenter


@dataclass
class SegmentWork(Work):
    model: str | None     # a model directory, or None: a head file with ``config``
    head_path: str | None
    config: dict          # the Segmenter's config (with --head) or the entries replaced (with --model)
    device: str
    batch_size: int
    images: list[str]
    out: str
    binary: bool          # 0/255 masks (p > the model's threshold) instead of maps

    def open(self) -> None:
        self.segmenter = (load_segmenter(self.model, **self.config) if self.model else
                          Segmenter.from_head(load_head(self.head_path), **self.config))

    def __call__(self, indices: list[int]) -> list[tuple[str | None, str | None, dict | None]]:
        """Write the maps of ``images[indices]`` (one forward per view for all of them); per image (the reason
        it was skipped, a note, its COCO annotation), each or None."""
        seg, decoded, results = self.segmenter, [], []
        for path in (self.images[i] for i in indices):
            try:
                pixels, size, note = seg.decode(path)
            except DatasetError as exc:
                results.append((str(exc), None, None))
                continue
            decoded.append((len(results), path, pixels, size))
            results.append((None, note, None))
        maps = seg.maps([(pixels, size) for _, _, pixels, size in decoded], self.batch_size, self.device)
        for (k, path, _, _), prob in zip(decoded, maps):
            out = Path(self.out) / f"{Path(path).stem}.png"
            save_mask(prob, seg.threshold, out) if self.binary else save_png(prob, out)
            results[k] = (None, results[k][1], annotate(prob, seg.threshold))
        return results


def _reads(o: dict) -> tuple[str, ...]:
    return () if o["model"] else ("backbone.name", "backbone.dtype", "backbone.features", "predict.resolutions", "predict.hflip",
                                  "predict.threshold")


@stage("segment", reads=_reads)
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", type=click.Path(path_type=Path), help="Model directory (stage export: models/).")
@click.option("--head", "head_path", type=click.Path(path_type=Path),
              help="Or a trained head, with backbone.name and predict.* of the params.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder of PNGs.")
@click.option("--backbone", help="Backbone (HF id or directory) instead of the model's or backbone.name.")
@click.option("--resolution", type=int, help="One input size instead of the model's or predict.resolutions.")
@click.option("--binary", is_flag=True,
              help="0/255 object masks (foreground where p > the threshold) instead of saliency maps.")
@click.option("--coco", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the masks as COCO-style JSON (RLE, one annotation per image) to this file.")
def segment(p, images: tuple[Path, ...], model: Path | None, head_path: Path | None, out: Path,
            backbone: str | None, resolution: int | None, binary: bool, coco: Path | None) -> None:
    """Write OUT/<stem>.png for every image (the views fused) at the image's size as viewers show it (EXIF
    orientation applied); unreadable files are reported, skipped, and make the exit status 1 once the
    others are done. An interrupted run resumes."""
    if (model is None) == (head_path is None):
        raise PipelineError("segment needs exactly one of --model DIR and --head FILE")
    overrides = {**({"backbone": backbone} if backbone else {}), **({"resolutions": [resolution]} if resolution else {})}
    if model:  # cheap checks first: model or head file, output folder, stems, resolutions
        config, seg = overrides, load_segmenter(model, **overrides)
        source = file_digest(model / "model.safetensors")
    else:
        pr = p.predict
        config = {"backbone": p.backbone.name, "dtype": p.backbone.dtype, "features": p.backbone.features,
                  "resolutions": list(pr.resolutions),
                  "hflip": pr.hflip, "threshold": pr.threshold, **overrides}
        seg, source = Segmenter.from_head(load_head(head_path), **config), file_digest(head_path)
    twice = [s for s, n in Counter(i.stem for i in images).items() if n > 1]
    if twice:
        raise PipelineError(f"two input images share the stem {twice[0]!r}: their maps would overwrite each other")
    out = claim_dir(out)
    info = backbone_info(seg.backbone_name)
    for v in seg.views:
        info.grid(v.resolution)
    work = SegmentWork(str(model) if model else None, str(head_path) if head_path else None, config, p.backbone.device,
                       p.backbone.batch_size, [str(i) for i in images], str(out), binary)
    units = chunked(range(len(images)), p.backbone.batch_size)  # a unit: one forward per view
    resume = Resume(out, fingerprint(source, seg.backbone_name, seg.dtype, seg.features, seg.views, seg.threshold, binary,
                                     [str(i) for i in images], [u.uid for u in units]))
    results = [r for unit in run_units(work, units, resume, desc="segment") for r in unit]
    resume.close()
    skipped = [reason for reason, _, _ in results if reason]
    if coco:
        done = [(Path(path).name, ann) for path, (_, _, ann) in zip(images, results) if ann]
        write_json(coco, document(done, seg.threshold, f"{len(done)} images segmented with {model or head_path}"))
    for _, note, _ in results:
        if note:
            click.echo(f"note: {note}", err=True)
    for reason in skipped:
        click.echo(f"skipped: {reason}", err=True)
    click.echo(f"{out}: {len(images) - len(skipped)} {'masks' if binary else 'maps'} written, "
               f"{len(skipped)} skipped" + (f"; COCO masks in {coco}" if coco else ""))
    if skipped:
        sys.exit(1)
