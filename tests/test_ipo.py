"""IPO (Sec. 3.2, Eq. 5-8) against a plain reference loop and crafted cases."""
import numpy as np
import pytest

from pipeline.bipartition.ipo import ipo
from pipeline.core.arrays import l2_normalize
from pipeline.core.params import IPOParams


def test_ipo_repairs_a_noisy_ncut_mask(planted):
    f, mask = planted(noise=0.1)
    noisy = mask.copy()
    noisy[3, 4:9] = False  # a missed row of the object
    noisy[10, 1] = True    # a stray background patch
    out = ipo(f, noisy)
    np.testing.assert_array_equal(out.mask, mask)
    assert out.changed[0] == 6 and out.stop == "converged"
    assert out.changed.shape == (20,) and out.fg_fraction[-1] == pytest.approx(mask.mean())


def reference_ipo(f, y, iters=20, min_cluster=10, orient=True):
    """Straight transcription of Sec. 3.2 / the official loop (no early stop) on (N, d) features."""
    f = l2_normalize(f)
    y = y.copy()
    r = f[y].mean(0) - f[~y].mean(0)
    for _ in range(iters):
        if y.sum() < min_cluster or (~y).sum() < min_cluster:
            break
        mu_f, mu_b = f[y].mean(0), f[~y].mean(0)
        new = f @ mu_f > f @ mu_b
        if new.all() or not new.any():
            break
        if orient and (f[new].mean(0) - f[~new].mean(0)) @ r < 0:
            new = ~new
        y = new
    return y


def four_clusters(seed=4):
    """Random clusters + a random init on which the 2-means assignment reverses orientation."""
    rng = np.random.default_rng(seed)
    k = rng.integers(3, 6)
    f = rng.standard_normal((k, 3))[rng.integers(0, k, 60)] + 0.3 * rng.standard_normal((60, 3))
    y = rng.random(60) < rng.uniform(0.2, 0.8)
    return l2_normalize(f).astype(np.float32), y


def test_ipo_keeps_orientation_when_the_assignment_would_flip():
    f, y = four_clusters()
    out = ipo(f.reshape(6, 10, 3), y.reshape(6, 10))
    assert out.flipped.any()
    np.testing.assert_array_equal(out.mask.ravel(), reference_ipo(f, y))
    unoriented = reference_ipo(f, y, orient=False)
    assert (unoriented != out.mask.ravel()).all()  # without r the labels come out reversed
    r = f[y].mean(0) - f[~y].mean(0)
    m = out.mask.ravel()
    assert (f[m].mean(0) - f[~m].mean(0)) @ r > 0


@pytest.mark.parametrize("seed", range(20))
def test_ipo_equals_the_reference_loop(seed):
    """Early stopping at a fixed point and the dot-product form of Eq. 6 change nothing."""
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((8, 8, 6)).astype(np.float32) + np.where(rng.random((8, 8, 1)) < 0.4, 1.5, 0)
    y = rng.random((8, 8)) < 0.5
    for iters in (1, 3, 20):
        np.testing.assert_array_equal(ipo(f, y, IPOParams(iters=iters)).mask.ravel(),
                                      reference_ipo(f.reshape(64, 6), y.ravel(), iters=iters))


def test_ipo_degenerate_cases(planted):
    f, mask = planted()
    empty = ipo(f, np.zeros_like(mask))
    assert not empty.mask.any() and empty.stop == "trivial_init"
    tiny = np.zeros_like(mask)
    tiny[0, 0] = True
    out = ipo(f, tiny, IPOParams(min_cluster=10))
    np.testing.assert_array_equal(out.mask, tiny)
    assert out.stop == "small_cluster" and out.iterations == 0
    # identical features: every relabelling is degenerate; the last non-degenerate labels survive
    same = np.ones((6, 6, 4), np.float32)
    init = np.zeros((6, 6), bool)
    init[:3] = True
    out = ipo(same, init)
    np.testing.assert_array_equal(out.mask, init)
    assert out.stop == "degenerate"
