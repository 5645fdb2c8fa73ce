"""Exact Lloyd iterations that skip most distance computations: Hamerly's bounds (``algorithm="hamerly"``).

Hamerly (2010), "Making k-means even faster": every row keeps an upper bound ``u`` on its distance to its
center and a lower bound ``l`` on its distance to every other center.  After the centers move by
``delta_j``, ``u`` grows by ``delta_a`` and ``l`` shrinks by the largest other move; a row assigned to
``a`` keeps ``a`` if ``max(l, s_a - u) > u`` (``s_a`` the distance from ``c_a`` to its nearest other
center: triangle inequality).  If the test fails, ``u`` is tightened to the exact distance and the test
repeated; only the rows that still fail get their distances to all ``k`` centers.  The others cost a
few flops plus their share of the per-center sums, which every Lloyd pass needs anyway: when the centers
settle, a pass drops from ``2 n k d`` flops to about ``2 n d``.  The inertia needs no per-row distance:
``sum_i w_i ||x_i - c_a||^2 = sum_a (sum w ||x||^2) - 2 c_a . (sum w x) + W_a ||c_a||^2``, in float64,
with the rows' squared norms in float64.  The rows farthest from their centers (for empty clusters) are
found among the rows whose ``u`` reaches the current candidates, by exact distance.

**Same labels as Lloyd.**  Lloyd's label is the first argmin of ``||c||^2 - 2 x.c`` computed in the
data's dtype, which carries rounding error; the bounds prove the order of the *exact* distances.  So a row
keeps its label only when the squared gap exceeds a bound on that rounding error,
``E_i = 2 (4 (d + 4) eps + 1e-12) (||x_i||^2 + max_j ||c_j||^2)`` (the standard error bound of a dot
product, twice, for the two distances compared, with room to spare).  The rows that need all their
distances get them from BLAS: the GEMM of their sub-chunk when many of its rows do, otherwise a GEMM of
just those rows.  On OpenBLAS a row's products can change in the last bit with its position in the
matrix, so when two centers come within ``E_i`` of each other for a row, no GEMM can be trusted to order
them as Lloyd's did; such a near-tie is decided by the exact distances (float64 direct differences, the
lower index on an exact tie), which depend on the row alone.  Labels therefore equal Lloyd's except at
these near-ties (in float64 a gap of about 1e-12 of the squared norms; in float32 about 1e-5: where a
cluster is split between two centers, a few hundred rows per million), and where the labels agree the
per-center sums, accumulated in row order in float64 as in the Lloyd kernel, are bit-identical to Lloyd's.
scikit-learn's ``algorithm="elkan"`` differs from its ``"lloyd"`` the same way (it compares direct
distances).  Which rows need their distances, and what decides them, is a function of the row and the
centers' history, so the results are the same whatever the input chunking and the number of workers.  The
per-iteration inertia differs from Lloyd's in the last digits (float64 sums instead of the GEMM's
distances); the final inertia is the same final pass in both.

**State.**  A block's labels and bounds are a small dict that the caller owns and passes to the next
pass (through ``blocks.map_state`` of the chunked driver, so it stays next to the block: in process, on
the Dask worker or in the Ray actor that holds it), tagged with the pass it belongs to.  A pass given no
state, or one that is not from the previous pass (a new run, a block recomputed on another worker after a
failure, a resumed run, data streamed from the store), computes every distance for that block and starts
its bounds again: the bounds only ever save work, never change results.  Memory: 28 bytes per row (an
int32 label, float64 bounds and squared norm).

Runs on NumPy blocks with Numba (the fused Lloyd kernel's conditions); elsewhere (CuPy, array-API
namespaces, no Numba) a pass is a plain Lloyd pass.
"""
from __future__ import annotations

import math

import numpy as np

from .fused import (DIRECT_TILE, columns_layout, direct_layout, direct_products, heap_offer, jit, scratch, warm_blas,
                    worse)
from .distances import FUSED_SUB_BYTES, row_norms_sq

__all__ = ["bound_params", "center_distances_below", "lloyd_block_bounded", "exact_sqdist", "accumulate_bounded",
           "inertia_from_sums", "norms64"]

# fraction of a sub-chunk's rows above which their distances come from one GEMM of the whole sub-chunk
BLAS_FRACTION = 0.2
REL_SLACK = 1e-12

def center_distances_below(C) -> np.ndarray:
    """Lower bounds on the exact distances between the rows of ``C``, from one float64 GEMM.

    ``||a||^2 + ||b||^2 - 2 a.b`` in float64 is within ``4 (d + 4) eps (||a||^2 + ||b||^2)`` of the exact
    squared distance (the dot product's error bound, with room to spare); that much is subtracted before the
    root and the result rounded down by ``REL_SLACK``, so every entry is at most the exact distance.  The bounds
    only decide which distances a pass may skip, never a label, so their last bits do not matter; a GEMM
    takes milliseconds where direct differences of all pairs took a (k, k, d) temporary (411 MB at k=256 and
    784 features).

    Parameters
    ----------
    C : array of shape (n_clusters, n_features)
        The centers.

    Returns
    -------
    ndarray of shape (n_clusters, n_clusters)
        Float64 lower bounds; the diagonal is 0.
    """
    C = np.asarray(C, dtype=np.float64)
    d = C.shape[1]
    sq = (C * C).sum(axis=1)
    pair = sq[:, None] + sq[None, :]
    G = pair - 2.0 * (C @ C.T) - 4.0 * (d + 4) * float(np.finfo(np.float64).eps) * pair
    D = np.sqrt(np.maximum(G, 0.0)) * (1 - REL_SLACK)
    np.fill_diagonal(D, 0.0)
    return D


def bound_params(centers, prev_centers) -> dict:
    """What every block needs for a bounded pass with ``centers`` after ``prev_centers`` (client side).

    Parameters
    ----------
    centers : ndarray of shape (n_clusters, n_features)
        Centers of this pass.
    prev_centers : ndarray of shape (n_clusters, n_features)
        Centers of the previous pass of the same run.

    Returns
    -------
    dict
        ``delta`` (k,): how far each center moved (rounded up); ``delta_max``, ``delta_arg``, ``delta_2nd``:
        the largest movement, its center and the largest among the others; ``sep`` (k,): distance from
        each center to its nearest other center (rounded down); ``c_max``: the largest center norm.
    """
    C = np.asarray(centers, dtype=np.float64)
    k = C.shape[0]
    out = {"sep": np.zeros(k), "c_max": float(np.sqrt((C * C).sum(axis=1)).max()) if k else 0.0,
           "delta": np.zeros(k), "delta_max": 0.0, "delta_arg": -1, "delta_2nd": 0.0}
    if k >= 2:
        G = center_distances_below(C)
        np.fill_diagonal(G, np.inf)
        out["sep"] = G.min(axis=1)
    if prev_centers is not None:
        P = np.asarray(prev_centers, dtype=np.float64)
        delta = np.sqrt(((C - P) ** 2).sum(axis=1)) * (1 + REL_SLACK)
        out["delta"] = delta
        order = np.argsort(-delta, kind="stable")
        out["delta_max"] = float(delta[order[0]])
        out["delta_arg"] = int(order[0])
        out["delta_2nd"] = float(delta[order[1]]) if k >= 2 else 0.0
    return out


@jit
def _sqdist(X, i, C64, a):  # pragma: no cover - compiled
    """||x_i - c_a||^2 in float64, four lanes (a fixed order: the same value wherever the row lives)."""
    d = X.shape[1]
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    f = 0
    while f + 4 <= d:
        t0 = np.float64(X[i, f]) - C64[a, f]
        t1 = np.float64(X[i, f + 1]) - C64[a, f + 1]
        t2 = np.float64(X[i, f + 2]) - C64[a, f + 2]
        t3 = np.float64(X[i, f + 3]) - C64[a, f + 3]
        s0 += t0 * t0
        s1 += t1 * t1
        s2 += t2 * t2
        s3 += t3 * t3
        f += 4
    while f < d:
        t0 = np.float64(X[i, f]) - C64[a, f]
        s0 += t0 * t0
        f += 1
    return (s0 + s1) + (s2 + s3)


@jit
def _check(X, C64, x_sq, labels, upper, lower, todo, sep, delta, c_max2, e_coef, delta_max, delta_arg,
           delta_2nd):  # pragma: no cover - compiled
    """Hamerly's test for every row, after the centers moved by ``delta``: ``upper`` grows by its center's
    move, ``lower`` shrinks by the largest other move; a row keeps its label if the gap between them, or
    between ``upper`` and ``sep``, exceeds the rounding bound.  If not, ``upper`` is tightened to the
    exact distance and the test repeated; the rows that still fail are listed in ``todo``.  Returns how many."""
    n = X.shape[0]
    m = 0
    for i in range(n):
        a = labels[i]
        u = upper[i] + delta[a]
        lo = lower[i] - (delta_2nd if a == delta_arg else delta_max)
        lower[i] = lo
        z = sep[a] - u
        if lo > z:
            z = lo
        e = e_coef * (x_sq[i] + c_max2)
        if z > 0.0 and z * z - u * u > e:
            upper[i] = u
            continue
        u = math.sqrt(_sqdist(X, i, C64, a)) * (1.0 + REL_SLACK)
        upper[i] = u
        z = sep[a] - u
        if lo > z:
            z = lo
        if not (z > 0.0 and z * z - u * u > e):
            todo[m] = i
            m += 1
    return m


@jit
def _best_two(P, p, c_sq):  # pragma: no cover - compiled
    """(smallest, its first index, second smallest) of ``P[p, j] + c_sq[j]`` over the centers; selects,
    not branches (the branch on a new minimum mispredicts)."""
    best = P[p, 0] + c_sq[0]
    lab = 0
    second = np.float32(np.inf)  # float32 unless the products are float64: no conversions in the chain
    for j in range(1, c_sq.shape[0]):
        v = P[p, j] + c_sq[j]
        lt = v < best
        second = best if lt else min(second, v)
        lab = j if lt else lab
        best = v if lt else best
    return best, lab, second


@jit
def _best_two_cols(PT, c_sq, best, lab, second):  # pragma: no cover - compiled
    """:func:`_best_two` of every row at once from the products by centers ``PT`` (k, rows): the rows are the
    SIMD lanes, so the loop over the centers is branch-free and vectorised.  Four centers per sweep over the
    rows: their two smallest (the first index on a tie) are found in registers and merged into the running
    pair, which halves the loads and stores of the running state against one center per sweep.  ``lab``
    is int32 (as many lanes as float32 values)."""
    k, n = PT.shape
    c0 = c_sq[0]
    for i in range(n):
        best[i] = PT[0, i] + c0
        lab[i] = 0
        second[i] = np.inf
    j = 1
    while j + 4 <= k:
        c1, c2, c3, c4 = c_sq[j], c_sq[j + 1], c_sq[j + 2], c_sq[j + 3]
        j1, j2, j3, j4 = np.int32(j), np.int32(j + 1), np.int32(j + 2), np.int32(j + 3)
        for i in range(n):
            v0 = PT[j, i] + c1
            v1 = PT[j + 1, i] + c2
            v2 = PT[j + 2, i] + c3
            v3 = PT[j + 3, i] + c4
            la = v1 < v0  # pair (v0, v1): its min, max and the min's index (the first on a tie)
            ma = v1 if la else v0
            xa = v0 if la else v1
            ia = j2 if la else j1
            lb = v3 < v2  # pair (v2, v3)
            mb = v3 if lb else v2
            xb = v2 if lb else v3
            ib = j4 if lb else j3
            lc = mb < ma  # the smallest of the four, and the second: the other pair's min or the winner's max
            m = mb if lc else ma
            idx = ib if lc else ia
            o = ma if lc else mb
            xw = xb if lc else xa
            m2 = o if o < xw else xw
            b = best[i]
            s2 = second[i]
            lt = m < b
            second[i] = (b if b < m2 else m2) if lt else (m if m < s2 else s2)
            lab[i] = idx if lt else lab[i]
            best[i] = m if lt else b
        j += 4
    while j < k:
        cj = c_sq[j]
        jj = np.int32(j)
        for i in range(n):
            v = PT[j, i] + cj
            b = best[i]
            lt = v < b
            s2 = second[i]
            second[i] = b if lt else (v if v < s2 else s2)
            lab[i] = jj if lt else lab[i]
            best[i] = v if lt else b
        j += 1


@jit
def _resolve(P, by_row, cols, pb, pl, ps, c_sq, X, C64, x_sq, todo, m, labels, upper, lower, c_max2,
             e_coef):  # pragma: no cover
    """Label, bounds of the rows ``todo[:m]``, from their products with the centers: row ``i`` of ``P``
    (``by_row``: the sub-chunk's GEMM) or row ``t`` (a GEMM of gathered rows); with ``cols``, ``P`` is the
    sub-chunk's products by centers (k, rows) and ``pb, pl, ps`` their :func:`_best_two_cols`.

    The label is the first argmin of ``P + ||c||^2``, as Lloyd's, unless another center comes within the
    rounding bound of the minimum: then the centers within it are compared by exact distance (float64
    direct differences; the lower index on an exact tie).  Outside a near-tie the upper bound is the products'
    distance plus the rounding bound, with no exact distance computed; the lower bound is the second smallest
    products' distance minus it."""
    k = c_sq.shape[0]
    for t in range(m):
        i = todo[t]
        p = i if by_row else t
        if cols:
            best, lab, second = pb[i], pl[i], ps[i]
        else:
            best, lab, second = _best_two(P, p, c_sq)
        xs = np.float64(x_sq[i])
        e = e_coef * (xs + c_max2)
        if np.float64(second) - np.float64(best) <= e:  # a near-tie: exact distances decide
            cut = np.float64(best) + e
            dl = np.inf
            for j in range(k):
                pj = P[j, i] if cols else P[p, j]
                if np.float64(pj + c_sq[j]) <= cut:
                    dj = _sqdist(X, i, C64, j)
                    if dj < dl:
                        dl = dj
                        lab = j
            lo2 = xs + np.float64(best) - e
            upper[i] = math.sqrt(dl) * (1.0 + REL_SLACK)
        else:
            # the products' distance plus the rounding bound bounds the exact one from above: no exact
            # distance needed (a later pass tightens the bound only for the rows whose test it fails)
            lo2 = xs + np.float64(second) - e
            u2 = xs + np.float64(best) + e
            upper[i] = math.sqrt(u2 if u2 > 0.0 else 0.0) * (1.0 + REL_SLACK)
        lower[i] = math.sqrt(lo2) if lo2 > 0.0 else 0.0
        labels[i] = lab


@jit
def _accumulate(X, labels, upper, C64, x_sq64, w, row0, sums, weights, counts, sq, dist, hd, hi,
                hn):  # pragma: no cover - compiled
    """Per-center sums, weights, counts (in row order, as the Lloyd kernel) and weighted squared norms
    ``sq``; the far rows' heap, whose candidates (``upper`` above the heap's smallest) get their exact
    distance in ``dist``."""
    n, d = X.shape
    weighted = w.shape[0] > 0
    m = hd.shape[0]
    for i in range(n):
        lab = labels[i]
        counts[lab] += 1
        if m > 0:
            u = upper[i]
            if hn[0] < m or u * u >= hd[0]:
                di = _sqdist(X, i, C64, lab)
                dist[i] = di
                if hn[0] < m or worse(hd[0], hi[0], di, row0 + i):
                    heap_offer(hd, hi, hn, di, row0 + i)
        wi = np.float64(w[i]) if weighted else 1.0
        weights[lab] += wi
        sq[lab] += x_sq64[i] * wi
        for f in range(d):
            sums[lab, f] += np.float64(X[i, f]) * wi


@jit
def _inertia_from_sums(C64, sums, weights, sq):  # pragma: no cover - compiled
    """sum over rows of w ||x - c||^2 = sum over centers of (sum w ||x||^2) - 2 c.(sum w x) + W ||c||^2, in
    float64 (the rows' norms too) and in a fixed order (NumPy's SIMD reductions may depend on alignment),
    so no per-row distance is needed; a center's share is clipped at zero (rounding)."""
    k, d = sums.shape
    total = 0.0
    for a in range(k):
        cs = 0.0
        cc = 0.0
        for f in range(d):
            cs += C64[a, f] * sums[a, f]
            cc += C64[a, f] * C64[a, f]
        v = sq[a] - 2.0 * cs + weights[a] * cc
        if v > 0.0:
            total += v
    return total


@jit
def _norms64(X, out):  # pragma: no cover - compiled
    """Squared row norms in float64, four lanes (a fixed order, as :func:`_sqdist`: the same value wherever
    the row lives; four chains instead of one make long rows about twice as fast)."""
    n, d = X.shape
    for i in range(n):
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        f = 0
        while f + 4 <= d:
            t0 = np.float64(X[i, f])
            t1 = np.float64(X[i, f + 1])
            t2 = np.float64(X[i, f + 2])
            t3 = np.float64(X[i, f + 3])
            s0 += t0 * t0
            s1 += t1 * t1
            s2 += t2 * t2
            s3 += t3 * t3
            f += 4
        while f < d:
            t0 = np.float64(X[i, f])
            s0 += t0 * t0
            f += 1
        out[i] = (s0 + s1) + (s2 + s3)


def _valid(state, n: int, pass_index: int) -> bool:
    if not isinstance(state, dict) or state.get("pass") != pass_index - 1:
        return False
    up = state.get("upper")
    return isinstance(up, np.ndarray) and up.shape == (n,)


def _new_state(X):
    """A block's state before its first pass; the rows' norms are filled by the pass, sub-chunk by sub-chunk
    (while the sub-chunk is in cache for its products)."""
    n = X.shape[0]
    x_sq64 = np.empty(n, dtype=np.float64)
    return {"pass": -1, "labels": np.zeros(n, dtype=np.int32), "upper": np.zeros(n), "lower": np.zeros(n),
            "x_sq64": x_sq64}


def lloyd_block_bounded(X, w, centers, n_far: int, state, bounds: dict):
    """A Lloyd pass over one NumPy block with Hamerly's bounds.

    The rows' squared norms are kept in float64 with the block's state (the bounds and the inertia need them
    more exactly than the dtype's).  A missing state, or one not from the previous pass, means a full pass.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
        The block.
    w : ndarray of shape (n_rows,) or None
        Sample weights.
    centers : ndarray of shape (n_clusters, n_features)
        Centers of this pass.
    n_far : int
        Number of farthest rows to return.
    state : dict or None
        This block's state returned by the previous pass, or None.  Updated in place (it is marked invalid
        while the pass runs, so a pass that fails half-way leaves a state that the next pass refuses).
    bounds : dict
        ``pass`` (the pass's index in the run) and :func:`bound_params` of the pass.

    Returns
    -------
    state : dict
        The block's state after this pass.
    result : tuple
        What :func:`kmeans_dist.kernels.fused.lloyd_block` returns; ``labels`` is the state's array and
        ``dist`` a scratch buffer exact only at the far rows: copy what you keep.
    """
    warm_blas()
    n, d = X.shape
    k = centers.shape[0]
    dt = X.dtype
    C = np.ascontiguousarray(centers, dtype=dt)
    C64 = C.astype(np.float64)
    m2C_T = np.ascontiguousarray((-2 * C).T)
    c_sq = row_norms_sq(C)
    e_coef = 2.0 * (4.0 * (d + 4) * float(np.finfo(dt).eps) + REL_SLACK)
    p = int(bounds["pass"])
    fresh = not _valid(state, n, p)
    if fresh:
        state = _new_state(X)
    state["pass"] = -1  # invalid until the pass completes
    labels, upper, lower, x_sq64 = state["labels"], state["upper"], state["lower"], state["x_sq64"]
    sums = np.zeros((k, d), dtype=np.float64)
    weights = np.zeros(k, dtype=np.float64)
    counts = np.zeros(k, dtype=np.int64)
    sq = np.zeros(k, dtype=np.float64)
    dist = scratch("hdist", (n,), np.float64)
    m = max(0, min(int(n_far), n))
    hd = np.empty(m, dtype=np.float64)
    hi = np.empty(m, dtype=np.int64)
    hn = np.zeros(1, dtype=np.int64)
    w_arr = np.zeros(0, dtype=dt) if w is None else np.asarray(w)
    # the Lloyd kernel's sub-chunks: the products of a sub-chunk stay in cache for _resolve
    sub_rows = int(min(16384, max(512, FUSED_SUB_BYTES // max(1, (d + k) * dt.itemsize))))
    P_buf = scratch("P", (min(sub_rows, max(n, 1)), k), dt)
    cols = columns_layout(d, k)  # full passes (the first one above all) take the Lloyd kernel's faster layout
    sub = min(sub_rows, max(n, 1))
    PT_buf = scratch("hPT", (k, sub) if cols else (0, 0), dt)
    m2C = -2 * C
    direct = not cols and direct_layout(d, k)  # the Lloyd kernel's direct products where it takes them
    pad = np.zeros((DIRECT_TILE, d), dtype=dt) if direct else None
    Ppad = np.empty((DIRECT_TILE, k), dtype=dt) if direct else None
    pb_buf, ps_buf = scratch("hpb", (sub,), dt), scratch("hps", (sub,), dt)
    pl_buf = scratch("hpl", (sub,), np.int32)
    no_b, no_l = np.zeros(0, dtype=dt), np.zeros(0, dtype=np.int64)
    todo_buf = scratch("todo", (min(sub_rows, max(n, 1)),), np.int64)
    G_buf = scratch("gathered", (max(2, int(BLAS_FRACTION * sub_rows) + 1), d), dt)
    sep = np.asarray(bounds["sep"], dtype=np.float64)
    delta = np.asarray(bounds["delta"], dtype=np.float64)
    c_max2 = float(bounds["c_max"]) ** 2
    for start in range(0, n, sub_rows):
        stop = min(start + sub_rows, n)
        Xs = X[start:stop]
        if not Xs.flags.c_contiguous:
            Xs = np.ascontiguousarray(Xs)
        rows = stop - start
        lab_s, up_s, low_s, xs_sq = labels[start:stop], upper[start:stop], lower[start:stop], x_sq64[start:stop]
        todo = todo_buf[:rows]
        if fresh:
            _norms64(Xs, xs_sq)
            todo[:] = np.arange(rows)
            mt = rows
        else:
            mt = _check(Xs, C64, xs_sq, lab_s, up_s, low_s, todo, sep, delta, c_max2, e_coef,
                        float(bounds["delta_max"]), int(bounds["delta_arg"]), float(bounds["delta_2nd"]))
        if mt:
            if mt >= BLAS_FRACTION * rows and cols:  # the sub-chunk's GEMM by centers, as the Lloyd kernel's
                PT = PT_buf[:, :rows]
                np.matmul(m2C, Xs.T, out=PT)
                pb, pl, ps = pb_buf[:rows], pl_buf[:rows], ps_buf[:rows]
                _best_two_cols(PT, c_sq, pb, pl, ps)
                _resolve(PT, True, True, pb, pl, ps, c_sq, Xs, C64, xs_sq, todo, mt, lab_s, up_s, low_s,
                         c_max2, e_coef)
            elif mt >= BLAS_FRACTION * rows:  # the sub-chunk's GEMM, as the Lloyd kernel's
                P = P_buf[:rows]
                if direct:
                    direct_products(Xs, m2C, P, pad, Ppad)
                else:
                    np.matmul(Xs, m2C_T, out=P)
                _resolve(P, True, False, no_b, no_l, no_b, c_sq, Xs, C64, xs_sq, todo, mt, lab_s, up_s,
                         low_s, c_max2, e_coef)
            else:  # a GEMM of the rows that need it (two at least: one row would be a GEMV)
                g = max(mt, 2)
                Xg = G_buf[:g]
                np.take(Xs, todo[:g] if mt >= 2 else np.repeat(todo[:1], 2), axis=0, out=Xg)
                P = P_buf[:g]
                if direct:
                    direct_products(Xg, m2C, P, pad, Ppad)
                else:
                    np.matmul(Xg, m2C_T, out=P)
                _resolve(P, False, False, no_b, no_l, no_b, c_sq, Xs, C64, xs_sq, todo, mt, lab_s, up_s,
                         low_s, c_max2, e_coef)
        _accumulate(Xs, lab_s, up_s, C64, xs_sq, w_arr[start:stop] if w is not None else w_arr, start,
                    sums, weights, counts, sq, dist[start:stop], hd, hi, hn)
    inertia = _inertia_from_sums(C64, sums, weights, sq)
    order = np.lexsort((hi, -hd))
    state["pass"] = p
    return state, (sums, weights, counts, inertia, labels, dist, hi[order])


# the compiled pieces that Elkan's bounded pass (kmeans_dist.kernels.elkan) shares with this one
exact_sqdist = _sqdist
accumulate_bounded = _accumulate
inertia_from_sums = _inertia_from_sums
norms64 = _norms64
