"""Result tables (paper columns, conventions named apart), the resolution study, figures that need no
network (matplotlib PNGs) and labelled qualitative panels like the paper's Fig. 4."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

# metric key -> column title; F_max conventions (docs/numerics.md "Metric conventions") are never merged into one column
SOD_COLUMNS = {"fmax_image": "F_max (B, per-image)", "fmax_dataset": "F_max (A, dataset)",
               "fmax_toolbox": "F_max (T, toolbox)", "iou": "IoU", "acc": "Acc"}
COD_COLUMNS = {"sm": "S_m", "wfm": "F_w", "em_mean": "E_mean", "em_max": "E_max", "em_adp": "E_adp", "mae": "MAE",
               "fm_max": "maxFm (C)"}
METHOD_NAMES = {"cls": "CLS token", "kmeans": "k-means", "ncut": "NCut", "ncut_ipo": "NCut + IPO",
                "head": "Selfment head", "release": "Release head (authors')"}


def results_table(results: dict[str, dict]) -> pd.DataFrame:
    """Rows (dataset, method), columns SOD then COD metrics, from {dataset: evaluate JSON}; COD columns
    only when some set was scored with them (empty for the others)."""
    cols = {**SOD_COLUMNS, **COD_COLUMNS}
    rows = [{"dataset": dataset, "method": title, **{c: res[method].get(k) for k, c in cols.items()}}
            for dataset, res in results.items() for method, title in METHOD_NAMES.items() if method in res]
    table = pd.DataFrame(rows).set_index(["dataset", "method"])
    return table.drop(columns=[c for c in COD_COLUMNS.values() if table[c].isna().all()])


def scale_digits(metric: str) -> tuple[int, int]:
    """How a metric is shown: SOD metrics in % with one decimal, COD ones as fractions with three."""
    return (100, 1) if metric in SOD_COLUMNS else (1, 3)


def to_markdown(table: pd.DataFrame, intervals: dict[str, dict] | None = None) -> str:
    """A paper-style table: the index levels (dataset, method, ...) as the first columns, SOD columns as
    percentages with one decimal (as the paper's Table 1), COD columns as fractions with three (Table 2); with
    ``intervals`` ({dataset: {method: {metric: [low, high]}}}) each value followed by its interval in the
    same digits."""
    shown = table.copy().astype(object)
    titles = {**SOD_COLUMNS, **COD_COLUMNS}
    methods = {title: m for m, title in METHOD_NAMES.items()}
    for (dataset, method), row in table.iterrows():
        for key, title in titles.items():
            if title not in table or pd.isna(row[title]):
                continue
            scale, digits = scale_digits(key)
            cell = f"{scale * row[title]:.{digits}f}"
            low_high = (intervals or {}).get(dataset, {}).get(methods[method], {}).get(key)
            if low_high:
                cell += f" [{scale * low_high[0]:.{digits}f}, {scale * low_high[1]:.{digits}f}]"
            shown.loc[(dataset, method), title] = cell
    return shown.fillna("").reset_index().to_markdown(index=False, disable_numparse=True) + "\n"


def resolution_table(results: dict[str, dict], data: dict[str, str], resolutions: dict[str, int]) -> pd.DataFrame:
    """The resolution study (Sec. 4.4): evaluation sets holding the same ``data`` (a description of the
    pairs) at two or more resolutions, as rows (data, resolution, method) with the SOD columns."""
    groups: dict[str, list[str]] = {}
    for name in results:
        groups.setdefault(data[name], []).append(name)
    rows = [{"data": d, "resolution": resolutions[n], "method": METHOD_NAMES[m],
             **{c: results[n][m][k] for k, c in SOD_COLUMNS.items()}}
            for d, names in groups.items() if len({resolutions[n] for n in names}) > 1
            for n in sorted(names, key=resolutions.get) for m in METHOD_NAMES if m in results[n]]
    columns = ["data", "resolution", "method", *SOD_COLUMNS.values()]
    return pd.DataFrame(rows, columns=columns).set_index(["data", "resolution", "method"])


# ---------------------------------------------------------------------------------------------------
# Figures (PNG: visible without network, unlike the Vega charts of `dvc plots show`)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _axes(title: str, xlabel: str, ylabel: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def pr_figure(curves: dict[str, pd.DataFrame], title: str) -> bytes:
    """One chart of every method's PR curve (mean over images, t = k/255), F_max (A) marked."""
    fig, ax = _axes(title, "recall", "precision")
    for method, c in curves.items():
        best = c["f_a"].idxmax()
        line, = ax.plot(c["recall"], c["precision"], label=f"{METHOD_NAMES.get(method, method)} "
                                                           f"(F_max A {100 * c['f_a'][best]:.1f})")
        ax.plot(c["recall"][best], c["precision"][best], "o", color=line.get_color())
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower left")
    return _png(fig)


def line_figure(table: pd.DataFrame, x: str, ys: list[str], title: str, ylabel: str, smooth: int = 1) -> bytes:
    """``ys`` columns of ``table`` against ``x``; ``smooth`` > 1 adds a running mean (training loss)."""
    fig, ax = _axes(title, x, ylabel)
    for y in ys:
        if smooth > 1:
            ax.plot(table[x], table[y], alpha=0.25)
            ax.plot(table[x], table[y].rolling(smooth, min_periods=1).mean(), label=f"{y} (running mean {smooth})")
        else:
            ax.plot(table[x], table[y], marker="o", label=y)
    ax.legend()
    return _png(fig)


def resolution_figure(table: pd.DataFrame, data: str) -> bytes:
    """F_max (B) and IoU against the input resolution, one line per method (the Sec. 4.4 claim: the head
    gains with resolution while NCut does not)."""
    fig, ax = _axes(f"{data}: resolution study", "input resolution (px)", "score (%)")
    t = table.loc[data].reset_index()
    for method, rows in t.groupby("method", sort=False):
        for col, style in (("F_max (B, per-image)", "-o"), ("IoU", "--s")):
            ax.plot(rows["resolution"], 100 * rows[col], style, label=f"{method}: {col.split(' (')[0]}")
    ax.legend(fontsize=8)
    return _png(fig)


# ---------------------------------------------------------------------------------------------------
# Panels


def _fit(im: Image.Image, cell: int) -> Image.Image:
    """``im`` scaled to fit a cell x cell square, centred on white (uniform cells for any aspect ratio)."""
    im = im.convert("RGB")
    scale = cell / max(im.size)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR)
    out = Image.new("RGB", (cell, cell), "white")
    out.paste(im, ((cell - im.width) // 2, (cell - im.height) // 2))
    return out


def panel(rows: list[list[Image.Image]], columns: list[str], row_labels: list[str], cell: int = 160,
          gap: int = 4) -> Image.Image:
    """A grid of uniform cells with a header naming each column and a label on each row (paper Fig. 4)."""
    font = ImageFont.load_default()
    label_w, head_h = 120, 20
    width = label_w + len(columns) * (cell + gap)
    canvas = Image.new("RGB", (width, head_h + len(rows) * (cell + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(columns):
        draw.text((label_w + c * (cell + gap) + 4, 4), title, fill="black", font=font)
    for r, (row, label) in enumerate(zip(rows, row_labels)):
        y = head_h + r * (cell + gap)
        for k, line in enumerate(label.split("\n")):
            draw.text((4, y + cell // 2 - 12 + 12 * k), line, fill="black", font=font)
        for c, im in enumerate(row):
            canvas.paste(_fit(im, cell), (label_w + c * (cell + gap), y))
    return canvas


def pick_examples(scores: pd.Series, n: int) -> list[tuple[str, str]]:
    """(stem, "best" | "worst"): the n best and n worst images by ``scores`` (ties: by stem)."""
    order = scores.sort_index().sort_values(ascending=False, kind="stable")
    best = list(order.index[:n])
    worst = [s for s in order.index[::-1][:n] if s not in best]
    return [(s, "best") for s in best] + [(s, "worst") for s in worst]


def mask_image(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L")
