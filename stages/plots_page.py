"""Stage plots_page: the HTML template that ``dvc plots show`` / ``dvc plots diff`` fill (set in .dvc/config),
with Vega, Vega-Lite and Vega-Embed inline so every chart draws without network (docs/experiments.md "Plots")."""
from pathlib import Path

import click

from pipeline.core.files import atomic_write
from pipeline.core.runner import stage
from pipeline.evaluation.plots import offline_page


@stage("plots-page", reads=("plots.vega_lite",))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def plots_page(p, out: Path) -> None:
    """Write the offline plots page template (Vega-Lite plots.vega_lite)."""
    page = offline_page(p.plots.vega_lite).encode()
    atomic_write(out, lambda f: f.write(page))
    click.echo(f"{out}: dvc plots page with Vega-Lite {p.plots.vega_lite} inline ({len(page) / 1e6:.1f} MB)")
