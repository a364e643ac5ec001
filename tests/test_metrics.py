"""Metrics (README "Metric conventions"): PySODMetrics parity, independent hand loops, tiny worked examples."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core.metrics import THRESHOLDS, MetricsError, aggregate, image_scores, pr_curve, to_uint8

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "metric-fixtures"
needs_fixtures = pytest.mark.skipif(not (FIXTURES / "masks").is_dir(), reason="../shared metric fixtures absent")

# Published PySODMetrics results on the three fixture pairs (metric-fixtures/README.md).
PUBLISHED = {
    "sm": 0.9029761578759272,      # Smeasure
    "wfm": 0.5579812753638986,     # wFmeasure
    "mae": 0.03705558476661653,    # MAE
    "em_adp": 0.9408760066970617,  # adpEm
    "em_mean": 0.9566258293508704,  # meanEm
    "em_max": 0.9669544828922699,  # maxEm
    "fm_adp": 0.5816750824038355,  # adpFm
    "fm_mean": 0.577051059518767,  # meanFm
    "fm_max": 0.5886784581120638,  # maxFm
}


def _gray(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=np.uint8)


@pytest.fixture(scope="module")
def fixture_pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(stem, pred uint8, gt bool) with gt binarised at > 128 exactly as PySODMetrics' prepare_data."""
    pairs = []
    for mask_path in sorted((FIXTURES / "masks").glob("*.png")):
        pred = _gray(FIXTURES / "preds" / mask_path.name)
        gt = _gray(mask_path) > 128
        pairs.append((mask_path.stem, pred, gt))
    assert len(pairs) == 3
    return pairs


@pytest.fixture(scope="module")
def fixture_scores(fixture_pairs) -> list[dict]:
    return [image_scores(pred, gt, cod=True) for _, pred, gt in fixture_pairs]


# ---------------------------------------------------------------------------------------------- 1. parity
@needs_fixtures
def test_pysodmetrics_parity_with_published_values(fixture_scores):
    agg = aggregate(fixture_scores)
    for key, value in PUBLISHED.items():
        assert agg[key] == pytest.approx(value, abs=1e-6), key
    assert all(type(v) is float for v in agg.values())


@needs_fixtures
def test_fixtures_include_an_empty_foreground_mask(fixture_pairs, fixture_scores):
    empty = [i for i, (_, _, gt) in enumerate(fixture_pairs) if not gt.any()]
    assert len(empty) == 1
    s = fixture_scores[empty[0]]
    # Empty mask: recall 0 everywhere -> F = 0 at every threshold under both conventions.
    assert not s["f_a"].any() and not s["f_b"].any() and not s["recall"].any()


# ----------------------------------------------------------------------------------- 2. hand-computed loop
def _loop_reference(pairs) -> dict[str, float]:
    """Straightforward per-threshold loop, independent of the histogram implementation."""
    fa_curves, fb_maxes, ious, accs = [], [], [], []
    for pred, gt in pairs:
        fa, fb = [], []
        for k in range(256):
            b = pred > k
            tp = int(np.sum(b & gt))
            fp = int(np.sum(b & ~gt))
            fn = int(np.sum(~b & gt))
            p = tp / (tp + fp) if tp + fp else 0.0
            r = tp / (tp + fn) if tp + fn else 0.0
            fa.append(1.3 * p * r / (0.3 * p + r) if 0.3 * p + r else 0.0)
            fb.append(1.09 * p * r / (0.09 * p + r) if 0.09 * p + r else 0.0)
        fa_curves.append(fa)
        fb_maxes.append(max(fb))
        b = pred > 127
        inter, union = int(np.sum(b & gt)), int(np.sum(b | gt))
        ious.append(inter / union if union else 1.0)
        accs.append(float(np.mean(b == gt)))
    return {
        "fmax_dataset": max(sum(c[k] for c in fa_curves) / len(fa_curves) for k in range(256)),
        "fmax_image": sum(fb_maxes) / len(fb_maxes),
        "iou": sum(ious) / len(ious),
        "acc": sum(accs) / len(accs),
    }


@needs_fixtures
def test_sod_conventions_match_hand_loop_on_fixtures(fixture_pairs, fixture_scores):
    ref = _loop_reference([(pred, gt) for _, pred, gt in fixture_pairs])
    agg = aggregate(fixture_scores)
    for key, value in ref.items():
        assert agg[key] == pytest.approx(value, abs=1e-9), key
    # The two F conventions really are different numbers on these files.
    assert abs(agg["fmax_dataset"] - agg["fmax_image"]) > 1e-3


def test_hand_loop_on_random_soft_maps():
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(3):
        gt = np.zeros((9, 11), bool)
        gt[2:6, 3:8] = True
        pred = np.clip(gt * 160 + rng.integers(0, 120, gt.shape), 0, 255).astype(np.uint8)
        pairs.append((pred, gt))
    agg = aggregate([image_scores(p, g) for p, g in pairs])
    ref = _loop_reference(pairs)
    for key, value in ref.items():
        assert agg[key] == pytest.approx(value, abs=1e-12), key


# ------------------------------------------------------------------------------------ 3. tiny hand examples
def test_two_image_worked_example():
    # Image 1: pred [[255, 0], [128, 0]], gt [[1, 0], [0, 0]]; fg pixel 255, bg pixels 0, 128, 0.
    #   k = 0..127:   predicted {255, 128}: TP 1, FP 1 -> P 1/2, R 1
    #                 F_a = 1.3 * .5 / (.3 * .5 + 1) = 13/23;  F_b = 1.09 * .5 / (.09 * .5 + 1) = 109/209
    #   k = 128..254: predicted {255}: P = R = 1 -> F_a = F_b = 1;   k = 255: nothing predicted -> F = 0
    #   at 0.5 (u8 > 127): P = {(0,0), (1,0)}, G = {(0,0)} -> IoU 1/2, Acc 3/4
    # Image 2: pred [[200, 100], [0, 0]], gt [[0, 1], [0, 0]]; fg pixel 100, bg pixels 200, 0, 0.
    #   k = 0..99: predicted {200, 100}: P 1/2, R 1 -> F_a 13/23, F_b 109/209;  k >= 100: TP 0 -> F = 0
    #   at 0.5: P = {(0,0)}, G = {(0,1)} -> IoU 0, Acc 2/4
    # Convention A: mean F_a(k) = 13/23 (k < 100), 13/46 (100..127), 1/2 (128..254), 0 -> max 13/23.
    # Convention B: mean(max F_b) = (1 + 109/209) / 2 = 159/209.
    # IoU = (1/2 + 0) / 2 = 1/4; Acc = (3/4 + 1/2) / 2 = 5/8.
    p1, g1 = np.array([[255, 0], [128, 0]], np.uint8), np.array([[1, 0], [0, 0]], bool)
    p2, g2 = np.array([[200, 100], [0, 0]], np.uint8), np.array([[0, 1], [0, 0]], bool)
    s1, s2 = image_scores(p1, g1), image_scores(p2, g2)
    agg = aggregate([s1, s2])
    assert agg["fmax_dataset"] == pytest.approx(13 / 23, abs=1e-12)
    assert agg["fmax_image"] == pytest.approx(159 / 209, abs=1e-12)
    assert agg["iou"] == pytest.approx(0.25, abs=1e-12)
    assert agg["acc"] == pytest.approx(0.625, abs=1e-12)
    # Per-threshold curve of image 1.
    assert np.allclose(s1["precision"][:128], 0.5) and np.allclose(s1["precision"][128:255], 1.0)
    assert s1["precision"][255] == 0.0 and s1["recall"][255] == 0.0  # no predicted pixel: 0/0 -> 0
    assert np.allclose(s1["f_b"][:128], 109 / 209)
    curve = pr_curve([s1, s2])
    assert list(curve.columns) == ["threshold", "precision", "recall", "f_a"]
    assert len(curve) == 256 and curve["threshold"].iloc[-1] == 1.0
    assert curve["f_a"].to_numpy() == pytest.approx(np.r_[[13 / 23] * 100, [13 / 46] * 28, [0.5] * 127, 0.0])
    assert curve["f_a"].max() == pytest.approx(agg["fmax_dataset"], abs=1e-15)


def test_toolbox_fmax_by_hand_with_an_all_zero_map_and_a_map_at_a_threshold():
    """Convention T on the two images above plus an all-zero map, by hand (foreground where u8 >= k):
    image 1 (255 fg; 128, 0, 0 bg): k = 0 P 1/4 R 1; k = 1..128 P 1/2 R 1 (128 >= k: the map equal to the
    threshold counts); k = 129..255 P = R = 1. Image 2 (100 fg; 200, 0, 0 bg): k = 0 P 1/4 R 1; k = 1..100
    P 1/2 R 1; k = 101..255 P = R = 0. Means over images 1 and 2 (image 3's map is all zero: left out):
    k = 0 (1/4, 1) F 13/43; 1..100 (1/2, 1) F 13/23; 101..128 (1/4, 1/2) F 13/46; 129..255 (1/2, 1/2) F 1/2.
    Max 13/23. Counted with image 3 (P 1/4, R 1 at k = 0, then 0) the max would be 0.377 (k = 1..100)."""
    p1, g1 = np.array([[255, 0], [128, 0]], np.uint8), np.array([[1, 0], [0, 0]], bool)
    p2, g2 = np.array([[200, 100], [0, 0]], np.uint8), np.array([[0, 1], [0, 0]], bool)
    p3, g3 = np.zeros((2, 2), np.uint8), np.array([[0, 0], [1, 0]], bool)
    s1, s2, s3 = image_scores(p1, g1), image_scores(p2, g2), image_scores(p3, g3)
    assert s1["precision_ge"][128] == 0.5 and s1["precision"][128] == 1.0  # >= k against > k at the map's value
    assert s1["precision_ge"][0] == 0.25 and s1["recall_ge"][0] == 1.0
    assert (s1["nonzero"], s2["nonzero"], s3["nonzero"]) == (True, True, False)
    assert aggregate([s1, s2, s3])["fmax_toolbox"] == pytest.approx(13 / 23, abs=1e-12)
    assert aggregate([s1, s2])["fmax_toolbox"] == pytest.approx(13 / 23, abs=1e-12)
    assert aggregate([s1])["fmax_toolbox"] == pytest.approx(1.0, abs=1e-12)
    assert aggregate([s3])["fmax_toolbox"] == 0.0  # no map to average: 0, not 0/0
    s3_counted = dict(s3, nonzero=True)  # the check can fail: the all-zero map counted
    assert aggregate([s1, s2, s3_counted])["fmax_toolbox"] == pytest.approx(
        max(1.3 * (1 / 3) * (2 / 3) / (0.3 / 3 + 2 / 3), 1.3 * 0.25 / (0.3 * 0.25 + 1)), abs=1e-12)


def test_empty_gt_and_empty_prediction():
    pred = np.zeros((5, 7), np.uint8)
    gt = np.zeros((5, 7), bool)
    s = image_scores(pred, gt, cod=True)
    assert s["iou"] == 1.0 and s["acc"] == 1.0  # empty union -> IoU defined as 1.0
    agg = aggregate([s])
    assert agg["iou"] == 1.0 and agg["acc"] == 1.0
    assert agg["fmax_dataset"] == 0.0 and agg["fmax_image"] == 0.0  # recall 0/0 -> 0 -> F = 0
    assert agg["mae"] == 0.0 and agg["sm"] == 1.0


def test_empty_gt_with_false_positives():
    pred = np.zeros((4, 4), np.uint8)
    pred[0, :2] = 255
    s = image_scores(pred, np.zeros((4, 4), bool))
    assert s["iou"] == 0.0 and s["acc"] == 14 / 16


def test_perfect_prediction_scores_one():
    gt = np.zeros((12, 10), bool)
    gt[3:8, 2:6] = True
    s = image_scores(gt.astype(np.uint8) * 255, gt, cod=True)
    agg = aggregate([s])
    for key in ("fmax_dataset", "fmax_image", "iou", "acc", "sm", "wfm", "fm_max", "fm_adp"):
        assert agg[key] == pytest.approx(1.0, abs=1e-9), key
    assert agg["mae"] == 0.0
    # PySODMetrics' E-measure divides the enhanced-alignment sum by (H*W - 1) (its MATLAB heritage), so a
    # perfect map scores N / (N - 1), not 1.
    n = gt.size
    assert agg["em_max"] == pytest.approx(n / (n - 1), abs=1e-9)
    assert agg["em_adp"] == pytest.approx(n / (n - 1), abs=1e-9)


def test_float_and_uint8_inputs_agree():
    rng = np.random.default_rng(1)
    u = rng.integers(0, 256, (13, 17)).astype(np.uint8)
    gt_gray = np.where(rng.random((13, 17)) < 0.3, 255, 0).astype(np.uint8)
    a = image_scores(u, gt_gray, cod=True)
    b = image_scores(u.astype(np.float32) / 255, gt_gray > 127, cod=True)
    for key in a:
        assert np.array_equal(np.asarray(a[key]), np.asarray(b[key])), key


def test_binarisation_boundaries():
    # pred: 0.5 rounds to 128 -> foreground at 0.5; 127/255 is background. gt: 128 -> fg, 127 -> bg.
    pred = np.array([[0.5, 127 / 255]])
    assert to_uint8(pred).tolist() == [[128, 127]]
    s = image_scores(pred, np.array([[128, 127]], np.uint8))
    assert s["iou"] == 1.0 and s["acc"] == 1.0
    assert to_uint8(np.array([-0.2, 1.7])).tolist() == [0, 255]


def test_bad_inputs_raise():
    with pytest.raises(MetricsError):
        image_scores(np.zeros((3, 4), np.uint8), np.zeros((4, 3), bool))
    with pytest.raises(MetricsError):
        image_scores(np.full((2, 2), np.nan), np.zeros((2, 2), bool))
    with pytest.raises(MetricsError):
        aggregate([])
    gt = np.eye(4, dtype=bool)
    with pytest.raises(MetricsError):
        aggregate([image_scores(gt * 255, gt, cod=True), image_scores(gt * 255, gt)])


def test_curve_shapes():
    gt = np.eye(6, dtype=bool)
    s = image_scores((gt * 200).astype(np.uint8), gt, cod=True)
    assert THRESHOLDS.shape == (256,)
    for key in ("precision", "recall", "f_a", "f_b", "em_curve", "fm_curve"):
        assert s[key].shape == (256,) and s[key].dtype == np.float64, key


# ------------------------------------------------------------------------------------------ 4. mergeability
def test_aggregate_merges_halves():
    rng = np.random.default_rng(3)
    pairs = []
    for i in range(5):
        gt = np.zeros((16, 16), bool)
        gt[i : i + 8, 4:12] = True
        pairs.append((rng.random((16, 16)) * 0.6 + gt * 0.4, gt))
    whole = [image_scores(p, g, cod=True) for p, g in pairs]
    first = [image_scores(p, g, cod=True) for p, g in pairs[:2]]
    second = [image_scores(p, g, cod=True) for p, g in pairs[2:]]
    assert aggregate(first + second) == aggregate(whole)
    shuffled = aggregate(second[::-1] + first)
    for key, value in aggregate(whole).items():
        assert shuffled[key] == pytest.approx(value, abs=1e-12), key
