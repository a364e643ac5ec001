"""``selfment configure``: write params.yaml from presets under configs/ (not a DVC stage)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from pipeline.configure import compose, render
from pipeline.errors import PipelineError
from pipeline.files import atomic_write


@click.command("configure")
@click.argument("presets", nargs=-1)
@click.option("--configs", type=click.Path(exists=True, file_okay=False, path_type=Path), default="configs",
              show_default=True, help="Folder of defaults.yaml and the presets.")
@click.option("--datasets", help="Folder holding the datasets (replaces the presets' datasets/ prefix); written as "
              "an absolute path, so that queued experiments, which run in a copy of the repository under "
              ".dvc/tmp/exps, find it too.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default="params.yaml", show_default=True)
def configure(presets: tuple[str, ...], configs: Path, datasets: str | None, out: Path) -> None:
    """Compose defaults + PRESETS (e.g. backbone/dinov3-vit7b16 data/paper scale/paper), validate, write OUT."""
    try:
        data, _ = compose(configs, list(presets), datasets and str(Path(datasets).resolve()))
    except PipelineError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    atomic_write(out, lambda f: f.write(render(data, list(presets)).encode()))
    click.echo(f"{out}: defaults + {' + '.join(presets) or 'nothing'}")
