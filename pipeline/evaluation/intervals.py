"""Bootstrap confidence intervals over images (docs/experiments.md "Intervals and paired comparisons").

A metric of an evaluation set is a statistic of its images: a mean of per-image values (F_max B, IoU,
Acc, S_m, weighted F, MAE, adaptive E / F) or the max / mean over thresholds of a mean per-image curve
(F_max A, E_xi and F curves; see :mod:`pipeline.core.metrics`). A bootstrap resample draws n images with
replacement; with its counts w (n,) every metric is recomputed exactly as defined, from the weighted
mean ``w @ values / n``, so one (B, n) matrix of counts serves every metric and every method of a set.
The interval is the percentile interval of the B recomputed values. A paired comparison applies the same
counts to two runs' scores of the same images: their difference's interval measures how much of it the
choice of images explains, and identical runs give exactly 0.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.files import atomic_write
from pipeline.core.metrics import toolbox_fmax

# metric -> (per-image array, reduction over its threshold axis; None for a per-image scalar; "toolbox": the
# toolbox F_max of the weighted mean precision and recall curves over the images with a non-zero map)
DEFINITIONS = {
    "fmax_dataset": ("f_a", "max"), "fmax_image": ("fmax_image", None), "fmax_toolbox": ("precision_ge", "toolbox"),
    "iou": ("iou", None), "acc": ("acc", None),
    "sm": ("sm", None), "wfm": ("wfm", None), "mae": ("mae", None), "em_adp": ("em_adp", None),
    "em_mean": ("em_curve", "mean"), "em_max": ("em_curve", "max"), "fm_adp": ("fm_adp", None),
    "fm_mean": ("fm_curve", "mean"), "fm_max": ("fm_curve", "max"),
}


def per_image_arrays(scores: list[dict]) -> dict[str, np.ndarray]:
    """The per-image arrays the metrics are statistics of, from :func:`pipeline.core.metrics.image_scores`
    results: scalars (n,) and curves (n, k) (COD ones only when every image has them)."""
    out = {"f_a": np.array([s["f_a"] for s in scores]), "fmax_image": np.array([s["f_b"].max() for s in scores]),
           # the toolbox's curves; an all-zero map is left out of its means by its weight (nonzero = 0)
           "precision_ge": np.array([s["precision_ge"] for s in scores]),
           "recall_ge": np.array([s["recall_ge"] for s in scores]),
           "nonzero": np.array([s["nonzero"] for s in scores], dtype=np.float64),
           "iou": np.array([s["iou"] for s in scores], dtype=np.float64),
           "acc": np.array([s["acc"] for s in scores], dtype=np.float64)}
    if scores and all("sm" in s for s in scores):
        for key in ("sm", "wfm", "mae", "em_adp", "fm_adp", "em_curve", "fm_curve"):
            out[key] = np.array([s[key] for s in scores], dtype=np.float64)
    return out


def stored(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays as the scores file keeps them: curves in float32 (half the size; their rounding, 1e-7,
    is far below any interval), scalars in float64."""
    return {k: v.astype(np.float32) if v.ndim == 2 else v for k, v in arrays.items()}


def save_scores(path: Path | str, stems: list[str], arrays: dict[str, dict[str, np.ndarray]]) -> None:
    """One set's per-image arrays of every method (``{method: {array: values}}``, rows in ``stems`` order)."""
    flat = {f"{m}/{k}": v for m, a in arrays.items() for k, v in a.items()}
    atomic_write(path, lambda f: np.savez_compressed(f, stem=np.array(stems, dtype=str), **flat))


def load_scores(file) -> tuple[list[str], dict[str, dict[str, np.ndarray]]]:
    """The stems and ``{method: {array: values}}`` of a scores file (a path or a binary file object)."""
    with np.load(file) as z:
        arrays: dict[str, dict[str, np.ndarray]] = {}
        for key in z.files:
            if key != "stem":
                method, name = key.split("/")
                arrays.setdefault(method, {})[name] = z[key]
        return [str(x) for x in z["stem"]], arrays


def resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) int counts: how often each image is drawn in each bootstrap resample of n images."""
    if n < 1 or resamples < 1:
        raise PipelineError(f"a bootstrap needs images and resamples (got {n} images, {resamples} resamples)")
    draws = np.random.default_rng(seed).integers(0, n, (resamples, n))
    return np.bincount((draws + n * np.arange(resamples)[:, None]).ravel(), minlength=resamples * n).reshape(resamples, n)


def statistic(arrays: dict[str, np.ndarray], metric: str, counts: np.ndarray) -> np.ndarray:
    """The metric recomputed for each row of ``counts`` (B, n) -> (B,)."""
    key, reduce = DEFINITIONS[metric]
    if reduce == "toolbox":
        return toolbox_fmax(arrays["precision_ge"], arrays["recall_ge"], counts * arrays["nonzero"])
    values = arrays[key]
    mean = counts @ values.reshape(len(values), -1) / counts.shape[1]   # (B, 1) or (B, k)
    return mean[:, 0] if reduce is None else getattr(mean, reduce)(axis=1)


def metrics_of(arrays: dict[str, np.ndarray]) -> list[str]:
    """The metrics these per-image arrays define, in :data:`DEFINITIONS` order."""
    return [m for m, (key, _) in DEFINITIONS.items() if key in arrays]


def interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of bootstrap values at ``level`` (e.g. 0.95)."""
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def intervals(arrays: dict[str, np.ndarray], counts: np.ndarray, level: float) -> dict[str, list[float]]:
    """[low, high] of every metric the arrays define."""
    return {m: list(interval(statistic(arrays, m, counts), level)) for m in metrics_of(arrays)}


def paired(a: dict[str, np.ndarray], b: dict[str, np.ndarray], counts: np.ndarray, level: float) -> dict[str, dict]:
    """B - A for every metric both define, on the same images (row i of each is image i): the difference
    of the full-set metrics, its interval over the same resamples of both, and whether it excludes 0."""
    ones = np.ones((1, counts.shape[1]), dtype=counts.dtype)
    out = {}
    for m in metrics_of(a):
        if DEFINITIONS[m][0] not in b:
            continue
        delta = float(statistic(b, m, ones)[0] - statistic(a, m, ones)[0])
        low, high = interval(statistic(b, m, counts) - statistic(a, m, counts), level)
        out[m] = {"delta": delta, "low": low, "high": high, "excludes_0": bool(low > 0 or high < 0)}
    return out


Run = dict[str, tuple[list[str], dict[str, dict[str, np.ndarray]]]]  # set -> (stems, {method: arrays})


def part_rows(stems: list[str], part: tuple[int, int] | None) -> np.ndarray:
    """Rows of the ``k``-th of ``n`` consecutive parts (``part = (k, n)``, k from 1) of the images in sorted
    stem order, e.g. (1, 2) the first half; every row, in order, without ``part``."""
    if part is None:
        return np.arange(len(stems))
    k, n = part
    if not 1 <= k <= n <= len(stems):
        raise PipelineError(f"part {k}/{n} of {len(stems)} images: needs 1 <= k <= n <= the number of images")
    return np.array_split(np.argsort(np.array(stems, dtype=str), kind="stable"), n)[k - 1]


def compare_runs(a: Run, b: Run, resamples: int, seed: int, level: float,
                 part: tuple[int, int] | None = None) -> list[dict]:
    """Paired comparison of two runs on every evaluation set both scored: per (set, method, metric) the
    values of A and B and :func:`paired`'s difference and interval, on the images of ``part``
    (:func:`part_rows`) or all. Both runs must have scored the same images of a set (B's rows are put in
    A's order); a set scored by one run only is an error."""
    if set(a) != set(b):
        raise PipelineError(f"the two runs scored different evaluation sets ({', '.join(sorted(set(a) ^ set(b)))} "
                            f"in one only)")
    rows = []
    for name in sorted(a):
        (stems, arrays_a), (stems_b, arrays_b) = a[name], b[name]
        if sorted(stems) != sorted(stems_b):
            raise PipelineError(f"{name}: the two runs scored different images ({len(stems)} and {len(stems_b)}); "
                                f"a paired comparison needs the same ones")
        row_of = {stem: j for j, stem in enumerate(stems_b)}
        mine = part_rows(stems, part)
        theirs = np.array([row_of[stems[i]] for i in mine])  # B's row of each of A's images
        counts, ones = resample_counts(len(mine), resamples, seed), np.ones((1, len(mine)), dtype=np.int64)
        for method in (m for m in arrays_a if m in arrays_b):
            a_rows = {k: v[mine] for k, v in arrays_a[method].items()}
            b_rows = {k: v[theirs] for k, v in arrays_b[method].items()}
            for metric, d in paired(a_rows, b_rows, counts, level).items():
                rows.append({"set": name, "method": method, "metric": metric, "images": len(mine),
                             "a": float(statistic(a_rows, metric, ones)[0]),
                             "b": float(statistic(b_rows, metric, ones)[0]), **d})
    return rows


def seed_spread(runs: list[tuple[dict, dict]]) -> list[dict]:
    """Mean and sample standard deviation over runs of one setup that differ only in seeds, for every
    (set, method, metric) all of them report, beside the mean half-width of their bootstrap intervals:
    the spread measures training noise, the interval image sampling. ``runs``: (results
    ``{set: {method: {metric: value}}}``, intervals ``{set: {method: {metric: [low, high]}}}``) each."""
    first = runs[0][0]
    rows = []
    for name, methods in first.items():
        for method, values in methods.items():
            for metric in values:
                got = [r.get(name, {}).get(method, {}).get(metric) for r, _ in runs]
                if any(v is None for v in got):
                    continue
                widths = [(i[name][method][metric][1] - i[name][method][metric][0]) / 2 for _, i in runs]
                rows.append({"set": name, "method": method, "metric": metric, "n": len(got),
                             "mean": float(np.mean(got)), "std": float(np.std(got, ddof=1)) if len(got) > 1 else 0.0,
                             "interval_half_width": float(np.mean(widths))})
    return rows
