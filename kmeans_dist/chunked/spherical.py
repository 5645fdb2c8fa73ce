"""Spherical k-means (Dhillon & Modha 2001) over the blocks: unit-norm centers, cosine similarity.

The rows are scaled to unit norm (rows of norm 0 stay 0) and Lloyd runs on them with the centers
renormalised after every update.  On unit vectors ``||x - c||^2 = 2 (1 - cos(x, c))``, so the
Euclidean assignment of :func:`kmeans_dist.kernels.lloyd_partial` is the cosine assignment, and the
renormalised mean of a cluster maximises the sum of its cosines: the same iterations as
"normalize, then k-means with renormalised centers".
"""
from __future__ import annotations

import time

import numpy as np

from ..kernels import combine_lloyd_partials, finalize_centers, lloyd_partial, row_norms_sq
from ..kernels.sparse import as_csr, block_dtype, block_namespace, is_sparse
from ..kernels.sparse import row_norms_sq as sparse_row_norms_sq
from ..kernels.xp import get_namespace
from .lloyd import LloydResult, final_pass

__all__ = ["normalize_rows", "unit_rows", "spherical_on_blocks"]


def unit_rows(C):
    """Rows of a host array scaled to unit norm (rows of norm 0 left as they are)."""
    C = np.asarray(C)
    nrm = np.sqrt((C.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
    return (C / np.where(nrm > 0, nrm, 1.0)).astype(C.dtype)


def _normalize_block(x):
    if is_sparse(x):  # scale the stored values: the structure (and the zeros) stay
        x = as_csr(x)
        nrm = np.sqrt(sparse_row_norms_sq(x))
        y = x.copy()
        y.data = (y.data / np.repeat(np.where(nrm > 0, nrm, 1.0), np.diff(y.indptr))).astype(x.dtype)
        return y
    xp = get_namespace(x)
    nrm = xp.sqrt(row_norms_sq(x))
    one = xp.ones((), dtype=nrm.dtype)
    return x / xp.where(nrm > 0, nrm, one)[:, None]


def normalize_rows(X):
    """X with every row scaled to unit Euclidean norm (rows of norm 0 stay 0); lazy for a dask array.

    Parameters
    ----------
    X : ndarray, CuPy array, scipy.sparse matrix or dask array (dense or sparse chunks) of shape (n_samples, n_features)
        Validated input.

    Returns
    -------
    Same kind as X, same dtype.
    """
    import dask.array as da

    if isinstance(X, da.Array):
        X = X.rechunk({1: -1})
        return X.map_blocks(_normalize_block, dtype=X.dtype)
    return _normalize_block(X)


def _chunk(X, w, offset, centers):
    xp = block_namespace(X)
    return lloyd_partial(X, w, xp.asarray(np.asarray(centers, dtype=block_dtype(X))), offset=offset)


def spherical_on_blocks(blocks, centers, *, max_iter: int = 300, tol_abs: float = 0.0, callback=None,
                        final_labels: bool = False) -> LloydResult:
    """Spherical Lloyd iterations on blocks of unit rows (see :func:`normalize_rows`).

    Parameters
    ----------
    blocks : LocalBlocks, DaskBlocks or StreamBlocks
        Blocks of the normalised rows.
    centers : ndarray of shape (n_clusters, n_features)
        Initial centers (renormalised here).
    max_iter : int, default=300
        Maximum number of iterations.
    tol_abs : float, default=0.0
        Stop when the squared shift of the (unit) centers is at most this.
    callback : callable or None, default=None
        Called after each iteration with its record; returning True stops.
    final_labels : bool, default=False
        Also return every row's label.

    Returns
    -------
    LloydResult
        ``inertia`` is the sum of the weighted cosine distances ``1 - cos(x, c)``.
    """
    centers = unit_rows(np.array(centers, dtype=blocks.dtype, copy=True))
    history, it, converged = [], 0, False
    while it < max_iter:
        t0 = time.perf_counter()
        part = blocks.map_reduce(_chunk, combine_lloyd_partials, centers)
        new, n_reloc = finalize_centers(part, centers)
        new = unit_rows(new)
        shift = float(((new.astype(np.float64) - centers.astype(np.float64)) ** 2).sum())
        centers = new
        it += 1
        rec = {"iteration": it, "inertia": float(part["inertia"]) / 2, "center_shift": shift,
               "seconds": time.perf_counter() - t0, "n_relocated": int(n_reloc)}
        history.append(rec)
        stop = shift <= tol_abs
        if callback is not None and callback({**rec, "centers": centers, "converged": stop}) is True:
            break
        if stop:
            converged = True
            break
    f = final_pass(blocks, centers, labels=final_labels)
    return LloydResult(centers=centers, inertia=float(f["inertia"]) / 2, n_iter=it, history=history,
                       converged=converged, counts=f["count"], weights=f["weight"], labels=f.get("labels"))
