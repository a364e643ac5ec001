"""The page ``dvc plots show`` / ``dvc plots diff`` write (docs/experiments.md "Plots"), drawn without network, and the
top-level PR-curve plots of dvc.yaml (one chart per evaluation set, one line per method).

DVC fills an HTML template (its ``{plot_divs}`` placeholder) with one ``<div>`` per chart whose inline script
calls ``vegaEmbed(...)``; its own template loads Vega from a CDN. This page carries Vega, Vega-Lite and
Vega-Embed inline instead, bundled by ``vl-convert-python`` (the Vega project's own packaging of the three
libraries and their dependencies), and has charts drawn as SVG.
"""
from __future__ import annotations

from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.core.params import MAP_METHODS

# DVC's charts are Vega-Lite v5 specs; vegaEmbed is wrapped so every chart renders as SVG (sharp, and its
# marks are in the page's DOM: docs/experiments.md "Plots" tells how the page is checked)
_SNIPPET = ("window.vega = vega; window.vegaLite = vegaLite; "
            "window.vegaEmbed = (el, spec, opts) => vegaEmbed(el, spec, Object.assign({renderer: 'svg'}, opts));")


def offline_page(vega_lite: str) -> str:
    """An HTML template for ``dvc plots`` holding the JavaScript bundle of Vega-Embed, Vega-Lite ``vega_lite``
    (e.g. "5.21") and Vega, and DVC's ``{plot_divs}`` placeholder (no ``{scripts}``: no CDN tags)."""
    import vl_convert

    known = vl_convert.get_vegalite_versions()
    if vega_lite not in known:
        raise PipelineError(f"plots.vega_lite {vega_lite!r}: this vl-convert-python bundles Vega-Lite {', '.join(known)}")
    bundle = vl_convert.javascript_bundle(_SNIPPET, vl_version=vega_lite)
    if "</script" in bundle.lower() or "{plot_divs}" in bundle:  # would end the tag / be filled by DVC
        raise PipelineError("the Vega bundle cannot be inlined in a <script> element")
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n{refresh_tag}\n<title>DVC plots</title>\n"
            f"<script>\n{bundle}\n</script>\n<style>table {{ border-spacing: 15px; }}</style>\n</head>\n"
            "<body>\n{plot_divs}\n</body>\n</html>\n")


def pr_plots(eval_sets) -> list[dict[str, Any]]:
    """dvc.yaml's top-level ``plots:``: per evaluation set one precision-recall chart with one line (y) per
    method's curve file ``plots/pr/<set>/<method>.csv`` (written by the evaluate stage)."""
    return [{f"PR curves: {name}": {
        "template": "linear", "x": "recall", "x_label": "recall", "y_label": "precision",
        "title": f"{name}: PR curves of every method (mean over images, t = k/255)",
        "y": {f"plots/pr/{name}/{m}.csv": "precision" for m in MAP_METHODS}}} for name in eval_sets]
