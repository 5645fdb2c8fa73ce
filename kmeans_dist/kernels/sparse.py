"""Per-block kernels for scipy.sparse CSR blocks: distances, assignment, per-cluster sums, moments.

The dense kernels (:mod:`~kmeans_dist.kernels.distances`, :mod:`~kmeans_dist.kernels.lloyd`,
:mod:`~kmeans_dist.kernels.stats`) hand a block to this module when ``scipy.sparse.issparse(X)``.  A
block is never densified: squared distances are ``||x||^2 - 2 X C^T + ||c||^2`` through scipy's
sparse-dense product, row norms and per-cluster sums are read from the CSR structure (``data``,
``indices``, ``indptr``), and only the few rows asked for (seeding candidates, far points) are made
dense.  Centers are dense.

Every result is row-local or summed in row order within the block (``np.bincount`` adds its weights in
order), so a block gives the same values whatever block it was cut from; with the fixed reduction tree of
the driver, results are bit-identical whatever the input chunking.  Sums, weights and inertia accumulate in
float64, as in the dense kernels; the exact inertia follows scikit-learn's ``_euclidean_sparse_dense``
(``sum_nz (x_j - c_j)^2 - c_j^2`` plus ``||c||^2``).  Nothing here validates its input.
"""
from __future__ import annotations

import numpy as np

from .xp import get_namespace, to_numpy

__all__ = ["is_sparse", "as_csr", "canonical_csr", "block_namespace", "block_dtype", "take_rows", "row_ids", "row_norms_sq",
           "sq_distances", "assign_labels", "exact_sq_dist_to", "cluster_sums", "lloyd_block", "moments",
           "nonfinite", "SPARSE_SUB_BYTES"]

# rows per distance sub-block: the (rows, k) float64 product takes about this many bytes
SPARSE_SUB_BYTES = 8 * 2**20


def is_sparse(X) -> bool:
    """Whether ``X`` is a scipy.sparse array or matrix (scipy imported only if already loaded or present).

    Parameters
    ----------
    X : object
        Anything.

    Returns
    -------
    bool
    """
    mod = type(X).__module__
    if not mod.startswith("scipy.sparse"):
        return False
    import scipy.sparse as sp

    return sp.issparse(X)


def as_csr(X):
    """``X`` in CSR format (no copy when it already is).

    Parameters
    ----------
    X : scipy.sparse array or matrix
        Any sparse format.

    Returns
    -------
    scipy.sparse CSR array or matrix
    """
    return X if X.format == "csr" else X.tocsr()


def canonical_csr(X):
    """``X`` as CSR with sorted, unique column indices per row (copied only when it is not already).

    Parameters
    ----------
    X : scipy.sparse array or matrix
        Any sparse format.

    Returns
    -------
    scipy.sparse CSR array or matrix
    """
    X = as_csr(X)
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    return X


def block_namespace(X):
    """The array namespace of a block: NumPy's for a sparse block (its per-row results are NumPy arrays).

    Parameters
    ----------
    X : array or scipy.sparse matrix
        A block.

    Returns
    -------
    module
    """
    if is_sparse(X):
        return get_namespace(np.empty(0))
    return get_namespace(X)


def block_dtype(X) -> np.dtype:
    """NumPy dtype of a block's values (sparse or any array namespace).

    Parameters
    ----------
    X : array or scipy.sparse matrix
        A block.

    Returns
    -------
    numpy.dtype
    """
    if is_sparse(X) or isinstance(X, np.ndarray):
        return np.dtype(X.dtype)
    return to_numpy(X[:1, ...]).dtype


def take_rows(X, idx) -> np.ndarray:
    """Rows ``idx`` of a sparse block as a dense NumPy array (only these rows are densified).

    Parameters
    ----------
    X : scipy.sparse matrix of shape (n_rows, n_features)
        The block.
    idx : array of int
        Row indices (any order, repeats allowed).

    Returns
    -------
    ndarray of shape (len(idx), n_features)
    """
    idx = np.asarray(idx, dtype=np.int64)
    if idx.size == 0:
        return np.zeros((0, X.shape[1]), dtype=X.dtype)
    return np.asarray(as_csr(X)[idx].toarray())


def row_ids(X) -> np.ndarray:
    """Row index of every stored value of a CSR block (int64, length ``nnz``)."""
    X = as_csr(X)
    return np.repeat(np.arange(X.shape[0], dtype=np.int64), np.diff(X.indptr))


def row_norms_sq(X) -> np.ndarray:
    """Squared Euclidean norm of every row, from the stored values (summed in float64, in X's dtype).

    Parameters
    ----------
    X : scipy.sparse matrix of shape (n_rows, n_features)

    Returns
    -------
    ndarray of shape (n_rows,)

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> from kmeans_dist.kernels.sparse import row_norms_sq
    >>> row_norms_sq(sp.csr_matrix([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [25.0, 0.0]
    """
    X = as_csr(X)
    v = X.data.astype(np.float64)
    out = np.bincount(row_ids(X), weights=v * v, minlength=X.shape[0])
    return out.astype(X.dtype, copy=False)


def _sq_norms(C) -> np.ndarray:
    """Squared norms of the rows of dense centers, as scikit-learn's ``row_norms`` (``einsum``), on an aligned
    copy when ``C`` is not aligned: centers that arrive through pickle protocol 5 may sit at any byte address,
    and ``einsum`` sums an unaligned array in another order."""
    C = np.require(C, requirements=["C", "A"])
    return np.einsum("ij,ij->i", C, C)


def _product(X, C):
    """``X @ C.T`` as a dense NumPy array (scipy's sparse-dense product, row by row)."""
    return np.asarray(X @ np.ascontiguousarray(C.T))


def sq_distances(X, C, x_sq=None, c_sq=None) -> np.ndarray:
    """Squared distances between the rows of a sparse block and dense centers, clipped at 0.

    Parameters
    ----------
    X : scipy.sparse matrix of shape (n_rows, n_features)
        The block.
    C : ndarray of shape (n_centers, n_features)
        Dense centers.
    x_sq, c_sq : ndarray or None, default=None
        Precomputed squared norms of the rows and the centers.

    Returns
    -------
    ndarray of shape (n_rows, n_centers)

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from kmeans_dist.kernels.sparse import sq_distances
    >>> sq_distances(sp.csr_matrix([[0.0, 0.0], [1.0, 1.0]]), np.array([[1.0, 0.0]])).tolist()
    [[1.0], [1.0]]
    """
    X = as_csr(X)
    C = np.require(C, requirements=["C", "A"])  # one layout, aligned: the norms and products do not depend on it
    if x_sq is None:
        x_sq = row_norms_sq(X)
    if c_sq is None:
        c_sq = _sq_norms(C)
    D = np.asarray(x_sq)[:, None] - 2 * _product(X, C) + np.asarray(c_sq)[None, :]
    return np.maximum(D, np.zeros((), dtype=D.dtype))


def _sub_rows(k: int) -> int:
    return int(max(256, SPARSE_SUB_BYTES // max(1, 8 * k)))


def assign_labels(X, C, c_sq=None, x_sq=None):
    """Nearest center of every row of a sparse block (argmin of ``||c||^2 - 2 x.c``) and the squared
    distance to it (``||x||^2`` added, clipped at 0), as :func:`kmeans_dist.kernels.assign_labels`.

    Parameters
    ----------
    X : scipy.sparse matrix of shape (n_rows, n_features)
        The block.
    C : ndarray of shape (n_centers, n_features)
        Dense centers.
    c_sq, x_sq : ndarray or None, default=None
        Precomputed squared norms of the centers and the rows.

    Returns
    -------
    labels : ndarray of shape (n_rows,) int64
    min_sq_dist : ndarray of shape (n_rows,)
    """
    X = as_csr(X)
    C = np.require(C, requirements=["C", "A"])  # one layout, aligned: the norms and products do not depend on it
    n = X.shape[0]
    if c_sq is None:
        c_sq = _sq_norms(C)
    if x_sq is None:
        x_sq = row_norms_sq(X)
    m2C_T = np.ascontiguousarray((-2 * C).T)
    step = _sub_rows(C.shape[0])
    labels = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.result_type(X.dtype, C.dtype))
    for start in range(0, n, step):
        stop = min(start + step, n)
        P = np.asarray(X[start:stop] @ m2C_T)
        P += c_sq[None, :]
        lab = np.argmin(P, axis=1)
        labels[start:stop] = lab
        pmin = np.take_along_axis(P, lab[:, None], axis=1)[:, 0]
        dist[start:stop] = np.maximum(x_sq[start:stop] + pmin, 0)
    return labels, dist


def exact_sq_dist_to(X, C, labels) -> np.ndarray:
    """``||x_i - C[labels_i]||^2`` as scikit-learn's ``_euclidean_sparse_dense`` (float64, clipped at 0).

    ``sum_nz ((x_j - c_j)^2 - c_j^2) + ||c||^2`` over the stored values of every row.

    Parameters
    ----------
    X : scipy.sparse matrix of shape (n_rows, n_features)
    C : ndarray of shape (n_centers, n_features)
    labels : ndarray of shape (n_rows,)

    Returns
    -------
    ndarray of shape (n_rows,) float64
    """
    X = as_csr(X)
    C64 = np.require(C, dtype=np.float64, requirements=["C", "A"])
    labels = np.asarray(labels, dtype=np.int64)
    rid = row_ids(X)
    c = C64[labels[rid], X.indices]
    diff = X.data.astype(np.float64) - c
    per = np.bincount(rid, weights=diff * diff - c * c, minlength=X.shape[0])
    c_sq = _sq_norms(C64)
    return np.maximum(per + c_sq[labels], 0.0)


def cluster_sums(X, labels, k: int, sample_weight=None) -> np.ndarray:
    """Per-cluster (weighted) sums of the rows of a sparse block, float64, dense ``(k, n_features)``.

    One ``np.bincount`` over the stored values, keyed by ``label * n_features + column``: in row order,
    so deterministic.

    Parameters
    ----------
    X : scipy.sparse matrix of shape (n_rows, n_features)
    labels : ndarray of shape (n_rows,)
    k : int
        Number of clusters.
    sample_weight : ndarray of shape (n_rows,) or None, default=None

    Returns
    -------
    ndarray of shape (k, n_features)

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from kmeans_dist.kernels.sparse import cluster_sums
    >>> cluster_sums(sp.csr_matrix([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]]), np.array([0, 1, 0]), 2).tolist()
    [[4.0, 0.0], [0.0, 2.0]]
    """
    X = as_csr(X)
    d = X.shape[1]
    rid = row_ids(X)
    vals = X.data.astype(np.float64)
    if sample_weight is not None:
        vals = vals * np.asarray(sample_weight, dtype=np.float64)[rid]
    key = np.asarray(labels, dtype=np.int64)[rid] * d + X.indices.astype(np.int64)
    return np.bincount(key, weights=vals, minlength=k * d).reshape(k, d)


def lloyd_block(X, sample_weight, centers, *, x_sq=None, exact_inertia: bool = False):
    """One sparse block's share of a Lloyd pass: labels, distances, per-cluster sums, weights, counts, inertia.

    Parameters
    ----------
    X : scipy.sparse matrix of shape (n_rows, n_features)
        The block.
    sample_weight : ndarray of shape (n_rows,) or None
        Row weights (None: ones).
    centers : ndarray of shape (n_clusters, n_features)
        Dense centers, in X's dtype.
    x_sq : ndarray of shape (n_rows,) or None, default=None
        Precomputed squared row norms.
    exact_inertia : bool, default=False
        Distances by direct differences (:func:`exact_sq_dist_to`) instead of the expanded form.

    Returns
    -------
    tuple
        ``(sums (k, d) float64, weights (k,) float64, counts (k,) float64, inertia float64, labels (n,) int64,
        dist (n,))``.
    """
    X = as_csr(X)
    C = np.require(centers, requirements=["C", "A"])
    k = C.shape[0]
    labels, dist = assign_labels(X, C, x_sq=x_sq)
    if exact_inertia:
        dist = exact_sq_dist_to(X, C, labels).astype(dist.dtype, copy=False)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    if sample_weight is None:
        weights = counts.copy()
        inertia = np.sum(dist.astype(np.float64))
        w = None
    else:
        w = np.asarray(sample_weight, dtype=np.float64)
        weights = np.bincount(labels, weights=w, minlength=k)
        inertia = np.sum(dist.astype(np.float64) * w)
    sums = cluster_sums(X, labels, k, w)
    return sums, weights, counts, np.float64(inertia), labels, dist


def moments(X):
    """Column means and sums of squared deviations (float64) of a sparse block, zeros included.

    ``M2_j = sum_nz (x - m_j)^2 + (n - nnz_j) m_j^2``: no cancellation.

    Parameters
    ----------
    X : scipy.sparse matrix of shape (n_rows, n_features)

    Returns
    -------
    mean, M2 : ndarray of shape (n_features,)
    """
    X = as_csr(X)
    n, d = X.shape
    cols = X.indices.astype(np.int64)
    v = X.data.astype(np.float64)
    mean = np.bincount(cols, weights=v, minlength=d) / max(n, 1)
    dev = v - mean[cols]
    nnz = np.bincount(cols, minlength=d)
    M2 = np.bincount(cols, weights=dev * dev, minlength=d) + (n - nnz) * mean * mean
    return mean, M2


def nonfinite(X):
    """Rows and columns of the non-finite stored values of a sparse block, row-major, and their values.

    Parameters
    ----------
    X : scipy.sparse matrix of shape (n_rows, n_features)

    Returns
    -------
    rows, cols, values : ndarray
        Empty when every stored value is finite.
    """
    X = as_csr(X)
    bad = np.flatnonzero(~np.isfinite(X.data))
    if bad.size == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e, X.data[:0]
    rows = row_ids(X)[bad]
    cols = X.indices[bad].astype(np.int64)
    order = np.lexsort((cols, rows))
    return rows[order], cols[order], X.data[bad][order]
