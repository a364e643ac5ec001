"""``selfment configure``: write params.yaml from presets under configs/ (not a DVC stage)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from pipeline.core.errors import PipelineError
from pipeline.core.files import atomic_write
from pipeline.project.configure import compose, render, with_pr_plots


@click.command("configure")
@click.argument("presets", nargs=-1)
@click.option("--configs", type=click.Path(exists=True, file_okay=False, path_type=Path), default="configs",
              show_default=True, help="Folder of defaults.yaml and the presets.")
@click.option("--datasets", help="Folder holding the datasets (replaces the presets' datasets/ prefix); written as "
              "an absolute path, so that queued experiments, which run in a copy of the repository under "
              ".dvc/tmp/exps, find it too.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default="params.yaml", show_default=True)
def configure(presets: tuple[str, ...], configs: Path, datasets: str | None, out: Path) -> None:
    """Compose defaults + PRESETS (e.g. backbone/dinov3-vit7b16 data/paper scale/paper), validate, write OUT,
    and the PR-curve plots of its evaluation sets into the dvc.yaml beside OUT (when there is one)."""
    dvc_yaml = out.parent / "dvc.yaml"
    try:
        data, params = compose(configs, list(presets), datasets and str(Path(datasets).resolve()))
        plots = with_pr_plots(dvc_yaml.read_text(), params.data.eval) if dvc_yaml.is_file() else None
    except PipelineError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    atomic_write(out, lambda f: f.write(render(data, list(presets)).encode()))
    click.echo(f"{out}: defaults + {' + '.join(presets) or 'nothing'}")
    if plots is None:
        click.echo(f"{dvc_yaml}: none, so no PR plots were written")
    else:
        atomic_write(dvc_yaml, lambda f: f.write(plots.encode()))
        click.echo(f"{dvc_yaml}: PR plots of {', '.join(params.data.eval)}")
