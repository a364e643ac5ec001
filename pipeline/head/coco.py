"""Masks as COCO-style JSON (docs/own-images.md "Masks for downstream tools"): one annotation per image, category
"foreground", the object mask p > threshold run-length encoded by pycocotools (the encoding CutLER- and
Detectron2-style pipelines read), score = the mean probability inside the mask."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from pipeline.core.files import atomic_write

CATEGORY = {"id": 1, "name": "foreground", "supercategory": "foreground"}


def annotate(prob: np.ndarray, threshold: float) -> dict:
    """The mask ``prob > threshold`` of one (H, W) map as an RLE (counts as text, JSON-ready) with its area,
    box (x, y, w, h) and score (mean p inside the mask; 0 for an empty mask)."""
    mask = prob > threshold
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    score = float(prob[mask].mean()) if mask.any() else 0.0
    return {"segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "area": int(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "score": round(score, 6)}


def decode(segmentation: dict) -> np.ndarray:
    """The bool (H, W) mask of an annotation's RLE."""
    return mask_utils.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}) > 0


def _entries(k: int, file_name: str, ann: dict) -> tuple[dict, dict]:
    height, width = ann["segmentation"]["size"]
    return ({"id": k, "file_name": file_name, "height": height, "width": width},
            {"id": k, "image_id": k, "category_id": CATEGORY["id"], "iscrowd": 0, **ann})


def _info(threshold: float, source: str) -> dict:
    return {"description": f"Selfment foreground masks (p > {threshold}) of {source}"}


def document(images: list[tuple[str, dict]], threshold: float, source: str) -> dict:
    """A COCO results-and-images document from (file name, :func:`annotate` output) per image, in order
    (image ids 1..n; every annotation's id equals its image's)."""
    entries = [_entries(k, f, ann) for k, (f, ann) in enumerate(images, start=1)]
    return {"info": _info(threshold, source), "images": [e for e, _ in entries],
            "annotations": [a for _, a in entries], "categories": [CATEGORY]}


def write_document(path: Path, images: Callable[[], Iterable[tuple[str, dict]]], threshold: float,
                   source: str) -> None:
    """:func:`document` written to ``path`` entry by entry from ``images()`` (called twice: the images, then the
    annotations), so memory holds one entry whatever the corpus's size; atomic, as every output."""
    def write(f) -> None:
        f.write(f'{{"info": {json.dumps(_info(threshold, source))}, "categories": [{json.dumps(CATEGORY)}],\n'.encode())
        for name, part in (("images", 0), ("annotations", 1)):
            f.write(f' "{name}": ['.encode())
            for k, (file_name, ann) in enumerate(images(), start=1):
                f.write(((",\n  " if k > 1 else "\n  ") + json.dumps(_entries(k, file_name, ann)[part])).encode())
            f.write(("]" + (",\n" if part == 0 else "}\n")).encode())

    atomic_write(path, write)
