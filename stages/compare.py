"""``selfment compare REV_A REV_B``: paired bootstrap comparison of two revisions or experiments, and
``selfment spread``: mean and standard deviation over experiments that differ only in seeds; both read
through ``dvc.api`` (never by checking out the workspace). docs/experiments.md "Intervals and paired comparisons"."""
from __future__ import annotations

import io
import json

import click
import pandas as pd

from pipeline.core.errors import PipelineError
from pipeline.core.runner import stage
from pipeline.evaluation.intervals import Run, compare_runs, load_scores, seed_spread
from pipeline.evaluation.report import METHOD_NAMES, scale_digits

WORKSPACE = "workspace"


def read_run(rev: str) -> Run:
    """Every evaluation set's per-image arrays at ``rev`` (a git revision, an experiment name, or
    ``workspace``): the sets of its metrics/results.json, their scores files from git or DVC's cache."""
    import dvc.api

    at, run = None if rev == WORKSPACE else rev, {}
    for name in _read_json("metrics/results.json", rev):
        path = f"metrics/eval/{name}.scores.npz"
        try:
            with dvc.api.open(path, rev=at, mode="rb") as f:
                run[name] = load_scores(io.BytesIO(f.read()))
        except Exception as exc:
            raise PipelineError(f"{rev}: cannot read {path} ({' '.join(str(exc).split())[:160]}); runs made "
                                f"before per-image scores were kept need `dvc exp run` again") from None
    return run


def _read_json(path: str, rev: str):
    import dvc.api

    try:
        return json.loads(dvc.api.read(path, rev=None if rev == WORKSPACE else rev))
    except Exception as exc:  # dvc raises several types for unknown revisions and missing files
        raise PipelineError(f"{rev}: no {path} ({' '.join(str(exc).split())[:160]})") from None


def experiments() -> list[str]:
    """The names of the experiments `dvc exp show` lists (all baselines of the last commit)."""
    import dvc.api

    return [row["Experiment"] or row["rev"] for row in dvc.api.exp_show()
            if row.get("typ", "").startswith("branch_") and (row["Experiment"] or row["rev"])]


def table(rows: list[dict], a: str, b: str, level: float) -> str:
    """Markdown, one row per (set, method, metric): SOD metrics in points (x 100), COD ones as fractions;
    ``*`` where the interval of B - A excludes 0."""
    shown = []
    for r in rows:
        scale, digits = scale_digits(r["metric"])
        shown.append({"set": r["set"], "method": METHOD_NAMES.get(r["method"], r["method"]), "metric": r["metric"],
                      a: f"{scale * r['a']:.{digits}f}", b: f"{scale * r['b']:.{digits}f}",
                      "B - A": f"{scale * r['delta']:+.{digits}f}",
                      f"{100 * level:g}% interval": f"[{scale * r['low']:+.{digits}f}, {scale * r['high']:+.{digits}f}]",
                      "": "*" if r["excludes_0"] else ""})
    return pd.DataFrame(shown).to_markdown(index=False, disable_numparse=True)


@stage("compare", reads=("evaluate.bootstrap",))
@click.argument("rev_a")
@click.argument("rev_b", required=False)
@click.option("--all", "every", is_flag=True, help="Compare every experiment of `dvc exp show` with REV_A.")
@click.option("--method", "methods", multiple=True, help="Only these methods (cls, kmeans, ncut, ncut_ipo, head).")
@click.option("--metric", "metric_keys", multiple=True, help="Only these metrics (e.g. fmax_image, iou).")
@click.option("--part", help="K/N: only the K-th of N consecutive parts of each set's images in sorted stem "
              "order (1/2: the first half), e.g. to confirm on one half a choice made on the other.")
@click.option("--pair", help="A:B: method A of REV_A against method B of REV_B (REV_B: REV_A when omitted), e.g. "
              "release:head, the authors' released head against this project's on the same images.")
def compare(p, rev_a: str, rev_b: str | None, every: bool, methods: tuple[str, ...],
            metric_keys: tuple[str, ...], part: str | None, pair: str | None) -> None:
    """B - A for every evaluation set, method and metric of two runs (REV_A, REV_B: git revisions,
    experiment names or `workspace`), with a paired bootstrap interval over the same images; `*` marks
    an interval that excludes 0."""
    if pair and not every and rev_b is None:
        rev_b = rev_a
    if every == (rev_b is not None):
        raise PipelineError("compare needs REV_B or --all (every experiment against REV_A), not both")
    if pair and (pair.count(":") != 1 or not all(pair.split(":"))):
        raise PipelineError(f"--pair {pair!r}: expected A:B, two method names, e.g. release:head")
    boot = p.evaluate.bootstrap
    try:
        k_of_n = tuple(int(x) for x in part.split("/")) if part else None
    except ValueError:
        raise PipelineError(f"--part {part!r}: expected K/N, e.g. 1/2") from None
    method_a, method_b = pair.split(":") if pair else (None, None)
    base = _as(read_run(rev_a), method_a, pair) if pair else read_run(rev_a)
    for other in ([e for e in experiments() if e != rev_a] if every else [rev_b]):
        run_b = _as(read_run(other), method_b, pair) if pair else read_run(other)
        rows = _shown(compare_runs(base, run_b, boot.resamples, boot.seed, boot.level, k_of_n),
                      (pair,) if pair else methods, metric_keys)
        labels = (f"{rev_a}:{method_a}", f"{other}:{method_b}") if pair else (rev_a, other)  # distinct columns
        click.echo(f"\n{labels[1]} - {labels[0]} ({boot.resamples} paired resamples of the images"
                   + (f" of part {part} ({rows[0]['images']} images per set)" if part and rows else "")
                   + f", seed {boot.seed})\n")
        click.echo(table(rows, *labels, boot.level))


def _as(run: Run, method: str, name: str) -> Run:
    """The sets of ``run`` that have ``method``, with its arrays under ``name`` only (so that two methods pair)."""
    out = {s: (stems, {name: arrays[method]}) for s, (stems, arrays) in run.items() if method in arrays}
    if not out:
        raise PipelineError(f"no evaluation set has maps of the method {method!r}")
    return out


def _flat(params: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in params.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": json.dumps(v)})
    return out


def _shown(rows: list[dict], methods: tuple[str, ...], metric_keys: tuple[str, ...]) -> list[dict]:
    return [r for r in rows if (not methods or r["method"] in methods) and (not metric_keys or r["metric"] in metric_keys)]


@stage("spread", reads=())
@click.argument("revs", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every experiment of `dvc exp show`.")
@click.option("--over", multiple=True, default=("train.seed",), show_default=True,
              help="The params that differ between repeats of one setup (seeds).")
@click.option("--method", "methods", multiple=True, help="Only these methods (cls, kmeans, ncut, ncut_ipo, head).")
@click.option("--metric", "metric_keys", multiple=True, help="Only these metrics (e.g. fmax_image, iou).")
def spread(p, revs: tuple[str, ...], every: bool, over: tuple[str, ...], methods: tuple[str, ...],
           metric_keys: tuple[str, ...]) -> None:
    """Group REVS (or --all experiments) by their params except OVER, and give per group mean ± standard
    deviation over its runs (training noise) beside the mean half-width of their bootstrap intervals
    (image sampling)."""
    import dvc.api

    if every == bool(revs):
        raise PipelineError("spread needs REVS or --all, not both")
    names = experiments() if every else list(revs)
    params = {n: _flat(dvc.api.params_show(rev=None if n == WORKSPACE else n)) for n in names}
    varying = sorted(k for k in set().union(*map(set, params.values()))
                     if k not in over and len({params[n].get(k) for n in names}) > 1)
    groups: dict[tuple, list[str]] = {}
    for n in names:
        groups.setdefault(tuple(params[n].get(k) for k in varying), []).append(n)
    shown = []
    for key, members in groups.items():
        setup = ", ".join(f"{k}={v}" for k, v in zip(varying, key)) or "(one setup)"
        runs = [(_read_json("metrics/results.json", n), _read_json("metrics/intervals.json", n)) for n in members]
        for r in _shown(seed_spread(runs), methods, metric_keys):
            scale, digits = scale_digits(r["metric"])
            shown.append({"setup": setup, "set": r["set"], "method": METHOD_NAMES.get(r["method"], r["method"]),
                          "metric": r["metric"], "runs": str(r["n"]),
                          "mean ± std": f"{scale * r['mean']:.{digits}f} ± {scale * r['std']:.{digits}f}",
                          "bootstrap ±": f"{scale * r['interval_half_width']:.{digits}f}"})
    click.echo(f"{len(names)} runs in {len(groups)} setups (repeats differ in {', '.join(over)})\n")
    click.echo(pd.DataFrame(shown).to_markdown(index=False, disable_numparse=True))
