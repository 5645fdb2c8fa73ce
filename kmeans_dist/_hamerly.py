"""Exact Lloyd iterations that skip most distance computations: Hamerly's bounds (``algorithm="hamerly"``).

Hamerly (2010), "Making k-means even faster": every row keeps one lower bound ``l`` on its distance to
the second-closest center.  After the centers move by ``delta_j``, a row assigned to ``a`` keeps ``a``
if its distance ``u`` to the moved ``c_a`` is below both ``l - max_{j != a} delta_j`` and
``s_a - u`` (``s_a`` the distance from ``c_a`` to its nearest other center; triangle inequality).
Only the rows that fail the test get their distances to all ``k`` centers; the others cost one
``d``-length distance, which is also the one the inertia needs.  When the centers settle, a Lloyd pass
drops from ``2 n k d`` flops to about ``3 n d``.

**Same labels as Lloyd.**  Lloyd's label is the first argmin of ``||c||^2 - 2 x.c`` computed in the
data's dtype, which carries rounding error; a bound proves the order of the *exact* distances.  So a row
keeps its label only when the exact gap exceeds a bound on that rounding error,
``E_i = (4 (d + 4) eps + 1e-12) (||x_i|| + max_j ||c_j||)^2`` (the standard error bound of a dot product,
twice, for the two distances compared, with room to spare); near-ties are recomputed.  The rows that
need all their distances get them from BLAS: the sub-chunk's GEMM when many of its rows do (the same GEMM
on the same sub-chunk as :func:`kmeans_dist._fused.lloyd_block`: Lloyd's products bit for bit), otherwise
a GEMM of just those rows.  On OpenBLAS a row's products can change
in the last bit with its position in the matrix, so when two centers come within the rounding bound of
each other for a row, neither GEMM can be trusted to order them as Lloyd's did; such a near-tie is decided
by the exact distances (float64 direct differences, the lower index on an exact tie), which depend on the
row alone.  Labels therefore equal Lloyd's except at these near-ties (in float64 a gap of about 1e-12 of
the squared norms; in float32, where random clusters split between two centers give a few hundred per
million rows, about 1e-5), and where the labels agree the per-center sums, accumulated in row order in
float64 as in the Lloyd kernel, are bit-identical to Lloyd's.  scikit-learn's ``algorithm="elkan"``
differs from its ``"lloyd"`` the same way (it compares direct distances).  Which rows need their distances,
and what decides them, is a function of the row and the centers' history, so the results are the same
whatever the input chunking and the number of workers.  The inertia in ``history_`` is the sum of the exact
distances (direct differences in float64), so it differs from Lloyd's in the last digits; the final
inertia is the same final pass in both.

**State.**  The labels and lower bounds of a block live next to the block, in a per-process table keyed
by the block array (a weak reference: they go with it), tagged with the run and the pass they belong
to.  A pass whose table entry is missing or stale (a new run, a block recomputed on another worker
after a failure, a resumed run, data streamed from the store) computes every distance for that block
and starts its bounds again: the bounds only ever save work, never change results.  Memory: 12 bytes per
row (int32 label, float64 bound).

Runs on NumPy blocks with Numba (the fused Lloyd kernel's conditions); elsewhere (CuPy, array-API
namespaces, no Numba) a pass is a plain Lloyd pass.
"""
from __future__ import annotations

import math
import weakref

import numpy as np

from . import _fused
from ._fused import _heap_offer, _jit, _scratch, _warm_blas, _worse
from .kernels import row_norms_sq

__all__ = ["bound_params", "lloyd_block_bounded", "clear_state"]

# fraction of a sub-chunk's rows above which their distances come from one BLAS GEMM of the sub-chunk
BLAS_FRACTION = 0.2
REL_SLACK = 1e-12

_STATE: dict = {}  # id(X) -> (weakref(X), token, pass index, labels int32, lower float64)


def clear_state():
    _STATE.clear()


def bound_params(centers, prev_centers) -> dict:
    """What every block needs for a bounded pass with ``centers`` after ``prev_centers`` (client side).

    ``delta`` (k,): how far each center moved (rounded up), ``delta_max``/``delta_arg``/``delta_2nd``: the
    largest movement, its center and the largest among the others; ``half_sep`` (k,): distance from each
    center to its nearest other center (rounded down); ``c_max``: the largest center norm.
    """
    C = np.asarray(centers, dtype=np.float64)
    k = C.shape[0]
    out = {"half_sep": np.zeros(k), "c_max": float(np.sqrt((C * C).sum(axis=1)).max()) if k else 0.0,
           "delta_max": 0.0, "delta_arg": -1, "delta_2nd": 0.0}
    if k >= 2:
        G = ((C[:, None, :] - C[None, :, :]) ** 2).sum(axis=2)
        np.fill_diagonal(G, np.inf)
        out["half_sep"] = np.sqrt(G.min(axis=1)) * (1 - REL_SLACK)
    if prev_centers is not None:
        P = np.asarray(prev_centers, dtype=np.float64)
        delta = np.sqrt(((C - P) ** 2).sum(axis=1)) * (1 + REL_SLACK)
        order = np.argsort(-delta, kind="stable")
        out["delta_max"] = float(delta[order[0]])
        out["delta_arg"] = int(order[0])
        out["delta_2nd"] = float(delta[order[1]]) if k >= 2 else 0.0
    return out


@_jit
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


@_jit
def _check(X, C64, x_sq, labels, lower, dist, todo, half_sep, c_max, e_coef, delta_max, delta_arg,
           delta_2nd):  # pragma: no cover - compiled
    """Bounds test for every row; rows that keep their label get ``dist`` (exact) and a new ``lower``;
    the others are listed in ``todo``.  Returns how many."""
    n = X.shape[0]
    m = 0
    for i in range(n):
        a = labels[i]
        da = _sqdist(X, i, C64, a)
        u = math.sqrt(da) * (1.0 + 1e-12)
        lo = lower[i] - (delta_2nd if a == delta_arg else delta_max)
        t = half_sep[a] - u
        if t > lo:
            lo = t
        r = math.sqrt(max(np.float64(x_sq[i]), 0.0)) + c_max
        if lo > 0.0 and lo * lo - u * u > e_coef * r * r:
            lower[i] = lo
            dist[i] = da
        else:
            todo[m] = i
            m += 1
    return m


@_jit
def _resolve(P, by_row, c_sq, X, C64, x_sq, todo, m, labels, lower, dist, c_max, e_coef):  # pragma: no cover
    """Label, exact distance and new lower bound of the rows ``todo[:m]``, from their products with the
    centers: row ``i`` of ``P`` (``by_row``: the sub-chunk's GEMM) or row ``t`` (a GEMM of gathered rows).

    The label is the first argmin of ``P + ||c||^2``, as Lloyd's, unless another center comes within the
    rounding bound of the minimum: then the centers within it are compared by exact distance (float64
    direct differences; the lower index on an exact tie)."""
    k = c_sq.shape[0]
    for t in range(m):
        i = todo[t]
        p = i if by_row else t
        best = P[p, 0] + c_sq[0]
        lab = 0
        second = np.inf
        for j in range(1, k):
            v = P[p, j] + c_sq[j]
            if v < best:
                second = best
                best = v
                lab = j
            elif v < second:
                second = v
        r = math.sqrt(max(np.float64(x_sq[i]), 0.0)) + c_max
        e = e_coef * r * r
        if np.float64(second) - np.float64(best) <= e:  # a near-tie: exact distances decide
            cut = np.float64(best) + e
            dl = np.inf
            for j in range(k):
                if np.float64(P[p, j] + c_sq[j]) <= cut:
                    dj = _sqdist(X, i, C64, j)
                    if dj < dl:
                        dl = dj
                        lab = j
            lo2 = np.float64(x_sq[i]) + np.float64(best) - e
            dist[i] = dl
        else:
            lo2 = np.float64(x_sq[i]) + np.float64(second) - e
            dist[i] = _sqdist(X, i, C64, lab)
        lower[i] = math.sqrt(lo2) if lo2 > 0.0 else 0.0
        labels[i] = lab


@_jit
def _accumulate(X, labels, dist, w, row0, sums, weights, counts, hd, hi, hn):  # pragma: no cover - compiled
    """Per-center sums, weights, counts and inertia in row order (as the Lloyd kernel), far rows heap."""
    n, d = X.shape
    weighted = w.shape[0] > 0
    keep = hd.shape[0] > 0
    inertia = 0.0
    for i in range(n):
        lab = labels[i]
        di = dist[i]
        counts[lab] += 1
        if keep and (hn[0] < hd.shape[0] or _worse(hd[0], hi[0], di, row0 + i)):  # see _fused
            _heap_offer(hd, hi, hn, di, row0 + i)
        wi = np.float64(w[i]) if weighted else 1.0
        weights[lab] += wi
        inertia += di * wi
        for f in range(d):
            sums[lab, f] += np.float64(X[i, f]) * wi
    return inertia


def _state_for(X, token, pass_index: int):
    """(labels, lower, fresh): this block's bounds from the previous pass of run ``token``, or new arrays
    (``fresh``) when there are none; the entry is re-tagged with ``pass_index``."""
    key = id(X)
    hit = _STATE.get(key)
    n = X.shape[0]
    if hit is not None and hit[0]() is X and hit[1] == token and hit[2] == pass_index - 1:
        _STATE[key] = (hit[0], token, pass_index, hit[3], hit[4])
        return hit[3], hit[4], False
    labels = np.zeros(n, dtype=np.int32)
    lower = np.zeros(n, dtype=np.float64)
    try:
        ref = weakref.ref(X, lambda _r, key=key: _STATE.pop(key, None))
    except TypeError:  # pragma: no cover - NumPy arrays take weak references
        return labels, lower, True
    _STATE[key] = (ref, token, pass_index, labels, lower)
    return labels, lower, True


def _forget(X):
    _STATE.pop(id(X), None)


def lloyd_block_bounded(X, w, centers, x_sq, n_far: int, bounds: dict):
    """A Lloyd pass over one NumPy block with Hamerly's bounds; returns what
    :func:`kmeans_dist._fused.lloyd_block` returns (``labels`` and ``dist`` are the block's state /
    a scratch buffer: copy them to keep them).  ``bounds``: ``token`` (the run), ``pass`` (its index in
    the run) and :func:`bound_params` of the pass."""
    _warm_blas()
    n, d = X.shape
    k = centers.shape[0]
    dt = X.dtype
    C = np.ascontiguousarray(centers, dtype=dt)
    C64 = C.astype(np.float64)
    m2C_T = np.ascontiguousarray((-2 * C).T)
    c_sq = row_norms_sq(C)
    if x_sq is None:
        x_sq = row_norms_sq(X)
    e_coef = 4.0 * (d + 4) * float(np.finfo(dt).eps) + REL_SLACK
    labels, lower, fresh = _state_for(X, bounds["token"], int(bounds["pass"]))
    sums = np.zeros((k, d), dtype=np.float64)
    weights = np.zeros(k, dtype=np.float64)
    counts = np.zeros(k, dtype=np.int64)
    dist = _scratch("hdist", (n,), np.float64)
    m = max(0, min(int(n_far), n))
    hd = np.empty(m, dtype=np.float64)
    hi = np.empty(m, dtype=np.int64)
    hn = np.zeros(1, dtype=np.int64)
    w_arr = np.zeros(0, dtype=dt) if w is None else np.asarray(w)
    # the Lloyd kernel's sub-chunks, so the BLAS products of a sub-chunk are Lloyd's bit for bit
    sub_rows = int(min(16384, max(512, _fused_sub_bytes() // max(1, (d + k) * dt.itemsize))))
    P_buf = _scratch("P", (min(sub_rows, max(n, 1)), k), dt)
    todo_buf = _scratch("todo", (min(sub_rows, max(n, 1)),), np.int64)
    G_buf = _scratch("gathered", (max(2, int(BLAS_FRACTION * sub_rows) + 1), d), dt)
    half_sep = np.asarray(bounds["half_sep"], dtype=np.float64)
    c_max = float(bounds["c_max"])
    inertia = 0.0
    try:
        for start in range(0, n, sub_rows):
            stop = min(start + sub_rows, n)
            Xs = X[start:stop]
            if not Xs.flags.c_contiguous:
                Xs = np.ascontiguousarray(Xs)
            rows = stop - start
            lab_s, low_s, dist_s, xs_sq = labels[start:stop], lower[start:stop], dist[start:stop], x_sq[start:stop]
            todo = todo_buf[:rows]
            if fresh:
                todo[:] = np.arange(rows)
                mt = rows
            else:
                mt = _check(Xs, C64, xs_sq, lab_s, low_s, dist_s, todo, half_sep, c_max, e_coef,
                            float(bounds["delta_max"]), int(bounds["delta_arg"]), float(bounds["delta_2nd"]))
            if mt:
                if mt >= BLAS_FRACTION * rows:  # the sub-chunk's GEMM, as the Lloyd kernel's
                    P = P_buf[:rows]
                    np.matmul(Xs, m2C_T, out=P)
                    _resolve(P, True, c_sq, Xs, C64, xs_sq, todo, mt, lab_s, low_s, dist_s, c_max, e_coef)
                else:  # a GEMM of the rows that need it (two at least: one row would be a GEMV)
                    g = max(mt, 2)
                    Xg = G_buf[:g]
                    np.take(Xs, todo[:g] if mt >= 2 else np.repeat(todo[:1], 2), axis=0, out=Xg)
                    P = P_buf[:g]
                    np.matmul(Xg, m2C_T, out=P)
                    _resolve(P, False, c_sq, Xs, C64, xs_sq, todo, mt, lab_s, low_s, dist_s, c_max, e_coef)
            inertia += _accumulate(Xs, lab_s, dist_s, w_arr[start:stop] if w is not None else w_arr, start,
                                   sums, weights, counts, hd, hi, hn)
    except BaseException:  # half-updated bounds must not be trusted by the next pass
        _forget(X)
        raise
    order = np.lexsort((hi, -hd))
    return sums, weights, counts, inertia, labels, dist, hi[order]


def _fused_sub_bytes() -> int:
    from .kernels import FUSED_SUB_BYTES

    return FUSED_SUB_BYTES


def available() -> bool:
    return _fused.available()
