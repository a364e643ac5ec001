"""Result tables (paper columns, conventions named apart) and qualitative panels."""
from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

# metric key -> column title; F_max conventions (README "Metric conventions") are never merged into one column
SOD_COLUMNS = {"fmax_image": "F_max (B, per-image)", "fmax_dataset": "F_max (A, dataset)", "iou": "IoU",
               "acc": "Acc"}
COD_COLUMNS = {"sm": "S_m", "wfm": "F_w", "em_mean": "E_mean", "em_max": "E_max", "em_adp": "E_adp", "mae": "MAE",
               "fm_max": "maxFm (C)"}
METHOD_NAMES = {"cls": "CLS token", "kmeans": "k-means", "ncut": "NCut", "ncut_ipo": "NCut + IPO",
                "head": "Selfment head"}


def results_table(results: dict[str, dict]) -> pd.DataFrame:
    """Rows (dataset, method), columns SOD then COD metrics, from {dataset: evaluate JSON}."""
    rows = []
    for dataset, res in results.items():
        for method, title in METHOD_NAMES.items():
            if method in res:
                cols = {**SOD_COLUMNS, **COD_COLUMNS}
                rows.append({"dataset": dataset, "method": title, **{c: res[method][k] for k, c in cols.items()}})
    return pd.DataFrame(rows).set_index(["dataset", "method"])


def to_markdown(table: pd.DataFrame) -> str:
    """SOD columns as percentages (as the paper's Table 1), COD columns as fractions (Table 2)."""
    shown = table.copy()
    for c in SOD_COLUMNS.values():
        shown[c] = 100 * shown[c]
    return shown.to_markdown(floatfmt=".3f") + "\n"


def _tile(im: Image.Image, height: int) -> Image.Image:
    w = max(1, round(im.width * height / im.height))
    return im.convert("RGB").resize((w, height), Image.BILINEAR)


def panel(rows: list[list[Image.Image]], height: int = 128, gap: int = 4) -> Image.Image:
    """Grid of images (one row per example, e.g. image | GT | NCut | NCut+IPO | head), white gaps."""
    tiles = [[_tile(im, height) for im in row] for row in rows]
    width = max(sum(t.width for t in row) + gap * (len(row) - 1) for row in tiles)
    canvas = Image.new("RGB", (width, len(tiles) * (height + gap) - gap), "white")
    for r, row in enumerate(tiles):
        x = 0
        for t in row:
            canvas.paste(t, (x, r * (height + gap)))
            x += t.width + gap
    return canvas


def mask_image(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L")
