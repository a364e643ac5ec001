"""Presets: params.yaml composed from small files under configs/ (docs/params.md "Presets").

``configs/defaults.yaml`` holds the groups that depend on neither backbone nor data; each preset
(``backbone/dinov3-vit7b16``, ``data/duts-te``, ``scale/paper``, ...) overrides or adds keys. Presets
are deep-merged in the order given (a later one wins key by key; mappings such as ``data.eval`` are
merged), and the result is validated by the params schema before anything is written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.core.errors import PipelineError
from pipeline.core.params import Params, parse_params
from pipeline.evaluation.plots import pr_plots

# the line of dvc.yaml after which `configure` writes the top-level plots (to the end of the file)
PLOTS_MARKER = "# PR curves, one chart per evaluation set: written by `selfment configure` from data.eval\n"


def merge(base: dict, update: dict) -> dict:
    """``update`` deep-merged onto ``base`` (new dicts; lists and scalars are replaced)."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PipelineError(f"{path}: cannot read preset ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: a preset must be a mapping of params groups")
    return data


def available(configs: Path) -> list[str]:
    return sorted(str(p.relative_to(configs).with_suffix("")) for p in configs.glob("*/*.yaml"))


def compose(configs: Path, presets: list[str], datasets: str | None = None) -> tuple[dict, Params]:
    """defaults.yaml + ``presets`` (names relative to ``configs``, without .yaml), validated. With
    ``datasets``, dataset roots under ``datasets/`` are moved to that folder."""
    data = _read(configs / "defaults.yaml")
    for name in presets:
        path = configs / f"{name}.yaml"
        if not path.is_file():
            raise PipelineError(f"{path}: no such preset (known: {', '.join(available(configs))})")
        data = merge(data, _read(path))
    if datasets is not None:
        specs = [data.get("data", {}).get("train", {}).get("dataset", {}), *data.get("data", {}).get("eval", {}).values()]
        for spec in specs:
            if isinstance(spec, dict) and str(spec.get("root", "")).startswith("datasets/"):
                spec["root"] = str(Path(datasets) / spec["root"][len("datasets/"):])
    return data, parse_params(data, f"configs: {' + '.join(['defaults', *presets])}")


def render(data: Any, presets: list[str]) -> str:
    header = f"# Written by: selfment configure {' '.join(presets)} (docs/params.md \"Presets\"); edit or re-compose.\n"
    return header + yaml.safe_dump(data, sort_keys=False)


def with_pr_plots(dvc_yaml: str, eval_sets) -> str:
    """``dvc_yaml`` with its top-level ``plots:`` (after :data:`PLOTS_MARKER`) drawing the PR curves of
    ``eval_sets`` (docs/experiments.md "Plots")."""
    at = dvc_yaml.find(PLOTS_MARKER)
    if at < 0:
        raise PipelineError(f"dvc.yaml has no line {PLOTS_MARKER.strip()!r} to write the PR plots after")
    return dvc_yaml[:at] + PLOTS_MARKER + yaml.safe_dump({"plots": pr_plots(eval_sets)}, sort_keys=False)
