"""Normalized-cut bipartition of a patch-feature grid (paper Sec. 3.1, Eq. 1-4).

Two solvers give the same Fiedler vector: ``dense`` is the reference of the official code and TokenCut
(``scipy.linalg.eigh(D - A, D)``, O(N^3)); ``lanczos`` finds the top eigenvectors of
M = D^-1/2 A D^-1/2 (same eigenvectors up to x = D^-1/2 u, eigenvalue lambda = 1 - mu) by block
Lanczos in torch (on the GPU when present). The fast path holds exactly one float32 N x N matrix: A is
thresholded and scaled in place into M, in a buffer reused from one image to the next.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.ndimage
import torch

from pipeline.errors import PipelineError
from pipeline.features import l2_normalize
from pipeline.params import NCutParams

MAX_CLUSTER = 8        # largest repeated-eigenvalue cluster resolved exactly (see `fiedler`)
LEVERAGE_TIE = 1e-4    # relative tolerance of equal leverages in the repeated-eigenvalue rule
KRYLOV_BLOCK = 8       # vectors per block Lanczos step (>= MAX_CLUSTER: repeated eigenvalues stay whole)
KRYLOV_STEPS = 100     # block steps before the fast solver gives up (about 7 at 756 px)


class NCutError(PipelineError):
    """Bad NCut input or parameters."""


@dataclass(frozen=True)
class Fiedler:
    """Second-smallest generalised eigenvector of (D - A) x = lambda D x (Eq. 3) and its context."""

    vector: np.ndarray       # (N,) x2; all zeros when the graph is uniform (no cut exists)
    eigenvalues: np.ndarray  # generalised lambda_2, lambda_3, ... (ascending; more when repeated)
    degenerate: bool         # lambda_2 repeated (or uniform graph): x2 chosen by the documented rule


def _check(f: np.ndarray) -> None:
    if f.ndim != 2 or f.shape[0] < 3:
        raise NCutError(f"NCut needs an (N >= 3, d) feature matrix, got shape {f.shape}")


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
    as much as building it (README "Benchmarks"). One buffer at most is kept, so NCut still holds
    exactly one N x N matrix."""
    buf = _WORKSPACE.get("a")
    if buf is None or buf.shape != (n, n) or buf.device != device:
        _WORKSPACE.pop("a", None)
        buf = _WORKSPACE["a"] = torch.empty((n, n), dtype=torch.float32, device=device)
    return buf


def _build(features: np.ndarray, p: NCutParams, device, out: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Affinity (N, N) float32 (into ``out`` when given), its float64 degrees, and whether it is uniform."""
    features = np.asarray(features, np.float32)
    _check(features)
    try:
        f = torch.as_tensor(l2_normalize(features), device=device)
    except ValueError as exc:
        raise NCutError(f"NCut input: {exc}") from None
    a = torch.matmul(f, f.T, out=out)
    _threshold_(a, p.tau, p.eps, p.graph)
    lo, hi = torch.aminmax(a)
    return a, a.sum(1).double(), bool(lo == hi)


def affinity(features: np.ndarray, p: NCutParams = NCutParams(), device: str | torch.device = "cpu") -> torch.Tensor:
    """(N, N) float32 affinity of Eq. 1 (or the binary graph) on L2-normalised (N, d) features."""
    return _build(features, p, device)[0]


def _dense_pairs(a: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Generalised eigenpairs 1..k of (D - A) x = lambda D x (TokenCut's dense reference)."""
    d = np.diag(a.sum(1))
    lam, x = scipy.linalg.eigh(d - a, d, subset_by_index=[1, k])
    return lam, x * np.sqrt(np.diag(d))[:, None]  # u = D^1/2 x: orthonormal, as from the fast solver


def _orthonormalise(w: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Orthonormal columns spanning w with ``basis`` projected out (twice, for float64 accuracy);
    directions that vanish under the projection (an exhausted Krylov space) are dropped."""
    scale = float(w.norm())
    for _ in range(2):
        w = w - basis @ (basis.T @ w)
    u, sv, _ = torch.linalg.svd(w, full_matrices=False)
    return u[:, sv > 1e-8 * scale]


def _krylov_pairs(m: torch.Tensor, u1: torch.Tensor, k: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Top-k eigenpairs of M on the complement of its trivial eigenvector u1, as lambda = 1 - mu.

    Block Lanczos with full reorthogonalisation and Rayleigh-Ritz: each step multiplies M by a block
    of KRYLOV_BLOCK vectors (one pass over the matrix, as costly as one vector while the product is
    memory-bound), until every wanted Ritz pair has residual ||M u - mu u|| <= tol. A block as wide
    as the largest eigenvalue cluster resolved keeps repeated eigenvalues whole. All in torch: one
    thread pool (numpy's BLAS spinning beside torch's halves the speed on a CPU) and no host round
    trip per product on a GPU. The start block is fixed, so the result is deterministic.
    """
    n, dev = m.shape[0], m.device
    start = torch.randn(n, max(KRYLOV_BLOCK, k + 1), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q = _orthonormalise(start.to(dev), u1[:, None])
    basis, products = q[:, :0], q[:, :0]
    for _ in range(KRYLOV_STEPS):
        w = (m @ q.float()).double()
        basis, products = torch.cat([basis, q], 1), torch.cat([products, w], 1)
        h = basis.T @ products
        mu, s = torch.linalg.eigh((h + h.T) / 2)
        mu, s = mu.flip(0)[:k], s.flip(1)[:, :k]
        u = basis @ s
        if len(mu) == k and (products @ s - u * mu).norm(dim=0).max() <= tol:
            return 1.0 - mu.cpu().numpy(), u.cpu().numpy()
        q = _orthonormalise(w, torch.cat([u1[:, None], basis], 1))
        if q.shape[1] == 0:  # the Krylov space is exhausted: Rayleigh-Ritz was exact
            return 1.0 - mu.cpu().numpy(), u.cpu().numpy()
    raise NCutError(f"NCut eigensolver: no convergence to ncut.degenerate_tol = {tol:g} in {KRYLOV_STEPS} "
                    "block steps (float32 products resolve about 1e-6)")


def fiedler(features: np.ndarray, p: NCutParams = NCutParams(), device: str | torch.device | None = None
            ) -> Fiedler:
    """x2 of Eq. 3 for (N, d) features (``p.solver``: README "Method: NCut").

    Repeated lambda_2 (the graph falls apart into >= 3 pieces joined only by eps edges) makes x2 any
    vector of a multi-dimensional eigenspace, so solvers disagree. Rule: take the whole cluster of
    eigenvalues within ``p.degenerate_tol`` of lambda_2 (orthonormal basis U in the D^1/2 metric), the
    patch k with the largest leverage ||U_k||^2 (lowest index among leverages within LEVERAGE_TIE of
    the maximum) and x2 = D^-1/2 U U_k^T. This
    is basis-independent, so every solver gives the same vector; for ideal pieces it is the indicator
    of the smallest-volume piece against the rest. A uniform graph (all affinities equal, e.g.
    identical features) has no cut: x2 = 0 and the mask is empty.
    """
    degenerate_tol = p.degenerate_tol
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    a, deg, uniform = _build(features, p, device, _square(len(features), device))
    n = a.shape[0]
    if uniform:
        return Fiedler(np.zeros(n), np.ones(1), True)
    if p.solver == "dense":
        a64 = a.double().cpu().numpy()
        del a
        pairs = lambda k: _dense_pairs(a64, k)  # noqa: E731
    else:
        r = deg.rsqrt().float()
        a.mul_(r[:, None]).mul_(r[None, :])  # M = D^-1/2 A D^-1/2 in place: still one N x N matrix
        u1 = deg.sqrt() / deg.sqrt().norm()
        pairs = lambda k: _krylov_pairs(a, u1, k, degenerate_tol)  # noqa: E731
    k = 2
    lam, u = pairs(k)
    while lam[-1] - lam[0] < degenerate_tol and k < min(MAX_CLUSTER, n - 2):
        k = min(2 * k, MAX_CLUSTER, n - 2)
        lam, u = pairs(k)
    cluster = lam - lam[0] < degenerate_tol
    degenerate = bool(cluster.sum() > 1)
    sqrt_deg = deg.sqrt().cpu().numpy()
    if degenerate:
        basis = u[:, cluster]
        leverage = (basis**2).sum(1)
        kstar = int(np.argmax(leverage >= (1 - LEVERAGE_TIE) * leverage.max()))  # lowest index on ties
        x = basis @ basis[kstar] / sqrt_deg
    else:
        x = u[:, 0] / sqrt_deg
    return Fiedler(x, lam[: max(2, int(cluster.sum()) + 1)], degenerate)


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
