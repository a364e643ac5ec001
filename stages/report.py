"""Stage report: every evaluation -> result tables (CSV, Markdown, JSON), the resolution study, figures
(PR curves of every method per set, IPO convergence, training loss, resolution) and labelled panels."""
from __future__ import annotations

import json
from pathlib import Path

import click
import pandas as pd
from PIL import Image

from pipeline.core.datasets import eval_samples, load_mask
from pipeline.core.files import atomic_write, read_image_table, write_json
from pipeline.core.runner import stage
from pipeline.evaluation.report import (
    line_figure,
    mask_image,
    panel,
    pick_examples,
    pr_figure,
    resolution_figure,
    resolution_table,
    results_table,
    to_markdown,
)
from pipeline.features.views import set_views

PANEL_METHODS = {"ncut": "NCut", "ncut_ipo": "NCut + IPO", "head": "Selfment head"}


def _write_table(table: pd.DataFrame, stem: Path, intervals: dict | None = None) -> None:
    atomic_write(stem.with_suffix(".csv"), lambda f: f.write(table.to_csv(float_format="%.6f").encode()))
    atomic_write(stem.with_suffix(".md"), lambda f: f.write(to_markdown(table, intervals).encode()))


def _png(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


@stage("report", reads=("data.eval", "predict.resolutions"))
@click.option("--metrics-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--predictions", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--pr-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="PR curve CSVs of the evaluate stages.")
@click.option("--ipo-csv", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--loss-csv", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--tables", type=click.Path(path_type=Path), required=True, help="Output folder of the tables.")
@click.option("--summary", type=click.Path(path_type=Path), required=True, help="Results JSON (dvc metrics).")
@click.option("--intervals", "intervals_path", type=click.Path(path_type=Path), required=True,
              help="Every result's bootstrap interval (JSON; not a dvc metrics file).")
@click.option("--resolution-csv", type=click.Path(path_type=Path), required=True,
              help="Resolution study plot data (rows data x resolution x method).")
@click.option("--figures", type=click.Path(path_type=Path), required=True, help="Folder of PNG figures.")
@click.option("--panels", type=click.Path(path_type=Path), required=True, help="Folder of qualitative panels.")
@click.option("--examples", default=3, show_default=True, help="Successes and failures per panel.")
def report(p, metrics_dir: Path, predictions: Path, pr_dir: Path, ipo_csv: Path, loss_csv: Path, tables: Path,
           summary: Path, intervals_path: Path, resolution_csv: Path, figures: Path, panels: Path,
           examples: int) -> None:
    """Tables with rows dataset x method and the paper's columns; figures and panels
    (image | ground truth | NCut | NCut+IPO | head) of the best and worst images by the head's IoU."""
    sets = p.data.eval
    results = {n: json.loads((metrics_dir / f"{n}.json").read_text()) for n in sets}
    intervals = {n: json.loads((metrics_dir / f"{n}.intervals.json").read_text()) for n in sets}
    table = results_table(results)
    _write_table(table, tables / "results", intervals)
    # the final head first: `dvc exp show` and `dvc metrics diff` list columns in this order
    write_json(summary, {n: {m: r[m] for m in sorted(r, key=lambda m: m != "head") if m != "n_images"}
                         for n, r in results.items()})
    write_json(intervals_path, intervals)

    def described(spec) -> str:
        return f"{spec.preset or spec.root}" + (f", first {spec.first}" if spec.first else "")

    res = resolution_table(results, {n: described(s) for n, s in sets.items()},
                           {n: set_views(s, p.predict.resolutions, False)[0].resolution for n, s in sets.items()})
    _write_table(res, tables / "resolution")
    atomic_write(resolution_csv, lambda f: res.reset_index().to_csv(f, index=False, float_format="%.6f"))
    for data in res.index.unique("data"):
        _png(figures / f"resolution_{data.replace('/', '_').replace(', ', '_').replace(' ', '_')}.png",
             resolution_figure(res, data))

    for n in sets:
        curves = {m: pd.read_csv(pr_dir / n / f"{m}.csv") for m in results[n] if m != "n_images"}
        _png(figures / f"pr_{n}.png", pr_figure(curves, f"{n}: precision-recall, every method"))
    _png(figures / "ipo_convergence.png",
         line_figure(pd.read_csv(ipo_csv), "iteration", ["mean_changed"], "IPO convergence", "patches changed"))
    loss = pd.read_csv(loss_csv)
    _png(figures / "train_loss.png", line_figure(loss, "step", ["loss"], "Training loss (Eq. 13)", "loss",
                                                 smooth=max(1, len(loss) // 50)))

    for n, spec in sets.items():
        by_stem = {s.stem: s for s in eval_samples(spec) if s.mask is not None}
        iou = read_image_table(metrics_dir / f"{n}.images.csv")["head_iou"]
        rows, labels = [], []
        for stem, kind in pick_examples(iou, examples):
            s = by_stem[stem]
            maps = [Image.open(predictions / n / m / f"{stem}.png") for m in PANEL_METHODS]
            rows.append([Image.open(s.image), mask_image(load_mask(s.mask)), *maps])
            labels.append(f"{kind}\n{stem[:18]}\nhead IoU {100 * iou[stem]:.1f}")
        if rows:
            image = panel(rows, ["image", "ground truth", *PANEL_METHODS.values()], labels)
            atomic_write(panels / f"{n}.png", lambda f, im=image: im.save(f, format="PNG"))
    click.echo(to_markdown(table, intervals))
