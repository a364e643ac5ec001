"""NCut (Sec. 3.1, Eq. 1-4) on planted and crafted inputs; both solvers."""
import numpy as np
import pytest

from pipeline.bipartition.ncut import NCutError, affinity, bipartition, fiedler, ncut
from pipeline.core.params import NCutParams

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


def test_an_image_the_fast_solver_cannot_certify_is_solved_densely(monkeypatch, planted):
    """No certified answer within the step limit: the dense float64 solver decides, and says so."""
    import pipeline.bipartition.ncut as module

    f, _ = planted(noise=0.5)
    dense = ncut(f, NCutParams(solver="dense"))
    monkeypatch.setattr(module, "KRYLOV_STEPS", 1)
    monkeypatch.setattr(module, "_settled", lambda *a: False)
    mask, fv = ncut(f, return_vector=True)
    assert fv.fallback
    np.testing.assert_array_equal(mask, dense)
    assert not ncut(f, NCutParams(solver="dense"), return_vector=True)[1].fallback


def test_certification_refuses_a_gap_its_residuals_cannot_place_on_one_side_of_the_tolerance():
    from pipeline.bipartition.ncut import VECTOR_TOL, _settled

    tol = 1e-6
    lam = np.array([0.1, 0.1 + 1.5e-6])          # gap 1.5e-6 > tol ...
    assert _settled(lam, np.array([1e-12, 1e-12]), tol, widen=True)
    assert not _settled(lam, np.array([1e-12, 6e-7]), tol, widen=True)  # ... unless it may be < tol
    assert not _settled(lam, np.array([1e-9, 1e-9]), tol, widen=True)   # x2's angle 1e-9 / 1.5e-6: too large
    wide = np.array([0.1, 0.5])                  # well separated: the vector bound decides
    assert _settled(wide, np.array([0.9, 1]) * VECTOR_TOL * 0.4 * 0.99, tol, widen=False)
    assert not _settled(wide, np.array([1.1, 1]) * VECTOR_TOL * 0.4, tol, widen=False)
    assert _settled(np.array([0.1, 0.1]), np.array([1e-12, 1e-12]), tol, widen=True)      # cluster: ask for more
    assert not _settled(np.array([0.1, 0.1]), np.array([1e-12, 1e-12]), tol, widen=False)  # no separation known


def test_products_run_in_full_float32_whatever_the_caller_set_and_the_setting_is_restored(monkeypatch, planted):
    """TF32 (or bfloat16 passes on a CPU) would move similarities across tau: NCut's products run at
    "highest" even under `torch.set_float32_matmul_precision("medium")`."""
    import torch

    import pipeline.bipartition.ncut as module

    seen = set()
    for name in ("_gram", "_product32"):
        def spy(*args, fn=getattr(module, name)):
            seen.add(torch.get_float32_matmul_precision())
            return fn(*args)
        monkeypatch.setattr(module, name, spy)
    f, _ = planted(noise=0.2)
    torch.set_float32_matmul_precision("medium")
    try:
        ncut(f)
        assert seen == {"highest"}
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision("highest")


def test_the_affinity_is_symmetric_even_when_the_product_is_not(perturbed):
    import torch

    f = np.random.default_rng(0).standard_normal((700, 16)).astype(np.float32)   # several strips
    perturbed(1e-6, gram=0.3)
    for graph in ("binary", "weighted"):
        a = affinity(f, NCutParams(graph=graph, tau=0.0))
        assert torch.equal(a, a.T)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def planted_grids(_planted):
    """Grids with planted objects, smooth random fields, a repeated Fiedler eigenvalue, a lone patch."""
    rng = np.random.default_rng(5)
    grids = [_planted(16, 16, (slice(3, 9), slice(4, 12)), d=16, noise=n, seed=s)[0]
             for n, s in [(0.1, 0), (0.3, 1), (0.5, 2), (0.7, 3)]]
    for seed in range(4):
        base = rng.standard_normal((6, 6, 32))
        field = np.kron(base, np.ones((4, 4, 1)))[:24, :24]
        f, _ = _planted(24, 24, (slice(5 + seed, 15), slice(6, 19 - seed)), d=32, noise=0.0, seed=seed)
        grids.append((3 * f + 0.6 * field + 0.3 * rng.standard_normal(f.shape)).astype(np.float32))
    lone = np.zeros((8, 8, 4), np.float32)
    lone[..., 0] = 1
    lone[5, 2] = [0, 1, 0, 0]
    return grids + [three_equal_pieces(), lone]


@pytest.mark.parametrize("delta", [1e-6, 1e-3])
def test_perturbed_products_give_the_dense_float64_masks_on_planted_grids(perturbed, planted, delta):
    grids = planted_grids(planted)
    reference = [ncut(f, NCutParams(solver="dense"), return_vector=True) for f in grids]
    perturbed(delta)
    for f, (dense, fd) in zip(grids, reference):
        mask, fv = ncut(f, return_vector=True)
        assert fv.degenerate == fd.degenerate
        if fd.degenerate or fd.eigenvalues[1] - fd.eigenvalues[0] > 1e-3:
            assert iou(mask, dense) >= 0.99


@pytest.fixture(scope="module")
def duts_756(shared_model, shared_duts):
    """16 shared DUTS-TR images (every 187th stem) at 756 px through the stand-in ViT-S/14 (54 x 54
    patches, the setting of the NCut benchmark) and their dense float64 NCut (~3.5 s an image on 2 cores)."""
    import torch

    from pipeline.core.datasets import load_image, resolve
    from pipeline.core.params import DatasetSpec
    from pipeline.features.backbone import load_backbone, preprocess

    samples = resolve(DatasetSpec(root=str(shared_duts), preset="DUTS-TR"))[::187][:16]
    backbone = load_backbone(str(shared_model), device="cpu")
    grids = []
    with torch.inference_mode():
        for i in range(0, len(samples), 4):
            x = np.stack([preprocess(load_image(s.image), 756) for s in samples[i:i + 4]])
            grids += list(backbone(torch.from_numpy(x))[0].numpy())
    return grids, [ncut(f, NCutParams(solver="dense"), return_vector=True) for f in grids]


@pytest.mark.slow
@pytest.mark.parametrize("delta", [0.0, 1e-6, 1e-3])
def test_perturbed_products_give_the_dense_float64_masks_on_real_features(duts_756, perturbed, delta):
    grids, reference = duts_756
    if delta:
        perturbed(delta)
    separated = 0
    for f, (dense, fd) in zip(grids, reference):
        mask, fv = ncut(f, return_vector=True)
        assert fv.degenerate == fd.degenerate
        if len(fd.eigenvalues) > 1 and fd.eigenvalues[1] - fd.eigenvalues[0] > 1e-3:
            separated += 1
            assert iou(mask, dense) >= 0.99
    assert separated >= 13
