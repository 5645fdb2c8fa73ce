"""In-memory k-means kernels, written once against the array API.

Every function here takes arrays of one namespace ``xp`` (NumPy, CuPy, array-api-strict, ...) and
never validates its input: validation happens once, at the public entry points.  Per-chunk kernels
return small *partials* (dicts of host NumPy arrays) that :func:`combine_lloyd_partials` merges in a
fixed order, and :func:`finalize_centers` turns into new centers on the client (see
:mod:`kmeans_dist._driver` for how chunks are mapped and reduced on Dask).

Numerics follow scikit-learn's ``_kmeans.py``: squared distances are computed through one GEMM per
sub-chunk with precomputed center norms, labels are the argmin of ``||c||^2 - 2 x.c``, float32 data is
kept float32 in the GEMMs while sums, weights and inertia accumulate in float64, and empty clusters
are relocated to the points farthest from their centers, never collapsed to zero.

On NumPy blocks :func:`lloyd_partial` hands the work after the distance GEMM (argmin, sums, counts,
inertia, farthest rows) to one compiled loop (:mod:`kmeans_dist._fused`, Numba) instead of a one-hot
matrix and a second GEMM; the results are the same up to float64 rounding (tested against this path).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._xp import get_namespace, to_numpy

__all__ = [
    "row_norms_sq",
    "sq_distances",
    "assign_labels",
    "lloyd_partial",
    "combine_lloyd_partials",
    "finalize_centers",
    "tree_combine",
    "tree_subtrees",
    "tree_root",
    "minibatch_update",
    "kmeans_plusplus",
    "lloyd_inmemory",
    "kmeans_inmemory",
    "KMeansResult",
]

# rows per sub-chunk inside a kernel: the rows of X and their (rows x k) distances take about
# SUB_BYTES, so the second product (sums per center) reads X from cache, not memory
SUB_ROWS = 8192
SUB_BYTES = 4 * 2**20
FUSED_SUB_BYTES = 2**20


def _sub_rows(n_features: int, k: int, itemsize: int, sub_rows=None) -> int:
    if sub_rows is not None:
        return int(sub_rows)
    return int(min(16384, max(256, SUB_BYTES // max(1, (n_features + k) * itemsize))))


def _float64(xp):
    return xp.float64


def row_norms_sq(X):
    """Squared Euclidean norm of each row of ``X`` (same dtype as X), without an (n, d) temporary."""
    xp = get_namespace(X)
    vecdot = getattr(xp, "vecdot", None)
    if vecdot is not None:
        return vecdot(X, X, axis=-1)
    return xp.sum(X * X, axis=1)


_XSQ_CACHE: dict = {}


def row_norms_sq_cached(X):
    """:func:`row_norms_sq` memoised per array object (blocks persisted on workers are reused every
    iteration, and their row norms never change).  Entries go away with the array."""
    import weakref

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
    """Squared Euclidean distances between rows of X (n, d) and rows of C (k, d), clipped at 0."""
    xp = get_namespace(X, C)
    if x_sq is None:
        x_sq = row_norms_sq(X)
    if c_sq is None:
        c_sq = row_norms_sq(C)
    D = x_sq[:, None] - 2 * _matmul_t(xp, X, C) + c_sq[None, :]
    return xp.maximum(D, xp.zeros((), dtype=D.dtype))


def _matmul_t(xp, X, C):
    """``X @ C.T`` through a real GEMM even when C has one row.

    BLAS libraries forward a one-column GEMM to GEMV, whose summation order can depend on the memory
    alignment of X; duplicating the row keeps the product a GEMM, so results are bit-identical wherever
    the block happens to live.
    """
    if C.shape[0] == 1:
        return (X @ xp.concat([C, C], axis=0).T)[:, :1]
    return X @ C.T


def assign_labels(X, C, c_sq=None, sub_rows: int = SUB_ROWS):
    """Nearest center of every row of X and the squared distance to it.

    Returns ``(labels, min_sq_dist)``: labels are ``argmin_k ||c_k||^2 - 2 x.c_k`` as in scikit-learn
    (the ``||x||^2`` term does not change the argmin), distances are clipped at zero.
    """
    xp = get_namespace(X, C)
    if c_sq is None:
        c_sq = row_norms_sq(C)
    n = X.shape[0]
    labels, mins = [], []
    for start in range(0, n, sub_rows):
        Xs = X[start:min(start + sub_rows, n), ...]
        P = c_sq[None, :] - 2 * _matmul_t(xp, Xs, C)
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


def _exact_sq_dist_to(X, C, labels):
    """||x_i - C[labels_i]||^2 by direct differences (no cancellation), as scikit-learn's _inertia."""
    xp = get_namespace(X, C)
    diff = X - xp.take(C, labels, axis=0)
    return xp.sum(diff * diff, axis=1)


def lloyd_partial(X, sample_weight, centers, *, offset: int = 0, n_far: int | None = None,
                  exact_inertia: bool = False, return_labels: bool = False,
                  sub_rows: int | None = None, x_sq=None, bounds: dict | None = None) -> dict:
    """One chunk's share of a Lloyd iteration.

    Assigns every row of ``X`` to its nearest center and returns a partial (host NumPy arrays):

    - ``sum``: (k, d) float64, weighted sum of the rows assigned to each center;
    - ``weight``: (k,) float64, total sample weight per center; ``count``: (k,) int64 rows per center;
    - ``inertia``: float64, weighted sum of squared distances to the assigned centers;
    - ``far_*``: the ``n_far`` rows farthest from their centers (distance, global row index, values,
      label, weight), used to relocate empty clusters the way scikit-learn does.

    ``offset`` is the global index of the chunk's first row.  ``bounds`` (a pass of
    ``algorithm="hamerly"``, see :mod:`kmeans_dist._hamerly`) skips the distances that bounds kept from
    the previous pass of the same run prove unneeded; then ``inertia`` comes from per-center sums in
    float64 and the far rows are chosen by exact distance.  Never validates its input.
    """
    xp = get_namespace(X, centers)
    if centers.shape[0] == 1:
        # one center: run with the center duplicated (ties go to the first copy), so every product is a
        # real GEMM (see _matmul_t), then keep the first row of every per-center result
        part = lloyd_partial(X, sample_weight, xp.concat([centers, centers], axis=0), offset=offset,
                             n_far=1 if n_far is None else n_far, exact_inertia=exact_inertia,
                             return_labels=return_labels, sub_rows=sub_rows, x_sq=x_sq)
        for key in ("sum", "weight", "count"):
            part[key] = part[key][:1]
        return part
    k, d = centers.shape
    n = X.shape[0]
    f64 = _float64(xp)
    weighted = sample_weight is not None
    w_x = None
    if weighted:
        w_x = xp.astype(sample_weight, X.dtype) if sample_weight.dtype != X.dtype else sample_weight
    itemsize = X.dtype.itemsize if hasattr(X.dtype, "itemsize") else 8
    if bounds is not None and not exact_inertia and not return_labels and _use_fused(X, centers):
        from . import _hamerly

        sums, weights, counts, inertia, labels, dist, order = _hamerly.lloyd_block_bounded(
            X, w_x, centers, min(k if n_far is None else n_far, n), bounds)
        return _partial(xp, X, w_x, sums, weights, counts, inertia, labels, dist, k, n, n_far, offset,
                        return_labels, order=order)
    if _use_fused(X, centers):
        from . import _fused

        if sub_rows is None:  # the sub-chunk and its products stay in L2 for the compiled loop
            sub_rows = int(min(16384, max(512, FUSED_SUB_BYTES // max(1, (d + k) * itemsize))))
        m = min(k if n_far is None else n_far, n)
        sums, weights, counts, inertia, labels, dist, order = _fused.lloyd_block(
            X, w_x, centers, x_sq, int(sub_rows), exact_inertia, m, return_labels)
        return _partial(xp, X, w_x, sums, weights, counts, inertia, labels, dist, k, n, n_far, offset,
                        return_labels, order=order)
    sub_rows = _sub_rows(d, k, itemsize, sub_rows)
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
            dist = _exact_sq_dist_to(Xs, centers, lab)
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
        # (a GEMV's summation order may depend on memory alignment, see _matmul_t)
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


def _use_fused(X, centers) -> bool:
    """The compiled assign-and-accumulate loop (:mod:`kmeans_dist._fused`) runs on NumPy blocks of
    float32/float64; every other namespace takes the array-API path."""
    if type(X) is not np.ndarray or type(centers) is not np.ndarray:
        return False
    if X.dtype not in (np.float32, np.float64) or X.ndim != 2:
        return False
    from . import _fused

    return _fused.available()


def _partial(xp, X, w_x, sums, weights, counts, inertia, labels, dist, k, n, n_far, offset, return_labels,
             order=None):
    if order is None:
        order = _farthest(xp, dist, min(k if n_far is None else n_far, n))
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
        "far_x": to_numpy(xp.take(X, order, axis=0)),
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


def _farthest(xp, dist, m: int):
    """Indices of the ``m`` largest distances, farthest first, ties by row index (deterministic).

    Uses ``argpartition`` (NumPy and CuPy have it; O(n)) and sorts only the ``m`` winners; falls back
    to a full stable sort for namespaces without it (array-api-strict).
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
    """Merge Lloyd partials, in the order given (host NumPy, float64 accumulation)."""
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


def tree_combine(parts: list, combine, split_every: int = 8):
    """Reduce ``parts`` with ``combine`` as a tree, exactly as ``dask.array.reduction`` does.

    Consecutive groups of ``split_every`` partials are combined level by level, so the same
    partials in the same order always give bit-identical results whether the tree runs on the
    client or inside a Dask graph.
    """
    n = len(parts)
    s = max(int(split_every), 2)
    for _ in range(_tree_depth(n, s) - 1):
        parts = [combine(parts[i:i + s]) for i in range(0, len(parts), s)]
    return combine(parts)


def _tree_depth(n: int, s: int) -> int:
    depth = 1
    if n > 1:
        depth = int(max(depth, math.ceil(math.log(n, s))))
    return depth


def tree_subtrees(nodes: dict, n: int, combine, split_every: int = 8) -> dict:
    """Evaluate every node of :func:`tree_combine`'s tree whose leaves are all known.

    ``nodes`` maps ``(level, j)`` to a value: ``(0, i)`` is the partial of block ``i`` of ``n``,
    ``(L, j)`` the combine of the ``split_every`` consecutive nodes ``(L-1, j*s) ...`` below it.
    Returns the maximal evaluated nodes (their children dropped).  A Dask worker applies it to the
    blocks it holds, so only a few partials travel; the client applies it to the union of what the
    workers sent and then :func:`tree_root`.  Every node is computed from the same children in the same
    order as in :func:`tree_combine`, so the result is bit-identical to it.
    """
    s = max(int(split_every), 2)
    nodes = dict(nodes)
    depth = _tree_depth(n, s)
    for level in range(1, depth):
        below = -(-n // s ** (level - 1))
        for j in range(-(-n // s ** level)):
            if (level, j) in nodes:
                continue
            children = [(level - 1, i) for i in range(j * s, min((j + 1) * s, below))]
            if all(c in nodes for c in children):
                nodes[(level, j)] = combine([nodes.pop(c) for c in children])
    return nodes


def tree_root(nodes: dict, n: int, combine, split_every: int = 8):
    """Finish :func:`tree_combine` from known nodes (see :func:`tree_subtrees`)."""
    s = max(int(split_every), 2)
    nodes = tree_subtrees(nodes, n, combine, s)
    top = _tree_depth(n, s) - 1
    return combine([nodes[(top, j)] for j in range(-(-n // s ** top))])


def finalize_centers(part: dict, centers_old: np.ndarray) -> tuple[np.ndarray, int]:
    """New centers from a combined Lloyd partial; empty clusters relocated to far points.

    As scikit-learn's ``_relocate_empty_clusters``: each empty cluster takes the point that is
    farthest from its center (farthest first), and that point's weight moves from its old cluster.
    Returns ``(centers_new, n_relocated)`` in ``centers_old``'s dtype.
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
    """Sculley's update with per-center counts, as scikit-learn's MiniBatchKMeans.

    ``c_new = (c_old * W + sum_batch) / (W + w_batch)`` for every center that received points;
    ``part`` is the Lloyd partial of the batch (computed with ``centers``).  Host NumPy.
    """
    sums, wb = part["sum"], part["weight"]
    W = weight_sums.astype(np.float64)
    hit = wb > 0
    new = np.array(centers, dtype=np.float64, copy=True)
    new[hit] = (new[hit] * W[hit, None] + sums[hit]) / (W[hit] + wb[hit])[:, None]
    W_new = W + wb
    return new.astype(centers.dtype, copy=False), W_new


# --------------------------------------------------------------------------------------------------
# In-memory algorithms (used on candidates of k-means||, on latent embeddings in kmeans_dist.deep, and
# by the estimators when the data is one in-memory block)
# --------------------------------------------------------------------------------------------------

def kmeans_plusplus(X, n_clusters: int, rng: np.random.Generator, sample_weight=None,
                    n_local_trials: int | None = None):
    """Greedy k-means++ (Arthur & Vassilvitskii 2007, with local trials as scikit-learn).

    Returns ``(centers, indices)``.  ``rng`` is a NumPy Generator; random draws happen on the host,
    distances on the array's device.
    """
    xp = get_namespace(X)
    n = X.shape[0]
    f64 = _float64(xp)
    if sample_weight is None:
        w = np.ones(n, dtype=np.float64)
    else:
        w = np.asarray(to_numpy(sample_weight), dtype=np.float64)
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    x_sq = row_norms_sq(X)
    idx0 = int(rng.choice(n, p=w / w.sum()))
    indices = [idx0]
    closest = xp.astype(sq_distances(X, X[idx0:idx0 + 1, ...], x_sq=x_sq)[:, 0], f64)
    w_dev = xp.asarray(w, dtype=f64) if not _is_np(xp) else w
    pot = float(to_numpy(xp.sum(closest * w_dev)))
    for _ in range(1, n_clusters):
        if pot <= 0:  # fewer distinct points than clusters: pick uniformly among the rest
            cand = rng.choice(n, size=n_local_trials)
        else:
            cum = np.cumsum(to_numpy(closest) * w)
            r = rng.uniform(size=n_local_trials) * cum[-1]
            cand = np.minimum(np.searchsorted(cum, r), n - 1)
        cand_x = xp.take(X, xp.asarray(cand), axis=0)
        D = xp.astype(sq_distances(X, cand_x, x_sq=x_sq), f64)  # (n, trials)
        D = xp.minimum(D, closest[:, None])
        pots = to_numpy(xp.sum(D * w_dev[:, None], axis=0))
        best = int(np.argmin(pots))
        pot = float(pots[best])
        closest = D[:, best]
        indices.append(int(cand[best]))
    idx = xp.asarray(np.asarray(indices))
    return xp.take(X, idx, axis=0), np.asarray(indices)


def _is_np(xp) -> bool:
    from ._xp import is_numpy_namespace

    return is_numpy_namespace(xp)


@dataclass
class KMeansResult:
    centers: object
    labels: object
    inertia: float
    n_iter: int
    history: list


def lloyd_inmemory(X, centers, sample_weight=None, *, max_iter: int = 300, tol: float = 1e-4,
                   tol_is_absolute: bool = False) -> KMeansResult:
    """Lloyd's algorithm on one in-memory array (any namespace), numerics as scikit-learn's lloyd.

    ``tol`` is relative to the mean feature variance unless ``tol_is_absolute``.
    """
    xp = get_namespace(X, centers)
    if not tol_is_absolute and tol > 0:
        tol = float(to_numpy(xp.mean(xp.var(xp.astype(X, xp.float64), axis=0)))) * tol
    centers_h = to_numpy(centers)
    history = []
    n_iter = 0
    for i in range(max_iter):
        part = lloyd_partial(X, sample_weight, xp.asarray(centers_h) if not _is_np(xp) else centers_h)
        new, _ = finalize_centers(part, centers_h)
        shift = float(((new.astype(np.float64) - centers_h) ** 2).sum())
        history.append({"iteration": i + 1, "inertia": part["inertia"], "center_shift": shift})
        centers_h = new
        n_iter = i + 1
        if shift <= tol:
            break
    C = centers_h if _is_np(xp) else xp.asarray(centers_h)
    final = lloyd_partial(X, sample_weight, C, exact_inertia=True, return_labels=True)
    return KMeansResult(C, final["labels"], final["inertia"], n_iter, history)


def kmeans_inmemory(X, n_clusters: int, *, n_init: int = 10, max_iter: int = 300, tol: float = 1e-4,
                    random_state=None, sample_weight=None, key=None, init_candidates=(),
                    on_result=None) -> KMeansResult:
    """k-means++ seeding + Lloyd, ``n_init`` restarts keeping the lowest inertia, on one array.

    ``key(result)`` (optional) ranks the restarts instead of the inertia: the restart with the smallest key
    is kept (the first one on ties), e.g. :mod:`kmeans_dist.deep`'s most balanced partition.
    ``init_candidates``: more starting centers (arrays ``(n_clusters, n_features)`` of ``X``'s kind), each run
    by Lloyd after the ``n_init`` restarts and ranked with them; they draw nothing from ``random_state``, so
    the restarts are the same with or without them (a warm start from the previous centers, say).
    ``on_result(result)`` (optional) sees every run's result, in order: the restarts, then the candidates.
    Works on NumPy and CuPy arrays alike (CuPy stays on the GPU); used on latent embeddings by
    :mod:`kmeans_dist.deep` and on k-means|| candidates.
    """
    if key is None:
        key = _by_inertia
    rng = np.random.default_rng(random_state)

    def starts():  # the k-means++ restarts (drawn lazily, as before), then the given candidates
        for _ in range(n_init):
            yield kmeans_plusplus(X, n_clusters, rng, sample_weight=sample_weight)[0]
        yield from init_candidates

    best = best_key = None
    for C0 in starts():
        res = lloyd_inmemory(X, C0, sample_weight, max_iter=max_iter, tol=tol)
        if on_result is not None:
            on_result(res)
        k = key(res)
        if best is None or k < best_key:
            best, best_key = res, k
    return best


def _by_inertia(res: KMeansResult) -> float:
    return res.inertia
