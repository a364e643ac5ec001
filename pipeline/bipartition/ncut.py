"""Normalized-cut bipartition of a patch-feature grid (paper Sec. 3.1, Eq. 1-4).

Two solvers give the same Fiedler vector: ``dense`` is the reference of the official code and TokenCut
(``scipy.linalg.eigh(D - A, D)``, O(N^3)); ``lanczos`` finds the top eigenvectors of
M = D^-1/2 A D^-1/2 (same eigenvectors up to x = D^-1/2 u, eigenvalue lambda = 1 - mu) in two phases:
block Lanczos with float32 products proposes a subspace, block Lanczos with float64 products from
that subspace certifies the eigenpairs by their residuals (`_settled`), and an image it cannot certify
falls back to the dense float64 solver. Whatever the rounding of the float32 products (another BLAS,
TF32 on a GPU), only certified or dense eigenpairs are returned. The fast path holds one float32
N x N matrix, in a buffer reused from one image to the next.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice

import numpy as np
import scipy.linalg
import scipy.ndimage
import torch

from pipeline.core.arrays import l2_normalize
from pipeline.core.errors import PipelineError
from pipeline.core.params import NCutParams

MAX_CLUSTER = 8        # largest repeated-eigenvalue cluster resolved exactly (see `fiedler`)
LEVERAGE_TIE = 1e-4    # relative tolerance of equal leverages in the repeated-eigenvalue rule
UNIFORM_TOL = 1e-4     # affinities within this relative spread: a uniform graph (no cut)
KRYLOV_BLOCK = 16      # vectors per float32 block step (> MAX_CLUSTER; 16 cost about what 8 do per pass)
KRYLOV_STEPS = 100     # block steps of each phase before the dense fallback (about 6 + 1 at 756 px)
PROPOSE_TOL = 1e-6     # float32 phase: stop at this residual, or where it stalls (`_stalled`)
VECTOR_TOL = 1e-5      # certified bound on the angle between x2 and the true Fiedler vector
EIGENSPACE_TOL = 1e-8  # the same for a repeated eigenvalue's eigenspace (the leverage rule needs more)
ROWS_PER_PASS = 256    # rows of A per strip of the affinity and per conversion of a float64 product


class NCutError(PipelineError):
    """Bad NCut input or parameters."""


@dataclass(frozen=True)
class Fiedler:
    """Second-smallest generalised eigenvector of (D - A) x = lambda D x (Eq. 3) and its context."""

    vector: np.ndarray       # (N,) x2; all zeros when the graph is uniform (no cut exists)
    eigenvalues: np.ndarray  # generalised lambda_2, lambda_3, ... (ascending; more when repeated)
    degenerate: bool         # lambda_2 repeated (or uniform graph): x2 chosen by the documented rule
    fallback: bool = False   # the fast solver could not certify its eigenpairs: solved densely


def _check(f: np.ndarray) -> None:
    if f.ndim != 2 or f.shape[0] < 3:
        raise NCutError(f"NCut needs an (N >= 3, d) feature matrix, got shape {f.shape}")


@contextmanager
def _ieee_float32():
    """Full float32 matmuls inside NCut, whatever the caller set (TF32 or bfloat16 passes would move
    similarities across tau and change the graph itself)."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def _gram(rows: torch.Tensor, columns: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Cosine similarities of feature ``rows`` (n, d) with feature ``columns`` (d, m) into ``out``."""
    return torch.mm(rows, columns, out=out)


def _affinity_(f: torch.Tensor, p: NCutParams, out: torch.Tensor) -> torch.Tensor:
    """Eq. 1 (or the binary graph) into ``out``, a strip of rows at a time, each strip only from the
    diagonal on and mirrored below it: half the products of f f^T, and a graph exactly symmetric
    whatever the rounding of the product (a GPU's tiles, another BLAS) - the certified eigenpairs
    need it."""
    n, ft = f.shape[0], f.T.contiguous()  # (d, N): MKL's kernel for f f^T is 2x slower on AMD CPUs
    for i in range(0, n, ROWS_PER_PASS):
        j = i + ROWS_PER_PASS
        strip = _threshold_(_gram(f[i:j], ft[:, i:], out[i:j, i:]), p.tau, p.eps, p.graph)
        tile = strip[:, :ROWS_PER_PASS]
        tile.copy_(tile.triu() + tile.triu(1).T)
        out[j:, i:j].copy_(strip[:, ROWS_PER_PASS:].T)
    return out


def _product32(a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A y in float32: the proposal phase's products."""
    return a @ y


def _product64(a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A y in float64 for the float32 matrix A, converted a slab of rows at a time: the certifying
    phase's products (exact to float64 rounding; TF32 never applies to float64)."""
    out = torch.empty(a.shape[0], y.shape[1], dtype=torch.float64, device=a.device)
    for i in range(0, a.shape[0], ROWS_PER_PASS):
        torch.mm(a[i:i + ROWS_PER_PASS].double(), y, out=out[i:i + ROWS_PER_PASS])
    return out


def _threshold_(s: torch.Tensor, tau: float, eps: float, graph: str) -> torch.Tensor:
    """Eq. 1 in place on cosine similarities: weighted keeps <fi, fj> > tau, binary writes 1; else eps.

    Binary: sign(s - tau) is exactly +1 iff s > tau (a float difference is 0 only for equal floats),
    so clamping at eps < 1 gives {1, eps} in two passes over the matrix without a boolean temporary."""
    if graph == "binary":
        return s.sub_(tau).sign_().clamp_(min=eps)
    return torch.threshold_(s, tau, eps)


_WORKSPACE: dict[str, torch.Tensor] = {}


def _square(n: int, device: torch.device) -> torch.Tensor:
    """An (n, n) float32 buffer, the last one reused: mapping fresh pages for a new 34 MB matrix costs
    as much as building it (docs/benchmarks.md "Benchmarks"). One buffer at most is kept, so NCut still holds
    exactly one N x N matrix."""
    buf = _WORKSPACE.get("a")
    if buf is None or buf.shape != (n, n) or buf.device != device:
        _WORKSPACE.pop("a", None)
        buf = _WORKSPACE["a"] = torch.empty((n, n), dtype=torch.float32, device=device)
    return buf


def _build(features: np.ndarray, p: NCutParams, device, out: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, bool]:
    """Affinity (N, N) float32 (into ``out`` when given) and whether it is uniform (no cut exists)."""
    features = np.asarray(features, np.float32)
    _check(features)
    try:
        f = torch.as_tensor(l2_normalize(features), device=device)
    except ValueError as exc:
        raise NCutError(f"NCut input: {exc}") from None
    with _ieee_float32():
        a = _affinity_(f, p, torch.empty(len(f), len(f), device=f.device) if out is None else out)
    lo, hi = torch.aminmax(a)
    return a, bool(hi - lo <= UNIFORM_TOL * hi)


def affinity(features: np.ndarray, p: NCutParams = NCutParams(), device: str | torch.device = "cpu") -> torch.Tensor:
    """(N, N) float32 affinity of Eq. 1 (or the binary graph) on L2-normalised (N, d) features."""
    return _build(features, p, device)[0]


def _dense_pairs(a: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Generalised eigenpairs 1..k of (D - A) x = lambda D x (TokenCut's dense reference), as
    orthonormal u = D^1/2 x like the fast solver's."""
    d = np.diag(a.sum(1))
    lam, x = scipy.linalg.eigh(d - a, d, subset_by_index=[1, k])
    return lam, x * np.sqrt(np.diag(d))[:, None]


def _orthonormalise(w: torch.Tensor, u1: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Orthonormal columns spanning w with u1 and ``basis`` projected out (twice, for float64
    accuracy); directions that vanish under the projection (an exhausted Krylov space) are dropped.
    Rank-revealing through the SVD of the small triangular factor: w = Q R, R = U S V^T."""
    scale = float(w.norm())
    for _ in range(2):
        w = w - u1[:, None] * (u1 @ w)
        w = w - basis @ (basis.T @ w)
    q, r = torch.linalg.qr(w)
    u, sv, _ = torch.linalg.svd(r)
    return q @ u[:, sv > torch.finfo(w.dtype).eps ** 0.5 * scale]


def _ritz(product, q: torch.Tensor, u1: torch.Tensor, mq: torch.Tensor | None = None):
    """Block Lanczos with full reorthogonalisation and Rayleigh-Ritz on the complement of M's trivial
    eigenvector u1, from the orthonormal block ``q`` (orthogonal to u1; ``mq`` = M q when known).

    Each step multiplies M by one block (``product``: one pass over the matrix, as costly as one
    vector while the product is memory-bound), extends the projected matrix H = V^T M V by the new
    block's column, and yields the block's width of top Ritz pairs (lambda = 1 - mu ascending, Ritz
    vectors, residual norms ||M u - mu u|| as the products give them, whether the Krylov space is
    exhausted). Everything but the products is float64 torch: one thread pool, no host round trip
    on a GPU."""
    keep = q.shape[1]
    basis = products = q[:, :0]
    h = q.new_zeros(0, 0)
    while True:
        w = product(q) if mq is None else mq
        mq = None
        m = basis.shape[1]
        basis, products = torch.cat([basis, q], 1), torch.cat([products, w], 1)
        column = basis.T @ w
        h = torch.cat([torch.cat([h, column[:m].T], 0), column], 1)
        h[m:, m:] = (h[m:, m:] + h[m:, m:].T) / 2
        mu, s = torch.linalg.eigh(h)
        mu, s = mu.flip(0)[:keep], s.flip(1)[:, :keep]
        u = basis @ s
        residual = (products @ s - u * mu).norm(dim=0)
        q = _orthonormalise(w, u1, basis)
        yield 1.0 - mu, u, residual, q.shape[1] == 0
        if q.shape[1] == 0:
            return


def _settled(lam: np.ndarray, res: np.ndarray, tol: float, widen: bool) -> bool:
    """Whether Ritz values ``lam`` (lambda_2 first) with float64 residuals ``res`` decide the cluster
    of lambda_2 and bound the error of its eigenvector(s).

    Rayleigh-Ritz bounds (symmetric M): each true eigenvalue lies in [lam_i - res_i, lam_i], so every
    gap lam_i - lam_2 is decided against ``tol`` once it is farther from it than res_i + res_2; and
    the angle between the computed and the true eigenspace of the cluster is at most
    ||R_cluster|| / separation (Davis-Kahan), required below VECTOR_TOL (one vector) or EIGENSPACE_TOL.
    A cluster that fills all k pairs is settled when ``widen`` (the caller asks for more pairs)."""
    gaps = lam - lam[0]
    if np.any(np.abs(gaps[1:] - tol) <= res[1:] + res[0]):
        return False
    cluster = gaps < tol
    if cluster.all():
        return widen
    separation = lam[~cluster][0] - res[~cluster][0] - lam[cluster].max()
    bound = VECTOR_TOL if cluster.sum() == 1 else EIGENSPACE_TOL
    return bool(separation > 0 and np.sqrt((res[cluster] ** 2).sum()) <= bound * separation)


def _krylov_pairs(a: torch.Tensor, k: int, tol: float, widen: bool):
    """Eigenpairs 2..k+1 of (D - A) x = lambda D x as (lambda, u = D^1/2 x orthonormal, float64
    degrees), certified by `_settled`; None when they cannot be certified (dense fallback).

    Phase 1 (float32 products of r * (A (r * q)), r = D^-1/2 from float32 degrees) runs until the
    residual of lambda_2's Ritz pair reaches PROPOSE_TOL or stalls at the products' rounding floor
    (phase 2 decides everything, so phase 1 watches only what needs the most passes). Phase 2 (float64
    products, compute-bound: a block of k only) starts from phase 1's k wanted Ritz vectors; its
    first pass over A also gives the exact float64 degrees, so u1 = D^1/2 1 is an exact eigenvector
    of the certified operator."""
    n, dev = a.shape[0], a.device
    width = max(KRYLOV_BLOCK, k + 1)
    r32 = a.sum(1).rsqrt()
    start = torch.randn(n, width, generator=torch.Generator().manual_seed(0)).to(dev)
    u1 = _unit(r32.reciprocal())
    history = []
    steps = _ritz(lambda q: r32[:, None] * _product32(a, r32[:, None] * q), _orthonormalise(start, u1, start[:, :0]), u1)
    for lam, u, res, exhausted in islice(steps, KRYLOV_STEPS):
        history.append(float(res[0]))
        if exhausted or history[-1] <= PROPOSE_TOL or _stalled(history):
            break
    y = (r32[:, None] * u[:, :k]).double()
    p = _product64(a, torch.cat([torch.ones(n, 1, dtype=torch.float64, device=dev), y], 1))
    deg = p[:, 0]
    r = deg.rsqrt()
    u1 = _unit(deg.sqrt())
    z, mz = y / r[:, None], r[:, None] * p[:, 1:]       # M z = r * (A (r * z)) = r * (A y), exactly
    c = u1 @ z
    z, mz = z - u1[:, None] * c, mz - u1[:, None] * c   # deflate u1 (M u1 = u1)
    q, upper = torch.linalg.qr(z)
    mq = torch.linalg.solve_triangular(upper, mz, upper=True, left=False)
    certify = _ritz(lambda q: r[:, None] * _product64(a, r[:, None] * q), q, u1, mq)
    for lam, u, res, exhausted in islice(certify, KRYLOV_STEPS):
        lam, u, res = lam[:k].cpu().numpy(), u[:, :k].cpu().numpy(), res[:k].cpu().numpy()
        if len(lam) == k and (exhausted or _settled(lam, res, tol, widen)):
            return lam, u, deg.cpu().numpy()
    return None


def _stalled(history: list[float]) -> bool:
    """The last two residuals are no 10% better than the best before them: the products' rounding
    floor (about 1e-7 for float32 at 756 px, 1e-3 for TF32)."""
    return len(history) > 2 and min(history[-2:]) > 0.9 * min(history[:-2])


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def fiedler(features: np.ndarray, p: NCutParams = NCutParams(), device: str | torch.device | None = None
            ) -> Fiedler:
    """x2 of Eq. 3 for (N, d) features (``p.solver``: docs/method.md "Method: NCut").

    Repeated lambda_2 (the graph falls apart into >= 3 pieces joined only by eps edges) makes x2 any
    vector of a multi-dimensional eigenspace, so solvers disagree. Rule: take the whole cluster of
    eigenvalues within ``p.degenerate_tol`` of lambda_2 (orthonormal basis U in the D^1/2 metric), the
    patch k with the largest leverage ||U_k||^2 (lowest index among leverages within LEVERAGE_TIE of
    the maximum) and x2 = D^-1/2 U U_k^T. This
    is basis-independent, so every solver gives the same vector; for ideal pieces it is the indicator
    of the smallest-volume piece against the rest. A uniform graph (all affinities equal, e.g.
    identical features) has no cut: x2 = 0 and the mask is empty.
    """
    tol = p.degenerate_tol
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    a, uniform = _build(features, p, device, _square(len(features), device))
    n = a.shape[0]
    if uniform:
        return Fiedler(np.zeros(n), np.ones(1), True)
    dense = p.solver == "dense"
    cap = min(MAX_CLUSTER, n - 2)
    a64 = None   # the float64 copy of the dense path, made once

    def pairs(k: int):
        nonlocal dense, a64
        if not dense:
            with _ieee_float32():
                found = _krylov_pairs(a, k, tol, widen=k < cap)
            if found is not None:
                return found
            dense = True
        if a64 is None:
            a64 = a.double().cpu().numpy()
        return (*_dense_pairs(a64, k), a64.sum(1))

    k = 2
    lam, u, deg = pairs(k)
    while lam[-1] - lam[0] < tol and k < cap:
        k = min(2 * k, cap)
        lam, u, deg = pairs(k)
    cluster = lam - lam[0] < tol
    degenerate = bool(cluster.sum() > 1)
    sqrt_deg = np.sqrt(deg)
    if degenerate:
        basis = u[:, cluster]
        leverage = (basis**2).sum(1)
        kstar = int(np.argmax(leverage >= (1 - LEVERAGE_TIE) * leverage.max()))  # lowest index on ties
        x = basis @ basis[kstar] / sqrt_deg
    else:
        x = u[:, 0] / sqrt_deg
    return Fiedler(x, lam[: max(2, int(cluster.sum()) + 1)], degenerate, dense and p.solver != "dense")


def bipartition(x2: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Eq. 4 and the seed rule: x2 > mean(x2); seed = argmax |x2|; invert if the seed falls outside;
    keep the 4-connected component containing the seed (row-major h x w grid)."""
    if not np.any(x2):
        return np.zeros(shape, bool)
    part = (x2 > x2.mean()).reshape(shape)
    seed = np.unravel_index(int(np.argmax(np.abs(x2))), shape)
    if not part[seed]:
        part = ~part
    labels, _ = scipy.ndimage.label(part)  # default structure: 4-connectivity
    return labels == labels[seed]


def ncut(features: np.ndarray, p: NCutParams = NCutParams(), *, device: str | torch.device | None = None,
         return_vector: bool = False):
    """Foreground mask (h, w) bool of an (h, w, d) feature grid (Sec. 3.1); with ``return_vector``
    also the `Fiedler` result."""
    h, w, d = features.shape
    fv = fiedler(features.reshape(h * w, d), p, device)
    mask = bipartition(fv.vector, (h, w))
    return (mask, fv) if return_vector else mask
