"""Datasets: a dataset is a sorted list of (stem, image path, optional mask path).

A dataset spec (:class:`~pipeline.core.params.DatasetSpec`) always has a ``root`` folder and is either a
preset by name, ``{root: DIR, preset: ECSSD}`` (layouts in :mod:`pipeline.core.presets`), or a generic pair
of folders under the root, ``{root: DIR, images: SUBDIR, masks: SUBDIR}`` (``masks`` may be omitted
for unlabelled images). Images and masks are paired by file stem.
Every pair is checked before any work starts (:func:`validate`); a problem raises
:class:`DatasetError` with one line naming the file and what is wrong.
"""
from __future__ import annotations

import random
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pipeline.core.errors import PipelineError
from pipeline.core.params import DatasetSpec, EvalSet, TrainData
from pipeline.core.presets import PRESETS

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DatasetError(PipelineError):
    """A dataset problem, reported as one line naming the file and what is wrong."""


@dataclass(frozen=True)
class Sample:
    stem: str
    image: Path
    mask: Path | None


def _files_by_stem(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS:
            if p.stem in files:
                raise DatasetError(f"{p}: two files share the stem {p.stem!r} ({files[p.stem].name})")
            files[p.stem] = p
    return files


def _folders(spec: DatasetSpec, base: Path) -> tuple[Path, Path | None]:
    root = base / spec.root
    if spec.preset is not None:
        for img, msk in PRESETS[spec.preset]:
            if (root / img).is_dir() and (root / msk).is_dir():
                return root / img, root / msk
        tried = ", ".join(f"{i}/ + {m}/" for i, m in PRESETS[spec.preset])
        raise DatasetError(f"{root}: no {spec.preset} layout found (tried {tried})")
    return root / spec.images, (root / spec.masks if spec.masks else None)


def resolve(spec: DatasetSpec, base: Path | str = ".") -> list[Sample]:
    """Turn a dataset spec into samples sorted by stem; folder-level problems raise DatasetError."""
    images_dir, masks_dir = _folders(spec, Path(base))
    for folder in (images_dir, masks_dir):
        if folder is not None and not folder.is_dir():
            raise DatasetError(f"{folder}: folder does not exist")
    images = _files_by_stem(images_dir)
    if not images:
        raise DatasetError(f"{images_dir}: no images found (extensions {', '.join(IMAGE_EXTS)})")
    if masks_dir is None:
        return [Sample(s, p, None) for s, p in images.items()]
    masks = _files_by_stem(masks_dir)
    for stem, path in images.items():
        if stem not in masks:
            raise DatasetError(f"{path}: no mask named {stem}.* in {masks_dir}")
    for stem, path in masks.items():
        if stem not in images:
            raise DatasetError(f"{path}: mask has no image named {stem}.* in {images_dir}")
    return [Sample(s, images[s], masks[s]) for s in images]


def eval_samples(spec: EvalSet) -> list[Sample]:
    """The pairs of an evaluation set: the dataset's, or its first ``spec.first`` in stem order."""
    return resolve(spec)[: spec.first]


def training_set(t: TrainData) -> tuple[list[Sample], int]:
    """The training corpus of paper Sec. 4.1 (:func:`sample_subset` of ``t.dataset``) and the size of the
    whole dataset it was drawn from."""
    samples = resolve(t.dataset)
    return sample_subset(samples, t.sample_size, t.sample_seed), len(samples)


def sample_subset(samples: list[Sample], size: int, seed: int) -> list[Sample]:
    """The paper's training corpus: ``random.Random(seed).sample(sorted(image paths), size)``.

    Returned in the sampled order (as the official code does). A dataset with at most ``size``
    images is used whole, in sorted order; the caller reports that.
    """
    if size >= len(samples):
        return list(samples)
    by_path = {str(s.image): s for s in samples}
    return [by_path[p] for p in random.Random(seed).sample(sorted(by_path), size)]


def _open(path: Path) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()
    except Exception as exc:  # PIL raises several types for unreadable or truncated files
        raise DatasetError(f"{path}: unreadable or truncated image ({exc})") from None
    return im


def _to_uint8(im: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer grayscale to 8 bit (scaled by the mode's range)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(np.round(arr * 255.0 / top), 0, 255).astype(np.uint8))
    return im


def load_image(path: Path | str) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a dataset image, its stored pixel array as is (the grid its mask is drawn
    on: no EXIF orientation, docs/data.md "Datasets"); grayscale, palette, RGBA and 16-bit are converted."""
    return rgb_pixels(_open(Path(path)))


def rgb_pixels(im: Image.Image) -> np.ndarray:
    """RGB uint8 of a decoded image: grayscale, palette, CMYK and 16-bit converted, alpha composited on black."""
    im = _to_uint8(im)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(background, im)
    return np.asarray(im.convert("RGB"))


class _TooLarge(Exception):
    """A non-JPEG photo over PIL's pixel limit (its message is the one-line reason)."""


def load_photo(path: Path | str, side: int) -> tuple[np.ndarray, tuple[int, int], str | None]:
    """A photo as viewers show it, for ``segment``: EXIF orientation applied, the first frame of an
    animation or multi-page file, and a JPEG larger than PIL's decompression-bomb limit decoded at a
    reduced scale (DCT scaling, never below ``side`` pixels on its shorter side), so memory stays bounded;
    other formats over the limit (PNG, TIFF, ...) cannot be decoded in part and are refused in one line.
    Returns RGB uint8 pixels, the full oriented (height, width) the map is written at, and a note or None."""
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
            (w, h), frames = im.size, getattr(im, "n_frames", 1)
            if w * h > (Image.MAX_IMAGE_PIXELS or np.inf):
                if im.format != "JPEG":
                    raise _TooLarge(f"{path}: {w}x{h} {im.format} is over PIL's limit of {Image.MAX_IMAGE_PIXELS} "
                                    f"pixels and only JPEGs are decoded at reduced scale; downscale it first")
                scale = side / min(w, h)
                im.draft("RGB", (max(1, round(w * scale)), max(1, round(h * scale))))
            turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientations that swap the axes
            im.load()
            im = ImageOps.exif_transpose(im)
        except _TooLarge as exc:
            raise DatasetError(str(exc)) from None
        except Image.DecompressionBombError as exc:  # over twice the limit: PIL refuses to open it at all
            raise DatasetError(f"{path}: not decoded: {exc}") from None
        except Exception as exc:  # PIL raises several types for unreadable or truncated files
            raise DatasetError(f"{path}: unreadable or truncated image ({exc})") from None
    note = f"{path}: {frames} frames, the first one segmented" if frames > 1 else None
    return rgb_pixels(im), ((w, h) if turned else (h, w)), note


def load_mask(path: Path | str) -> np.ndarray:
    """Boolean (H, W) mask: foreground where the 8-bit gray value is >= 128."""
    im = _to_uint8(_open(Path(path)))
    if im.mode == "RGBA":
        im = im.convert("RGB")
    return np.asarray(im.convert("L")) >= 128


def _check(sample: Sample, min_side: int) -> None:
    image = _open(sample.image)
    w, h = image.size
    if min(w, h) < min_side:
        raise DatasetError(f"{sample.image}: image is {w}x{h}, smaller than one {min_side}-px patch")
    if sample.mask is not None:
        mask = _open(sample.mask)
        if mask.size != image.size:
            raise DatasetError(
                f"{sample.mask}: mask is {mask.size[0]}x{mask.size[1]} but its image is {w}x{h}"
            )


def validate(samples: list[Sample], min_side: int = 1, workers: int = 8) -> None:
    """Decode every image and mask once; raise DatasetError on the first bad file (in stem order)."""
    if not samples:
        raise DatasetError("dataset is empty")
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(_check, s, min_side) for s in samples]
        for f in futures:
            f.result()
