"""``selfment segment``: saliency maps (or binary object masks) for your own images or a video clip, a thin
wrapper of :class:`~pipeline.head.segmenter.Segmenter` (features on the fly): a model directory (``--model``,
stage export) or a head file with the params' backbone and views (``--head``). ``--overlay`` also draws each
mask on its image; ``--postprocess bilateral`` refines each map along the image's edges (docs/own-images.md).

A clip (any file PyAV decodes: .mp4, .mov, .webm, .mkv, ...) gives three videos at its size: the map and the
binary mask, lossless (each frame decodes to exactly the map ``segment`` writes for that frame), and the
overlay in H.264 for people to look at. Frames are decoded and forwarded a batch at a time (memory bounded
whatever the length); finished batches are kept, so a killed run resumes; under ``torchrun`` the ranks share
the batches and rank 0 writes the videos in order."""
from __future__ import annotations

import os
import sys
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path, PurePosixPath

import click
import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline.core import timing
from pipeline.core.datasets import DatasetError
from pipeline.core.errors import PipelineError
from pipeline.core.files import atomic_write
from pipeline.core.maps import save_mask, save_png
from pipeline.core.metrics import to_uint8
from pipeline.core.overlay import overlay
from pipeline.core.params import BilateralParams
from pipeline.core.runner import (
    Dist,
    Resume,
    Unit,
    Work,
    chunked,
    claim_dir,
    file_digest,
    fingerprint,
    run_shared,
    stage,
)
from pipeline.features.backbone import backbone_info
from pipeline.head.coco import annotate, write_document
from pipeline.head.corpus import Batches, read_unit, repeated, write_list
from pipeline.head.model import load_head
from pipeline.head.postprocess import bilateral_solve
from pipeline.head.segmenter import Segmenter, load_segmenter
from pipeline.head.video import VideoWriter, lossless_codec, probe, read_frames, video_codec

VIDEO = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".wmv", ".flv"}


@dataclass
class SegmentWork(Work):
    model: str | None     # a model directory, or None: a head file with ``config``
    head_path: str | None
    config: dict          # the Segmenter's config (with --head) or the entries replaced (with --model)
    device: str
    batch_size: int
    listing: str          # the inputs: "path<TAB>output name" lines (pipeline.head.corpus)
    repeated: set[int]    # lines whose output name an earlier line has: skipped
    out: str
    binary: bool          # 0/255 masks (p > the model's threshold) instead of maps
    overlay: bool = False  # also <name>.overlay.jpg: the mask drawn on the image
    refine: BilateralParams | None = None  # maps refined by the bilateral solver

    def open(self) -> None:
        self.segmenter = (load_segmenter(self.model, **self.config) if self.model else
                          Segmenter.from_head(load_head(self.head_path), **self.config))
        self.root = Path(self.out).resolve()

    def __call__(self, offset: int, first: int, count: int) -> list[tuple[str, str | None, str | None, dict | None]]:
        """Write the maps of the ``count`` listed images from line ``first`` (at byte ``offset``; one forward per
        view for all of them); per image (its file name for COCO, the reason it was skipped, a note, its COCO
        annotation)."""
        seg, decoded, results = self.segmenter, [], []
        for k, (path, name) in enumerate(read_unit(Path(self.listing), offset, count)):
            target = Path(self.out) / name
            reason = (f"{path}: its output name {name} is an earlier input's; skipped" if first + k in self.repeated
                      else None)
            if reason is None:
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.parent.resolve().is_relative_to(self.root):  # a link inside --out pointing out
                    reason = f"{path}: {name} would be written outside {self.out} through a link; skipped"
            if reason is None:
                try:
                    with timing.section("decode"):
                        pixels, size, note = seg.decode(path)
                except DatasetError as exc:
                    reason = str(exc)
            # the image's name for COCO: its output name with its own suffix (relative to where it was found)
            results.append((str(PurePosixPath(name).with_suffix(Path(path).suffix)), reason, None if reason else note,
                            None))
            if reason is None:
                decoded.append((len(results) - 1, target, pixels, size))
        maps = seg.maps([(pixels, size) for _, _, pixels, size in decoded], self.batch_size, self.device)
        for (k, target, pixels, size), prob in zip(decoded, maps):
            if self.refine or self.overlay:
                pixels = at_size(pixels, size)
            if self.refine:
                with timing.section("postprocess"):
                    prob = bilateral_solve(pixels, prob, **self.refine.model_dump())
            with timing.section("write"):  # the map (or mask), the overlay, the COCO annotation
                save_mask(prob, seg.threshold, target) if self.binary else save_png(prob, target)
                if self.overlay:
                    drawn = Image.fromarray(overlay(pixels, prob, seg.threshold))
                    atomic_write(target.with_suffix(".overlay.jpg"), lambda f: drawn.save(f, format="JPEG", quality=90))
                results[k] = (*results[k][:3], annotate(prob, seg.threshold))
        return results


def at_size(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The decoded pixels at the map's (H, W) (a huge JPEG is decoded at a reduced scale)."""
    return pixels if pixels.shape[:2] == tuple(size) else np.asarray(Image.fromarray(pixels).resize(size[::-1]))


def _reads(o: dict) -> tuple[str, ...]:
    return () if o["model"] else ("backbone.name", "backbone.dtype", "backbone.features", "predict.resolutions", "predict.hflip",
                                  "predict.threshold")


@stage("segment", reads=_reads)
@click.argument("images", nargs=-1)
@click.option("--list", "list_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A text file of image paths, one per line (relative ones: to its folder).")
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
@click.option("--overlay", "draw", is_flag=True, help="Also OUT/<stem>.overlay.jpg: the mask drawn on the image.")
@click.option("--postprocess", type=click.Choice(["none", "bilateral"]), default="none", show_default=True,
              help="Refine each map along the image's edges (the fast bilateral solver, TokenCut's settings).")
@click.option("--first-frame", "start", type=click.IntRange(min=0), default=0, show_default=True,
              help="Video: the first frame (from 0).")
@click.option("--max-frames", type=click.IntRange(min=1), help="Video: at most this many frames.")
@click.option("--stride", type=click.IntRange(min=1), default=1, show_default=True, help="Video: every k-th frame.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True),
              help="Video: the outputs' frame rate (default: the clip's divided by --stride).")
def segment(p, images: tuple[str, ...], list_file: Path | None, model: Path | None, head_path: Path | None, out: Path,
            backbone: str | None, resolution: int | None, binary: bool, coco: Path | None, draw: bool,
            postprocess: str, start: int, max_frames: int | None, stride: int, fps: float | None) -> None:
    """Write a map for every image (the views fused) at the image's size as viewers show it (EXIF orientation
    applied): IMAGES are files, folders, glob patterns and ``--list`` files, each map at OUT/<its path relative to
    where it was found>.png (pipeline/head/corpus.py); unreadable files are reported, skipped, and make the exit
    status 1 once the others are done. An interrupted run resumes; under torchrun the ranks share the images. One
    video file instead gives three videos (see the module docstring)."""
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
    out = claim_dir(out)
    info = backbone_info(seg.backbone_name)
    for v in seg.views:
        info.grid(v.resolution)
    refine = BilateralParams() if postprocess == "bilateral" else None
    key = fingerprint(source, seg.backbone_name, seg.dtype, seg.features, seg.views, seg.threshold,
                      *([refine] if refine else []))
    if any(Path(i).suffix.lower() in VIDEO for i in images):
        if len(images) > 1 or list_file:
            raise PipelineError("segment takes one video at a time, or images")
        clip = Path(images[0])
        segment_video(seg, clip, out, p.backbone.device, p.backbone.batch_size, refine, key,
                      range(start, probe(clip).frames, stride)[:max_frames], fps)
        return
    if not images and not list_file:
        raise PipelineError("segment needs images, folders, glob patterns or --list FILE")
    d = Dist()
    # the inputs, listed once per set of arguments (rank 0; a rerun reuses the list, so it resumes)
    listing = out / f".inputs-{fingerprint(images, str(list_file))[:16]}.txt"
    unit = p.backbone.batch_size  # a unit: one forward per view
    if d.rank == 0 and not listing.with_suffix(".npy").is_file():  # the offsets, written last: the list is whole
        tmp = listing.with_name(f"{listing.name}.{os.getpid()}.tmp")
        n, offsets = write_list(list(images), list_file, tmp, unit)
        tmp.replace(listing)
        atomic_write(listing.with_suffix(".npy"), lambda f: np.save(f, np.append(offsets, n)))  # offsets, count
    d.barrier()
    offsets = np.load(listing.with_suffix(".npy"))
    n, offsets = int(offsets[-1]), offsets[:-1]
    units = Batches(offsets, n, unit)
    work = SegmentWork(str(model) if model else None, str(head_path) if head_path else None, config, p.backbone.device,
                       p.backbone.batch_size, str(listing), repeated(listing), str(out), binary, draw, refine)
    gather, close = run_shared(work, units, out, fingerprint(key, binary, draw, file_digest(listing), n), d,
                               desc="segment")
    skipped = written = 0
    if d.rank == 0:
        for unit_results in gather():
            for _, reason, note, _ in unit_results:
                if note:
                    click.echo(f"note: {note}", err=True)
                if reason:
                    click.echo(f"skipped: {reason}", err=True)
                skipped += bool(reason)
                written += not reason
        if coco:
            write_document(coco, lambda: ((name, ann) for r in gather() for name, _, _, ann in r if ann),
                           seg.threshold, f"{written} images segmented with {model or head_path}")
        listing.unlink()
        listing.with_suffix(".npy").unlink()
    close()
    d.close()
    if d.rank != 0:
        return
    click.echo(f"{out}: {written} {'masks' if binary else 'maps'} written, {skipped} skipped"
               + (f"; COCO masks in {coco}" if coco else ""))
    if skipped:
        sys.exit(1)


def segment_video(seg: Segmenter, clip: Path, out: Path, device: str, batch_size: int,
                  refine: BilateralParams | None, key: str, frames: range, fps: float | None) -> None:
    """OUT/<stem>.map.mkv, .mask.mkv (lossless) and .overlay.mp4 of the clip's ``frames`` (see the module
    docstring). A unit is one batch of consecutive selected frames: its maps and masks are kept, compressed, in
    the resume state of the rank that made it (rank k % world size takes unit k)."""
    info = probe(clip)
    if not frames:
        raise PipelineError(f"{clip}: no frame selected (it has {info.frames}; --first-frame {frames.start})")
    if info.has_audio:
        click.echo(f"note: {clip}: its audio is not copied into the outputs", err=True)
    if video_codec() != "libx264" or lossless_codec() != "libx264rgb":
        click.echo(f"note: this PyAV has no H.264 encoder: the overlay is {video_codec()}, the map and mask "
                   f"{lossless_codec()}", err=True)
    rate = Fraction(fps).limit_denominator(1001000) if fps else info.fps / frames.step
    units = chunked(range(len(frames)), batch_size)
    d = Dist()
    key = fingerprint(key, file_digest(clip), frames.start, frames.step, len(frames), [u.uid for u in units])
    keys = [fingerprint(key, r, d.world_size) for r in range(d.world_size)]
    state = Resume(out / clip.stem, keys[d.rank], siblings=keys)
    mine = [u for k, u in enumerate(units) if k % d.world_size == d.rank and not state.done(u.uid)]
    bar = tqdm(total=sum(u.size for u in mine), desc=f"segment {clip.name}", unit="frame", disable=d.rank != 0)

    def selected():  # (position among the selected frames, RGB frame)
        for indices, batch in read_frames(clip, frames.start, len(frames), frames.step, batch_size):
            yield from zip(((i - frames.start) // frames.step for i in indices), batch)

    unit_of = {pos: u for u in mine for pos in u.args[0]}
    pending: list[np.ndarray] = []
    for pos, frame in selected():
        if pos in unit_of:
            pending.append(frame)
            if pos == unit_of[pos].args[0][-1]:
                state.save(unit_of[pos].uid, pack(seg, pending, batch_size, device, refine))
                bar.update(len(pending))
                pending = []
    bar.close()
    d.barrier()
    try:
        if d.rank == 0:
            states = [state] + [Resume(out / clip.stem, k, owner=False) for k in keys[1:]]
            _write_videos(seg, clip, out, rate, info, units, states, selected())
    finally:
        d.barrier()
        state.close()
        d.close()
    click.echo(f"{out}: {clip.stem}.map.mkv, {clip.stem}.mask.mkv, {clip.stem}.overlay.mp4 ({len(frames)} frames, "
               f"{info.width}x{info.height}, {float(rate):g} fps)")


def pack(seg: Segmenter, frames: list[np.ndarray], batch_size: int, device: str,
         refine: BilateralParams | None) -> bytes:
    """The uint8 maps and the masks (p > threshold) of ``frames``, one compressed blob (the resume state)."""
    maps = list(seg.maps([(f, f.shape[:2]) for f in frames], batch_size, device))
    if refine:
        maps = [bilateral_solve(f, m, **refine.model_dump()) for f, m in zip(frames, maps)]
    both = np.stack([np.stack([to_uint8(m), (m > seg.threshold).astype(np.uint8) * 255]) for m in maps])
    return zlib.compress(both.tobytes(), 1)


def _write_videos(seg: Segmenter, clip: Path, out: Path, rate: Fraction, info, units: list[Unit],
                  states: list[Resume], frames) -> None:
    shape = (2, info.height, info.width)
    with (VideoWriter(out / f"{clip.stem}.map.mkv", rate, info.width, info.height, lossless=True) as maps,
          VideoWriter(out / f"{clip.stem}.mask.mkv", rate, info.width, info.height, lossless=True) as masks,
          VideoWriter(out / f"{clip.stem}.overlay.mp4", rate, info.width, info.height) as drawn):
        unit = {pos: (k, u) for k, u in enumerate(units) for pos in u.args[0]}
        for pos, frame in frames:
            k, u = unit[pos]
            if pos == u.args[0][0]:
                both = np.frombuffer(zlib.decompress(states[k % len(states)].load(u.uid)), np.uint8).reshape(-1, *shape)
            m, b = both[pos - u.args[0][0]]
            maps.write(m)
            masks.write(b)
            drawn.write(overlay(frame, m / 255, seg.threshold))
