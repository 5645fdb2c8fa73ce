"""In-memory k-means kernels, written once against the array API.

Every function here takes arrays of one namespace ``xp`` (NumPy, CuPy, array-api-strict, ...) and
never validates its input: validation happens once, at the public entry points.  Per-chunk kernels
return small *partials* (dicts of host NumPy arrays) that :func:`combine_lloyd_partials` merges in a
fixed order, and :func:`finalize_centers` turns into new centers on the client (see
:mod:`kmeans_dist.chunked.driver` for how chunks are mapped and reduced on Dask).

Numerics follow scikit-learn's ``_kmeans.py``: squared distances are computed through one GEMM per
sub-chunk with precomputed center norms, labels are the argmin of ``||c||^2 - 2 x.c``, float32 data is
kept float32 in the GEMMs while sums, weights and inertia accumulate in float64, and empty clusters
are relocated to the points farthest from their centers, never collapsed to zero.

On NumPy blocks :func:`lloyd_partial` hands the work after the distance GEMM (argmin, sums, counts,
inertia, farthest rows) to one compiled loop (:mod:`kmeans_dist.kernels.fused`, Numba) instead of a one-hot
matrix and a second GEMM; the results are the same up to float64 rounding (tested against this path).
"""
from __future__ import annotations

import numpy as np

from . import fused, hamerly, sparse
from .distances import FUSED_SUB_BYTES, exact_sq_dist_to, row_norms_sq, sub_rows_for
from .xp import get_namespace, to_numpy

__all__ = ["lloyd_partial", "hamerly_partial", "combine_lloyd_partials", "finalize_centers", "minibatch_update", "farthest"]


def lloyd_partial(X, sample_weight, centers, *, offset: int = 0, n_far: int | None = None,
                  exact_inertia: bool = False, return_labels: bool = False,
                  sub_rows: int | None = None, x_sq=None) -> dict:
    """One block's share of a Lloyd iteration.

    Assigns every row of ``X`` to its nearest center and returns a partial of host NumPy arrays, to be
    merged by :func:`combine_lloyd_partials` in the fixed tree order.  Never validates its input.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
        The block (NumPy, CuPy or any array-API array).
    sample_weight : array of shape (n_rows,) or None
        Weight of every row (None: all ones).
    centers : array of shape (n_clusters, n_features)
        Current centers.
    offset : int, default=0
        Global index of the block's first row.
    n_far : int or None, default=None
        Number of farthest rows to keep (None: ``n_clusters``).
    exact_inertia : bool, default=False
        Compute the inertia by direct differences (as scikit-learn's final inertia).
    return_labels : bool, default=False
        Also return the labels of the rows.
    sub_rows : int or None, default=None
        Rows per distance GEMM (None: from the sizes).
    x_sq : array of shape (n_rows,) or None, default=None
        Precomputed squared row norms.

    Returns
    -------
    dict
        ``sum`` (k, d) float64: weighted sum of the rows assigned to each center; ``weight`` (k,) float64
        and ``count`` (k,) int64 per center; ``inertia``: weighted sum of squared distances; ``far_*``:
        the ``n_far`` rows farthest from their centers (distance, global row index, values, label,
        weight), used to relocate empty clusters as scikit-learn does; ``labels`` when asked.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.kernels import lloyd_partial, combine_lloyd_partials, finalize_centers
    >>> X = np.array([[0.0], [1.0], [10.0], [11.0]])
    >>> C = np.array([[0.0], [10.0]])
    >>> parts = [lloyd_partial(X[:2], None, C), lloyd_partial(X[2:], None, C, offset=2)]
    >>> part = combine_lloyd_partials(parts)
    >>> part["count"].tolist(), float(part["inertia"])
    ([2, 2], 2.0)
    >>> finalize_centers(part, C)[0].ravel().tolist()
    [0.5, 10.5]
    """
    if sparse.is_sparse(X):  # CSR block: sparse-dense product, sums from the CSR structure (bounds unused)
        return _lloyd_partial_sparse(X, sample_weight, centers, offset, n_far, exact_inertia, return_labels, x_sq)
    xp = get_namespace(X, centers)
    if centers.shape[0] == 1:
        # one center: run with the center duplicated (ties go to the first copy), so every product is a
        # real GEMM (see matmul_t), then keep the first row of every per-center result
        part = lloyd_partial(X, sample_weight, xp.concat([centers, centers], axis=0), offset=offset,
                             n_far=1 if n_far is None else n_far, exact_inertia=exact_inertia,
                             return_labels=return_labels, sub_rows=sub_rows, x_sq=x_sq)
        for key in ("sum", "weight", "count"):
            part[key] = part[key][:1]
        return part
    k, d = centers.shape
    n = X.shape[0]
    f64 = xp.float64
    weighted = sample_weight is not None
    w_x = None
    if weighted:
        w_x = xp.astype(sample_weight, X.dtype) if sample_weight.dtype != X.dtype else sample_weight
    itemsize = X.dtype.itemsize if hasattr(X.dtype, "itemsize") else 8
    if _use_fused(X, centers):
        if sub_rows is None:  # the sub-chunk and its products stay in L2 for the compiled loop
            sub_rows = int(min(16384, max(512, FUSED_SUB_BYTES // max(1, (d + k) * itemsize))))
        m = min(k if n_far is None else n_far, n)
        sums, weights, counts, inertia, labels, dist, order = fused.lloyd_block(
            X, w_x, centers, x_sq, int(sub_rows), exact_inertia, m, return_labels)
        return _partial(xp, X, w_x, sums, weights, counts, inertia, labels, dist, k, n, n_far, offset,
                        return_labels, order=order)
    sub_rows = sub_rows_for(d, k, itemsize, sub_rows)
    c_sq = row_norms_sq(centers)
    ar = xp.arange(k)
    sums = xp.zeros((k, d), dtype=f64)
    weights = xp.zeros((k,), dtype=f64)
    counts = xp.zeros((k,), dtype=f64)
    inertia = xp.zeros((), dtype=f64)
    labels_all, dist_all = [], []
    m2C_T = (-2 * centers).T  # exact scaling: Xs @ (-2C)^T == -2 (Xs @ C^T) bit for bit
    zero = xp.zeros((), dtype=X.dtype)
    gather = getattr(xp, "take_along_axis", None)
    for start in range(0, n, sub_rows):
        stop = min(start + sub_rows, n)
        Xs = X[start:stop, ...]
        P = Xs @ m2C_T
        P += c_sq[None, :]
        lab = xp.argmin(P, axis=1)
        if exact_inertia:
            dist = exact_sq_dist_to(Xs, centers, lab)
        else:
            pmin = gather(P, lab[:, None], axis=1)[:, 0] if gather is not None else xp.min(P, axis=1)
            xs_sq = row_norms_sq(Xs) if x_sq is None else x_sq[start:stop]
            dist = xp.maximum(xs_sq + pmin, zero)
        onehot = _onehot(xp, lab, ar, X.dtype)
        ones = xp.ones((stop - start,), dtype=X.dtype)
        cnt = xp.astype(ones @ onehot, f64)  # exact whatever the order: integers below 2**24
        counts = counts + cnt
        if weighted:
            ws = w_x[start:stop]
            W = onehot * ws[:, None]
            # a plain reduction, not a GEMV: its summation order never depends on memory alignment
            weights = weights + xp.sum(xp.astype(W, f64), axis=0)
            inertia = inertia + xp.sum(xp.astype(dist, f64) * xp.astype(ws, f64))
        else:
            W = onehot
            weights = weights + cnt
            inertia = inertia + xp.sum(xp.astype(dist, f64))
        # W^T Xs: (k x rows) x (rows x d); with one feature, a duplicated column keeps it a GEMM
        # (a GEMV's summation order may depend on memory alignment, see matmul_t)
        if d == 1:
            sums = sums + xp.astype((W.T @ xp.concat([Xs, Xs], axis=1))[:, :1], f64)
        else:
            sums = sums + xp.astype(W.T @ Xs, f64)
        labels_all.append(lab)
        dist_all.append(dist)
    if labels_all:
        labels = xp.concat(labels_all) if len(labels_all) > 1 else labels_all[0]
        dist = xp.concat(dist_all) if len(dist_all) > 1 else dist_all[0]
    else:
        labels = xp.zeros((0,), dtype=xp.int64)
        dist = xp.zeros((0,), dtype=X.dtype)
    return _partial(xp, X, w_x, sums, weights, counts, inertia, labels, dist, k, n, n_far, offset,
                    return_labels)


def hamerly_partial(X, sample_weight, centers, state, bounds: dict, *, offset: int = 0,
                    n_far: int | None = None):
    """One block's share of a pass of ``algorithm="hamerly"``: ``(new_state, partial)``.

    Skips the distances that the bounds kept from the previous pass prove unneeded (see
    :mod:`kmeans_dist.kernels.hamerly`); then ``inertia`` comes from per-center sums in float64 and the far
    rows are chosen by exact distance.  Blocks that the compiled loop does not take (CuPy, sparse, one
    center, no Numba) run a plain :func:`lloyd_partial` and keep no state.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
        The block.
    sample_weight : array of shape (n_rows,) or None
        Weight of every row.
    centers : array of shape (n_clusters, n_features)
        Centers of this pass.
    state : dict or None
        The block's state returned by the previous pass of the same run, or None (a full pass).
    bounds : dict
        The pass's index (``pass``) and :func:`kmeans_dist.kernels.hamerly.bound_params`.
    offset : int, default=0
        Global index of the block's first row.
    n_far : int or None, default=None
        Number of farthest rows to keep (None: ``n_clusters``).

    Returns
    -------
    state : dict or None
        The block's state for the next pass.
    partial : dict
        As :func:`lloyd_partial` returns it.
    """
    k = centers.shape[0]
    if sparse.is_sparse(X) or k < 2 or not _use_fused(X, centers):
        return None, lloyd_partial(X, sample_weight, centers, offset=offset, n_far=n_far)
    xp = get_namespace(X, centers)
    n = X.shape[0]
    w_x = None
    if sample_weight is not None:
        w_x = xp.astype(sample_weight, X.dtype) if sample_weight.dtype != X.dtype else sample_weight
    state, (sums, weights, counts, inertia, labels, dist, order) = hamerly.lloyd_block_bounded(
        X, w_x, centers, min(k if n_far is None else n_far, n), state, bounds)
    return state, _partial(xp, X, w_x, sums, weights, counts, inertia, labels, dist, k, n, n_far, offset,
                           False, order=order)


def _lloyd_partial_sparse(X, sample_weight, centers, offset, n_far, exact_inertia, return_labels, x_sq):
    """:func:`lloyd_partial` of a scipy.sparse block (:func:`kmeans_dist.kernels.sparse.lloyd_block`)."""
    X = sparse.as_csr(X)
    C = np.asarray(to_numpy(centers))
    w_x = None
    if sample_weight is not None:
        w_x = np.asarray(to_numpy(sample_weight))
        w_x = w_x.astype(X.dtype, copy=False)
    sums, weights, counts, inertia, labels, dist = sparse.lloyd_block(X, w_x, C, x_sq=x_sq,
                                                                      exact_inertia=exact_inertia)
    xp = get_namespace(dist)
    return _partial(xp, X, w_x, sums, weights, counts, inertia, labels, dist, C.shape[0], X.shape[0], n_far,
                    offset, return_labels)


def _use_fused(X, centers) -> bool:
    """The compiled assign-and-accumulate loop (:mod:`kmeans_dist.kernels.fused`) runs on NumPy blocks of
    float32/float64; every other namespace takes the array-API path."""
    if type(X) is not np.ndarray or type(centers) is not np.ndarray:
        return False
    if X.dtype not in (np.float32, np.float64) or X.ndim != 2:
        return False
    return fused.available()


def _partial(xp, X, w_x, sums, weights, counts, inertia, labels, dist, k, n, n_far, offset, return_labels,
             order=None):
    if order is None:
        order = farthest(xp, dist, min(k if n_far is None else n_far, n))
    if w_x is None:
        far_w = np.ones(int(order.shape[0]), dtype=np.float64)
    else:
        far_w = to_numpy(xp.astype(xp.take(w_x, order, axis=0), xp.float64))
    part = {
        "sum": to_numpy(sums),
        "weight": to_numpy(weights),
        "count": to_numpy(counts).astype(np.int64),
        "inertia": float(to_numpy(inertia)),
        "far_dist": to_numpy(xp.astype(xp.take(dist, order, axis=0), xp.float64)),
        "far_index": to_numpy(order).astype(np.int64) + int(offset),
        "far_x": sparse.take_rows(X, to_numpy(order)) if sparse.is_sparse(X) else to_numpy(xp.take(X, order, axis=0)),
        "far_label": to_numpy(xp.take(labels, order, axis=0)).astype(np.int64),
        "far_weight": far_w,
    }
    if return_labels:
        part["labels"] = labels
        part["dist"] = dist
    return part


def _onehot(xp, lab, ar, dtype):
    """(rows, k) indicator of the labels.  Integer-array assignment where the namespace has it
    (NumPy, CuPy: O(rows)); the array-API comparison (O(rows * k)) elsewhere."""
    n = int(lab.shape[0])
    k = int(ar.shape[0])
    if _has_fancy_setitem(xp):
        W = xp.zeros((n, k), dtype=dtype)
        W[xp.arange(n), lab] = 1
        return W
    return xp.astype(lab[:, None] == ar[None, :], dtype)


def _has_fancy_setitem(xp) -> bool:
    name = getattr(xp, "__name__", "")
    return "numpy" in name or "cupy" in name


def farthest(xp, dist, m: int):
    """Indices of the ``m`` largest distances, farthest first, ties by row index (deterministic).

    Uses ``argpartition`` (NumPy and CuPy have it; O(n)) and sorts only the ``m`` winners; falls back
    to a full stable sort for namespaces without it (array-api-strict).

    Parameters
    ----------
    xp : module
        The array namespace of ``dist``.
    dist : array of shape (n,)
        Distances.
    m : int
        How many to return (at most ``n``).

    Returns
    -------
    array of shape (min(m, n),)
        Indices into ``dist``.
    """
    n = int(dist.shape[0])
    if m <= 0 or n == 0:
        return xp.asarray(np.zeros(0, dtype=np.int64))
    d64 = xp.astype(dist, xp.float64)
    if hasattr(xp, "argpartition") and m < n:
        cand = xp.argpartition(-d64, m - 1)[:m]
        cd = to_numpy(xp.take(d64, cand, axis=0))
        ci = to_numpy(cand).astype(np.int64)
        # include every row tied with the m-th distance so the tie-break by index is exact
        cut = cd.min()
        ties = to_numpy(xp.nonzero(d64 == cut)[0]).astype(np.int64)
        ci = np.union1d(ci[cd > cut], ties)
        cd = to_numpy(xp.take(d64, xp.asarray(ci), axis=0))
        sel = np.lexsort((ci, -cd))[:m]
        return xp.asarray(ci[sel])
    return xp.argsort(-d64, stable=True)[:m]


def combine_lloyd_partials(parts: list[dict]) -> dict:
    """Merge Lloyd partials, in the order given (host NumPy, float64 accumulation).

    Parameters
    ----------
    parts : list of dict
        Partials of :func:`lloyd_partial` (or of earlier combines).

    Returns
    -------
    dict
        One partial of the same form: sums, weights, counts and inertia added, the far rows merged.
    """
    parts = [p for p in parts if p is not None]
    out = {
        "sum": parts[0]["sum"].copy(),
        "weight": parts[0]["weight"].copy(),
        "count": parts[0]["count"].copy(),
        "inertia": parts[0]["inertia"],
    }
    for p in parts[1:]:
        out["sum"] += p["sum"]
        out["weight"] += p["weight"]
        out["count"] += p["count"]
        out["inertia"] += p["inertia"]
    k = out["sum"].shape[0]
    far_dist = np.concatenate([p["far_dist"] for p in parts])
    far_index = np.concatenate([p["far_index"] for p in parts])
    # keep the k farthest overall: distance descending, then global index ascending
    order = np.lexsort((far_index, -far_dist))[:k]
    out["far_dist"] = far_dist[order]
    out["far_index"] = far_index[order]
    for key in ("far_x", "far_label", "far_weight"):
        out[key] = np.concatenate([p[key] for p in parts])[order]
    return out


def finalize_centers(part: dict, centers_old: np.ndarray) -> tuple[np.ndarray, int]:
    """New centers from a combined Lloyd partial; empty clusters relocated to far points.

    As scikit-learn's ``_relocate_empty_clusters``: each empty cluster takes the point that is farthest
    from its center (farthest first), and that point's weight moves from its old cluster.

    Parameters
    ----------
    part : dict
        The combined partial of a whole pass.
    centers_old : ndarray of shape (n_clusters, n_features)
        The centers the pass assigned to.

    Returns
    -------
    centers_new : ndarray of shape (n_clusters, n_features)
        In ``centers_old``'s dtype.
    n_relocated : int
        Number of empty clusters relocated.
    """
    sums = part["sum"].copy()
    weight = part["weight"].copy()
    empty = np.flatnonzero(weight == 0)
    n_reloc = 0
    if empty.size:
        far_x = part["far_x"].astype(np.float64)
        for j, c in enumerate(empty[: len(far_x)]):
            wt = part["far_weight"][j]
            old = part["far_label"][j]
            sums[old] -= far_x[j] * wt
            weight[old] -= wt
            sums[c] = far_x[j] * wt
            weight[c] = wt
            n_reloc += 1
    centers = np.array(centers_old, dtype=np.float64, copy=True)
    ok = weight > 0
    centers[ok] = sums[ok] / weight[ok, None]
    return centers.astype(centers_old.dtype, copy=False), n_reloc


def minibatch_update(centers, weight_sums, part) -> tuple:
    """Sculley's update with per-center counts, as scikit-learn's ``MiniBatchKMeans``.

    ``c_new = (c_old * W + sum_batch) / (W + w_batch)`` for every center that received points.

    Parameters
    ----------
    centers : ndarray of shape (n_clusters, n_features)
        Current centers (host NumPy).
    weight_sums : ndarray of shape (n_clusters,)
        Total weight each center has received so far.
    part : dict
        The Lloyd partial of the batch, computed with ``centers``.

    Returns
    -------
    tuple
        ``(centers_new, weight_sums_new)``.
    """
    sums, wb = part["sum"], part["weight"]
    W = weight_sums.astype(np.float64)
    hit = wb > 0
    new = np.array(centers, dtype=np.float64, copy=True)
    new[hit] = (new[hit] * W[hit, None] + sums[hit]) / (W[hit] + wb[hit])[:, None]
    W_new = W + wb
    return new.astype(centers.dtype, copy=False), W_new
