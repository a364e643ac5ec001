"""NCut (Sec. 3.1, Eq. 1-4) on planted and crafted inputs; both solvers."""
import numpy as np
import pytest

from pipeline.ncut import NCutError, affinity, bipartition, fiedler, ncut
from pipeline.params import NCutParams

SOLVERS = ["dense", "lanczos"]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("graph", ["binary", "weighted"])
def test_planted_object_is_recovered_exactly(planted, solver, graph):
    f, mask = planted()
    np.testing.assert_array_equal(ncut(f, NCutParams(solver=solver, graph=graph)), mask)


def test_affinity_is_eq1_weighted_and_the_codes_binary_graph():
    f = np.array([[1, 0], [0.6, 0.8], [0, 1]], np.float32) * np.array([[2], [1], [5]], np.float32)  # norms ignored
    eps = 1e-5
    weighted = np.array([[1, 0.6, eps], [0.6, 1, 0.8], [eps, 0.8, 1]])
    binary = np.array([[1, 1, eps], [1, 1, 1], [eps, 1, 1]])
    np.testing.assert_allclose(affinity(f, NCutParams(tau=0.2, eps=eps, graph="weighted")).numpy(), weighted, rtol=1e-6)
    np.testing.assert_allclose(affinity(f, NCutParams(tau=0.2, eps=eps, graph="binary")).numpy(), binary, rtol=1e-6)
    # tau is a strict threshold: cos = 0.6 is cut at tau = 0.6
    np.testing.assert_allclose(affinity(f, NCutParams(tau=0.6, eps=eps, graph="binary")).numpy()[0, 1], eps)


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
    mask, fv = ncut(f, NCutParams(solver=solver), return_vector=True)
    assert not mask.any() and fv.degenerate


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_single_odd_patch_is_cut_out(solver):
    f = np.zeros((8, 8, 4), np.float32)
    f[..., 0] = 1
    f[5, 2] = [0, 1, 0, 0]
    assert np.argwhere(ncut(f, NCutParams(solver=solver))).tolist() == [[5, 2]]


def test_nan_and_too_few_features_fail_clearly(planted):
    f, _ = planted()
    f[2, 3, 1] = np.nan
    with pytest.raises(NCutError, match="NaN"):
        ncut(f)
    with pytest.raises(NCutError, match=r"\(N >= 3, d\)"):
        ncut(np.ones((1, 2, 4), np.float32))


def three_equal_pieces(n=4):
    """Three identical cliques joined only by eps edges: lambda_2 = lambda_3 by symmetry."""
    f = np.zeros((3 * n, n, 3), np.float32)
    for k in range(3):
        f[k * n:(k + 1) * n, :, k] = 1
    return f


@pytest.mark.parametrize("solver", SOLVERS)
def test_repeated_fiedler_eigenvalue_is_resolved_by_the_documented_rule(solver):
    f = three_equal_pieces()
    mask, fv = ncut(f, NCutParams(solver=solver), return_vector=True)
    assert fv.degenerate
    assert abs(fv.eigenvalues[1] - fv.eigenvalues[0]) < 1e-6
    expected = np.zeros(f.shape[:2], bool)
    expected[:4] = True    # every patch has the same leverage: the lowest index decides -> first piece
    np.testing.assert_array_equal(mask, expected)


def test_solvers_agree_on_real_like_features(planted):
    """Smooth random fields (spatially correlated like ViT features) with a planted object."""
    rng = np.random.default_rng(3)
    h = w = 20
    base = rng.standard_normal((h // 4, w // 4, 32))
    field = np.kron(base, np.ones((4, 4, 1)))[:h, :w]
    f, mask = planted(h, w, box=(slice(5, 13), slice(6, 15)), d=32, noise=0.0)
    f = (3 * f + 0.6 * field + 0.3 * rng.standard_normal(f.shape)).astype(np.float32)
    dense, fd = ncut(f, NCutParams(solver="dense"), return_vector=True)
    fast, ff = ncut(f, NCutParams(solver="lanczos"), return_vector=True)
    np.testing.assert_array_equal(dense, fast)
    np.testing.assert_allclose(fd.eigenvalues[:2], ff.eigenvalues[:2], atol=1e-6)
    xd, xf = fd.vector / np.linalg.norm(fd.vector), ff.vector / np.linalg.norm(ff.vector)
    assert abs(xd @ xf) > 1 - 1e-6


def test_fiedler_matches_the_generalised_eigenproblem(planted):
    f, _ = planted(noise=0.2)
    fv = fiedler(f.reshape(-1, f.shape[-1]), NCutParams(solver="lanczos"))
    a = affinity(f.reshape(-1, f.shape[-1])).double().numpy()
    d = np.diag(a.sum(1))
    x = fv.vector
    lam = fv.eigenvalues[0]
    np.testing.assert_allclose((d - a) @ x, lam * d @ x, atol=1e-5 * np.abs(d @ x).max())


@pytest.mark.parametrize("shape", [(1, 3), (2, 3), (3, 3), (3, 5), (16, 16)])
def test_block_lanczos_equals_the_dense_solver_from_tiny_grids_to_many_block_steps(shape):
    """Grids smaller than one block (the Krylov space is exhausted: Rayleigh-Ritz is exact) and a
    noisy 256-patch grid that needs several block steps give the dense solver's eigenvalues and mask."""
    rng = np.random.default_rng(sum(shape))
    f = rng.standard_normal((*shape, 8)).astype(np.float32)
    f[: shape[0] // 2 + 1, : shape[1] // 2 + 1, 0] += 2.0
    dense, fd = ncut(f, NCutParams(solver="dense"), return_vector=True)
    fast, ff = ncut(f, NCutParams(solver="lanczos"), return_vector=True)
    assert not fd.degenerate and not ff.degenerate
    np.testing.assert_allclose(ff.eigenvalues[:2], fd.eigenvalues[:2], atol=1e-6)
    np.testing.assert_array_equal(fast, dense)


def test_the_fast_solver_fails_clearly_when_it_does_not_converge(monkeypatch, planted):
    import pipeline.ncut as module

    monkeypatch.setattr(module, "KRYLOV_STEPS", 1)
    f, _ = planted(noise=0.5)
    with pytest.raises(NCutError, match="no convergence to ncut.degenerate_tol = 1e-06 in 1 block steps"):
        ncut(f)
