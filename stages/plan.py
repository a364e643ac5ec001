"""``selfment plan``: the stores, forwards and largest allocations of a run, before it starts (not a DVC stage)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from pipeline.core.errors import PipelineError
from pipeline.core.params import load_params
from pipeline.features.backbone import BackboneError, backbone_info
from pipeline.project.plan import count_images, known_info, plan_stores, render


@click.command("plan")
@click.option("--params", "params_path", default="params.yaml", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="Parameters file.")
def plan(params_path: Path) -> None:
    """Print every feature store the run writes (images, view, tokens, bytes), the forwards and the largest
    single allocations, from the params, the datasets' file lists and the backbone's config (no weights)."""
    try:
        p = load_params(params_path)
        try:
            info = backbone_info(p.backbone.name)
        except BackboneError:
            info = known_info(p.backbone.name)
            if info is None:
                raise
        click.echo(render(p, info, plan_stores(p, info, count_images(p))))
    except PipelineError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
