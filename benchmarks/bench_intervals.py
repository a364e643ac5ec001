"""What the bootstrap intervals cost: evaluate's whole run against its bootstrap section, and the bootstrap
alone at the sizes of the field's test sets.

    python benchmarks/bench_intervals.py --timing metrics/timing/evaluate.DUTS-TE-200.json \
        --scores metrics/eval/DUTS-TE-200.scores.npz [--sizes 1000 5019] [--resamples 1000]

The median of 5 runs of the bootstrap of every method of the set of --scores (the code evaluate runs),
as a share of that set's evaluate wall time (--timing), then the same for sets of --sizes images drawn
from its rows with replacement (the per-image arrays of a larger set).
"""
import argparse
import json
import statistics
import time

import numpy as np

from pipeline.evaluation.intervals import intervals, load_scores, resample_counts


def bootstrap_seconds(arrays: dict, resamples: int) -> float:
    n = len(next(iter(next(iter(arrays.values())).values())))
    times = []
    for _ in range(5):
        t = time.perf_counter()
        counts = resample_counts(n, resamples, 0)
        for a in arrays.values():
            intervals(a, counts, 0.95)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timing", required=True)
    ap.add_argument("--scores", required=True)
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 5019])
    ap.add_argument("--resamples", type=int, default=1000)
    a = ap.parse_args()
    wall = json.loads(open(a.timing).read())["wall_s"]
    stems, arrays = load_scores(a.scores)
    took = bootstrap_seconds(arrays, a.resamples)
    print(f"{len(stems)} images, {len(arrays)} methods, arrays {sorted(next(iter(arrays.values())))}: bootstrap "
          f"{took:.3f} s = {100 * took / wall:.1f}% of evaluate's {wall:.1f} s")
    rng = np.random.default_rng(0)
    for n in a.sizes:
        rows = rng.integers(0, len(stems), n)
        grown = {m: {k: v[rows] for k, v in arr.items()} for m, arr in arrays.items()}
        print(f"{n} images: {bootstrap_seconds(grown, a.resamples):.3f} s")


if __name__ == "__main__":
    main()
