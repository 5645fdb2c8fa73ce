"""Clustering metrics computed over chunks on Dask, equal to scikit-learn's on in-memory data.

Every public function accepts NumPy, dask, xarray or a Zarr store path for ``X`` (through
:func:`kmeans_dist.data.as_dask_array`) and for labels (through
:func:`kmeans_dist.data.as_labels_array`), and runs on whatever Dask scheduler is active (a
``distributed.Client`` if one is the default, the threaded scheduler otherwise).

How the work is laid out:

- each chunk of rows produces a small *partial* (a dict of host NumPy arrays: per-cluster counts,
  sums, squared-error sums, ...), and partials are merged by a tree reduction
  (:func:`kmeans_dist.chunked.driver.delayed_tree`, ``split_every`` partials per node), so no task ever holds more than one
  chunk of X plus a few partials;
- metrics without labels need at most two passes over X: one for per-cluster counts and sums (the
  centroids), one for the distances to the centroids (inertia, Calinski-Harabasz and
  Davies-Bouldin all come from that pair of passes);
- labelled metrics all derive from one distributed *contingency table* (one pass over the two label
  vectors), then are computed on the small table on the client exactly as scikit-learn computes
  them;
- the exact silhouette is O(n^2): it is done over pairs of chunks ``(i, j)``, ``i <= j``, each task
  holding two chunks and computing Euclidean distances by GEMM (``||x||^2 + ||y||^2 - 2 x.y``,
  clipped at zero, then the square root, as scikit-learn), accumulating per-row per-cluster
  distance sums in float64.  The symmetric block is used twice (rows of ``i`` against clusters of
  ``j`` and the transpose), so each distance is computed once.  No n x n matrix ever exists.

Metric names follow scikit-learn (``silhouette_score``, ``silhouette_samples``,
``calinski_harabasz_score``, ``davies_bouldin_score``, ``adjusted_rand_score``,
``normalized_mutual_info_score``, ``homogeneity_completeness_v_measure``, ...), plus
``clustering_accuracy`` (ACC, best one-to-one matching by the Hungarian algorithm), ``purity_score``
and ``inertia``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .chunked.driver import canonical_rows, compute, delayed_tree, make_blocks, row_blocks
from .data import as_dask_array, as_labels_array

__all__ = [
    "calinski_harabasz_from_stats",
    "davies_bouldin_from_stats",
    "inertia",
    "calinski_harabasz_score",
    "davies_bouldin_score",
    "silhouette_samples",
    "silhouette_score",
    "silhouette_estimate",
    "SilhouetteEstimate",
    "silhouette_per_cluster",
    "cluster_statistics",
    "contingency_matrix",
    "Contingency",
    "adjusted_rand_score",
    "normalized_mutual_info_score",
    "mutual_info_score",
    "homogeneity_completeness_v_measure",
    "homogeneity_score",
    "completeness_score",
    "v_measure_score",
    "clustering_accuracy",
    "purity_score",
    "clustering_report",
    "partition_scores",
    "check_number_of_labels",
]

SPLIT_EVERY = 8
# elements of one float64 distance sub-block inside a silhouette pair task (2**23 * 8 B = 64 MiB)
PAIR_BLOCK_ELEMS = 2**23
# rows of one sub-block in the per-chunk passes (bounds the float64 temporaries)
SUB_ROWS = 4096


# --------------------------------------------------------------------------------------------------
# plumbing: inputs, tree reductions
# --------------------------------------------------------------------------------------------------

def check_number_of_labels(n_labels: int, n_samples: int) -> None:
    """Raise scikit-learn's error unless ``2 <= n_labels <= n_samples - 1``.

    Parameters
    ----------
    n_labels : int
        Number of distinct labels (clusters).
    n_samples : int
        Number of samples.

    Raises
    ------
    ValueError
        If ``n_labels`` is outside ``[2, n_samples - 1]``, with scikit-learn's message.

    Examples
    --------
    >>> from kmeans_dist.metrics import check_number_of_labels
    >>> check_number_of_labels(2, 6)
    >>> check_number_of_labels(1, 6)
    Traceback (most recent call last):
        ...
    ValueError: Number of labels is 1. Valid values are 2 to n_samples - 1 (inclusive)
    """
    if not 1 < n_labels < n_samples:
        raise ValueError(
            "Number of labels is %d. Valid values are 2 to n_samples - 1 (inclusive)" % n_labels
        )


def _canonical(Xd, *ys):
    """X (and per-row arrays) cut into the driver's canonical row blocks: every partial and the reduction
    tree are then the same whatever the input's chunking, so every metric is bit-identical whatever the
    chunking and the number of workers."""
    rows = canonical_rows(int(Xd.shape[0]), int(Xd.shape[1]) if Xd.ndim == 2 else 1, Xd.dtype.itemsize)
    chunks = {0: rows} if Xd.ndim == 1 else {0: rows, 1: -1}
    out = [Xd.rechunk(chunks)] + [None if y is None else y.rechunk({0: rows}) for y in ys]
    return out[0] if not ys else tuple(out)


def _inputs(X, labels):
    """X as a 2-D float dask array and labels as a 1-D dask array, both in canonical row blocks."""
    Xd = as_dask_array(X)
    y = as_labels_array(labels, Xd.shape[0])
    return _canonical(Xd, y)


def _labels_pair(labels_true, labels_pred):
    yt = as_labels_array(labels_true, name="labels_true")
    yp = as_labels_array(labels_pred, name="labels_pred")
    if yt.shape[0] != yp.shape[0]:
        raise ValueError(
            "Found input variables with inconsistent numbers of samples: "
            f"[{yt.shape[0]}, {yp.shape[0]}] (labels_true, labels_pred)"
        )
    return _canonical(yt, yp)


def _blocks(a):
    """The (canonical) row blocks of a dask array as a list of Delayed."""
    return row_blocks(a, int(a.chunks[0][0]) if a.shape[0] else 1)


def _offsets(chunks) -> list[int]:
    return [0] + list(np.cumsum(chunks)[:-1].astype(int))


# --------------------------------------------------------------------------------------------------
# label encoding: one pass for the unique values and their counts
# --------------------------------------------------------------------------------------------------

def _unique_chunk(y):
    u, c = np.unique(np.asarray(y), return_counts=True)
    return {"values": u, "counts": c.astype(np.int64)}


def _unique_combine(parts):
    vals = np.concatenate([p["values"] for p in parts])
    cnts = np.concatenate([p["counts"] for p in parts])
    u, inv = np.unique(vals, return_inverse=True)
    c = np.zeros(len(u), dtype=np.int64)
    np.add.at(c, inv.ravel(), cnts)
    return {"values": u, "counts": c}


def _label_counts(y):
    """(unique label values, their counts) of a 1-D dask array, in one pass."""
    from dask import delayed

    parts = [delayed(_unique_chunk, pure=True)(b) for b in _blocks(y)]
    (res,) = compute(delayed_tree(parts, _unique_combine))
    return res["values"], res["counts"]


def _encode_block(y, classes):
    return np.searchsorted(classes, np.asarray(y)).astype(np.int64)


def _encode(y, classes):
    """Codes 0..k-1 of a labels dask array given its sorted unique values (lazy, chunk by chunk)."""
    return y.map_blocks(_encode_block, classes, dtype=np.int64)


@dataclass
class _Encoded:
    X: object          # dask (n, d)
    codes: object      # dask (n,) int64 codes 0..k-1, chunked like X
    classes: np.ndarray
    counts: np.ndarray

    @property
    def k(self) -> int:
        return len(self.classes)

    @property
    def n(self) -> int:
        return int(self.X.shape[0])


def _prepare(X, labels, check_labels: bool = True) -> _Encoded:
    Xd, y = _inputs(X, labels)
    classes, counts = _label_counts(y)
    if check_labels:
        check_number_of_labels(len(classes), Xd.shape[0])
    return _Encoded(Xd, _encode(y, classes), classes, counts)


# --------------------------------------------------------------------------------------------------
# per-cluster statistics (centroids; squared errors and distances to given centers)
# --------------------------------------------------------------------------------------------------

def _onehot_matrix(codes, k):
    import scipy.sparse as sp

    m = codes.shape[0]
    return sp.csr_matrix((np.ones(m, dtype=np.float64), (codes, np.arange(m))), shape=(k, m))


def _sums_chunk(x, codes, k):
    x64 = np.asarray(x, dtype=np.float64)
    codes = np.asarray(codes)
    return {"sum": np.asarray(_onehot_matrix(codes, k) @ x64),
            "count": np.bincount(codes, minlength=k).astype(np.int64)}


def _sum_dicts(parts):
    out = {key: np.array(v, copy=True) for key, v in parts[0].items()}
    for p in parts[1:]:
        for key in out:
            out[key] += p[key]
    return out


def _within_chunk(x, codes, centers, k):
    """Per-cluster sum of squared and of plain Euclidean distances to ``centers[codes]``
    (direct differences in float64: no cancellation)."""
    codes = np.asarray(codes)
    sse = np.zeros(k)
    sdist = np.zeros(k)
    for s in range(0, x.shape[0], SUB_ROWS):
        c = codes[s:s + SUB_ROWS]
        diff = np.asarray(x[s:s + SUB_ROWS], dtype=np.float64) - centers[c]
        sq = np.einsum("ij,ij->i", diff, diff)
        sse += np.bincount(c, weights=sq, minlength=k)
        sdist += np.bincount(c, weights=np.sqrt(sq), minlength=k)
    return {"sse": sse, "dist": sdist}


def _centroids(enc: _Encoded):
    from dask import delayed

    parts = [delayed(_sums_chunk, pure=True)(x, c, enc.k)
             for x, c in zip(_blocks(enc.X), _blocks(enc.codes))]
    (res,) = compute(delayed_tree(parts, _sum_dicts))
    return res["sum"], res["count"]


def _within(enc: _Encoded, centers):
    from dask import delayed

    C = delayed(np.asarray(centers, dtype=np.float64), pure=True)
    parts = [delayed(_within_chunk, pure=True)(x, c, C, enc.k)
             for x, c in zip(_blocks(enc.X), _blocks(enc.codes))]
    (res,) = compute(delayed_tree(parts, _sum_dicts))
    return res["sse"], res["dist"]


def cluster_statistics(X, labels, *, check_labels: bool = False) -> dict:
    """Per-cluster statistics in two passes over X.

    Pass one gives the per-cluster counts and float64 sums (the centroids), pass two the squared
    and plain Euclidean distances to those centroids (direct differences in float64).  The result
    is everything the label-free metrics other than silhouette need: pass it to
    :func:`calinski_harabasz_from_stats` and :func:`davies_bouldin_from_stats`.

    Parameters
    ----------
    X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
        Samples (a Zarr store path is opened lazily).
    labels : array-like, dask array or str of shape (n_samples,)
        Cluster label of each sample.
    check_labels : bool, default=False
        Raise unless the number of distinct labels is in ``[2, n_samples - 1]`` (see
        :func:`check_number_of_labels`).

    Returns
    -------
    dict
        ``labels`` (the sorted unique label values), ``size`` (points per cluster),
        ``centroid`` (k, d) float64 means, ``sse`` (sum of squared distances to the centroid),
        ``mean_distance`` (mean Euclidean distance to the centroid), ``mean`` (the global mean),
        ``n_samples``.

    Raises
    ------
    ValueError
        If ``labels`` does not have one entry per row of ``X``, or, with ``check_labels``, if
        the number of labels is outside ``[2, n_samples - 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.metrics import cluster_statistics
    >>> X = np.array([[0., 0.], [0., 1.], [1., 0.], [10., 10.], [10., 11.], [11., 10.]])
    >>> st = cluster_statistics(X, [0, 0, 0, 1, 1, 1])
    >>> st["size"].tolist(), st["sse"].round(4).tolist()
    ([3, 3], [1.3333, 1.3333])
    """
    enc = _prepare(X, labels, check_labels=check_labels)
    return _stats_from_encoded(enc)


def _stats_from_encoded(enc: _Encoded) -> dict:
    sums, counts = _centroids(enc)
    centroids = sums / counts[:, None]
    sse, sdist = _within(enc, centroids)
    return {
        "labels": enc.classes,
        "size": counts,
        "centroid": centroids,
        "sse": sse,
        "mean_distance": sdist / counts,
        "mean": sums.sum(axis=0) / enc.n,
        "n_samples": enc.n,
    }


# --------------------------------------------------------------------------------------------------
# inertia, Calinski-Harabasz, Davies-Bouldin
# --------------------------------------------------------------------------------------------------

def _nearest_chunk(x, centers):
    from .kernels import assign_labels

    lab, _ = assign_labels(np.asarray(x), centers.astype(x.dtype, copy=False))
    diff = np.asarray(x, dtype=np.float64) - centers[lab]
    return {"sse": np.array([np.einsum("ij,ij->", diff, diff)])}


def inertia(X, labels=None, centers=None) -> float:
    """Sum of squared Euclidean distances of the samples to their cluster's center.

    - ``labels`` only: the centers are the cluster means (the within-cluster sum of squares
      ``W_k`` of the gap statistic); two passes over X.
    - ``centers`` only: every sample goes to its nearest center (as ``KMeans.inertia_``); one pass.
    - both: distances to ``centers[labels]`` where labels are codes 0..k-1 into ``centers``.

    Distances are computed by direct differences in float64.

    Parameters
    ----------
    X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
        Samples (a Zarr store path is opened lazily).
    labels : array-like, dask array or str of shape (n_samples,), optional
        Cluster label of each sample; with ``centers``, integer codes ``0..k-1`` into it.
    centers : array-like of shape (n_clusters, n_features), optional
        Cluster centers.

    Returns
    -------
    float
        The sum of squared distances.

    Raises
    ------
    ValueError
        If neither ``labels`` nor ``centers`` is given, if ``centers`` is not of shape
        ``(k, n_features)``, or if ``labels`` does not have one entry per row of ``X``.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.metrics import inertia
    >>> X = np.array([[0., 0.], [0., 1.], [1., 0.], [10., 10.], [10., 11.], [11., 10.]])
    >>> labels = np.array([0, 0, 0, 1, 1, 1])
    >>> round(inertia(X, labels), 6)  # around the cluster means
    2.666667
    >>> inertia(X, centers=np.array([[0., 0.], [10., 10.]]))  # nearest center
    4.0
    >>> inertia(X, labels, np.array([[0., 0.], [10., 10.]]))
    4.0
    """
    from dask import delayed

    if labels is None and centers is None:
        raise ValueError("inertia needs labels, centers, or both")
    if labels is None:
        Xd = _canonical(as_dask_array(X))
        C = np.asarray(centers, dtype=np.float64)
        if C.ndim != 2 or C.shape[1] != Xd.shape[1]:
            raise ValueError(f"centers must have shape (k, {Xd.shape[1]}), got {C.shape}")
        Cd = delayed(C, pure=True)
        parts = [delayed(_nearest_chunk, pure=True)(x, Cd) for x in _blocks(Xd)]
        (res,) = compute(delayed_tree(parts, _sum_dicts))
        return float(res["sse"][0])
    if centers is None:
        enc = _prepare(X, labels, check_labels=False)
        sums, counts = _centroids(enc)
        sse, _ = _within(enc, sums / counts[:, None])
        return float(sse.sum())
    Xd, y = _inputs(X, labels)
    C = np.asarray(centers, dtype=np.float64)
    if C.ndim != 2 or C.shape[1] != Xd.shape[1]:
        raise ValueError(f"centers must have shape (k, {Xd.shape[1]}), got {C.shape}")
    enc = _Encoded(Xd, y.astype(np.int64), np.arange(C.shape[0]), np.zeros(C.shape[0], np.int64))
    sse, _ = _within(enc, C)
    return float(sse.sum())


def calinski_harabasz_from_stats(st: dict) -> float:
    """Calinski-Harabasz score from :func:`cluster_statistics` (no pass over the data).

    ``extra * (n - k) / (intra * (k - 1))`` with ``extra`` the size-weighted squared distances
    of the centroids to the global mean and ``intra`` the total within-cluster sum of squares;
    1.0 when ``intra`` is 0, as scikit-learn.

    Parameters
    ----------
    st : dict
        Statistics as returned by :func:`cluster_statistics` (``n_samples``, ``size``,
        ``centroid``, ``mean`` and ``sse`` are used).

    Returns
    -------
    float
        The Calinski-Harabasz score.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.metrics import calinski_harabasz_from_stats, cluster_statistics
    >>> X = np.array([[0., 0.], [0., 1.], [1., 0.], [10., 10.], [10., 11.], [11., 10.]])
    >>> round(calinski_harabasz_from_stats(cluster_statistics(X, [0, 0, 0, 1, 1, 1])), 6)
    450.0
    """
    n, k = st["n_samples"], len(st["size"])
    extra = float(np.sum(st["size"] * np.sum((st["centroid"] - st["mean"]) ** 2, axis=1)))
    intra = float(np.sum(st["sse"]))
    return float(1.0 if intra == 0.0 else extra * (n - k) / (intra * (k - 1.0)))


def davies_bouldin_from_stats(st: dict) -> float:
    """Davies-Bouldin score from :func:`cluster_statistics` (no pass over the data).

    The mean over clusters of the largest ``(s_i + s_j) / d(c_i, c_j)`` (``s``: mean distance
    to the centroid, ``d``: centroid distance); 0.0 when every ``s`` or every centroid
    distance is (close to) 0, as scikit-learn.

    Parameters
    ----------
    st : dict
        Statistics as returned by :func:`cluster_statistics` (``mean_distance`` and
        ``centroid`` are used).

    Returns
    -------
    float
        The Davies-Bouldin score (lower is better).

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.metrics import cluster_statistics, davies_bouldin_from_stats
    >>> X = np.array([[0., 0.], [0., 1.], [1., 0.], [10., 10.], [10., 11.], [11., 10.]])
    >>> round(davies_bouldin_from_stats(cluster_statistics(X, [0, 0, 0, 1, 1, 1])), 6)
    0.092495
    """
    intra = np.asarray(st["mean_distance"], dtype=np.float64)
    C = st["centroid"]
    diff = C[:, None, :] - C[None, :, :]
    cdist = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
    if np.all(np.isclose(intra, 0.0)) or np.all(np.isclose(cdist, 0.0)):
        return 0.0
    cdist[cdist == 0] = np.inf
    combined = intra[:, None] + intra
    return float(np.mean(np.max(combined / cdist, axis=1)))


def calinski_harabasz_score(X, labels) -> float:
    """Calinski-Harabasz score (variance ratio criterion), as ``sklearn.metrics``; two passes.

    Higher is better.  Computed from :func:`cluster_statistics` (one pass for the centroids,
    one for the distances to them).

    Parameters
    ----------
    X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
        Samples (a Zarr store path is opened lazily).
    labels : array-like, dask array or str of shape (n_samples,)
        Cluster label of each sample.

    Returns
    -------
    float
        The Calinski-Harabasz score.

    Raises
    ------
    ValueError
        If the number of distinct labels is outside ``[2, n_samples - 1]`` or ``labels`` does
        not have one entry per row of ``X``.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.metrics import calinski_harabasz_score
    >>> X = np.array([[0., 0.], [0., 1.], [1., 0.], [10., 10.], [10., 11.], [11., 10.]])
    >>> round(calinski_harabasz_score(X, [0, 0, 0, 1, 1, 1]), 6)
    450.0
    """
    enc = _prepare(X, labels)
    return calinski_harabasz_from_stats(_stats_from_encoded(enc))


def davies_bouldin_score(X, labels) -> float:
    """Davies-Bouldin score (lower is better), as ``sklearn.metrics``; two passes.

    Distances to the centroids are computed by direct differences: scikit-learn expands
    ``||x||^2 - 2 x.c + ||c||^2``, whose cancellation error shows only in degenerate cases (a
    singleton cluster gets an intra-cluster distance of ~1e-7 instead of 0); elsewhere the two agree
    to ~1e-15.

    Parameters
    ----------
    X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
        Samples (a Zarr store path is opened lazily).
    labels : array-like, dask array or str of shape (n_samples,)
        Cluster label of each sample.

    Returns
    -------
    float
        The Davies-Bouldin score.

    Raises
    ------
    ValueError
        If the number of distinct labels is outside ``[2, n_samples - 1]`` or ``labels`` does
        not have one entry per row of ``X``.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.metrics import davies_bouldin_score
    >>> X = np.array([[0., 0.], [0., 1.], [1., 0.], [10., 10.], [10., 11.], [11., 10.]])
    >>> round(davies_bouldin_score(X, [0, 0, 0, 1, 1, 1]), 6)
    0.092495
    """
    enc = _prepare(X, labels)
    return davies_bouldin_from_stats(_stats_from_encoded(enc))


# --------------------------------------------------------------------------------------------------
# silhouette, exact: blockwise over pairs of chunks
# --------------------------------------------------------------------------------------------------

def _onehot_dense(codes, k):
    O = np.zeros((codes.shape[0], k), dtype=np.float64)
    O[np.arange(codes.shape[0]), codes] = 1.0
    return O


def _gemm_dtype(x, precision):
    if precision == "float64":
        return np.float64
    if precision == "float32":
        return np.float32
    return np.float64 if np.asarray(x).dtype == np.float64 else np.float32


def _row_sq64(x):
    """Squared row norms accumulated in float64 (sub-blocked: no float64 copy of the whole chunk)."""
    out = np.empty(x.shape[0])
    for s in range(0, x.shape[0], SUB_ROWS):
        b = np.asarray(x[s:s + SUB_ROWS], dtype=np.float64)
        out[s:s + SUB_ROWS] = np.einsum("ij,ij->i", b, b)
    return out


def _sil_pair(xi, ci, xj, cj, k, same, precision):
    """Per-row per-cluster Euclidean distance sums for the block pair (i, j).

    Returns ``(S_i, S_j)``: ``S_i[r, c]`` = sum of distances from row r of block i to the rows of
    block j in cluster c; ``S_j`` the same for the rows of j against block i (None when i == j).
    """
    xi = np.asarray(xi)
    xj = np.asarray(xj)
    ci = np.asarray(ci)
    cj = np.asarray(cj)
    gt = _gemm_dtype(xi, precision)
    xi_g = xi.astype(gt, copy=False)
    xj_g = xj.astype(gt, copy=False)
    xi_sq = _row_sq64(xi)
    xj_sq = xi_sq if same else _row_sq64(xj)
    Oj = _onehot_dense(cj, k)
    Oi = None if same else _onehot_dense(ci, k)
    ni, nj = xi.shape[0], xj.shape[0]
    Si = np.zeros((ni, k))
    Sj = None if same else np.zeros((nj, k))
    sub = int(max(16, min(ni, PAIR_BLOCK_ELEMS // max(nj, 1))))
    for s in range(0, ni, sub):
        e = min(s + sub, ni)
        G = xi_g[s:e] @ xj_g.T
        D = np.multiply(G, -2.0, dtype=np.float64)
        D += xi_sq[s:e, None]
        D += xj_sq[None, :]
        np.maximum(D, 0.0, out=D)
        np.sqrt(D, out=D)
        if same:  # distance of a sample to itself is exactly 0, as scikit-learn sets it
            r = np.arange(e - s)
            D[r, s + r] = 0.0
        Si[s:e] = D @ Oj
        if not same:
            Sj += D.T @ Oi[s:e]
    return Si, Sj


def _add_arrays(parts):
    out = np.array(parts[0], copy=True)
    for p in parts[1:]:
        out += p
    return out


def _sil_from_sums(S, codes, counts):
    """scikit-learn's silhouette from per-cluster distance sums (nan -> 0 for singletons)."""
    codes = np.asarray(codes)
    n = codes.shape[0]
    S = np.array(S, dtype=np.float64, copy=True)
    rows = np.arange(n)
    intra = S[rows, codes]
    S[rows, codes] = np.inf
    S /= counts
    inter = S.min(axis=1)
    denom = (counts - 1).take(codes, mode="clip")
    with np.errstate(divide="ignore", invalid="ignore"):
        intra = intra / denom
        sil = inter - intra
        sil /= np.maximum(intra, inter)
    return np.nan_to_num(sil)


def _silhouette_blocks(enc: _Encoded, precision: str = "auto", split_every: int = SPLIT_EVERY):
    """Lazy silhouette values as a list of (Delayed block, n_rows)."""
    from dask import delayed

    xb = _blocks(enc.X)
    cb = _blocks(enc.codes)
    m = len(xb)
    k = enc.k
    contrib = [[] for _ in range(m)]
    pair = delayed(_sil_pair, pure=True, nout=2)
    for i in range(m):
        for j in range(i, m):
            Si, Sj = pair(xb[i], cb[i], xb[j], cb[j], k, i == j, precision)
            contrib[i].append(Si)
            if j != i:
                contrib[j].append(Sj)
    counts = delayed(np.asarray(enc.counts, dtype=np.float64), pure=True)
    out = []
    for i in range(m):
        S = delayed_tree(contrib[i], _add_arrays, split_every)
        out.append((delayed(_sil_from_sums, pure=True)(S, cb[i], counts), enc.X.chunks[0][i]))
    return out


def silhouette_samples(X, labels, *, metric: str = "euclidean", precision: str = "auto"):
    """Silhouette coefficient of every sample (exact), as ``sklearn.metrics.silhouette_samples``.

    O(n^2) distances, computed blockwise over pairs of chunks (each task holds two chunks; no
    n x n matrix ever exists), per-row per-cluster distance sums accumulated in float64.  Samples
    of singleton clusters get 0, as in scikit-learn.

    Parameters
    ----------
    X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
        Samples (a Zarr store path is opened lazily).
    labels : array-like, dask array or str of shape (n_samples,)
        Cluster label of each sample.
    metric : str, default="euclidean"
        Only ``"euclidean"`` is supported on chunked data.
    precision : {"auto", "float64", "float32"}, default="auto"
        ``"auto"`` computes the distance GEMM in the data's dtype (float32 data stays float32 in
        the GEMM, float64 in norms and sums), ``"float64"`` upcasts (slower, closest to
        scikit-learn, which upcasts float32 chunks), ``"float32"`` forces float32.

    Returns
    -------
    ndarray or dask array of shape (n_samples,)
        A NumPy array for NumPy input, a lazy dask array otherwise.

    Raises
    ------
    ValueError
        If ``metric`` is not ``"euclidean"``, the number of distinct labels is outside
        ``[2, n_samples - 1]``, or ``labels`` does not have one entry per row of ``X``.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.metrics import silhouette_samples
    >>> X = np.array([[0., 0.], [0., 1.], [1., 0.], [10., 10.], [10., 11.], [11., 10.]])
    >>> silhouette_samples(X, np.array([0, 0, 0, 1, 1, 1])).round(4)
    array([0.9316, 0.9134, 0.9134, 0.9269, 0.9162, 0.9162])
    """
    import dask.array as da

    _check_metric(metric)
    enc = _prepare(X, labels)
    blocks = _silhouette_blocks(enc, precision)
    arr = da.concatenate([da.from_delayed(b, shape=(n,), dtype=np.float64) for b, n in blocks])
    if isinstance(X, np.ndarray):
        return arr.compute()
    return arr


def _check_metric(metric):
    if metric != "euclidean":
        raise ValueError(f"Only metric='euclidean' is supported on chunked data, got {metric!r}")


def silhouette_score(X, labels, *, metric: str = "euclidean", sample_size: int | None = None,
                     random_state=None, precision: str = "auto") -> float:
    """Mean silhouette coefficient, exact, as ``sklearn.metrics.silhouette_score``.

    With ``sample_size``, scikit-learn's semantics: the silhouette *of the subsample* drawn by
    ``check_random_state(random_state).permutation(n)[:sample_size]`` (same draw, same value).
    For an estimate of the full-data silhouette with a confidence interval see
    :func:`silhouette_estimate`.

    O(n^2) distances, computed blockwise over pairs of chunks as in :func:`silhouette_samples`;
    the per-chunk sums are merged by a tree reduction.

    Parameters
    ----------
    X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
        Samples (a Zarr store path is opened lazily).
    labels : array-like, dask array or str of shape (n_samples,)
        Cluster label of each sample.
    metric : str, default="euclidean"
        Only ``"euclidean"`` is supported on chunked data.
    sample_size : int, optional
        Score the subsample of this size drawn as scikit-learn draws it (all samples when None).
    random_state : int, RandomState instance or None, default=None
        Seed of the subsample draw (used only with ``sample_size``).
    precision : {"auto", "float64", "float32"}, default="auto"
        Dtype of the distance GEMM, as in :func:`silhouette_samples`.

    Returns
    -------
    float
        The mean silhouette coefficient, in ``[-1, 1]``.

    Raises
    ------
    ValueError
        If ``metric`` is not ``"euclidean"``, the number of distinct labels is outside
        ``[2, n_samples - 1]``, or ``labels`` does not have one entry per row of ``X``.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.metrics import silhouette_score
    >>> X = np.array([[0., 0.], [0., 1.], [1., 0.], [10., 10.], [10., 11.], [11., 10.]])
    >>> labels = np.array([0, 0, 0, 1, 1, 1])
    >>> round(silhouette_score(X, labels), 6)
    0.919622
    >>> from sklearn.metrics import silhouette_score as sk_silhouette_score
    >>> bool(np.isclose(silhouette_score(X, labels, sample_size=4, random_state=0),
    ...                 sk_silhouette_score(X, labels, sample_size=4, random_state=0)))
    True
    """
    from dask import delayed

    _check_metric(metric)
    if sample_size is not None:
        from sklearn.utils import check_random_state

        Xd, y = _inputs(X, labels)
        idx = check_random_state(random_state).permutation(Xd.shape[0])[:sample_size]
        X = Xd[idx]
        labels = y[idx]
    enc = _prepare(X, labels)
    blocks = _silhouette_blocks(enc, precision)

    def _part(s):
        return {"sum": np.array([np.sum(s)])}

    parts = [delayed(_part, pure=True)(b) for b, _ in blocks]
    (res,) = compute(delayed_tree(parts, _sum_dicts))
    return float(res["sum"][0] / enc.n)


def silhouette_per_cluster(X, labels, *, precision: str = "auto"):
    """Per-cluster silhouette means and sizes (exact) as an ``xarray.Dataset`` over ``cluster``.

    Same O(n^2) blockwise computation as :func:`silhouette_samples`, reduced per cluster.

    Parameters
    ----------
    X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
        Samples (a Zarr store path is opened lazily).
    labels : array-like, dask array or str of shape (n_samples,)
        Cluster label of each sample.
    precision : {"auto", "float64", "float32"}, default="auto"
        Dtype of the distance GEMM, as in :func:`silhouette_samples`.

    Returns
    -------
    xarray.Dataset
        Variables over ``cluster`` (the sorted label values): ``size``, ``silhouette`` (mean
        over the cluster's samples), ``silhouette_min``, ``silhouette_max``; attributes
        ``silhouette_score`` (the overall mean) and ``n_samples``.

    Raises
    ------
    ValueError
        If the number of distinct labels is outside ``[2, n_samples - 1]`` or ``labels`` does
        not have one entry per row of ``X``.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.metrics import silhouette_per_cluster
    >>> X = np.array([[0., 0.], [0., 1.], [1., 0.], [10., 10.], [10., 11.], [11., 10.]])
    >>> ds = silhouette_per_cluster(X, np.array([0, 0, 0, 1, 1, 1]))
    >>> ds["size"].values.tolist(), ds["silhouette"].values.round(4).tolist()
    ([3, 3], [0.9195, 0.9198])
    """
    import xarray as xr
    from dask import delayed

    enc = _prepare(X, labels)
    blocks = _silhouette_blocks(enc, precision)
    k = enc.k

    def _part(s, codes):
        codes = np.asarray(codes)
        mn = np.full(k, np.inf)
        mx = np.full(k, -np.inf)
        np.minimum.at(mn, codes, s)
        np.maximum.at(mx, codes, s)
        return {"sum": np.bincount(codes, weights=s, minlength=k), "min": mn, "max": mx}

    def _comb(parts):
        return {"sum": np.sum([p["sum"] for p in parts], axis=0),
                "min": np.min([p["min"] for p in parts], axis=0),
                "max": np.max([p["max"] for p in parts], axis=0)}

    cb = _blocks(enc.codes)
    parts = [delayed(_part, pure=True)(b, c) for (b, _), c in zip(blocks, cb)]
    (res,) = compute(delayed_tree(parts, _comb))
    return xr.Dataset(
        {"size": ("cluster", enc.counts), "silhouette": ("cluster", res["sum"] / enc.counts),
         "silhouette_min": ("cluster", res["min"]), "silhouette_max": ("cluster", res["max"])},
        coords={"cluster": enc.classes},
        attrs={"silhouette_score": float(res["sum"].sum() / enc.n), "n_samples": enc.n},
    )


# --------------------------------------------------------------------------------------------------
# silhouette, estimated from a seeded sample, with a confidence interval
# --------------------------------------------------------------------------------------------------

@dataclass
class SilhouetteEstimate:
    """Estimate of the mean silhouette of the full data from a uniform sample without replacement.

    Each sampled point's silhouette is exact (distances to *all* n points), so ``score`` is an
    unbiased estimate of ``silhouette_score(X, labels)``; ``std_error`` includes the finite
    population correction; ``ci`` is the normal-approximation interval at ``confidence``.
    Returned by :func:`silhouette_estimate`.

    Attributes
    ----------
    score : float
        Mean silhouette of the sampled points (the estimate).
    std_error : float
        Standard error of ``score``, with the finite population correction (0 when the sample
        is all of the data).
    ci : tuple of (float, float)
        Normal-approximation confidence interval ``(low, high)`` at ``confidence``.
    confidence : float
        Confidence level of ``ci``.
    n_sampled : int
        Number of points sampled.
    n_samples : int
        Number of points in the data.
    values : ndarray of shape (n_sampled,)
        Exact silhouette of each sampled point.
    indices : ndarray of shape (n_sampled,)
        Sorted row indices of the sampled points.
    """

    score: float
    std_error: float
    ci: tuple
    confidence: float
    n_sampled: int
    n_samples: int
    values: np.ndarray
    indices: np.ndarray


def _sample_sums_chunk(x, codes, offset, sample, sample_idx, k, precision):
    x = np.asarray(x)
    codes = np.asarray(codes)
    gt = _gemm_dtype(x, precision)
    s_sq = _row_sq64(np.asarray(sample))
    x_sq = _row_sq64(x)
    D = np.multiply(np.asarray(sample).astype(gt) @ x.astype(gt).T, -2.0, dtype=np.float64)
    D += s_sq[:, None]
    D += x_sq[None, :]
    np.maximum(D, 0.0, out=D)
    np.sqrt(D, out=D)
    local = np.asarray(sample_idx) - offset
    hit = np.flatnonzero((local >= 0) & (local < x.shape[0]))
    D[hit, local[hit]] = 0.0
    return {"sum": D @ _onehot_dense(codes, k)}


def _sample_std_error(vals, n: int) -> float:
    """Standard error of the mean of ``vals``, a sample drawn without replacement from ``n`` values
    (finite-population correction: 0 when the sample is everything)."""
    m = len(vals)
    sd = float(vals.std(ddof=1)) if m > 1 else 0.0
    fpc = math.sqrt((n - m) / (n - 1)) if n > 1 else 0.0
    return sd / math.sqrt(m) * fpc


def silhouette_estimate(X, labels, *, n_sampled: int = 2000, random_state=0,
                        confidence: float = 0.95, precision: str = "auto") -> SilhouetteEstimate:
    """Estimate ``silhouette_score(X, labels)`` from ``n_sampled`` points drawn without replacement.

    One pass over X: each chunk computes the distances from the (small) sample to its rows and
    their per-cluster sums; the sums are merged by a tree reduction.  Cost O(n_sampled * n).
    The sample is drawn by ``numpy.random.default_rng(random_state)``, so a given seed gives the
    same estimate.

    Parameters
    ----------
    X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
        Samples (a Zarr store path is opened lazily).
    labels : array-like, dask array or str of shape (n_samples,)
        Cluster label of each sample.
    n_sampled : int, default=2000
        Number of points to sample (at most ``n_samples``: then the score is exact).
    random_state : int, numpy Generator or None, default=0
        Seed of the sample draw.
    confidence : float, default=0.95
        Confidence level of the interval.
    precision : {"auto", "float64", "float32"}, default="auto"
        Dtype of the distance GEMM, as in :func:`silhouette_samples`.

    Returns
    -------
    SilhouetteEstimate
        The estimate, its standard error and confidence interval, and the sampled values.

    Raises
    ------
    ValueError
        If the number of distinct labels is outside ``[2, n_samples - 1]`` or ``labels`` does
        not have one entry per row of ``X``.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.metrics import silhouette_estimate
    >>> X = np.array([[0., 0.], [0., 1.], [1., 0.], [10., 10.], [10., 11.], [11., 10.]])
    >>> est = silhouette_estimate(X, np.array([0, 0, 0, 1, 1, 1]), n_sampled=4, random_state=0)
    >>> round(est.score, 4), est.n_sampled, est.indices.tolist()
    (0.9175, 4, [1, 2, 3, 4])
    """
    from dask import delayed
    from scipy.stats import norm

    enc = _prepare(X, labels)
    n = enc.n
    m = int(min(n_sampled, n))
    rng = np.random.default_rng(random_state)
    idx = np.sort(rng.choice(n, size=m, replace=False))
    sample, scodes = compute(enc.X[idx], enc.codes[idx])
    S_d = delayed(np.asarray(sample), pure=True)
    I_d = delayed(idx, pure=True)
    offs = _offsets(enc.X.chunks[0])
    parts = [delayed(_sample_sums_chunk, pure=True)(x, c, o, S_d, I_d, enc.k, precision)
             for x, c, o in zip(_blocks(enc.X), _blocks(enc.codes), offs)]
    (res,) = compute(delayed_tree(parts, _sum_dicts))
    vals = _sil_from_sums(res["sum"], scodes, enc.counts.astype(np.float64))
    mean, se = float(vals.mean()), _sample_std_error(vals, n)
    z = float(norm.ppf(0.5 + confidence / 2))
    return SilhouetteEstimate(mean, se, (mean - z * se, mean + z * se), confidence, m, n, vals, idx)


# --------------------------------------------------------------------------------------------------
# labelled metrics: one distributed contingency table
# --------------------------------------------------------------------------------------------------

@dataclass
class Contingency:
    """Contingency table ``table[i, j]`` = samples of class ``classes[i]`` in cluster ``clusters[j]``.

    Returned by :func:`contingency_matrix`; every labelled metric accepts it as
    ``contingency=`` so that several metrics share one pass over the labels.

    Attributes
    ----------
    table : ndarray of shape (n_classes, n_clusters)
        Integer counts.
    classes : ndarray of shape (n_classes,)
        Sorted unique values of the true labels.
    clusters : ndarray of shape (n_clusters,)
        Sorted unique values of the predicted labels.
    """

    table: np.ndarray
    classes: np.ndarray
    clusters: np.ndarray

    @property
    def n_samples(self) -> int:
        """Total number of samples in the table (``table.sum()``)."""
        return int(self.table.sum())


def _cont_chunk(t, p):
    t = np.asarray(t)
    p = np.asarray(p)
    ut, it = np.unique(t, return_inverse=True)
    up, ip = np.unique(p, return_inverse=True)
    pairs, cnt = np.unique(it.ravel().astype(np.int64) * len(up) + ip.ravel(), return_counts=True)
    return {"classes": ut, "clusters": up, "ti": pairs // len(up), "pi": pairs % len(up),
            "count": cnt.astype(np.int64)}


def _cont_combine(parts):
    ut = np.unique(np.concatenate([p["classes"] for p in parts]))
    up = np.unique(np.concatenate([p["clusters"] for p in parts]))
    ti = np.concatenate([np.searchsorted(ut, p["classes"][p["ti"]]) for p in parts])
    pi = np.concatenate([np.searchsorted(up, p["clusters"][p["pi"]]) for p in parts])
    cnt = np.concatenate([p["count"] for p in parts])
    pairs, inv = np.unique(ti * len(up) + pi, return_inverse=True)
    c = np.zeros(len(pairs), dtype=np.int64)
    np.add.at(c, inv.ravel(), cnt)
    return {"classes": ut, "clusters": up, "ti": pairs // len(up), "pi": pairs % len(up), "count": c}


def contingency_matrix(labels_true, labels_pred) -> Contingency:
    """The contingency table of two labelings, in one pass (sparse partials merged as a tree).

    Parameters
    ----------
    labels_true : array-like, dask array, str or Contingency of shape (n_samples,)
        Ground-truth class of each sample; a :class:`Contingency` is returned as is.
    labels_pred : array-like, dask array or str of shape (n_samples,)
        Cluster of each sample.

    Returns
    -------
    Contingency
        The table, with the sorted class and cluster values.

    Raises
    ------
    ValueError
        If the two labelings have different lengths.

    Examples
    --------
    >>> from kmeans_dist.metrics import contingency_matrix
    >>> ct = contingency_matrix([0, 0, 1, 1, 2, 2], [1, 1, 0, 0, 0, 2])
    >>> ct.table
    array([[0, 2, 0],
           [2, 0, 0],
           [1, 0, 1]])
    >>> ct.n_samples
    6
    """
    from dask import delayed

    if isinstance(labels_true, Contingency):
        return labels_true
    yt, yp = _labels_pair(labels_true, labels_pred)
    parts = [delayed(_cont_chunk, pure=True)(a, b) for a, b in zip(_blocks(yt), _blocks(yp))]
    (res,) = compute(delayed_tree(parts, _cont_combine))
    table = np.zeros((len(res["classes"]), len(res["clusters"])), dtype=np.int64)
    table[res["ti"], res["pi"]] = res["count"]
    return Contingency(table, res["classes"], res["clusters"])


def _table(labels_true, labels_pred, contingency) -> Contingency:
    if contingency is not None:
        if isinstance(contingency, Contingency):
            return contingency
        t = np.asarray(contingency, dtype=np.int64)
        return Contingency(t, np.arange(t.shape[0]), np.arange(t.shape[1]))
    return contingency_matrix(labels_true, labels_pred)


def _entropy_counts(counts) -> float:
    pi = np.asarray(counts, dtype=np.float64)
    pi = pi[pi > 0]
    if pi.size == 0:
        return 1.0
    if pi.size == 1:
        return 0.0
    pi_sum = np.sum(pi)
    return float(-np.sum((pi / pi_sum) * (np.log(pi) - math.log(pi_sum))))


def _mi_from_table(table) -> float:
    nzx, nzy = np.nonzero(table)
    nz_val = table[nzx, nzy].astype(np.float64)
    contingency_sum = float(table.sum())
    pi = table.sum(axis=1)
    pj = table.sum(axis=0)
    if pi.size == 1 or pj.size == 1:
        return 0.0
    log_contingency_nm = np.log(nz_val)
    contingency_nm = nz_val / contingency_sum
    outer = pi.take(nzx).astype(np.int64) * pj.take(nzy).astype(np.int64)
    log_outer = -np.log(outer) + math.log(pi.sum()) + math.log(pj.sum())
    mi = contingency_nm * (log_contingency_nm - math.log(contingency_sum)) + contingency_nm * log_outer
    mi = np.where(np.abs(mi) < np.finfo(mi.dtype).eps, 0.0, mi)
    return float(np.clip(mi.sum(), 0.0, None))


def mutual_info_score(labels_true=None, labels_pred=None, *, contingency=None) -> float:
    """Mutual information (natural log) of two labelings, as ``sklearn.metrics.mutual_info_score``.

    Computed on the small contingency table on the client (one pass over the labels to build
    it, none when ``contingency`` is given).

    Parameters
    ----------
    labels_true : array-like, dask array or str of shape (n_samples,), optional
        Ground-truth class of each sample (not needed with ``contingency``).
    labels_pred : array-like, dask array or str of shape (n_samples,), optional
        Cluster of each sample (not needed with ``contingency``).
    contingency : Contingency or array-like of shape (n_classes, n_clusters), optional
        A precomputed table (from :func:`contingency_matrix`, or raw counts); the labels are
        then ignored.

    Returns
    -------
    float
        The mutual information, in nats (non-negative).

    Raises
    ------
    ValueError
        If the two labelings have different lengths.

    Examples
    --------
    >>> from kmeans_dist.metrics import mutual_info_score
    >>> round(mutual_info_score([0, 0, 1, 1, 2, 2], [1, 1, 0, 0, 0, 2]), 6)
    0.780355
    """
    return _mi_from_table(_table(labels_true, labels_pred, contingency).table)


def _generalized_average(U, V, average_method):
    if average_method == "min":
        return min(U, V)
    if average_method == "geometric":
        return float(np.sqrt(U * V))
    if average_method == "arithmetic":
        return float(np.mean([U, V]))
    if average_method == "max":
        return max(U, V)
    raise ValueError("'average_method' must be 'min', 'geometric', 'arithmetic', or 'max'")


def normalized_mutual_info_score(labels_true=None, labels_pred=None, *, average_method: str = "arithmetic",
                                 contingency=None) -> float:
    """Normalized mutual information, as ``sklearn.metrics.normalized_mutual_info_score``.

    NMI = MI / mean(H(true), H(pred)), from one contingency table.  As scikit-learn, it is 1.0
    when both labelings have a single (the same) cluster, and 0.0 when the MI is 0.

    Parameters
    ----------
    labels_true : array-like, dask array or str of shape (n_samples,), optional
        Ground-truth class of each sample (not needed with ``contingency``).
    labels_pred : array-like, dask array or str of shape (n_samples,), optional
        Cluster of each sample (not needed with ``contingency``).
    average_method : {"arithmetic", "geometric", "min", "max"}, default="arithmetic"
        The mean of the two entropies in the denominator (``"arithmetic"`` by default, as
        scikit-learn).
    contingency : Contingency or array-like of shape (n_classes, n_clusters), optional
        A precomputed table (from :func:`contingency_matrix`, or raw counts); the labels are
        then ignored.

    Returns
    -------
    float
        The NMI, in ``[0, 1]``.

    Raises
    ------
    ValueError
        If ``average_method`` is not one of the four names, or the two labelings have
        different lengths.

    Examples
    --------
    >>> from kmeans_dist.metrics import normalized_mutual_info_score
    >>> round(normalized_mutual_info_score([0, 0, 1, 1, 2, 2], [1, 1, 0, 0, 0, 2]), 6)
    0.739667
    >>> normalized_mutual_info_score([0, 0, 1, 1], [1, 1, 0, 0])
    1.0
    """
    if average_method not in ("min", "geometric", "arithmetic", "max"):
        raise ValueError("'average_method' must be 'min', 'geometric', 'arithmetic', or 'max'")
    ct = _table(labels_true, labels_pred, contingency)
    t = ct.table
    if t.shape[0] == t.shape[1] == 1 or t.shape[0] == t.shape[1] == 0:
        return 1.0
    mi = _mi_from_table(t)
    if mi == 0:
        return 0.0
    h_true, h_pred = _entropy_counts(t.sum(axis=1)), _entropy_counts(t.sum(axis=0))
    return float(mi / _generalized_average(h_true, h_pred, average_method))


def homogeneity_completeness_v_measure(labels_true=None, labels_pred=None, *, beta: float = 1.0,
                                       contingency=None) -> tuple[float, float, float]:
    """(homogeneity, completeness, V-measure) as scikit-learn, from one contingency table.

    Parameters
    ----------
    labels_true : array-like, dask array or str of shape (n_samples,), optional
        Ground-truth class of each sample (not needed with ``contingency``).
    labels_pred : array-like, dask array or str of shape (n_samples,), optional
        Cluster of each sample (not needed with ``contingency``).
    beta : float, default=1.0
        Weight of homogeneity in the V-measure (``beta > 1`` favours completeness).
    contingency : Contingency or array-like of shape (n_classes, n_clusters), optional
        A precomputed table (from :func:`contingency_matrix`, or raw counts); the labels are
        then ignored.

    Returns
    -------
    homogeneity : float
        Each cluster contains only members of a single class (1.0 at best).
    completeness : float
        All members of a class are in the same cluster (1.0 at best).
    v_measure : float
        ``(1 + beta) * h * c / (beta * h + c)``.

    Raises
    ------
    ValueError
        If the two labelings have different lengths.

    Examples
    --------
    >>> from kmeans_dist.metrics import homogeneity_completeness_v_measure
    >>> h, c, v = homogeneity_completeness_v_measure([0, 0, 1, 1, 2, 2], [1, 1, 0, 0, 0, 2])
    >>> round(h, 4), round(c, 4), round(v, 4)
    (0.7103, 0.7716, 0.7397)
    """
    ct = _table(labels_true, labels_pred, contingency)
    t = ct.table
    if t.sum() == 0:
        return 1.0, 1.0, 1.0
    entropy_C = _entropy_counts(t.sum(axis=1))
    entropy_K = _entropy_counts(t.sum(axis=0))
    MI = _mi_from_table(t)
    homogeneity = MI / entropy_C if entropy_C else 1.0
    completeness = MI / entropy_K if entropy_K else 1.0
    if homogeneity + completeness == 0.0:
        v = 0.0
    else:
        v = (1 + beta) * homogeneity * completeness / (beta * homogeneity + completeness)
    return float(homogeneity), float(completeness), float(v)


def homogeneity_score(labels_true=None, labels_pred=None, *, contingency=None) -> float:
    """Homogeneity of a clustering, as ``sklearn.metrics.homogeneity_score``.

    See :func:`homogeneity_completeness_v_measure`.

    Parameters
    ----------
    labels_true : array-like, dask array or str of shape (n_samples,), optional
        Ground-truth class of each sample (not needed with ``contingency``).
    labels_pred : array-like, dask array or str of shape (n_samples,), optional
        Cluster of each sample (not needed with ``contingency``).
    contingency : Contingency or array-like of shape (n_classes, n_clusters), optional
        A precomputed table (from :func:`contingency_matrix`, or raw counts); the labels are
        then ignored.

    Returns
    -------
    float
        The homogeneity, in ``[0, 1]``.

    Raises
    ------
    ValueError
        If the two labelings have different lengths.
    """
    return homogeneity_completeness_v_measure(labels_true, labels_pred, contingency=contingency)[0]


def completeness_score(labels_true=None, labels_pred=None, *, contingency=None) -> float:
    """Completeness of a clustering, as ``sklearn.metrics.completeness_score``.

    See :func:`homogeneity_completeness_v_measure`.

    Parameters
    ----------
    labels_true : array-like, dask array or str of shape (n_samples,), optional
        Ground-truth class of each sample (not needed with ``contingency``).
    labels_pred : array-like, dask array or str of shape (n_samples,), optional
        Cluster of each sample (not needed with ``contingency``).
    contingency : Contingency or array-like of shape (n_classes, n_clusters), optional
        A precomputed table (from :func:`contingency_matrix`, or raw counts); the labels are
        then ignored.

    Returns
    -------
    float
        The completeness, in ``[0, 1]``.

    Raises
    ------
    ValueError
        If the two labelings have different lengths.
    """
    return homogeneity_completeness_v_measure(labels_true, labels_pred, contingency=contingency)[1]


def v_measure_score(labels_true=None, labels_pred=None, *, beta: float = 1.0, contingency=None) -> float:
    """V-measure of a clustering, as ``sklearn.metrics.v_measure_score``.

    See :func:`homogeneity_completeness_v_measure`.

    Parameters
    ----------
    labels_true : array-like, dask array or str of shape (n_samples,), optional
        Ground-truth class of each sample (not needed with ``contingency``).
    labels_pred : array-like, dask array or str of shape (n_samples,), optional
        Cluster of each sample (not needed with ``contingency``).
    beta : float, default=1.0
        Weight of homogeneity (``beta > 1`` favours completeness).
    contingency : Contingency or array-like of shape (n_classes, n_clusters), optional
        A precomputed table (from :func:`contingency_matrix`, or raw counts); the labels are
        then ignored.

    Returns
    -------
    float
        The V-measure, in ``[0, 1]``.

    Raises
    ------
    ValueError
        If the two labelings have different lengths.
    """
    return homogeneity_completeness_v_measure(labels_true, labels_pred, beta=beta, contingency=contingency)[2]


def adjusted_rand_score(labels_true=None, labels_pred=None, *, contingency=None) -> float:
    """Adjusted Rand index (Hubert & Arabie), as scikit-learn, from one contingency table.

    The pair counts are computed in Python integers (no overflow for any n).

    Parameters
    ----------
    labels_true : array-like, dask array or str of shape (n_samples,), optional
        Ground-truth class of each sample (not needed with ``contingency``).
    labels_pred : array-like, dask array or str of shape (n_samples,), optional
        Cluster of each sample (not needed with ``contingency``).
    contingency : Contingency or array-like of shape (n_classes, n_clusters), optional
        A precomputed table (from :func:`contingency_matrix`, or raw counts); the labels are
        then ignored.

    Returns
    -------
    float
        The ARI: 1.0 for identical partitions (up to a permutation), about 0.0 for random ones.

    Raises
    ------
    ValueError
        If the two labelings have different lengths.

    Examples
    --------
    >>> from kmeans_dist.metrics import adjusted_rand_score
    >>> round(adjusted_rand_score([0, 0, 1, 1, 2, 2], [1, 1, 0, 0, 0, 2]), 6)
    0.444444
    >>> adjusted_rand_score([0, 0, 1, 1], [1, 1, 0, 0])
    1.0
    """
    t = _table(labels_true, labels_pred, contingency).table.astype(object)
    n = int(t.sum())
    n_c = t.sum(axis=1)
    n_k = t.sum(axis=0)
    sum_squares = int((t * t).sum())
    tp = sum_squares - n
    fp = int((t.dot(n_k)).sum()) - sum_squares
    fn = int((t.T.dot(n_c)).sum()) - sum_squares
    tn = n * n - fp - fn - sum_squares
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def clustering_accuracy(labels_true=None, labels_pred=None, *, contingency=None,
                        return_mapping: bool = False):
    """Clustering accuracy (ACC) under the best one-to-one matching of clusters to classes.

    ACC is the fraction of samples correctly labelled under the best one-to-one matching of
    clusters to classes (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``), from
    one contingency table.  Clusters left unmatched (more clusters than classes) count as wrong.

    Parameters
    ----------
    labels_true : array-like, dask array or str of shape (n_samples,), optional
        Ground-truth class of each sample (not needed with ``contingency``).
    labels_pred : array-like, dask array or str of shape (n_samples,), optional
        Cluster of each sample (not needed with ``contingency``).
    contingency : Contingency or array-like of shape (n_classes, n_clusters), optional
        A precomputed table (from :func:`contingency_matrix`, or raw counts); the labels are
        then ignored.
    return_mapping : bool, default=False
        Also return ``{cluster value: class value}`` for the matched pairs.

    Returns
    -------
    accuracy : float
        The accuracy, in ``[0, 1]``.
    mapping : dict
        Only with ``return_mapping``: ``{cluster value: class value}`` for the matched pairs.

    Raises
    ------
    ValueError
        If the labelings are empty or have different lengths.

    Examples
    --------
    >>> from kmeans_dist.metrics import clustering_accuracy
    >>> y_true, y_pred = [0, 0, 1, 1, 2, 2], [1, 1, 0, 0, 0, 2]
    >>> round(clustering_accuracy(y_true, y_pred), 6)
    0.833333
    >>> acc, mapping = clustering_accuracy(y_true, y_pred, return_mapping=True)
    >>> sorted(mapping.items())
    [(0, 1), (1, 0), (2, 2)]
    """
    from scipy.optimize import linear_sum_assignment

    ct = _table(labels_true, labels_pred, contingency)
    n = ct.n_samples
    if n == 0:
        raise ValueError("clustering_accuracy of empty labelings")
    r, c = linear_sum_assignment(ct.table, maximize=True)
    acc = float(ct.table[r, c].sum() / n)
    if return_mapping:
        return acc, {ct.clusters[j].item(): ct.classes[i].item() for i, j in zip(r, c)}
    return acc


def purity_score(labels_true=None, labels_pred=None, *, contingency=None) -> float:
    """Purity: each cluster counts its majority class; the sum over clusters divided by n.

    Parameters
    ----------
    labels_true : array-like, dask array or str of shape (n_samples,), optional
        Ground-truth class of each sample (not needed with ``contingency``).
    labels_pred : array-like, dask array or str of shape (n_samples,), optional
        Cluster of each sample (not needed with ``contingency``).
    contingency : Contingency or array-like of shape (n_classes, n_clusters), optional
        A precomputed table (from :func:`contingency_matrix`, or raw counts); the labels are
        then ignored.

    Returns
    -------
    float
        The purity, in ``(0, 1]``.

    Raises
    ------
    ValueError
        If the two labelings have different lengths.

    Examples
    --------
    >>> from kmeans_dist.metrics import purity_score
    >>> round(purity_score([0, 0, 1, 1, 2, 2], [1, 1, 0, 0, 0, 2]), 6)
    0.833333
    """
    ct = _table(labels_true, labels_pred, contingency)
    return float(ct.table.max(axis=0).sum() / ct.n_samples)


def clustering_report(labels_true, labels_pred) -> dict:
    """All labelled metrics from one contingency table (one pass over the labels).

    Parameters
    ----------
    labels_true : array-like, dask array, str or Contingency of shape (n_samples,)
        Ground-truth class of each sample (a :class:`Contingency` is used as the table).
    labels_pred : array-like, dask array or str of shape (n_samples,)
        Cluster of each sample.

    Returns
    -------
    dict
        ``acc``, ``nmi``, ``ari``, ``homogeneity``, ``completeness``, ``v_measure``, ``purity``
        (floats), ``n_classes``, ``n_clusters`` and ``n_samples`` (ints).

    Raises
    ------
    ValueError
        If the labelings are empty or have different lengths.

    Examples
    --------
    >>> from kmeans_dist.metrics import clustering_report
    >>> rep = clustering_report([0, 0, 1, 1, 2, 2], [1, 1, 0, 0, 0, 2])
    >>> round(rep["ari"], 4), round(rep["nmi"], 4), rep["n_clusters"]
    (0.4444, 0.7397, 3)
    """
    ct = contingency_matrix(labels_true, labels_pred)
    h, c, v = homogeneity_completeness_v_measure(contingency=ct)
    return {
        "acc": clustering_accuracy(contingency=ct),
        "nmi": normalized_mutual_info_score(contingency=ct),
        "ari": adjusted_rand_score(contingency=ct),
        "homogeneity": h,
        "completeness": c,
        "v_measure": v,
        "purity": purity_score(contingency=ct),
        "n_classes": int(ct.table.shape[0]),
        "n_clusters": int(ct.table.shape[1]),
        "n_samples": ct.n_samples,
    }


# --------------------------------------------------------------------------------------------------
# every score of a nearest-center partition, in two passes over X
# --------------------------------------------------------------------------------------------------

def _partition_chunk(x, y, offset, centers, sample_idx):
    """Pass 1 over one chunk: nearest-center labels, then the cluster sizes, inertia, per-cluster float64
    sums, the (cluster x class) table as wide as the chunk's largest label (``y`` given), and the chunk's
    rows that are in the silhouette sample (``sample_idx``: sorted global row indices)."""
    from .kernels import assign_labels

    x = np.asarray(x)
    lab, d2 = assign_labels(x, centers.astype(x.dtype, copy=False))
    lab = np.asarray(lab, dtype=np.int64)
    k = centers.shape[0]
    sums = np.zeros((k, x.shape[1]))
    for s in range(0, x.shape[0], SUB_ROWS):
        sums += _onehot_matrix(lab[s:s + SUB_ROWS], k) @ np.asarray(x[s:s + SUB_ROWS], dtype=np.float64)
    local = sample_idx[(sample_idx >= offset) & (sample_idx < offset + x.shape[0])] - offset
    out = {"count": np.bincount(lab, minlength=k).astype(np.int64),
           "inertia": np.array([np.sum(np.asarray(d2, dtype=np.float64))]),
           "sum": sums, "sample": x[local], "sample_label": lab[local]}
    if y is not None:
        y = np.asarray(y, dtype=np.int64)
        cont = np.zeros((k, int(y.max()) + 1 if y.size else 0), dtype=np.int64)
        np.add.at(cont, (lab, y), 1)
        out["cont"] = cont
    return out


def _partition_combine(parts):
    """Sum of :func:`_partition_chunk` partials, in order: sample rows are concatenated (so they stay sorted
    by row index), class tables padded with zero columns to the widest."""
    out = {"count": np.sum([p["count"] for p in parts], axis=0),
           "inertia": np.array([math.fsum(float(p["inertia"][0]) for p in parts)]),
           "sum": np.sum([p["sum"] for p in parts], axis=0),
           "sample": np.concatenate([p["sample"] for p in parts]),
           "sample_label": np.concatenate([p["sample_label"] for p in parts])}
    if "cont" in parts[0]:
        tables = [p["cont"] for p in parts]
        total = np.zeros((tables[0].shape[0], max(t.shape[1] for t in tables)), dtype=np.int64)
        for t in tables:
            total[:, :t.shape[1]] += t
        out["cont"] = total
    return out


def _partition_chunk2(x, _w, offset, centers, centroids, remap, sample, sample_idx, precision):
    """Pass 2 over one chunk: the same labels again (codes of the non-empty clusters), the per-cluster sums
    of squared and plain distances to the partition's centroids, and the per-cluster distance sums from
    the silhouette sample to the chunk's rows (the sample in sub-blocks: bounded temporaries)."""
    from .kernels import assign_labels

    x = np.asarray(x)
    lab, _ = assign_labels(x, centers.astype(x.dtype, copy=False))
    codes = remap[np.asarray(lab, dtype=np.int64)]
    k = centroids.shape[0]
    out = _within_chunk(x, codes, centroids, k)
    m = sample.shape[0]
    S = np.zeros((m, k))
    if m:
        sub = int(max(16, PAIR_BLOCK_ELEMS // max(x.shape[0], 1)))
        for s in range(0, m, sub):
            S[s:s + sub] = _sample_sums_chunk(x, codes, offset, sample[s:s + sub], sample_idx[s:s + sub],
                                              k, precision)["sum"]
    out["sil"] = S
    return out


def partition_scores(X, centers, labels_true=None, *, silhouette_sample: int = 2000, random_state=0,
                     split_every: int = SPLIT_EVERY, precision: str = "auto", client=None,
                     persist="auto", engine: str = "auto") -> dict:
    """Every score of the partition of ``X`` by nearest ``centers``, in two passes over ``X``.

    Both passes run through the block driver (:func:`kmeans_dist.chunked.driver.make_blocks`: canonical
    blocks, kept in worker memory when they fit, partials merged by the fixed ``split_every``-ary tree), so
    the scores are bit-identical whatever the chunking and the number of workers.  Pass 1: cluster sizes,
    inertia, per-cluster sums (the partition's centroids), the cluster x class table against
    ``labels_true`` (ARI, NMI, accuracy: no pass finds the number of classes) and the rows of a seeded
    silhouette sample.  Pass 2: the distances to those centroids (Calinski-Harabasz, Davies-Bouldin) and from
    the sample to every row (the silhouette estimate of :func:`silhouette_estimate`, with its standard
    error; exact, error 0, when the sample is all of ``X``).  Pass 2 is skipped when fewer than 2 clusters
    are non-empty or there are as many non-empty clusters as samples (the unsupervised scores are then
    undefined, as scikit-learn's ``check_number_of_labels`` says).  Empty clusters count as absent in the
    unsupervised scores, as in scikit-learn (which encodes the labels it is given).

    Parameters
    ----------
    X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
        Samples (a Zarr store path is opened lazily).
    centers : array-like of shape (n_clusters, n_features)
        Cluster centers; every sample goes to its nearest center.
    labels_true : array-like, dask array or str of shape (n_samples,), optional
        Non-negative integer class of each sample; adds ``ari``, ``nmi`` and ``accuracy``.
    silhouette_sample : int, default=2000
        Size of the seeded silhouette sample (capped at ``n_samples``: then the silhouette is
        exact; 0 or None: no silhouette).
    random_state : int, numpy Generator or None, default=0
        Seed of the silhouette sample (``numpy.random.default_rng(random_state)``).
    split_every : int, default=8
        Arity of the reduction tree that merges the per-block partials.
    precision : {"auto", "float64", "float32"}, default="auto"
        Dtype of the silhouette distance GEMM, as in :func:`silhouette_samples`.
    client : distributed.Client, False or None, default=None
        A ``distributed.Client`` to compute on (the active one otherwise; ``False``: none).
    persist : {"auto", True, False}, default="auto"
        As :func:`~kmeans_dist.chunked.driver.make_blocks` (``"auto"`` reads X once and keeps its
        blocks in memory when they fit; ``False`` streams X from its source on each of the two
        passes).
    engine : {"auto", "dask", "ray", "local"}, default="auto"
        As :func:`~kmeans_dist.chunked.driver.make_blocks` (``"ray"``: the blocks in Ray actors).

    Returns
    -------
    dict
        Always ``n_samples``, ``k``, ``inertia``, ``cluster_sizes`` (list of ints) and
        ``empty_clusters``; ``ari``, ``nmi`` and ``accuracy`` with ``labels_true``;
        ``calinski_harabasz`` and ``davies_bouldin`` when pass 2 runs, with ``silhouette`` and
        ``silhouette_se`` when the silhouette sample is not empty.

    Raises
    ------
    ValueError
        If ``centers`` is not of shape ``(k, n_features)`` or ``labels_true`` does not have one
        entry per row of ``X``.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.metrics import partition_scores
    >>> X = np.array([[0., 0.], [0., 1.], [1., 0.], [10., 10.], [10., 11.], [11., 10.]])
    >>> centers = np.array([[0., 0.], [10., 10.]])
    >>> s = partition_scores(X, centers, np.array([0, 0, 0, 1, 1, 1]), client=False)
    >>> s["inertia"], s["cluster_sizes"], s["ari"], s["accuracy"]
    (4.0, [3, 3], 1.0, 1.0)
    >>> round(s["silhouette"], 6), s["silhouette_se"], round(s["calinski_harabasz"], 6)
    (0.919622, 0.0, 450.0)
    """
    Xd = as_dask_array(X)
    C = np.asarray(centers)
    if C.ndim != 2 or C.shape[1] != Xd.shape[1]:
        raise ValueError(f"centers must have shape (k, {Xd.shape[1]}), got {C.shape}")
    n, k = int(Xd.shape[0]), int(C.shape[0])
    y = None
    if labels_true is not None:
        y = as_labels_array(labels_true)
        if y.shape[0] != n:
            raise ValueError(f"labels_true has {y.shape[0]} entries, X has {n} rows")
    m = int(min(max(int(silhouette_sample or 0), 0), n))
    idx = (np.sort(np.random.default_rng(random_state).choice(n, size=m, replace=False)) if m
           else np.zeros(0, dtype=np.int64))
    # the labels travel in the blocks' per-row slot; two passes, so the blocks are kept when they fit
    blocks = make_blocks(Xd, y, split_every=split_every, client=client, persist=persist, engine=engine)
    try:
        p1 = blocks.map_reduce(_partition_chunk, _partition_combine, C, idx)
        counts = p1["count"]
        out: dict = {"n_samples": n, "k": k, "inertia": float(p1["inertia"][0]),
                     "cluster_sizes": counts.tolist(), "empty_clusters": int((counts == 0).sum())}
        if y is not None:
            t = p1["cont"].T  # classes x clusters
            out.update({"ari": float(adjusted_rand_score(contingency=t)),
                        "nmi": float(normalized_mutual_info_score(contingency=t)),
                        "accuracy": float(clustering_accuracy(contingency=t))})
        present = counts > 0
        k_eff = int(present.sum())
        if not 2 <= k_eff <= n - 1:
            return out
        remap = np.cumsum(present) - 1  # cluster -> code among the non-empty clusters
        sizes = counts[present]
        centroids = p1["sum"][present] / sizes[:, None]
        p2 = blocks.map_reduce(_partition_chunk2, _sum_dicts, C, centroids, remap, p1["sample"], idx, precision)
    finally:
        blocks.release()
    stats = {"size": sizes, "centroid": centroids, "sse": p2["sse"], "mean_distance": p2["dist"] / sizes,
             "mean": p1["sum"].sum(axis=0) / n, "n_samples": n}
    out["calinski_harabasz"] = calinski_harabasz_from_stats(stats)
    out["davies_bouldin"] = davies_bouldin_from_stats(stats)
    if m:
        vals = _sil_from_sums(p2["sil"], remap[p1["sample_label"]], sizes.astype(np.float64))
        out["silhouette"], out["silhouette_se"] = float(vals.mean()), _sample_std_error(vals, n)
    return out
