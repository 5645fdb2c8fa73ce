"""Distances and nearest centers, written once against the array API (NumPy, CuPy, array-api-strict).

Squared distances go through one GEMM per sub-chunk with precomputed center norms, as scikit-learn's
``_kmeans.py``: labels are the argmin of ``||c||^2 - 2 x.c``.  Nothing here validates its input.
"""
from __future__ import annotations

import weakref

import numpy as np

from . import fused, sparse
from .xp import get_namespace

__all__ = ["SUB_ROWS", "SUB_BYTES", "FUSED_SUB_BYTES", "row_norms_sq", "row_norms_sq_cached", "sq_distances",
           "matmul_t", "assign_labels", "nearest_with_norms", "exact_sq_dist_to", "sub_rows_for"]

# rows per sub-chunk inside a kernel: the rows of X and their (rows x k) distances take about
# SUB_BYTES, so the second product (sums per center) reads X from cache, not memory
SUB_ROWS = 8192
SUB_BYTES = 4 * 2**20
FUSED_SUB_BYTES = 2**20


def sub_rows_for(n_features: int, k: int, itemsize: int, sub_rows=None) -> int:
    """Rows per sub-block of a distance GEMM, so that the ``(sub_rows, k)`` product stays cache-sized.

    Parameters
    ----------
    n_features : int
        Number of columns of the block.
    k : int
        Number of centers.
    itemsize : int
        Bytes per element of the block's dtype.
    sub_rows : int or None, default=None
        An explicit value, returned as is (None: computed from the sizes).

    Returns
    -------
    int
        Rows per sub-block, at least 1.
    """
    if sub_rows is not None:
        return int(sub_rows)
    return int(min(16384, max(256, SUB_BYTES // max(1, (n_features + k) * itemsize))))


def row_norms_sq(X):
    """Squared Euclidean norm of each row of ``X`` (same dtype as X), without an (n, d) temporary.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        Any array-API array (NumPy, CuPy, ...).

    Returns
    -------
    array of shape (n_samples,)
        ``sum_j X[i, j] ** 2`` for every row, in ``X``'s namespace and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.kernels import row_norms_sq
    >>> row_norms_sq(np.array([[3.0, 4.0], [1.0, 0.0]])).tolist()
    [25.0, 1.0]
    """
    if sparse.is_sparse(X):
        return sparse.row_norms_sq(X)
    xp = get_namespace(X)
    vecdot = getattr(xp, "vecdot", None)
    if vecdot is not None:
        return vecdot(X, X, axis=-1)
    return xp.sum(X * X, axis=1)


_XSQ_CACHE: dict = {}


def row_norms_sq_cached(X):
    """:func:`row_norms_sq` memoised per array object.

    Blocks persisted on workers are reused every iteration, and their row norms never change.  Entries go
    away with the array (weak references).

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        A block; the cache is keyed by the object, not its values.

    Returns
    -------
    array of shape (n_samples,)
        The squared row norms.
    """
    key = id(X)
    hit = _XSQ_CACHE.get(key)
    if hit is not None and hit[0]() is X:
        return hit[1]
    v = row_norms_sq(X)
    try:
        ref = weakref.ref(X, lambda _r, key=key: _XSQ_CACHE.pop(key, None))
    except TypeError:  # arrays without weak references: no caching
        return v
    _XSQ_CACHE[key] = (ref, v)
    return v


def sq_distances(X, C, x_sq=None, c_sq=None):
    """Squared Euclidean distances between the rows of ``X`` and the rows of ``C``, clipped at 0.

    Computed as ``||x||^2 + ||c||^2 - 2 x.c`` with one GEMM.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        Rows.
    C : array of shape (n_centers, n_features)
        Centers, in the namespace of ``X``.
    x_sq, c_sq : array or None, default=None
        Precomputed squared row norms of ``X`` and ``C``.

    Returns
    -------
    array of shape (n_samples, n_centers)
        Squared distances, never negative.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.kernels import sq_distances
    >>> sq_distances(np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[1.0, 0.0]])).tolist()
    [[1.0], [1.0]]
    """
    if sparse.is_sparse(X):
        return sparse.sq_distances(X, C, x_sq=x_sq, c_sq=c_sq)
    xp = get_namespace(X, C)
    if x_sq is None:
        x_sq = row_norms_sq(X)
    if c_sq is None:
        c_sq = row_norms_sq(C)
    D = x_sq[:, None] - 2 * matmul_t(xp, X, C) + c_sq[None, :]
    return xp.maximum(D, xp.zeros((), dtype=D.dtype))


def matmul_t(xp, X, C):
    """``X @ C.T`` through a real GEMM even when ``C`` has one row.

    BLAS libraries forward a one-column GEMM to GEMV, whose summation order can depend on the memory
    alignment of X; duplicating the row keeps the product a GEMM, so results are bit-identical wherever
    the block happens to live.

    Parameters
    ----------
    xp : module
        The array namespace of ``X`` and ``C``.
    X : array of shape (n_samples, n_features)
        Left operand.
    C : array of shape (n_centers, n_features)
        Right operand, transposed.

    Returns
    -------
    array of shape (n_samples, n_centers)
        The product.
    """
    if C.shape[0] == 1:
        return (X @ xp.concat([C, C], axis=0).T)[:, :1]
    return X @ C.T


def assign_labels(X, C, c_sq=None, sub_rows: int = SUB_ROWS):
    """Nearest center of every row of ``X`` and the squared distance to it.

    Labels are ``argmin_k ||c_k||^2 - 2 x.c_k`` as in scikit-learn (the ``||x||^2`` term does not change
    the argmin); distances are clipped at zero.  Computed by sub-blocks of ``sub_rows`` rows.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        Rows.
    C : array of shape (n_centers, n_features)
        Centers, in the namespace of ``X``.
    c_sq : array of shape (n_centers,) or None, default=None
        Precomputed squared norms of the centers.
    sub_rows : int
        Rows per distance GEMM.

    Returns
    -------
    labels : array of shape (n_samples,)
        Index of the nearest center (the lowest index at a tie).
    min_sq_dist : array of shape (n_samples,)
        Squared distance to that center.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.kernels import assign_labels
    >>> labels, d2 = assign_labels(np.array([[0.0, 0.0], [9.0, 9.0]]), np.array([[10.0, 10.0], [1.0, 0.0]]))
    >>> labels.tolist(), d2.tolist()
    ([1, 0], [1.0, 2.0])
    """
    if sparse.is_sparse(X):
        return sparse.assign_labels(X, C, c_sq=c_sq)
    if c_sq is None and _compiled(X, C):  # the compiled loop gives the same values without an (n, k) matrix
        return fused.nearest_block(X, C, sub_rows=sub_rows)
    xp = get_namespace(X, C)
    if c_sq is None:
        c_sq = row_norms_sq(C)
    n = X.shape[0]
    labels, mins = [], []
    for start in range(0, n, sub_rows):
        Xs = X[start:min(start + sub_rows, n), ...]
        P = c_sq[None, :] - 2 * matmul_t(xp, Xs, C)
        lab = xp.argmin(P, axis=1)
        pmin = xp.min(P, axis=1)
        d = xp.maximum(row_norms_sq(Xs) + pmin, xp.zeros((), dtype=pmin.dtype))
        labels.append(lab)
        mins.append(d)
    if not labels:
        return xp.zeros((0,), dtype=xp.int64), xp.zeros((0,), dtype=X.dtype)
    if len(labels) == 1:
        return labels[0], mins[0]
    return xp.concat(labels), xp.concat(mins)


def nearest_with_norms(X, C, x_sq):
    """:func:`assign_labels` with the squared row norms of ``X`` given: ``(labels, ||x - c||^2)``.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        Rows.
    C : array of shape (n_centers, n_features)
        Centers, in the namespace of ``X``.
    x_sq : array of shape (n_samples,)
        Squared row norms of ``X`` (:func:`row_norms_sq`).

    Returns
    -------
    labels : array of shape (n_samples,)
        Index of the nearest center (the lowest index at a tie).
    min_sq_dist : array of shape (n_samples,)
        Squared distance to that center, clipped at zero, in ``X``'s dtype.
    """
    if _compiled(X, C):
        return fused.nearest_block(X, C, x_sq=x_sq)
    D = sq_distances(X, C, x_sq=x_sq)  # sparse X too: the distances are dense
    xp = get_namespace(D)
    return xp.astype(xp.argmin(D, axis=1), xp.int64), xp.min(D, axis=1)


def _compiled(X, C) -> bool:
    """NumPy float32/float64 blocks take the compiled loops of :mod:`kmeans_dist.kernels.fused`."""
    return (type(X) is np.ndarray and type(C) is np.ndarray and X.ndim == 2 and X.dtype == C.dtype
            and X.dtype in (np.float32, np.float64) and fused.available())


def exact_sq_dist_to(X, C, labels):
    """``||x_i - C[labels_i]||^2`` by direct differences (no cancellation), as scikit-learn's ``_inertia``.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        Rows.
    C : array of shape (n_centers, n_features)
        Centers.
    labels : array of shape (n_samples,)
        The center of every row.

    Returns
    -------
    array of shape (n_samples,)
        Squared distance of every row to its center.
    """
    if sparse.is_sparse(X):
        return sparse.exact_sq_dist_to(X, C, labels)
    xp = get_namespace(X, C)
    diff = X - xp.take(C, labels, axis=0)
    return xp.sum(diff * diff, axis=1)
