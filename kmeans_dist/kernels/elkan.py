"""Exact Lloyd iterations with Elkan's bounds (``algorithm="elkan"``).

Elkan (2003), "Using the triangle inequality to accelerate k-means": every row keeps an upper bound ``u``
on the distance to its center ``a`` and one lower bound ``l_j`` per center.  After the centers move by
``delta_j``, ``u`` grows by ``delta_a`` and every ``l_j`` shrinks by ``delta_j``.  Center ``j`` cannot be
nearer than ``a`` when ``u < l_j`` or ``u < d(c_a, c_j) / 2`` (triangle inequality); a row with
``u < min_j d(c_a, c_j) / 2`` skips every center.  For the others, ``u`` is tightened to the exact distance
once and only the centers that pass both tests get their distance computed.  Memory: ``n_clusters``
lower bounds per row (in the data's dtype), plus 20 bytes per row.

**State owned by the caller.**  :func:`elkan_partial` takes a block's state (or None) and returns the new
one: the driver keeps it next to the block (:meth:`LocalBlocks.map_state` keeps plain arrays in the
caller's list, :class:`DaskBlocks` keeps them in worker memory as the results of the previous pass's
tasks).  A state is used only if it is tagged with the previous pass of the run (``params["pass"] - 1``)
and has the block's shape; during a pass it is tagged as invalid, so a pass that fails half-way leaves no
state that the next one would trust.  A missing or rejected state means a pass that computes every
distance (a GEMM) and starts the bounds again.  Bounds only ever save work: the results never depend on them.

**Labels.**  A row's label is the nearest center by exact distance (float64 direct differences, the lower
index on an exact tie), as in :mod:`kmeans_dist.kernels.hamerly`: it equals Lloyd's first argmin of the
GEMM distances except at near-ties within the GEMM's rounding bound, which Lloyd decides by rounding and
this pass by exact distance (scikit-learn's ``"elkan"`` also compares direct distances).  The per-center
sums are accumulated in row order in float64 (as the Lloyd kernel), the inertia comes from them, and the
far rows are chosen by exact distance, so a pass returns the same partial as Hamerly's pass, bit for bit,
whatever the bounds, the chunking or the worker that runs it.

Runs on NumPy blocks of float32/float64 with Numba; elsewhere (CuPy, other namespaces, Numba disabled) a
pass is a plain :func:`~kmeans_dist.kernels.lloyd_partial` pass and no state is kept.
"""
from __future__ import annotations

import math

import numpy as np

from . import fused
from .distances import FUSED_SUB_BYTES, row_norms_sq
from .fused import DIRECT_TILE, direct_layout, direct_products, jit, scratch, warm_blas
from .hamerly import (REL_SLACK, accumulate_bounded, center_distances_below, exact_sqdist, inertia_from_sums,
                      norms64)
from .lloyd import lloyd_partial

__all__ = ["elkan_params", "elkan_partial", "state_nbytes"]

# a row whose candidate centers exceed this fraction of k gets all its distances from a GEMM
GEMM_FRACTION = 0.25
# a sub-chunk whose GEMM rows exceed this fraction of its rows runs one GEMM of the whole sub-chunk
BLAS_FRACTION = 0.2


def elkan_params(centers, prev_centers, pass_index: int) -> dict:
    """What every block needs for an Elkan pass with ``centers`` after ``prev_centers`` (client side).

    Parameters
    ----------
    centers : ndarray of shape (n_clusters, n_features)
        Centers of this pass.
    prev_centers : ndarray of shape (n_clusters, n_features) or None
        Centers of the previous pass of the same run (None for the first pass).
    pass_index : int
        Index of this pass in the run (0 for the first).

    Returns
    -------
    dict
        ``pass``; ``delta`` (k,): how far each center moved (rounded up); ``half_cc`` (k, k): half the
        distances between centers (rounded down); ``half_s`` (k,): its row minima off the diagonal;
        ``c_max``: the largest center norm.
    """
    C = np.asarray(centers, dtype=np.float64)
    k = C.shape[0]
    half_cc = 0.5 * center_distances_below(C)  # rounded down (kmeans_dist.kernels.hamerly)
    np.fill_diagonal(half_cc, np.inf)
    half_s = half_cc.min(axis=1) if k >= 2 else np.full(k, np.inf)
    delta = np.zeros(k)
    if prev_centers is not None:
        P = np.asarray(prev_centers, dtype=np.float64)
        delta = np.sqrt(((C - P) ** 2).sum(axis=1)) * (1 + REL_SLACK)
    c_max = float(np.sqrt((C * C).sum(axis=1)).max()) if k else 0.0
    return {"pass": int(pass_index), "delta": delta, "half_cc": half_cc, "half_s": half_s, "c_max": c_max}


def state_nbytes(n_rows: int, n_clusters: int, dtype) -> int:
    """Bytes of one block's Elkan state: the lower bounds, labels, upper bounds and squared norms."""
    return int(n_rows) * (int(n_clusters) * np.dtype(dtype).itemsize + 20)


@jit
def _update_and_test(lower, upper, labels, todo_loop, todo_gemm, counts, delta, half_s, half_cc, shrink,
                     store, grow, gemm_cut):  # pragma: no cover - compiled
    """Move the bounds by the centers' moves; list the rows that still need distances: those with few
    candidate centers in ``todo_loop``, the others in ``todo_gemm``.  ``counts`` gets (n_loop, n_gemm)."""
    n, k = lower.shape
    ml = 0
    mg = 0
    for i in range(n):
        a = labels[i]
        u = (upper[i] + delta[a]) * grow
        upper[i] = u
        for j in range(k):
            v = np.float64(lower[i, j]) * shrink - delta[j]
            lower[i, j] = (v if v > 0.0 else 0.0) * store
        if u < half_s[a]:
            continue
        cand = 0
        for j in range(k):
            if j != a and not (u < np.float64(lower[i, j]) or u < half_cc[a, j]):
                cand += 1
        if cand == 0:
            continue
        if cand > gemm_cut:
            todo_gemm[mg] = i
            mg += 1
        else:
            todo_loop[ml] = i
            ml += 1
    counts[0] = ml
    counts[1] = mg


@jit
def _nearer(X, i, C64, j, a, da2, lower, scale):  # pragma: no cover - compiled
    """Row ``i``'s exact distance to center ``j``, which becomes its lower bound there (``scale``: the bounds'
    rounding down); ``j`` takes the label from ``a`` if it is nearer (the lower index on a tie), and then ``a``
    gets its bound.  Returns the label and its squared distance."""
    dj2 = exact_sqdist(X, i, C64, j)
    lower[i, j] = math.sqrt(dj2) * scale
    if dj2 < da2 or (dj2 == da2 and j < a):
        lower[i, a] = math.sqrt(da2) * scale
        return j, dj2
    return a, da2


@jit
def _elkan_rows(X, C64, todo, m, labels, upper, lower, half_cc, shrink, store, grow):  # pragma: no cover
    """Elkan's inner loop for the rows ``todo[:m]``: tighten ``u`` once, then the exact distance to every
    center that passes neither test; the nearest by exact distance wins (the lower index on a tie)."""
    k = C64.shape[0]
    for t in range(m):
        i = todo[t]
        a = labels[i]
        u = upper[i]
        da2 = -1.0
        for j in range(k):
            if j == a or u < np.float64(lower[i, j]) or u < half_cc[a, j]:
                continue
            if da2 < 0.0:  # tighten once
                da2 = exact_sqdist(X, i, C64, a)
                u = math.sqrt(da2) * grow
                if u < np.float64(lower[i, j]) or u < half_cc[a, j]:
                    continue
            b, da2 = _nearer(X, i, C64, j, a, da2, lower, shrink * store)
            if b != a:
                a = b
                u = math.sqrt(da2) * grow
        labels[i] = a
        upper[i] = u


@jit
def _resolve_all(P, by_row, c_sq, X, C64, x_sq, todo, m, labels, upper, lower, c_max2, e_coef, shrink, store,
                 grow):  # pragma: no cover - compiled
    """Every distance of the rows ``todo[:m]`` from their products with the centers (row ``i`` of ``P``
    when ``by_row``, else row ``t``): all ``k`` lower bounds anew; the label is the first argmin of the
    products unless another center comes within the rounding bound, then the exact distances decide."""
    k = c_sq.shape[0]
    for t in range(m):
        i = todo[t]
        p = i if by_row else t
        best = P[p, 0] + c_sq[0]
        lab = 0
        for j in range(1, k):  # the first argmin; selects, not branches
            v = P[p, j] + c_sq[j]
            lt = v < best
            lab = j if lt else lab
            best = v if lt else best
        xs = np.float64(x_sq[i])
        e = e_coef * (xs + c_max2)
        cut = np.float64(best) + e
        base = xs - e
        near = 0
        for j in range(k):  # every lower bound from the products: no branch, so the loop is vectorised
            v = np.float64(P[p, j] + c_sq[j])
            lo2 = base + v
            lower[i, j] = math.sqrt(lo2 if lo2 > 0.0 else 0.0) * shrink * store
            near += v <= cut
        dl = -1.0
        if near > 1:  # a near-tie: exact distances decide, and give those centers' bounds
            for j in range(k):
                v = np.float64(P[p, j] + c_sq[j])
                if v <= cut and j != lab:
                    if dl < 0.0:
                        dl = exact_sqdist(X, i, C64, lab)
                    lab, dl = _nearer(X, i, C64, j, lab, dl, lower, shrink * store)
        if dl < 0.0:
            dl = exact_sqdist(X, i, C64, lab)
        labels[i] = lab
        upper[i] = math.sqrt(dl) * grow


def _valid(state, n, k, dtype, pass_index) -> bool:
    if not isinstance(state, dict) or state.get("pass") != pass_index - 1:
        return False
    low = state.get("lower")
    return isinstance(low, np.ndarray) and low.shape == (n, k) and low.dtype == dtype


def _new_state(X, k):
    n = X.shape[0]
    x_sq64 = np.empty(n, dtype=np.float64)
    norms64(X, x_sq64)
    return {"pass": -1, "labels": np.zeros(n, dtype=np.int32), "upper": np.zeros(n),
            "lower": np.zeros((n, k), dtype=X.dtype), "x_sq64": x_sq64}


def _compiled(X, centers) -> bool:
    return (type(X) is np.ndarray and type(centers) is np.ndarray and X.ndim == 2
            and X.dtype in (np.float32, np.float64) and centers.shape[0] >= 2 and fused.available())


def elkan_partial(X, sample_weight, centers, state, params: dict, *, offset: int = 0, n_far: int | None = None):
    """One block's share of an Elkan pass: ``(new_state, partial)``.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
        The block.
    sample_weight : ndarray of shape (n_rows,) or None
        Weight of every row.
    centers : ndarray of shape (n_clusters, n_features)
        Centers of this pass (in X's dtype).
    state : dict or None
        This block's state returned by the previous pass of the same run, or None.  Updated in place
        when used.
    params : dict
        :func:`elkan_params` of this pass.
    offset : int, default=0
        Global index of the block's first row.
    n_far : int or None, default=None
        Number of farthest rows to return (None: ``n_clusters``).

    Returns
    -------
    state : dict or None
        The block's state after this pass (None where the pass ran without bounds).
    partial : dict
        A Lloyd partial, as :func:`kmeans_dist.kernels.lloyd_partial` returns (``sum``, ``weight``,
        ``count``, ``inertia``, ``far_*``).
    """
    if not _compiled(X, centers):
        return None, lloyd_partial(X, sample_weight, centers, offset=offset, n_far=n_far)
    warm_blas()
    n, d = X.shape
    k = centers.shape[0]
    dt = X.dtype
    p = int(params["pass"])
    if not _valid(state, n, k, dt, p):
        state, fresh = _new_state(X, k), True
    else:
        fresh = False
    state["pass"] = -1  # invalid until the pass completes
    labels, upper, lower, x_sq64 = state["labels"], state["upper"], state["lower"], state["x_sq64"]
    C = np.ascontiguousarray(centers, dtype=dt)
    C64 = C.astype(np.float64)
    m2C_T = np.ascontiguousarray((-2 * C).T)
    direct = direct_layout(d, k)  # the Lloyd kernel's direct products where it takes them
    m2C = -2 * C if direct else None
    pad = np.zeros((DIRECT_TILE, d), dtype=dt) if direct else None
    Ppad = np.empty((DIRECT_TILE, k), dtype=dt) if direct else None
    c_sq = row_norms_sq(C)
    e_coef = 2.0 * (4.0 * (d + 4) * float(np.finfo(dt).eps) + REL_SLACK)
    shrink, grow = 1.0 - REL_SLACK, 1.0 + REL_SLACK
    store = 1.0 if dt == np.float64 else 1.0 - 4.0 * float(np.finfo(dt).eps)
    c_max2 = float(params["c_max"]) ** 2
    delta = np.asarray(params["delta"], dtype=np.float64)
    half_cc = np.asarray(params["half_cc"], dtype=np.float64)
    half_s = np.asarray(params["half_s"], dtype=np.float64)
    gemm_cut = GEMM_FRACTION * (k - 1)
    sums = np.zeros((k, d), dtype=np.float64)
    weights = np.zeros(k, dtype=np.float64)
    counts = np.zeros(k, dtype=np.int64)
    sq = np.zeros(k, dtype=np.float64)
    dist = scratch("edist", (n,), np.float64)
    m = max(0, min(k if n_far is None else int(n_far), n))
    hd = np.empty(m, dtype=np.float64)
    hi = np.empty(m, dtype=np.int64)
    hn = np.zeros(1, dtype=np.int64)
    w_arr = np.zeros(0, dtype=dt) if sample_weight is None else np.asarray(sample_weight, dtype=dt)
    sub_rows = int(min(16384, max(512, FUSED_SUB_BYTES // max(1, (d + k) * dt.itemsize))))
    cap = min(sub_rows, max(n, 1))
    P_buf = scratch("eP", (cap, k), dt)
    loop_buf = scratch("eloop", (cap,), np.int64)
    gemm_buf = scratch("egemm", (cap,), np.int64)
    G_buf = scratch("egathered", (cap, d), dt)
    cnt = np.zeros(2, dtype=np.int64)
    for start in range(0, n, sub_rows):
        stop = min(start + sub_rows, n)
        Xs = X[start:stop]
        if not Xs.flags.c_contiguous:
            Xs = np.ascontiguousarray(Xs)
        rows = stop - start
        lab_s, up_s, low_s, xs_sq = labels[start:stop], upper[start:stop], lower[start:stop], x_sq64[start:stop]
        if fresh:
            ml, mg = 0, rows
            todo_g = gemm_buf[:rows]
            todo_g[:] = np.arange(rows)
        else:
            _update_and_test(low_s, up_s, lab_s, loop_buf, gemm_buf, cnt, delta, half_s, half_cc, shrink, store,
                             grow, gemm_cut)
            ml, mg = int(cnt[0]), int(cnt[1])
            todo_g = gemm_buf[:mg]
        if ml:
            _elkan_rows(Xs, C64, loop_buf, ml, lab_s, up_s, low_s, half_cc, shrink, store, grow)
        if mg:
            if mg >= BLAS_FRACTION * rows:  # the sub-chunk's GEMM
                P = P_buf[:rows]
                if direct:
                    direct_products(Xs, m2C, P, pad, Ppad)
                else:
                    np.matmul(Xs, m2C_T, out=P)
                _resolve_all(P, True, c_sq, Xs, C64, xs_sq, todo_g, mg, lab_s, up_s, low_s, c_max2, e_coef,
                             shrink, store, grow)
            else:  # a GEMM of the rows that need it (two at least: one row would be a GEMV)
                g = max(mg, 2)
                Xg = G_buf[:g]
                np.take(Xs, todo_g[:g] if mg >= 2 else np.repeat(todo_g[:1], 2), axis=0, out=Xg)
                P = P_buf[:g]
                if direct:
                    direct_products(Xg, m2C, P, pad, Ppad)
                else:
                    np.matmul(Xg, m2C_T, out=P)
                _resolve_all(P, False, c_sq, Xs, C64, xs_sq, todo_g, mg, lab_s, up_s, low_s, c_max2, e_coef,
                             shrink, store, grow)
        accumulate_bounded(Xs, lab_s, up_s, C64, xs_sq, w_arr[start:stop] if sample_weight is not None else w_arr,
                           start, sums, weights, counts, sq, dist[start:stop], hd, hi, hn)
    inertia = inertia_from_sums(C64, sums, weights, sq)
    order = hi[np.lexsort((hi, -hd))]
    state["pass"] = p
    far_w = np.ones(order.shape[0]) if sample_weight is None else np.asarray(sample_weight, np.float64)[order]
    part = {"sum": sums, "weight": weights, "count": counts, "inertia": float(inertia),
            "far_dist": dist[order].astype(np.float64), "far_index": order.astype(np.int64) + int(offset),
            "far_x": X[order], "far_label": labels[order].astype(np.int64), "far_weight": far_w}
    return state, part
