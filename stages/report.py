"""Stage report: every evaluation JSON -> result tables (CSV, Markdown, JSON) and qualitative panels."""
from __future__ import annotations

import json
from pathlib import Path

import click
from PIL import Image

from pipeline.datasets import load_mask, resolve
from pipeline.files import atomic_write, write_json
from pipeline.report import mask_image, panel, results_table, to_markdown
from pipeline.runner import stage

PANEL_METHODS = ("ncut", "ncut_ipo", "head")


@stage("report", reads=("data.eval",))
@click.option("--metrics-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--predictions", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--tables", type=click.Path(path_type=Path), required=True, help="Output folder of the tables.")
@click.option("--summary", type=click.Path(path_type=Path), required=True, help="Results JSON (dvc metrics).")
@click.option("--panels", type=click.Path(path_type=Path), required=True, help="Folder of qualitative panels.")
@click.option("--examples", default=4, show_default=True, help="Images per qualitative panel.")
def report(p, metrics_dir: Path, predictions: Path, tables: Path, summary: Path, panels: Path, examples: int) -> None:
    """Tables with rows dataset x method and the paper's columns; panels image | GT | NCut | NCut+IPO | head."""
    names = list(p.data.eval)
    results = {n: json.loads((metrics_dir / f"{n}.json").read_text()) for n in names}
    table = results_table(results)
    atomic_write(tables / "results.csv", lambda f: f.write(table.to_csv(float_format="%.6f").encode()))
    atomic_write(tables / "results.md", lambda f: f.write(to_markdown(table).encode()))
    write_json(summary, {n: {m: v for m, v in r.items() if m != "n_images"} for n, r in results.items()})
    for n in names:
        rows = []
        for s in [s for s in resolve(p.data.eval[n]) if s.mask is not None][:examples]:
            maps = [Image.open(predictions / n / m / f"{s.stem}.png") for m in PANEL_METHODS]
            rows.append([Image.open(s.image), mask_image(load_mask(s.mask)), *maps])
        if rows:
            atomic_write(panels / f"{n}.png", lambda f, r=rows: panel(r).save(f, format="PNG"))
    click.echo(to_markdown(table))
