"""Bootstrap intervals over images: hand-computed resample statistics, the full-set statistic equal to the
metrics' own aggregate, the textbook width for a mean, paired differences (0 for identical runs, the
right sign for a planted improvement), bit-identical reruns, and the scores file round trip."""
import numpy as np
import pytest

from pipeline.core.errors import PipelineError
from pipeline.core.metrics import aggregate, image_scores
from pipeline.evaluation.intervals import (
    DEFINITIONS,
    compare_runs,
    intervals,
    load_scores,
    paired,
    part_rows,
    per_image_arrays,
    resample_counts,
    save_scores,
    seed_spread,
    statistic,
    stored,
)


def random_scores(n, seed, cod=False, better=None):
    """Per-image scores of n random soft maps against random masks; ``better``: images whose map is the
    mask itself (a planted improvement)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        gt = np.zeros((24, 32), bool)
        y, x = rng.integers(0, 12), rng.integers(0, 16)
        gt[y:y + 10, x:x + 14] = True
        noise = rng.random(gt.shape)
        pred = gt.astype(float) if better is not None and i in better else 0.4 * gt + 0.6 * noise
        out.append(image_scores(np.clip(pred, 0, 1), gt, cod=cod))
    return out


def test_resampled_statistics_equal_a_hand_computation():
    arrays = {"iou": np.array([0.2, 0.5, 0.8]), "f_a": np.array([[0.1, 0.9], [0.5, 0.4], [0.6, 0.3]])}
    counts = np.array([[2, 1, 0], [0, 0, 3], [1, 1, 1]])
    np.testing.assert_allclose(statistic(arrays, "iou", counts), [(0.4 + 0.5) / 3, 0.8, 0.5])
    # F_max A: the max over thresholds of the resample's mean curve
    np.testing.assert_allclose(statistic(arrays, "fmax_dataset", counts),
                               [max((0.2 + 0.5) / 3, (1.8 + 0.4) / 3), max(0.6, 0.3), max(1.2 / 3, 1.6 / 3)])


def test_counts_draw_n_images_per_resample_reproducibly():
    counts = resample_counts(7, 50, seed=3)
    assert counts.shape == (50, 7) and (counts.sum(axis=1) == 7).all() and counts.min() >= 0
    np.testing.assert_array_equal(counts, resample_counts(7, 50, seed=3))
    assert not np.array_equal(counts, resample_counts(7, 50, seed=4))
    with pytest.raises(PipelineError, match="needs images"):
        resample_counts(0, 10, 0)


def test_the_full_set_statistic_is_the_metrics_own_aggregate():
    scores = random_scores(9, 0, cod=True)
    arrays = per_image_arrays(scores)
    ones = np.ones((1, 9), int)
    expected = aggregate(scores)
    assert set(expected) == set(DEFINITIONS)
    for metric, value in expected.items():
        assert statistic(arrays, metric, ones)[0] == pytest.approx(value, abs=1e-12), metric


def test_a_means_interval_has_the_textbook_width():
    values = np.random.default_rng(0).normal(0.5, 0.1, 400)
    low, high = intervals({"iou": values}, resample_counts(400, 4000, 0), 0.95)["iou"]
    half = 1.96 * values.std() / np.sqrt(400)
    assert low < values.mean() < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)


def test_intervals_are_bit_identical_run_to_run():
    arrays = stored(per_image_arrays(random_scores(12, 1)))
    one = intervals(arrays, resample_counts(12, 200, 5), 0.95)
    assert one == intervals(arrays, resample_counts(12, 200, 5), 0.95)
    assert set(one) == {"fmax_dataset", "fmax_image", "fmax_toolbox", "iou", "acc"}


def test_identical_runs_differ_by_exactly_zero():
    arrays = per_image_arrays(random_scores(10, 2, cod=True))
    diff = paired(arrays, arrays, resample_counts(10, 300, 0), 0.95)
    assert set(diff) == set(DEFINITIONS)
    assert all(d == {"delta": 0.0, "low": 0.0, "high": 0.0, "excludes_0": False} for d in diff.values())


def test_a_planted_improvement_gives_an_interval_of_the_right_sign():
    better = set(range(0, 40, 2))  # half of the images get a perfect map
    a = per_image_arrays(random_scores(40, 3, cod=True))
    b = per_image_arrays(random_scores(40, 3, cod=True, better=better))
    diff = paired(a, b, resample_counts(40, 1000, 0), 0.95)
    for metric in ("fmax_image", "fmax_dataset", "fmax_toolbox", "iou", "acc", "sm"):
        assert diff[metric]["excludes_0"] and diff[metric]["low"] > 0, metric
    assert diff["mae"]["excludes_0"] and diff["mae"]["high"] < 0  # lower is better
    # the same change on one image only cannot be told from image sampling
    one = per_image_arrays(random_scores(40, 3, better={0}))
    assert not paired(a, one, resample_counts(40, 1000, 0), 0.95)["iou"]["excludes_0"]


def test_the_scores_file_round_trips(tmp_path):
    arrays = {m: stored(per_image_arrays(random_scores(5, k))) for k, m in enumerate(("ncut", "head"))}
    save_scores(tmp_path / "s.npz", ["0001", "NA", "a b", "12", "x"], arrays)
    stems, back = load_scores(tmp_path / "s.npz")
    assert stems == ["0001", "NA", "a b", "12", "x"]
    for m in arrays:
        assert set(back[m]) == set(arrays[m])
        for k, v in arrays[m].items():
            np.testing.assert_array_equal(back[m][k], v)
            assert back[m][k].dtype == v.dtype


def test_seed_spread_is_the_mean_and_sample_std_beside_the_mean_interval_half_width():
    runs = [({"S": {"head": {"iou": v, "acc": 0.9}}}, {"S": {"head": {"iou": [v - w, v + w], "acc": [0.8, 1.0]}}})
            for v, w in ((0.60, 0.02), (0.62, 0.04), (0.64, 0.03))]
    rows = {r["metric"]: r for r in seed_spread(runs)}
    assert rows["iou"]["n"] == 3 and rows["iou"]["mean"] == pytest.approx(0.62)
    assert rows["iou"]["std"] == pytest.approx(0.02)  # sqrt(((-0.02)^2 + 0 + 0.02^2) / 2)
    assert rows["iou"]["interval_half_width"] == pytest.approx(0.03)
    assert rows["acc"]["std"] == 0.0 and rows["acc"]["interval_half_width"] == pytest.approx(0.1)


def test_a_comparison_pairs_images_by_stem_and_can_take_one_part_of_them():
    """B's rows in another order are paired by stem; part 1/2 and 2/2 split the sorted stems; a planted
    improvement on the second half only shows there."""
    stems = [f"im{i:02d}" for i in range(40)]
    a = {"S": (stems, {"head": per_image_arrays(random_scores(40, 3))})}
    better = per_image_arrays(random_scores(40, 3, better=set(range(20, 40))))
    shuffled = np.random.default_rng(0).permutation(40)
    b = {"S": ([stems[i] for i in shuffled], {"head": {k: v[shuffled] for k, v in better.items()}})}
    iou = {part: next(r for r in compare_runs(a, b, 500, 0, 0.95, part) if r["metric"] == "iou")
           for part in (None, (1, 2), (2, 2))}
    assert iou[None]["images"] == 40 and iou[(1, 2)]["images"] == iou[(2, 2)]["images"] == 20
    assert iou[(1, 2)]["delta"] == 0.0 and not iou[(1, 2)]["excludes_0"]
    assert iou[(2, 2)]["excludes_0"] and iou[(2, 2)]["low"] > 0
    assert iou[None]["delta"] == pytest.approx(iou[(2, 2)]["delta"] / 2)
    np.testing.assert_array_equal(part_rows(["b", "a", "c"], (1, 2)), [1, 0])  # sorted: a, b | c
    with pytest.raises(PipelineError, match="different images"):
        compare_runs(a, {"S": (stems[:39], b["S"][1])}, 10, 0, 0.95)
    with pytest.raises(PipelineError, match="part 3/2"):
        part_rows(stems, (3, 2))


def test_compare_pair_sets_two_methods_of_one_run_against_each_other(monkeypatch, tmp_path, write_params):
    """`selfment compare REV --pair A:B` (one revision: B - A of two of its methods, paired over its images): a
    planted improvement of B is seen with the right sign, a method paired with itself differs by exactly 0,
    and a malformed pair or a method no set has is one line."""
    from click.testing import CliRunner

    import stages.compare as compare
    from stages.cli import main

    stems = [f"im{i:02d}" for i in range(40)]
    arrays = {"release": per_image_arrays(random_scores(40, 3)),
              "head": per_image_arrays(random_scores(40, 3, better=set(range(0, 40, 2))))}
    monkeypatch.setattr(compare, "read_run", lambda rev: {"demo": (stems, arrays)})
    params = write_params(tmp_path / "params.yaml", {})

    def invoke(*args):
        return CliRunner().invoke(main, ["compare", "--params", str(params), *args])

    r = invoke("workspace", "--pair", "release:head", "--metric", "iou")
    assert r.exit_code == 0, r.output
    [row] = [[c.strip() for c in line.strip("|").split("|")] for line in r.output.splitlines() if "| demo" in line]
    assert "workspace:head - workspace:release (1000 paired resamples" in r.output
    assert row[1] == "release:head" and float(row[5]) > 0 and row[-1] == "*"  # B - A > 0, interval excludes 0
    assert float(row[4]) > float(row[3])  # A and B each in a column of its own, though one revision
    same = invoke("workspace", "--pair", "head:head")
    assert same.exit_code == 0 and all("| +0.0 " in line for line in same.output.splitlines() if "| demo" in line)
    assert invoke("workspace", "--pair", "release").output.strip() == (
        "error: --pair 'release': expected A:B, two method names, e.g. release:head")
    assert "no evaluation set has maps of the method 'cls'" in invoke("workspace", "--pair", "cls:head").output
