"""Per-block kernels of k-medians and k-medoids: L1, Euclidean and cosine distances, the partials of the
exact distributed median (per-cluster, per-feature histograms and the values of small buckets), and PAM.

Nothing here validates its input.  Distances are written over the array API (NumPy or CuPy through one
code path); the histogram partials and PAM run on host NumPy arrays.

The exact median works by *searches*: a search looks for the smallest value ``v`` of one feature over the
rows of one cluster whose cumulative weight ``F(v)`` (weight of the values ``<= v``) reaches a target.  A
search holds a closed interval ``[lo, hi]`` of values known to contain its answer; one pass over the
blocks cuts the interval into buckets (``bucket = floor((v - lo) / (hi - lo) * B)``, a monotone function of
``v``, so every bucket is a run of consecutive values in sorted order) and returns each bucket's count,
weight, smallest and largest value.  The bucket holding the target becomes the next interval, which is
always strictly smaller (``lo`` and ``hi`` fall in different buckets); once an interval holds few rows its
values themselves come back and the answer is read off exactly.
"""
from __future__ import annotations

import numpy as np

from .distances import matmul_t
from .xp import get_namespace, to_numpy

__all__ = ["METRICS", "pairwise_distances", "nearest", "pam", "pam_build", "pam_swap", "median_pass_partial",
           "combine_median_partials", "medoid_cost_partial", "combine_medoid_cost", "range_partial",
           "combine_range"]

METRICS = ("euclidean", "manhattan", "cosine")


def _unit_rows(X, xp):
    norms = xp.sqrt(xp.sum(X * X, axis=1))
    norms = xp.where(norms > 0, norms, xp.ones_like(norms))
    return X / norms[:, None]


def pairwise_distances(X, C, metric="euclidean"):
    """Distances between the rows of ``X`` and the rows of ``C``.

    Euclidean and Manhattan distances are summed from direct differences (no cancellation, and every row's
    value depends on that row alone); the cosine distance is ``1 - cos``, with a zero row at distance 1 of
    everything (as scikit-learn's ``cosine_distances``), clipped to ``[0, 2]``.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        Rows.
    C : array of shape (n_centers, n_features)
        Centers, in the namespace of ``X``.
    metric : {"euclidean", "manhattan", "cosine"}, default="euclidean"
        The distance.

    Returns
    -------
    array of shape (n_samples, n_centers)

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.kernels.medians import pairwise_distances
    >>> X = np.array([[0.0, 0.0], [3.0, 4.0]])
    >>> pairwise_distances(X, X[1:], "euclidean").ravel().tolist(), pairwise_distances(X, X[1:], "manhattan").ravel().tolist()
    ([5.0, 0.0], [7.0, 0.0])
    """
    xp = get_namespace(X, C)
    if metric == "cosine":
        D = 1 - matmul_t(xp, _unit_rows(X, xp), _unit_rows(C, xp))
        return xp.clip(D, 0, 2)
    cols = []
    for j in range(C.shape[0]):
        diff = X - C[j:j + 1, :]
        if metric == "manhattan":
            cols.append(xp.sum(xp.abs(diff), axis=1))
        else:
            cols.append(xp.sqrt(xp.sum(diff * diff, axis=1)))
    if not cols:
        return xp.zeros((X.shape[0], 0), dtype=X.dtype)
    return xp.stack(cols, axis=1)


def nearest(X, C, metric="euclidean"):
    """Index of the nearest center of every row (the lowest index at a tie) and the distance to it.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        Rows.
    C : array of shape (n_centers, n_features)
        Centers.
    metric : {"euclidean", "manhattan", "cosine"}, default="euclidean"
        The distance.

    Returns
    -------
    labels : array of shape (n_samples,)
    min_dist : array of shape (n_samples,)
    """
    xp = get_namespace(X, C)
    D = pairwise_distances(X, C, metric)
    return xp.argmin(D, axis=1), xp.min(D, axis=1)


def _weights(w, n):
    return np.ones(n) if w is None else np.asarray(to_numpy(w), dtype=np.float64)


# ------------------------------------------------------------------------------------------------
# k-medians: the assignment pass and the median searches
# ------------------------------------------------------------------------------------------------

def range_partial(X, w, offset):
    """Per-feature minimum and maximum of one block (float64).

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
        The block.
    w : array or None
        Ignored.
    offset : int
        Ignored.

    Returns
    -------
    dict
        ``min`` and ``max``, each of shape (n_features,).
    """
    Xn = to_numpy(X)
    return {"min": Xn.min(axis=0).astype(np.float64), "max": Xn.max(axis=0).astype(np.float64)}


def combine_range(parts):
    """Combine :func:`range_partial` results."""
    return {"min": np.min([p["min"] for p in parts], axis=0), "max": np.max([p["max"] for p in parts], axis=0)}


def median_pass_partial(X, w, offset, C, hist, gather, above, n_buckets, assign=False, n_far=0, labels=False):
    """One block's share of a pass of the exact median (and, with ``assign``, of the L1 assignment).

    The rows are labelled by their L1-nearest center of ``C``.  Every search ``s`` names cluster
    ``s // n_features`` and feature ``s % n_features``.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
        The block.
    w : array of shape (n_rows,) or None
        Sample weights.
    offset : int
        Global index of the block's first row.
    C : ndarray of shape (n_clusters, n_features)
        The centers the labels come from.
    hist : dict
        Searches to histogram: ``s`` (int64), ``lo`` and ``hi`` (float64, ``lo < hi``).
    gather : dict
        Searches whose values in ``[lo, hi]`` come back: ``s``, ``lo``, ``hi``.
    above : dict
        Searches for the smallest value ``> lo`` of positive weight: ``s``, ``lo``.
    n_buckets : int
        Buckets per histogram.
    assign : bool, default=False
        Also return per-cluster counts and weights, the weighted L1 inertia, and the ``n_far`` rows farthest
        from their center (to re-seed empty clusters).
    n_far : int, default=0
        See ``assign``.
    labels : bool, default=False
        Also return the labels (int64).

    Returns
    -------
    dict
        Small host arrays, combined by :func:`combine_median_partials`.
    """
    xp = get_namespace(X)
    k, d = C.shape
    lab_x, dist_x = nearest(X, xp.asarray(np.asarray(C, dtype=to_numpy(X[:1, ...]).dtype)), "manhattan")
    lab = np.asarray(to_numpy(lab_x), dtype=np.int64)
    dist = np.asarray(to_numpy(dist_x), dtype=np.float64)
    Xn = np.asarray(to_numpy(X))
    wt = _weights(w, Xn.shape[0])
    out = {}
    if assign:
        out["count"] = np.bincount(lab, minlength=k).astype(np.int64)
        out["weight"] = np.bincount(lab, weights=wt, minlength=k)
        out["inertia"] = float(np.dot(wt, dist))
        m = min(int(n_far), Xn.shape[0])
        idx = np.arange(Xn.shape[0], dtype=np.int64) + offset
        order = np.lexsort((idx, -dist))[:m]
        out["far_d"], out["far_i"], out["far_x"] = dist[order], idx[order], Xn[order].copy()
    if labels:
        out["labels"] = lab
    B = int(n_buckets)
    mh, mg, ma = len(hist["s"]), len(gather["s"]), len(above["s"])
    cnt, wsum = np.zeros(mh * B, dtype=np.int64), np.zeros(mh * B)
    vmin, vmax = np.full(mh * B, np.inf), np.full(mh * B, -np.inf)
    g_s, g_v, g_w = [], [], []
    amin = np.full(ma, np.inf)
    rows_of = {}
    if mh or mg or ma:
        order = np.argsort(lab, kind="stable")
        bounds = np.searchsorted(lab[order], np.arange(k + 1))
        rows_of = {j: order[bounds[j]:bounds[j + 1]] for j in range(k) if bounds[j + 1] > bounds[j]}

    def per_cluster(spec):
        s = np.asarray(spec["s"], dtype=np.int64)
        js = s // d
        for j in np.unique(js):
            rows = rows_of.get(int(j))
            if rows is None:
                continue
            sel = np.flatnonzero(js == j)
            V = Xn[rows][:, s[sel] % d].astype(np.float64)
            yield sel, V, wt[rows]

    if mh:
        for sel, V, ww in per_cluster(hist):
            lo, hi = hist["lo"][sel], hist["hi"][sel]
            inside = (V >= lo) & (V <= hi)
            b = np.floor((V - lo) / (hi - lo) * B)
            b = np.clip(np.nan_to_num(b, nan=0.0), 0, B - 1).astype(np.int64)
            flat = (sel[None, :] * B + b)[inside]
            vals = V[inside]
            wf = np.broadcast_to(ww[:, None], V.shape)[inside]
            cnt += np.bincount(flat, minlength=mh * B)
            wsum += np.bincount(flat, weights=wf, minlength=mh * B)
            np.minimum.at(vmin, flat, vals)
            np.maximum.at(vmax, flat, vals)
    if mg:
        for sel, V, ww in per_cluster(gather):
            inside = (V >= gather["lo"][sel]) & (V <= gather["hi"][sel])
            g_s.append(np.broadcast_to(np.asarray(gather["s"])[sel][None, :], V.shape)[inside])
            g_v.append(V[inside])
            g_w.append(np.broadcast_to(ww[:, None], V.shape)[inside])
    if ma:
        for sel, V, ww in per_cluster(above):
            ok = (V > above["lo"][sel]) & (ww[:, None] > 0)
            Vm = np.where(ok, V, np.inf)
            amin[sel] = np.minimum(amin[sel], Vm.min(axis=0) if Vm.shape[0] else np.inf)
    out["h_cnt"], out["h_w"], out["h_min"], out["h_max"] = cnt, wsum, vmin, vmax
    out["g_s"] = np.concatenate(g_s).astype(np.int64) if g_s else np.zeros(0, dtype=np.int64)
    out["g_v"] = np.concatenate(g_v) if g_v else np.zeros(0)
    out["g_w"] = np.concatenate(g_w) if g_w else np.zeros(0)
    out["a_min"] = amin
    return out


def combine_median_partials(parts):
    """Combine :func:`median_pass_partial` results (in block order)."""
    p0 = parts[0]
    out = {"h_cnt": sum(p["h_cnt"] for p in parts), "h_w": _ordered_sum([p["h_w"] for p in parts]),
           "h_min": np.min([p["h_min"] for p in parts], axis=0), "h_max": np.max([p["h_max"] for p in parts], axis=0),
           "g_s": np.concatenate([p["g_s"] for p in parts]), "g_v": np.concatenate([p["g_v"] for p in parts]),
           "g_w": np.concatenate([p["g_w"] for p in parts]), "a_min": np.min([p["a_min"] for p in parts], axis=0)}
    if "count" in p0:
        out["count"] = sum(p["count"] for p in parts)
        out["weight"] = _ordered_sum([p["weight"] for p in parts])
        out["inertia"] = float(sum(p["inertia"] for p in parts))
        fd = np.concatenate([p["far_d"] for p in parts])
        fi = np.concatenate([p["far_i"] for p in parts])
        fx = np.concatenate([p["far_x"] for p in parts])
        m = max(len(p["far_d"]) for p in parts)
        order = np.lexsort((fi, -fd))[:m]
        out["far_d"], out["far_i"], out["far_x"] = fd[order], fi[order], fx[order]
    if "labels" in p0:
        out["labels"] = np.concatenate([p["labels"] for p in parts])
    return out


def _ordered_sum(arrays):
    out = np.array(arrays[0], dtype=np.float64, copy=True)
    for a in arrays[1:]:
        out += a
    return out


# ------------------------------------------------------------------------------------------------
# k-medoids: PAM (BUILD + SWAP) in memory, candidate sets scored per block
# ------------------------------------------------------------------------------------------------

def _dense_distances(X, metric):
    """The (n, n) distance matrix of host rows X (float64)."""
    from scipy.spatial.distance import cdist

    X = np.asarray(X, dtype=np.float64)
    if metric == "cosine":
        return np.asarray(pairwise_distances(X, X, "cosine"), dtype=np.float64)
    return cdist(X, X, "cityblock" if metric == "manhattan" else "euclidean")


def _batch_rows(n):
    return max(1, min(n, (2**24) // max(1, n)))


def pam_build(D, k, w):
    """PAM's BUILD: the medoid of least total distance, then, k - 1 times, the row that lowers the cost most.

    Parameters
    ----------
    D : ndarray of shape (n, n)
        Distances (symmetric).
    k : int
        Number of medoids.
    w : ndarray of shape (n,)
        Weights.

    Returns
    -------
    ndarray of shape (k,), int64
        Row indices of the medoids (the lowest index at a tie).
    """
    n = D.shape[0]
    med = [int(np.argmin(D @ w))]
    dn = D[med[0]].copy()
    is_med = np.zeros(n, dtype=bool)
    is_med[med[0]] = True
    bs = _batch_rows(n)
    for _ in range(1, k):
        gain = np.empty(n)
        for a in range(0, n, bs):
            gain[a:a + bs] = np.maximum(dn[None, :] - D[a:a + bs], 0) @ w
        gain[is_med] = -np.inf
        c = int(np.argmax(gain))
        med.append(c)
        is_med[c] = True
        dn = np.minimum(dn, D[c])
    return np.asarray(med, dtype=np.int64)


def pam_swap(D, medoids, w, max_iter=300, rtol=1e-12):
    """PAM's SWAP with FastPAM1's O(n^2) evaluation of all (medoid, non-medoid) pairs per iteration.

    Every iteration makes the best single swap over all pairs, as long as it lowers the cost by more
    than ``rtol`` times the cost; on return (``converged``) no single swap lowers it by more.

    Parameters
    ----------
    D : ndarray of shape (n, n)
        Distances.
    medoids : ndarray of shape (k,)
        Starting medoids (row indices).
    w : ndarray of shape (n,)
        Weights.
    max_iter : int, default=300
        Most swaps.
    rtol : float, default=1e-12
        Relative improvement below which a swap is not made.

    Returns
    -------
    medoids : ndarray of shape (k,), int64
    cost : float
        ``sum_j w_j * min_m D[j, m]``.
    n_iter : int
        SWAP iterations: the swaps made, plus the last evaluation that found none when converged.
    converged : bool
        Whether no improving swap was left.
    """
    n = D.shape[0]
    med = np.array(medoids, dtype=np.int64, copy=True)
    k = med.size
    bs = _batch_rows(n)
    converged = False
    it = 0
    for it in range(max_iter + 1):
        Dm = D[:, med]
        part = np.argsort(Dm, axis=1, kind="stable")
        rows = np.arange(n)
        nm = part[:, 0]
        dn = Dm[rows, nm]
        ds = Dm[rows, part[:, 1]] if k > 1 else np.full(n, np.inf)
        cost = float(w @ dn)
        if it == max_iter:
            break
        onehot = np.zeros((n, k))
        onehot[rows, nm] = 1.0
        is_med = np.zeros(n, dtype=bool)
        is_med[med] = True
        best, best_c, best_i = 0.0, -1, -1
        for a in range(0, n, bs):
            Dc = D[a:a + bs]
            lower = np.minimum(Dc - dn[None, :], 0)
            shared = lower @ w
            corr = (np.minimum(ds[None, :], Dc) - dn[None, :] - lower) * w[None, :]
            delta = shared[:, None] + corr @ onehot
            delta[is_med[a:a + bs]] = np.inf
            pos = int(np.argmin(delta))
            c, i = divmod(pos, k)
            if delta[c, i] < best:
                best, best_c, best_i = float(delta[c, i]), a + c, i
        if best_c < 0 or best >= -rtol * cost:
            converged = True
            break
        med[best_i] = best_c
    return med, cost, it + 1 if converged else it, converged


def pam(X, n_clusters, metric="euclidean", sample_weight=None, max_iter=300, init="build", random_state=None):
    """PAM (Kaufman & Rousseeuw): BUILD, then SWAP until no single swap lowers the cost.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Rows (host memory: the (n, n) distance matrix is formed).
    n_clusters : int
        Number of medoids.
    metric : {"euclidean", "manhattan", "cosine"}, default="euclidean"
        The distance.
    sample_weight : ndarray of shape (n_samples,) or None, default=None
        Weights of the rows in the cost.
    max_iter : int, default=300
        Most swaps.
    init : {"build", "random"}, default="build"
        BUILD's greedy start, or ``n_clusters`` distinct rows drawn at random.
    random_state : int or None, default=None
        Seed of the "random" start.

    Returns
    -------
    medoids : ndarray of shape (n_clusters,), int64
        Row indices.
    cost : float
    n_iter : int
    converged : bool

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.kernels.medians import pam
    >>> X = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])
    >>> med, cost, n_iter, converged = pam(X, 2)
    >>> sorted(med.tolist()), cost, converged
    ([1, 4], 4.0, True)
    """
    X = np.asarray(to_numpy(X))
    D = _dense_distances(X, metric)
    w = _weights(sample_weight, X.shape[0])
    if init == "random":
        med = np.sort(np.random.default_rng(random_state).choice(X.shape[0], size=int(n_clusters), replace=False))
    else:
        med = pam_build(D, int(n_clusters), w)
    return pam_swap(D, med, w, max_iter=max_iter)


def medoid_cost_partial(X, w, offset, M, n_sets, metric, labels=False):
    """One block's cost under each of ``n_sets`` candidate medoid sets (stacked in ``M``).

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
        The block.
    w : array of shape (n_rows,) or None
        Sample weights.
    offset : int
        Ignored.
    M : ndarray of shape (n_sets * k, n_features)
        The candidate sets, one after the other.
    n_sets : int
        Number of sets.
    metric : str
        The distance.
    labels : bool, default=False
        With one set: also every row's nearest medoid (int64).

    Returns
    -------
    dict
        ``cost`` of shape (n_sets,) (weighted sums of distances); with one set ``count`` (and ``labels``).
    """
    xp = get_namespace(X)
    Mx = xp.asarray(np.asarray(M, dtype=to_numpy(X[:1, ...]).dtype))
    D = np.asarray(to_numpy(pairwise_distances(X, Mx, metric)), dtype=np.float64)
    n = D.shape[0]
    k = M.shape[0] // n_sets
    Dr = D.reshape(n, n_sets, k)
    wt = _weights(w, n)
    mins = Dr.min(axis=2)
    # one dot per set: a set's cost does not depend on the other sets scored with it
    out = {"cost": np.asarray([np.dot(wt, np.ascontiguousarray(mins[:, i])) for i in range(n_sets)])}
    if n_sets == 1:
        lab = np.argmin(Dr[:, 0, :], axis=1).astype(np.int64)
        out["count"] = np.bincount(lab, minlength=k).astype(np.int64)
        if labels:
            out["labels"] = lab
    out["finite"] = bool(np.isfinite(D).all())
    return out


def combine_medoid_cost(parts):
    """Combine :func:`medoid_cost_partial` results (in block order)."""
    out = {"cost": _ordered_sum([p["cost"] for p in parts]), "finite": all(p["finite"] for p in parts)}
    if "count" in parts[0]:
        out["count"] = sum(p["count"] for p in parts)
    if "labels" in parts[0]:
        out["labels"] = np.concatenate([p["labels"] for p in parts])
    return out
