"""Edge-aware refinement of a coarse saliency map: the fast bilateral solver (Barron and Poole, "The Fast
Bilateral Solver", ECCV 2016), as TokenCut (Wang et al. 2022, ``unsupervised_saliency_detection``) applies
it to snap a patch-level mask to the image's edges.

The pixels are splatted onto a sparse 5-D bilateral grid (x, y, luma, chroma u, chroma v), where the
problem becomes a small sparse linear system (Barron and Poole 2016), solved by preconditioned
conjugate gradients and sliced back to the pixels. No dense-CRF alternative is offered: none of the
dense-CRF packages on PyPI (pydensecrf, pydensecrf2, SimpleCRF) ships a CPython 3.11 wheel.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import cg

from pipeline.core.errors import PipelineError

# JPEG / BT.601 full-range RGB -> YUV, chroma centred on 128 (the colour space of Barron and Poole's grid).
RGB_TO_YUV = np.array([[0.299, 0.587, 0.114],
                       [-0.168736, -0.331264, 0.5],
                       [0.5, -0.418688, -0.081312]])
YUV_OFFSET = np.array([0.0, 128.0, 128.0])
BISTOCHASTIC_ITERS = 10   # Sinkhorn-style iterations of the bistochastization; TokenCut's count
TOKENCUT_CONFIDENCE = 0.999  # TokenCut's uniform confidence, used when none is given
JACOBI_MIN = 1e-5         # floor of the Jacobi preconditioner's diagonal (TokenCut's A_diag_min)


def _grid(image: np.ndarray, sigma_spatial: float, sigma_luma: float, sigma_chroma: float):
    """Splat matrix S (vertices x pixels) and blur matrix B (vertices x vertices) of the bilateral grid.

    Each pixel goes to the integer cell floor((x, y, Y, U, V) / sigma) (TokenCut truncates the same way);
    the occupied cells are the vertices. B is the [1 2 1] blur in each of the 5 dimensions restricted to
    occupied vertices: 2 * 5 on the diagonal plus 1 per occupied 1-neighbour (Barron and Poole 2016's B).
    """
    h, w, _ = image.shape
    yuv = image.astype(np.float64) @ RGB_TO_YUV.T + YUV_OFFSET
    yy, xx = np.mgrid[:h, :w]
    scaled = np.stack([xx / sigma_spatial, yy / sigma_spatial, yuv[..., 0] / sigma_luma,
                       yuv[..., 1] / sigma_chroma, yuv[..., 2] / sigma_chroma], axis=-1)
    coords = np.floor(scaled.reshape(-1, 5)).astype(np.int64)
    coords -= coords.min(axis=0) - 1              # every coordinate >= 1: its -1 neighbour stays >= 0
    extent = coords.max(axis=0) + 2               # and its +1 neighbour < extent: the hash never wraps
    if np.prod(extent.astype(float)) >= 2.0 ** 63:
        raise PipelineError("bilateral_solve: sigmas too small for this image (the grid overflows int64)")
    strides = np.concatenate([[1], np.cumprod(extent[:-1])])
    keys, vertex = np.unique(coords @ strides, return_inverse=True)  # exact mixed-radix hash, sorted
    n_vert, n_pix = len(keys), len(vertex)
    splat = sp.csr_matrix((np.ones(n_pix), (vertex, np.arange(n_pix))), shape=(n_vert, n_pix))

    rows, cols = [], []
    for stride in strides:                        # the +1 neighbour in each dimension; -1 is the transpose
        loc = np.minimum(np.searchsorted(keys, keys + stride), n_vert - 1)
        found = np.flatnonzero(keys[loc] == keys + stride)
        rows.append(found)
        cols.append(loc[found])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    adjacent = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_vert, n_vert))
    blur = adjacent + adjacent.T + 2 * 5 * sp.identity(n_vert, format="csr")
    return splat, blur


def _bistochastize(splat: sp.csr_matrix, blur: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Diagonals (n, m) with n * (B n) ~ m = S 1, so that S^T Dm^-1 Dn B Dn Dm^-1 S is bistochastic
    (Barron and Poole 2016's bistochastization); m is then recomputed from the final n, so the smoothness
    term maps a constant vector exactly to zero."""
    m = np.asarray(splat.sum(axis=1)).ravel()
    n = np.ones_like(m)
    for _ in range(BISTOCHASTIC_ITERS):
        n = np.sqrt(n * m / (blur @ n))
    return n, n * (blur @ n)


def bilateral_solve(image: np.ndarray, target: np.ndarray, confidence: np.ndarray | None = None, *,
                    sigma_spatial: float = 16, sigma_luma: float = 16, sigma_chroma: float = 8,
                    lam: float = 256, max_iter: int = 25, tol: float = 1e-5) -> np.ndarray:
    """Refine ``target`` (H, W) in [0, 1] along the edges of ``image`` (H, W, 3) uint8 RGB.

    Minimises lam/2 sum_ij W_ij (x_i - x_j)^2 + sum_i c_i (x_i - t_i)^2 in bilateral space: solves
    (lam (Dm - Dn B Dn) + diag(S c)) y = S (c t) (Barron and Poole 2016) by conjugate gradients
    with a Jacobi preconditioner, from the flat start y0 = S (c t) / S c, for at most ``max_iter``
    iterations to relative residual ``tol``; returns S^T y clipped to [0, 1] as float32.

    ``confidence`` (H, W) >= 0 weighs each pixel's target; None is TokenCut's uniform 0.999. The defaults
    are TokenCut's: sigma_spatial 16, sigma_luma 16, sigma_chroma 8 (its ``get_saliency.py`` options), lam 256,
    25 iterations, tol 1e-5 (its ``bilateral_solver.py``).
    """
    image, target = np.asarray(image), np.asarray(target, dtype=np.float64)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise PipelineError(f"bilateral_solve: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if target.shape != image.shape[:2]:
        raise PipelineError(f"bilateral_solve: target {target.shape} does not match image {image.shape[:2]}")
    conf = (np.full(target.shape, TOKENCUT_CONFIDENCE) if confidence is None
            else np.asarray(confidence, dtype=np.float64))
    if conf.shape != target.shape:
        raise PipelineError(f"bilateral_solve: confidence {conf.shape} does not match image {image.shape[:2]}")
    if not (np.isfinite(target).all() and np.isfinite(conf).all() and (conf >= 0).all()):
        raise PipelineError("bilateral_solve: target or confidence has NaN/inf, or confidence is negative")
    if min(sigma_spatial, sigma_luma, sigma_chroma, lam) <= 0:
        raise PipelineError("bilateral_solve: sigma_spatial, sigma_luma, sigma_chroma and lam must be > 0")

    splat, blur = _grid(image, sigma_spatial, sigma_luma, sigma_chroma)
    n, m = _bistochastize(splat, blur)
    t, c = target.ravel(), conf.ravel()
    c_splat = splat @ c
    a = lam * (sp.diags(m) - sp.diags(n) @ blur @ sp.diags(n)) + sp.diags(c_splat)
    b = splat @ (c * t)
    jacobi = sp.diags(1.0 / np.maximum(a.diagonal(), JACOBI_MIN))
    y0 = np.divide(b, c_splat, out=np.zeros_like(b), where=c_splat > 0)
    y, _ = cg(a.tocsr(), b, x0=y0, M=jacobi, maxiter=max_iter, rtol=tol)
    return np.clip(splat.T @ y, 0, 1).reshape(target.shape).astype(np.float32)
