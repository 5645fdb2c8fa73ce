"""The minimum-cluster-size rule of ``KMeans(min_cluster_size=...)`` (the small-cluster problem).

Applied after Lloyd converges, in this order, each step only when the previous one left a cluster with
fewer than ``min_size`` rows:

1. **Split the biggest, re-seed the small** (the textbook rule): the biggest cluster is split in two by
   2-means over its rows (started along its feature of largest variance), the smallest cluster's center
   moves to one of the halves, and Lloyd runs again; at most ``n_clusters`` rounds.  Lloyd often falls
   back into the same local optimum (a small, well separated group of rows attracts a center again).
2. **Constrained k-means** (Bradley, Bennett & Demiriz 2000) over the blocks: the assignment step is the
   min-cost flow problem ``min sum_ij d2(x_i, c_j) T_ij`` with ``sum_j T_ij = 1`` and
   ``sum_i T_ij >= min_size``.  Its dual gives every cluster a price ``lam_j >= 0`` and the assignment
   ``argmin_j d2(x, c_j) - lam_j``; :func:`price_assignment` finds prices that meet the bound in passes
   over the blocks (a short cluster's price grows just enough to bring in the rows it lacks from clusters
   with rows to spare), alternated with the center update until the centers stop changing.
3. In memory, when ties between duplicate rows defeat the prices: the exact min-cost-flow assignment
   (:func:`constrained_assignment`, HiGHS' simplex; the transportation problem has integral vertices).

With ``n_samples >= n_clusters * min_size`` every cluster then meets the bound (in memory always; over
the blocks unless many rows are exact duplicates, which a warning reports).  The labels of steps 2 and 3
are the constrained assignment, not always the nearest center.  Every step is deterministic: it depends
on the centers and on the fixed reduction tree only.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..kernels import assign_labels, lloyd_partial, sq_distances
from ..kernels.xp import get_namespace, to_numpy
from .lloyd import LloydResult, final_pass, lloyd_on_blocks

__all__ = ["enforce_min_cluster_size", "constrained_assignment", "constrained_on_blocks", "price_assignment"]



def _as(X, C):
    xp = get_namespace(X)
    return xp.asarray(np.asarray(C, dtype=to_numpy(X[:1, ...]).dtype))


def _rows_of_cluster(X, w, C, b):
    xp = get_namespace(X)
    lab, _ = assign_labels(X, _as(X, C))
    idx = np.flatnonzero(np.asarray(to_numpy(lab)) == b)
    Xm = xp.take(X, xp.asarray(idx), axis=0)
    wm = None if w is None else xp.take(w, xp.asarray(idx), axis=0)
    return Xm, wm


def _moments_chunk(X, w, offset, C, b):
    Xm, _ = _rows_of_cluster(X, w, C, b)
    x = np.asarray(to_numpy(Xm), dtype=np.float64)
    return {"n": x.shape[0], "sum": x.sum(axis=0), "sq": (x * x).sum(axis=0)}


def _two_means_chunk(X, w, offset, C, b, C2):
    Xm, wm = _rows_of_cluster(X, w, C, b)
    d = X.shape[1]
    if Xm.shape[0] == 0:
        return {"sum": np.zeros((2, d)), "weight": np.zeros(2)}
    p = lloyd_partial(Xm, wm, _as(X, C2), n_far=0)
    return {"sum": p["sum"], "weight": p["weight"]}


def _add(parts):
    out = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in parts[0].items()}
    for p in parts[1:]:
        for k in out:
            out[k] = out[k] + p[k]
    return out


def _split_cluster(blocks, C, b, n_iter=20):
    """Two centers splitting cluster ``b`` of centers ``C``: 2-means over its rows, started at its center
    plus and minus one standard deviation along its feature of largest variance."""
    mom = blocks.map_reduce(_moments_chunk, _add, C, b)
    n = max(int(mom["n"]), 1)
    mean = mom["sum"] / n
    var = np.maximum(mom["sq"] / n - mean ** 2, 0.0)
    e = np.zeros_like(mean)
    j = int(np.argmax(var))
    e[j] = np.sqrt(var[j]) if var[j] > 0 else 1e-6
    C2 = np.stack([mean - e, mean + e]).astype(C.dtype)
    for _ in range(n_iter):
        part = blocks.map_reduce(_two_means_chunk, _add, C, b, C2)
        W = part["weight"][:, None]
        new = np.where(W > 0, part["sum"] / np.where(W > 0, W, 1.0), C2).astype(C.dtype)
        if np.array_equal(new, C2):
            break
        C2 = new
    return C2


def constrained_assignment(X, centers, min_size, sample_weight=None, *, max_iter=50):
    """Bradley-Bennett-Demiriz constrained k-means on in-memory X: every cluster gets ``>= min_size`` rows.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        The rows (host NumPy).
    centers : ndarray of shape (n_clusters, n_features)
        Starting centers.
    min_size : int
        Minimum rows per cluster (``n_samples >= n_clusters * min_size``).
    sample_weight : ndarray of shape (n_samples,) or None, default=None
        Weights of the rows in the center update and the cost.
    max_iter : int, default=50
        Maximum alternations of assignment and update.

    Returns
    -------
    centers : ndarray of shape (n_clusters, n_features)
    labels : ndarray of shape (n_samples,)
        The constrained assignment (int64).
    """
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    X = np.asarray(X)
    n, k = X.shape[0], centers.shape[0]
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    rows = np.repeat(np.arange(n), k)
    cols = np.arange(n * k)
    A_eq = coo_matrix((np.ones(n * k), (rows, cols)), shape=(n, n * k)).tocsr()
    A_ub = coo_matrix((-np.ones(n * k), (np.tile(np.arange(k), n), cols)), shape=(k, n * k)).tocsr()
    C = np.array(centers, dtype=np.float64)  # a copy: updated below
    labels = None
    for _ in range(max_iter):
        D = np.asarray(sq_distances(X.astype(np.float64), C)) * w[:, None]
        res = linprog(D.ravel(), A_ub=A_ub, b_ub=-np.full(k, float(min_size)), A_eq=A_eq, b_eq=np.ones(n),
                      bounds=(0, 1), method="highs-ds")
        new = np.argmax(res.x.reshape(n, k), axis=1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            m = labels == j
            if w[m].sum() > 0:
                C[j] = (X[m] * w[m, None]).sum(axis=0) / w[m].sum()
    return C.astype(centers.dtype), labels.astype(np.int64)


def _priced(X, C, lam):
    X64 = np.asarray(to_numpy(X), dtype=np.float64)
    S = np.asarray(sq_distances(X64, C)) - lam[None, :]
    return X64, S, np.argmin(S, axis=1)


def _priced_chunk(X, w, offset, C, lam, want_labels):
    """Counts, sums and exact inertia of the assignment ``argmin_j d2(x, c_j) - lam_j`` of this block."""
    X64, S, lab = _priced(X, C, lam)
    k, d = C.shape
    wv = np.ones(X64.shape[0]) if w is None else np.asarray(to_numpy(w), dtype=np.float64)
    sums = np.zeros((k, d))
    np.add.at(sums, lab, X64 * wv[:, None])
    d2 = ((X64 - C[lab]) ** 2).sum(axis=1)
    out = {"count": np.bincount(lab, minlength=k).astype(np.int64), "weight": np.bincount(lab, weights=wv, minlength=k),
           "sum": sums, "inertia": float((wv * d2).sum())}
    if want_labels:
        out["labels"] = lab.astype(np.int64)
    return out


def _combine_priced(parts):
    out = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in parts[0].items() if k != "labels"}
    for p in parts[1:]:
        for key in out:
            out[key] = out[key] + p[key]
    if "labels" in parts[0]:
        out["labels"] = np.concatenate([p["labels"] for p in parts])
    return out


def _gap_chunk(X, w, offset, C, lam, j, need, donors):
    """The ``need`` smallest price gaps of the rows of the ``donors`` clusters (those with rows to spare):
    how much ``lam_j`` must grow for each to move to ``j`` (ties broken by global row index)."""
    _, S, lab = _priced(X, C, lam)
    rows = np.flatnonzero(np.asarray(donors)[lab] & (lab != j))
    gap = S[rows, j] - S[rows, lab[rows]]
    order = np.lexsort((rows, gap))[:need]
    return {"gap": gap[order], "index": rows[order] + offset, "need": need}


def _combine_gaps(parts):
    gap = np.concatenate([p["gap"] for p in parts])
    idx = np.concatenate([p["index"] for p in parts])
    order = np.lexsort((idx, gap))[:parts[0]["need"]]
    return {"gap": gap[order], "index": idx[order], "need": parts[0]["need"]}


def price_assignment(blocks, centers, min_size, *, max_rounds=None, lam=None):
    """Prices ``lam`` (one per cluster, >= 0) such that ``argmin_j d2(x, c_j) - lam_j`` gives every cluster at
    least ``min_size`` rows: the dual of the assignment step of constrained k-means, found over the blocks.

    While a cluster is short of ``need`` rows, its price grows by the ``need``-th smallest gap among the
    other rows (one pass), just enough to bring them in; prices only grow.  Returns ``(lam, partial)``
    where the partial of the last pass holds ``count``, ``sum``, ``weight``, ``inertia``.
    """
    C = np.array(centers, dtype=np.float64)  # a copy: updated below
    k = C.shape[0]
    lam = np.zeros(k) if lam is None else np.array(lam, dtype=np.float64)
    rounds = 50 * k if max_rounds is None else int(max_rounds)
    part = blocks.map_reduce(_priced_chunk, _combine_priced, C, lam, False)
    for _ in range(rounds):
        j = int(np.argmin(part["count"]))
        need = int(min_size - part["count"][j])
        if need <= 0:
            break
        donors = part["count"] > min_size
        g = blocks.map_reduce(_gap_chunk, _combine_gaps, C, lam, j, need, donors)["gap"]
        if g.size == 0:
            break
        step = float(g[min(need, g.size) - 1])
        lam[j] += step + max(1e-12, 1e-9 * abs(step), 1e-12 * abs(lam[j]))
        part = blocks.map_reduce(_priced_chunk, _combine_priced, C, lam, False)
    return lam, part


def constrained_on_blocks(blocks, centers, min_size, *, max_iter=50, final_labels=False):
    """Constrained k-means (Bradley, Bennett & Demiriz) over the blocks, by the prices of :func:`price_assignment`.

    Alternates the priced assignment (every cluster ``>= min_size`` rows) and the center update (the mean
    of the assigned rows) until the centers stop changing.  Returns ``(centers, prices, partial)``; the
    partial of the final assignment holds ``count``, ``weight``, ``inertia`` and, when asked, ``labels``.
    """
    C = np.array(centers, dtype=np.float64)  # a copy: updated below
    lam = None
    for _ in range(max_iter):
        lam, part = price_assignment(blocks, C, min_size)
        W = part["weight"][:, None]
        new = np.where(W > 0, part["sum"] / np.where(W > 0, W, 1.0), C)
        if np.array_equal(new, C):
            break
        C = new
    lam, _ = price_assignment(blocks, C, min_size)
    part = blocks.map_reduce(_priced_chunk, _combine_priced, C, lam, final_labels)
    return C, lam, part


def enforce_min_cluster_size(blocks, res: LloydResult, min_size: int, *, max_iter: int = 300, tol_abs: float = 0.0,
                             final_labels: bool = False, algorithm: str = "lloyd", max_rounds=None) -> LloydResult:
    """Make every cluster of a k-means result hold at least ``min_size`` rows (see the module doc).

    Parameters
    ----------
    blocks : LocalBlocks, DaskBlocks or StreamBlocks
        The data.
    res : LloydResult
        A converged k-means result on ``blocks`` (with ``counts``).
    min_size : int
        Minimum rows per cluster.
    max_iter, tol_abs, algorithm
        Of the Lloyd runs after each split.
    final_labels : bool, default=False
        Return every row's label.
    max_rounds : int or None, default=None
        Rounds of the split rule (None: ``n_clusters``).

    Returns
    -------
    LloydResult
        ``n_iter`` counts every Lloyd iteration; ``history`` goes on from ``res.history``; ``offsets`` are
        the prices of the constrained assignment (zeros when the split rule sufficed).
    """
    k = res.centers.shape[0]
    rounds = k if max_rounds is None else int(max_rounds)
    n_iter, history = res.n_iter, list(res.history)
    res.offsets = np.zeros(k)
    for _ in range(rounds):
        counts = np.asarray(res.counts)
        if counts.min() >= min_size:
            return res
        j = int(np.argmin(counts))
        b = int(np.argmax(counts))
        C = np.array(res.centers, copy=True)
        C2 = _split_cluster(blocks, C, b)
        C[b], C[j] = C2[0], C2[1]
        res = lloyd_on_blocks(blocks, C, max_iter=max_iter, tol_abs=tol_abs, final_labels=final_labels,
                              algorithm=algorithm)
        n_iter += res.n_iter
        history += res.history
        res.n_iter, res.history, res.offsets = n_iter, history, np.zeros(k)
    if np.asarray(res.counts).min() >= min_size:
        return res
    C, lam, part = constrained_on_blocks(blocks, res.centers, min_size, final_labels=final_labels)
    out = LloydResult(centers=C.astype(blocks.dtype), inertia=float(part["inertia"]), n_iter=n_iter, history=history,
                      converged=res.converged, counts=part["count"], weights=part["weight"], labels=part.get("labels"))
    out.offsets = lam
    if part["count"].min() < min_size and final_labels and getattr(blocks, "kind", "") == "local":
        # in memory: the exact min-cost-flow assignment (ties between duplicate rows can defeat the prices)
        X = np.concatenate([np.asarray(to_numpy(b.X)) for b in blocks.blocks])
        w = None if blocks.blocks[0].w is None else np.concatenate([np.asarray(to_numpy(b.w)) for b in blocks.blocks])
        C, labels = constrained_assignment(X, C, min_size, w)
        wv = np.ones(len(labels)) if w is None else np.asarray(w, dtype=np.float64)
        d2 = ((X.astype(np.float64) - C[labels]) ** 2).sum(axis=1)
        out = LloydResult(centers=C.astype(blocks.dtype), inertia=float((wv * d2).sum()), n_iter=n_iter,
                          history=history, converged=res.converged,
                          counts=np.bincount(labels, minlength=len(C)).astype(np.int64),
                          weights=np.bincount(labels, weights=wv, minlength=len(C)), labels=labels)
        out.offsets = None
    if out.counts.min() < min_size:
        warnings.warn(f"min_cluster_size={min_size}: the constrained assignment left a cluster of "
                      f"{int(out.counts.min())} rows (ties between duplicate rows).", UserWarning, stacklevel=3)
    return out
