"""NCut (Sec. 3.1), IPO (Sec. 3.2) and the Table 4 baselines on planted and crafted inputs."""
import numpy as np
import pytest

from pipeline.bipartition import all_methods, border_share, cls_bipartition, kmeans_bipartition
from pipeline.features import l2_normalize
from pipeline.ipo import ipo
from pipeline.ncut import NCutError, affinity, bipartition, fiedler, ncut

SOLVERS = ["dense", "lanczos"]


def planted(h=12, w=12, box=(slice(3, 7), slice(4, 9)), d=8, noise=0.05, seed=0):
    """Background patches ~ e0, object patches ~ e1, plus Gaussian noise; returns features, mask."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), bool)
    mask[box] = True
    f = np.zeros((h, w, d), np.float32)
    f[~mask, 0] = 1
    f[mask, 1] = 1
    return f + noise * rng.standard_normal(f.shape).astype(np.float32), mask


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("graph", ["binary", "weighted"])
def test_planted_object_is_recovered_exactly(solver, graph):
    f, mask = planted()
    np.testing.assert_array_equal(ncut(f, solver=solver, graph=graph), mask)


def test_affinity_is_eq1_weighted_and_the_codes_binary_graph():
    f = np.array([[1, 0], [0.6, 0.8], [0, 1]], np.float32) * np.array([[2], [1], [5]], np.float32)  # norms ignored
    eps = 1e-5
    weighted = np.array([[1, 0.6, eps], [0.6, 1, 0.8], [eps, 0.8, 1]])
    binary = np.array([[1, 1, eps], [1, 1, 1], [eps, 1, 1]])
    np.testing.assert_allclose(affinity(f, tau=0.2, eps=eps, graph="weighted").numpy(), weighted, rtol=1e-6)
    np.testing.assert_allclose(affinity(f, tau=0.2, eps=eps, graph="binary").numpy(), binary, rtol=1e-6)
    # tau is a strict threshold: cos = 0.6 is cut at tau = 0.6
    np.testing.assert_allclose(affinity(f, tau=0.6, eps=eps, graph="binary").numpy()[0, 1], eps)


def test_seed_inversion_and_four_connected_component():
    x = np.ones((5, 5))
    x[[0, 0, 1], [0, 1, 0]] = -1
    x[1, 1] = -10          # the seed (largest |x2|) lies below the mean: the bipartition is inverted
    x[2, 2] = -1           # diagonal neighbour of the seed: must not join
    x[4, 4] = -1           # same side, far away: must not join
    expected = np.zeros((5, 5), bool)
    expected[[0, 0, 1, 1], [0, 1, 0, 1]] = True
    np.testing.assert_array_equal(bipartition(x.ravel(), (5, 5)), expected)
    np.testing.assert_array_equal(bipartition(-x.ravel(), (5, 5)), expected)  # sign of x2 is irrelevant


@pytest.mark.parametrize("solver", SOLVERS)
def test_identical_features_have_no_cut(solver):
    f = np.ones((6, 6, 4), np.float32)
    mask, fv = ncut(f, solver=solver, return_vector=True)
    assert not mask.any() and fv.degenerate


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_single_odd_patch_is_cut_out(solver):
    f = np.zeros((8, 8, 4), np.float32)
    f[..., 0] = 1
    f[5, 2] = [0, 1, 0, 0]
    assert np.argwhere(ncut(f, solver=solver)).tolist() == [[5, 2]]


def test_nan_features_and_bad_params_fail_clearly():
    f, _ = planted()
    f[2, 3, 1] = np.nan
    with pytest.raises(NCutError, match="NaN"):
        ncut(f)
    with pytest.raises(NCutError, match="ncut.graph"):
        ncut(planted()[0], graph="knn")
    with pytest.raises(NCutError, match="ncut.solver"):
        ncut(planted()[0], solver="qr")


def three_equal_pieces(n=4):
    """Three identical cliques joined only by eps edges: lambda_2 = lambda_3 by symmetry."""
    f = np.zeros((3 * n, n, 3), np.float32)
    for k in range(3):
        f[k * n:(k + 1) * n, :, k] = 1
    return f


@pytest.mark.parametrize("solver", SOLVERS)
def test_repeated_fiedler_eigenvalue_is_resolved_by_the_documented_rule(solver):
    f = three_equal_pieces()
    mask, fv = ncut(f, solver=solver, return_vector=True)
    assert fv.degenerate
    assert abs(fv.eigenvalues[1] - fv.eigenvalues[0]) < 1e-6
    expected = np.zeros(f.shape[:2], bool)
    expected[:4] = True    # every patch has the same leverage: the lowest index decides -> first piece
    np.testing.assert_array_equal(mask, expected)


def test_solvers_agree_on_real_like_features():
    """Smooth random fields (spatially correlated like ViT features) with a planted object."""
    rng = np.random.default_rng(3)
    h = w = 20
    base = rng.standard_normal((h // 4, w // 4, 32))
    field = np.kron(base, np.ones((4, 4, 1)))[:h, :w]
    f, mask = planted(h, w, box=(slice(5, 13), slice(6, 15)), d=32, noise=0.0)
    f = (3 * f + 0.6 * field + 0.3 * rng.standard_normal(f.shape)).astype(np.float32)
    dense, fd = ncut(f, solver="dense", return_vector=True)
    fast, ff = ncut(f, solver="lanczos", return_vector=True)
    np.testing.assert_array_equal(dense, fast)
    np.testing.assert_allclose(fd.eigenvalues[:2], ff.eigenvalues[:2], atol=1e-6)
    xd, xf = fd.vector / np.linalg.norm(fd.vector), ff.vector / np.linalg.norm(ff.vector)
    assert abs(xd @ xf) > 1 - 1e-6


def test_fiedler_matches_the_generalised_eigenproblem():
    f, _ = planted(noise=0.2)
    fv = fiedler(f.reshape(-1, f.shape[-1]), solver="lanczos")
    a = affinity(f.reshape(-1, f.shape[-1])).double().numpy()
    d = np.diag(a.sum(1))
    x = fv.vector
    lam = fv.eigenvalues[0]
    np.testing.assert_allclose((d - a) @ x, lam * d @ x, atol=1e-5 * np.abs(d @ x).max())


# --- IPO ---------------------------------------------------------------------------------------------

def test_ipo_repairs_a_noisy_ncut_mask():
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
        np.testing.assert_array_equal(ipo(f, y, iters=iters).mask.ravel(),
                                      reference_ipo(f.reshape(64, 6), y.ravel(), iters=iters))


def test_ipo_degenerate_cases():
    f, mask = planted()
    empty = ipo(f, np.zeros_like(mask))
    assert not empty.mask.any() and empty.stop == "trivial_init"
    tiny = np.zeros_like(mask)
    tiny[0, 0] = True
    out = ipo(f, tiny, min_cluster=10)
    np.testing.assert_array_equal(out.mask, tiny)
    assert out.stop == "small_cluster" and out.iterations == 0
    # identical features: every relabelling is degenerate; the last non-degenerate labels survive
    same = np.ones((6, 6, 4), np.float32)
    init = np.zeros((6, 6), bool)
    init[:3] = True
    out = ipo(same, init)
    np.testing.assert_array_equal(out.mask, init)
    assert out.stop == "degenerate"


# --- baselines ---------------------------------------------------------------------------------------

def test_kmeans_and_cls_baselines_pick_the_object():
    f, mask = planted()
    np.testing.assert_array_equal(kmeans_bipartition(f, seed=0), mask)
    cls = np.zeros(f.shape[-1], np.float32)
    cls[1] = 1  # a CLS token attending to the object
    np.testing.assert_array_equal(cls_bipartition(f, cls), mask)
    assert border_share(mask) == 0 and border_share(~mask) == 1


def test_all_methods_share_one_ncut():
    f, mask = planted()
    out = all_methods(f, np.eye(f.shape[-1], dtype=np.float32)[1], ncut_kw={"solver": "lanczos"},
                      ipo_kw={"iters": 20, "min_cluster": 10})
    assert set(out.masks) == {"cls", "kmeans", "ncut", "ncut_ipo"}
    for m in out.masks.values():
        np.testing.assert_array_equal(m, mask)
