"""Normalized-cut bipartition of a patch-feature grid (paper Sec. 3.1, Eq. 1-4).

Two solvers give the same Fiedler vector: ``dense`` is the reference of the official code and TokenCut
(``scipy.linalg.eigh(D - A, D)``, O(N^3)); ``lanczos`` finds the top eigenvectors of
M = D^-1/2 A D^-1/2 (same eigenvectors up to x = D^-1/2 u, eigenvalue lambda = 1 - mu) with ARPACK,
the matrix products running in torch on the GPU when present. The fast path holds exactly one
float32 N x N matrix: A is built block by block and scaled in place into M.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.ndimage
import scipy.sparse.linalg
import torch

from pipeline.errors import PipelineError
from pipeline.features import l2_normalize
from pipeline.params import NCutParams

MAX_CLUSTER = 8        # largest repeated-eigenvalue cluster resolved exactly (see `fiedler`)
LEVERAGE_TIE = 1e-4    # relative tolerance of equal leverages in the repeated-eigenvalue rule


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
    """Eq. 1 in place on a block of cosine similarities: weighted keeps <fi, fj>, binary writes 1."""
    keep = s > tau
    if graph == "binary":
        s.fill_(eps).masked_fill_(keep, 1.0)
    else:
        s.masked_fill_(~keep, eps)
    return s


def _build(features: np.ndarray, p: NCutParams, device, block: int = 1024) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Affinity (N, N) float32 built in row blocks, its float64 degrees, and whether it is uniform."""
    features = np.asarray(features, np.float32)
    _check(features)
    try:
        f = torch.as_tensor(l2_normalize(features), device=device)
    except ValueError as exc:
        raise NCutError(f"NCut input: {exc}") from None
    n = f.shape[0]
    a = torch.empty((n, n), dtype=torch.float32, device=device)
    deg = torch.empty(n, dtype=torch.float64, device=device)
    lo, hi = float("inf"), float("-inf")
    for s in range(0, n, block):
        rows = a[s:s + block]
        torch.matmul(f[s:s + block], f.T, out=rows)
        _threshold_(rows, p.tau, p.eps, p.graph)
        deg[s:s + block] = rows.sum(1).double()
        lo, hi = min(lo, float(rows.min())), max(hi, float(rows.max()))
    return a, deg, lo == hi


def affinity(features: np.ndarray, p: NCutParams = NCutParams(), device: str | torch.device = "cpu") -> torch.Tensor:
    """(N, N) float32 affinity of Eq. 1 (or the binary graph) on L2-normalised (N, d) features."""
    return _build(features, p, device)[0]


def _dense_pairs(a: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Generalised eigenpairs 1..k of (D - A) x = lambda D x (TokenCut's dense reference)."""
    d = np.diag(a.sum(1))
    lam, x = scipy.linalg.eigh(d - a, d, subset_by_index=[1, k])
    return lam, x * np.sqrt(np.diag(d))[:, None]  # u = D^1/2 x: orthonormal, as from the fast solver


def _lanczos_pairs(m: torch.Tensor, u1: torch.Tensor, k: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Top-k eigenpairs of M - u1 u1^T (M's trivial eigenvector deflated), as lambda = 1 - mu."""
    n = m.shape[0]

    def matvec(x: np.ndarray) -> np.ndarray:
        v = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32).reshape(-1), device=m.device)
        y = torch.mv(m, v).double() - u1 * torch.dot(u1, v.double())
        return y.cpu().numpy()

    op = scipy.sparse.linalg.LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(0).standard_normal(n)  # fixed start vector: ARPACK is then deterministic
    mu, u = scipy.sparse.linalg.eigsh(op, k=k, which="LA", v0=v0, tol=tol)
    order = np.argsort(-mu)
    return 1.0 - mu[order], u[:, order]


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
    a, deg, uniform = _build(features, p, device)
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
        tol = min(degenerate_tol, 1e-6) * 1e-3
        pairs = lambda k: _lanczos_pairs(a, u1, k, tol)  # noqa: E731
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
