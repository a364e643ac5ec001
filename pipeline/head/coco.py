"""Masks as COCO-style JSON (docs/own-images.md "Masks for downstream tools"): one annotation per image, category
"foreground", the object mask p > threshold run-length encoded by pycocotools (the encoding CutLER- and
Detectron2-style pipelines read), score = the mean probability inside the mask."""
from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

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


def document(images: list[tuple[str, dict]], threshold: float, source: str) -> dict:
    """A COCO results-and-images document from (file name, :func:`annotate` output) per image, in order
    (image ids 1..n; every annotation's id equals its image's)."""
    entries, annotations = [], []
    for k, (file_name, ann) in enumerate(images, start=1):
        height, width = ann["segmentation"]["size"]
        entries.append({"id": k, "file_name": file_name, "height": height, "width": width})
        annotations.append({"id": k, "image_id": k, "category_id": CATEGORY["id"], "iscrowd": 0, **ann})
    return {"info": {"description": f"Selfment foreground masks (p > {threshold}) of {source}"},
            "images": entries, "annotations": annotations, "categories": [CATEGORY]}
