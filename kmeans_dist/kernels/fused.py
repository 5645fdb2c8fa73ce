"""Fused assign-and-accumulate loops for NumPy blocks, compiled with Numba.

:func:`kmeans_dist.kernels.lloyd.lloyd_partial` computes the cross products of a sub-chunk with the
centers by one BLAS GEMM (``P = X_s @ (-2 C)^T``), as scikit-learn does.  What follows the GEMM
(argmin over the centers, the distance to the nearest one, the per-center weighted sums, weights,
counts and inertia, and the rows farthest from their centers) is, in the array-API code path, an
(rows x k) one-hot matrix, a second GEMM ``W^T X_s`` (2·rows·k·d more flops) and a partition of the
distances.  Here it is one compiled loop over the rows instead (the role of scikit-learn's Cython
``_update_chunk_dense``), reading every row of ``X_s`` once while it is still in cache, and keeping
the farthest rows in a small heap.  The loop allocates nothing per row or per sub-chunk, which
matters on Dask workers: they run with ``MALLOC_TRIM_THRESHOLD_`` set, so every large temporary
is a fresh ``mmap`` and a round of page faults.

The product's layout depends on the shape (:func:`columns_layout`): with many centers and few features
the GEMM is ``P^T = (-2C) X_s^T`` and the argmin runs over the centers with the rows as SIMD lanes,
branch-free; otherwise ``P = X_s (-2C)^T`` and the argmin is a branch per center per row.  Centers that
repeat an earlier one bit for bit are skipped by the argmin (:func:`repeated_rows`): BLAS may round the
products of two equal centers differently, and the first copy must take the ties, as in exact arithmetic.
:func:`nearest_block` is the same GEMM and argmin without the accumulation (nearest centers for
``predict`` and for the seeding passes).

The loop visits rows in order and accumulates in float64, so a block's partial is a fixed function
of the block: results stay bit-identical whatever the input chunking, the number of workers or where
the block lives in memory.  Labels are the first minimum of ``||c||^2 - 2 x.c`` evaluated in the
data's dtype, as ``argmin`` in the array-API path; the farthest rows are the same as
:func:`kmeans_dist.kernels.lloyd.farthest` picks (distance descending, ties by row index).

With few centers and long rows (:func:`direct_layout`) the products are not a GEMM but a compiled loop over
tiles of four rows, each product a vector sum over the features in a fixed order (the last rows of a block
are padded to a whole tile), so a row's products are the same wherever it sits; they are rounded differently
from BLAS's, as BLAS's differ between libraries.

Numba is a dependency of the package, but it stays optional at run time: if it cannot be imported
(or ``KMEANS_DIST_NO_NUMBA=1``), the array-API path runs instead.
"""
from __future__ import annotations

import math
import os
import threading

import numpy as np


_LOCAL = threading.local()


def row_norms_sq(X):
    """Squared row norms of a NumPy array, as :func:`kmeans_dist.kernels.row_norms_sq` computes them for NumPy
    (``np.vecdot``: the same values bit for bit)."""
    return np.vecdot(X, X, axis=-1)

try:  # compiled at first use; cached on disk (module-level functions, so Numba's cache applies)
    if os.environ.get("KMEANS_DIST_NO_NUMBA", "") not in ("", "0"):
        raise ImportError("disabled by KMEANS_DIST_NO_NUMBA")
    import numba

    jit = numba.njit(cache=True, nogil=True, boundscheck=False)
except Exception:  # pragma: no cover - numba is a dependency; kept optional at run time
    numba = None

    def jit(f):
        return f


def available() -> bool:
    """Whether the compiled (Numba) kernels can be used in this process.

    Returns
    -------
    bool
        False when Numba is missing or disabled; the array-API path is used then.
    """
    return numba is not None


@jit
def worse(da, ia, db, ib):  # pragma: no cover - compiled
    # farther is better; at equal distance the lower row index is better
    """Order of the farthest-rows heap: True when ``(da, ia)`` is a worse candidate than ``(db, ib)``.

    Farther is better; at equal distance the lower row index is better.

    Parameters
    ----------
    da, db : float
        Distances of the two candidates.
    ia, ib : int
        Their row indices.

    Returns
    -------
    bool
        Whether the first candidate ranks below the second.
    """
    return da < db or (da == db and ia > ib)


@jit
def heap_offer(hd, hi, hn, dv, iv):  # pragma: no cover - compiled
    """Keep the ``m`` best (distance, index) pairs in a heap whose root is the worst of them.

    Parameters
    ----------
    hd, hi : ndarray of shape (m,)
        The heap's distances and indices, updated in place.
    hn : int
        Number of entries in use.
    dv : float
        Distance of the offered row.
    iv : int
        Its index.

    Returns
    -------
    int
        The new number of entries in use.
    """
    m = hd.shape[0]
    n = hn[0]
    if n < m:
        pos = n
        hn[0] = n + 1
        while pos > 0:
            parent = (pos - 1) // 2
            if worse(dv, iv, hd[parent], hi[parent]):
                hd[pos] = hd[parent]
                hi[pos] = hi[parent]
                pos = parent
            else:
                break
        hd[pos] = dv
        hi[pos] = iv
        return
    if not worse(hd[0], hi[0], dv, iv):
        return
    pos = 0
    while True:
        c = 2 * pos + 1
        if c >= m:
            break
        if c + 1 < m and worse(hd[c + 1], hi[c + 1], hd[c], hi[c]):
            c = c + 1
        if worse(hd[c], hi[c], dv, iv):
            hd[pos] = hd[c]
            hi[pos] = hi[c]
            pos = c
        else:
            break
    hd[pos] = dv
    hi[pos] = iv


@jit
def _argmin_rows(P, c_sq, dup, best, labels):  # pragma: no cover - compiled
    # P is (rows, k): a branch per center per row, the first minimum kept; repeated centers skipped as in
    # _argmin_cols
    n, k = P.shape
    for i in range(n):
        b = P[i, 0] + c_sq[0]
        lab = 0
        for j in range(1, k):
            if dup[j]:
                continue
            v = P[i, j] + c_sq[j]
            if v < b:
                b = v
                lab = j
        best[i] = b
        labels[i] = lab


@jit
def _argmin_cols(PT, c_sq, dup, best, labels):  # pragma: no cover - compiled
    # PT is (k, rows): the rows are the vector lanes, one branch-free select per center, so the loop
    # compiles to SIMD; a strict ``<`` over increasing centers keeps the first minimum, as _argmin_rows.
    # Four centers per sweep over the rows: their minimum (the first on a tie) is found in registers and
    # merged into the running one, a quarter of the loads and stores of the running state.
    # A center equal to an earlier one (dup) is skipped: BLAS may round the products of two equal rows of
    # the left operand differently (they sit at different places of its micro-kernel), and the later copy
    # must never win the tie; a group of four with a repeated center goes one center at a time
    k, n = PT.shape
    c0 = c_sq[0]
    for i in range(n):
        best[i] = PT[0, i] + c0
        labels[i] = 0
    j = 1
    while j < k:
        if j + 4 <= k and not (dup[j] or dup[j + 1] or dup[j + 2] or dup[j + 3]):
            c1, c2, c3, c4 = c_sq[j], c_sq[j + 1], c_sq[j + 2], c_sq[j + 3]
            for i in range(n):
                v0 = PT[j, i] + c1
                v1 = PT[j + 1, i] + c2
                v2 = PT[j + 2, i] + c3
                v3 = PT[j + 3, i] + c4
                la = v1 < v0
                ma = v1 if la else v0
                ia = j + 1 if la else j
                lb = v3 < v2
                mb = v3 if lb else v2
                ib = j + 3 if lb else j + 2
                lc = mb < ma
                m = mb if lc else ma
                idx = ib if lc else ia
                b = best[i]
                lt = m < b
                best[i] = m if lt else b
                labels[i] = idx if lt else labels[i]
            j += 4
        else:
            if not dup[j]:
                cj = c_sq[j]
                for i in range(n):
                    v = PT[j, i] + cj
                    b = best[i]
                    lt = v < b
                    best[i] = v if lt else b
                    labels[i] = j if lt else labels[i]
            j += 1


@jit
def _accumulate(X, best, x_sq, w, exact, C, row0, sums, weights, counts, labels, dist,
                hd, hi, hn):  # pragma: no cover - compiled
    n, d = X.shape
    inertia = 0.0
    weighted = w.shape[0] > 0
    keep = hd.shape[0] > 0
    for i in range(n):
        lab = labels[i]
        # di is float64 in both branches: the exact distance (differences in the data's dtype,
        # squares summed in float64), or the GEMM one computed in the data's dtype and clipped
        # at zero, then widened exactly
        di = 0.0
        if exact:
            for f in range(d):
                t = X[i, f] - C[lab, f]
                di += t * t
        else:
            di = np.float64(x_sq[i] + best[i])
            if di < 0.0:
                di = 0.0
        dist[i] = di
        counts[lab] += 1
        # the heap test inline: calling heap_offer for every row (array arguments: reference counts)
        # cost more than the rest of the accumulation; most rows are not among the farthest
        if keep and (hn[0] < hd.shape[0] or worse(hd[0], hi[0], np.float64(dist[i]), row0 + i)):
            heap_offer(hd, hi, hn, np.float64(dist[i]), row0 + i)
        wi = np.float64(w[i]) if weighted else 1.0  # x * 1.0 == x: unweighted sums are exact as before
        weights[lab] += wi
        inertia += di * wi
        for f in range(d):
            sums[lab, f] += np.float64(X[i, f]) * wi
    return inertia


# Reassociation (the vectorised sums of the direct products) and contraction (FMA) only: no flag that assumes
# finite values, so a NaN or an infinity still reaches the caller's finiteness checks.
_FAST = {"reassoc", "contract"}

try:
    jit_fast = numba.njit(cache=True, nogil=True, boundscheck=False, fastmath=_FAST) if numba is not None else jit
except Exception:  # pragma: no cover
    jit_fast = jit

DIRECT_TILE = 4


@jit_fast
def _dots_tile(X, i, M, P, p0):  # pragma: no cover - compiled
    # products of the DIRECT_TILE rows X[i:i+4] with every row of M, written to P[p0:p0+4]; two centers at a time
    # (8 accumulators, each a vector over the features), the last one alone when k is odd
    d = X.shape[1]
    k = M.shape[0]
    j = 0
    while j + 1 < k:
        a0 = X.dtype.type(0)
        a1 = a0
        a2 = a0
        a3 = a0
        b0 = a0
        b1 = a0
        b2 = a0
        b3 = a0
        for t in range(d):
            c = M[j, t]
            e = M[j + 1, t]
            x0 = X[i, t]
            x1 = X[i + 1, t]
            x2 = X[i + 2, t]
            x3 = X[i + 3, t]
            a0 += x0 * c
            a1 += x1 * c
            a2 += x2 * c
            a3 += x3 * c
            b0 += x0 * e
            b1 += x1 * e
            b2 += x2 * e
            b3 += x3 * e
        P[p0, j] = a0
        P[p0 + 1, j] = a1
        P[p0 + 2, j] = a2
        P[p0 + 3, j] = a3
        P[p0, j + 1] = b0
        P[p0 + 1, j + 1] = b1
        P[p0 + 2, j + 1] = b2
        P[p0 + 3, j + 1] = b3
        j += 2
    if j < k:
        a0 = X.dtype.type(0)
        a1 = a0
        a2 = a0
        a3 = a0
        for t in range(d):
            c = M[j, t]
            a0 += X[i, t] * c
            a1 += X[i + 1, t] * c
            a2 += X[i + 2, t] * c
            a3 += X[i + 3, t] * c
        P[p0, j] = a0
        P[p0 + 1, j] = a1
        P[p0 + 2, j] = a2
        P[p0 + 3, j] = a3


@jit_fast
def direct_products(X, M, P, pad, Ppad):  # pragma: no cover - compiled
    # P[i, j] = X[i] . M[j] for every row, by tiles of DIRECT_TILE rows; the last rows are copied into a zeroed
    # tile (pad) so that every row's products come from the same code, whatever its place in the block
    n, d = X.shape
    full = n - n % 4
    for i in range(0, full, 4):
        _dots_tile(X, i, M, P, i)
    if full < n:
        for r in range(4):
            for t in range(d):
                pad[r, t] = X[full + r, t] if full + r < n else 0
        _dots_tile(pad, 0, M, Ppad, 0)
        for r in range(n - full):
            for j in range(M.shape[0]):
                P[full + r, j] = Ppad[r, j]


@jit
def _direct_block(X, M, c_sq, dup, x_sq, w, exact, C, sums, weights, counts, labels, dist, hd, hi, hn,
                  P, best, pad, Ppad, sub):  # pragma: no cover - compiled
    # the direct products, the argmin and the accumulation of sub-chunks of ``sub`` rows, all compiled: a
    # sub-chunk small enough to stay in L1/L2 between its products and its sums is read from memory once
    n = X.shape[0]
    weighted = w.shape[0] > 0
    inertia = 0.0
    for start in range(0, n, sub):
        stop = min(start + sub, n)
        r = stop - start
        Xs = X[start:stop]
        Ps = P[:r]
        bs = best[:r]
        lab = labels[start:stop]
        direct_products(Xs, M, Ps, pad, Ppad)
        _argmin_rows(Ps, c_sq, dup, bs, lab)
        inertia += _accumulate(Xs, bs, x_sq if exact else x_sq[start:stop], w[start:stop] if weighted else w,
                               exact, C, start, sums, weights, counts, lab, dist[start:stop], hd, hi, hn)
    return inertia


DIRECT_SUB_ROWS = 64


def direct_layout(n_features: int, k: int) -> bool:
    """Whether a block's distance products are computed by the compiled direct loop instead of a BLAS GEMM.

    With few centers and long rows the GEMM ``X_s (-2C)^T`` has a skinny right operand (k columns), which
    OpenBLAS runs far below its peak, and the sums that follow read the sub-chunk a second time.  The direct loop
    (:func:`_direct_block`: four rows by two centers at a time, each product a vector sum over the features,
    then the argmin and the sums of 64 rows while they are still in cache) reads the block once.  Measured with
    ``benchmarks/bench_products.py`` (OpenBLAS 0.3.31, one thread, 110 MB blocks, the table in
    ``benchmarks/RESULTS-fit.md``): 0.70-0.87x the GEMM path's time for 784 features and 2-16 centers, 0.76-0.98x
    for 256 features and 2-12 centers, but 1.06-1.12x from 16-24 centers on, and 0.75-1.26x for 128 features,
    0.93-1.21x for 64 (so those keep the GEMM).

    Parameters
    ----------
    n_features, k : int
        Features of the block and number of centers.

    Returns
    -------
    bool
        True for the direct loop.
    """
    return k <= DIRECT_MAX_K and n_features >= DIRECT_MIN_FEATURES


DIRECT_MAX_K = 12
DIRECT_MIN_FEATURES = 256


def repeated_rows(C):
    """Which rows of ``C`` repeat an earlier row bit for bit (the later copies of equal centers).

    Parameters
    ----------
    C : ndarray of shape (k, n_features)
        Centers (C-contiguous).

    Returns
    -------
    ndarray of shape (k,), bool
    """
    k = C.shape[0]
    dup = np.zeros(k, dtype=np.bool_)
    if k > 1:
        rows = np.ascontiguousarray(C).view(np.dtype((np.void, C.dtype.itemsize * C.shape[1]))).ravel()
        _, first = np.unique(rows, return_index=True)
        dup[:] = True
        dup[first] = False
    return dup


def columns_layout(n_features: int, k: int) -> bool:
    """Whether the distance products of a block are computed as ``(-2C) @ X_s^T`` (centers by rows).

    With few features and many centers, the argmin over the centers costs more than the GEMM in the
    usual ``X_s @ (-2C)^T`` layout (a data-dependent branch per center per row).  In the transposed
    layout the rows are the SIMD lanes and the argmin is branch-free, while the GEMM with ``X_s^T`` as
    its right operand is slower when the rows are long.  Measured with OpenBLAS 0.3.31 (SkylakeX) on
    one thread, the transposed layout wins from ``k >= 2 * n_features`` on (0.66x the time per block
    for 32 features and 64 centers, 0.45x for 256 centers).

    Parameters
    ----------
    n_features, k : int
        Features of the block and number of centers.

    Returns
    -------
    bool
        True for the transposed layout.
    """
    return k >= 2 * n_features


@jit
def _clipped_dist(x_sq, best, dist):  # pragma: no cover - compiled
    for i in range(best.shape[0]):
        v = x_sq[i] + best[i]
        dist[i] = 0 if v < 0 else v  # NaN stays NaN, as np.maximum(v, 0): the caller's finiteness check sees it


class _Products:
    """The centers' side of a block's distance GEMMs, prepared once per call: the layout
    (:func:`columns_layout`), ``-2C`` in it, the centers' squared norms and the repeated centers."""

    def __init__(self, centers, dt, n_features: int):
        self.C = C = np.ascontiguousarray(centers, dtype=dt)
        k = C.shape[0]
        self.cols = columns_layout(n_features, k)
        self.direct = not self.cols and direct_layout(n_features, k)
        # exact scaling: products with -2C are -2 times the products with C
        self.m2 = -2 * C if (self.cols or self.direct) else np.ascontiguousarray((-2 * C).T)
        if self.direct:
            self.pad = np.zeros((DIRECT_TILE, n_features), dtype=C.dtype)
            self.Ppad = np.empty((DIRECT_TILE, k), dtype=C.dtype)
        self.c_sq = row_norms_sq(C)
        self.dup = repeated_rows(C)

    def buffer(self, name: str, sub: int):
        k = self.C.shape[0]
        return scratch(name, (k, sub) if self.cols else (sub, k), self.C.dtype)

    def nearest(self, Xs, P_buf, best, labels):
        """First minimum of ``||c||^2 - 2 x.c`` over the centers for the rows of the sub-chunk ``Xs``."""
        r = Xs.shape[0]
        if self.cols:
            P = P_buf[:, :r]
            np.matmul(self.m2, Xs.T, out=P)
            _argmin_cols(P, self.c_sq, self.dup, best, labels)
        else:
            P = P_buf[:r]
            if self.direct:
                direct_products(Xs, self.m2, P, self.pad, self.Ppad)
            else:
                np.matmul(Xs, self.m2, out=P)
            _argmin_rows(P, self.c_sq, self.dup, best, labels)


def products_for(centers, dt, n_features: int) -> _Products:
    """The centers' side of the distance products (:class:`_Products`), reused across the blocks of a pass.

    Every block of a pass gets the same centers; this thread's last one is kept, with a copy of the centers it
    was built from, and reused when the centers are equal bit for bit (a few microseconds against the tens it
    takes to build, once per block).
    """
    dt = np.dtype(dt)
    last = getattr(_LOCAL, "products", None)
    if last is not None:
        key, prod = last
        if (key.dtype == dt and key.shape == centers.shape and prod.C.shape[1] == n_features
                and np.array_equal(key, centers)):
            return prod
    key = np.array(centers, dtype=dt, order="C", copy=True)  # private: a caller's later writes never reach it
    prod = _Products(key, dt, n_features)
    _LOCAL.products = (key, prod)
    return prod


def nearest_block(X, centers, x_sq=None, sub_rows: int = 8192):
    """Nearest center of every row of a NumPy block and the squared distance to it, in one pass.

    The same values as :func:`kmeans_dist.kernels.assign_labels` computes in the array-API path (labels:
    the first minimum of ``||c||^2 - 2 x.c``; distances ``||x||^2`` plus that minimum, clipped at zero, in
    the data's dtype), without an ``(n, k)`` matrix: a sub-chunk's products and its argmin stay in cache.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
        The block (float32 or float64).
    centers : ndarray of shape (n_clusters, n_features)
        Centers, cast to ``X``'s dtype.
    x_sq : ndarray of shape (n_rows,) or None, default=None
        Squared row norms of ``X`` (computed when None).
    sub_rows : int, default=8192
        Rows per distance GEMM.

    Returns
    -------
    labels : ndarray of shape (n_rows,), int64
    sq_dist : ndarray of shape (n_rows,), ``X.dtype``
    """
    warm_blas()
    n, d = X.shape
    dt = X.dtype
    prod = products_for(centers, dt, d)
    labels = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=dt)
    sub = max(1, min(int(sub_rows), n))
    P_buf = prod.buffer("nP", sub)
    best_buf = scratch("nbest", (sub,), dt)
    for start in range(0, n, sub):
        stop = min(start + sub, n)
        Xs = X[start:stop]
        if not Xs.flags.c_contiguous:
            Xs = np.ascontiguousarray(Xs)
        best = best_buf[:stop - start]
        prod.nearest(Xs, P_buf, best, labels[start:stop])
        _clipped_dist(row_norms_sq(Xs) if x_sq is None else x_sq[start:stop], best, dist[start:stop])
    return labels, dist


def scratch(name: str, shape, dtype):
    """A per-thread buffer reused across calls (grown when too small).

    Parameters
    ----------
    name : str
        Name of the buffer.
    shape : int or tuple of int
        Shape wanted.
    dtype : dtype
        Dtype wanted.

    Returns
    -------
    ndarray
        A buffer of that shape and dtype; its contents are undefined and valid until the next call with
        the same name in this thread.
    """
    key = (name, np.dtype(dtype).str, len(shape))
    cache = getattr(_LOCAL, "bufs", None)
    if cache is None:
        cache = _LOCAL.bufs = {}
    size = math.prod(shape)
    buf = cache.get(key)
    if buf is None or buf.size < size:
        buf = cache[key] = np.empty(size, dtype=dtype)
    return buf[:size].reshape(shape)


_WARM = False


def warm_blas():
    """Run one small GEMM with a long inner dimension, once per process.

    Measured with OpenBLAS 0.3.30/0.3.31 on Zen: until the process has run a GEMM with an inner dimension of
    several hundred, the skinny products of the Lloyd kernel (inner dimension = n_features, e.g. 32) run
    about 1.6x slower, for good.  This costs well under a millisecond.
    """
    global _WARM
    if not _WARM:
        _WARM = True
        np.ones((256, 1024), dtype=np.float32) @ np.ones((1024, 16), dtype=np.float32)


def lloyd_block(X, w, centers, x_sq, sub_rows: int, exact_inertia: bool, n_far: int, keep_labels: bool):
    """Assign the rows of ``X`` (NumPy) to ``centers`` and accumulate, in one pass.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
        The block.
    w : ndarray of shape (n_rows,) or None
        Sample weights (None: all ones).
    centers : ndarray of shape (n_clusters, n_features)
        Centers, in ``X``'s dtype.
    x_sq : ndarray of shape (n_rows,)
        Squared row norms of ``X``.
    sub_rows : int
        Rows per distance GEMM.
    exact_inertia : bool
        Compute the inertia by direct differences instead of from the GEMM's distances.
    n_far : int
        Number of farthest rows to return.
    keep_labels : bool
        Return fresh ``labels`` and ``dist`` arrays instead of per-thread scratch buffers.

    Returns
    -------
    tuple
        ``(sums (k, d) float64, weights (k,) float64, counts (k,) int64, inertia float, labels int64,
        dist X.dtype, far (m,) int64)``, ``far`` being the block-local indices of the ``n_far`` rows
        farthest from their centers, farthest first.  ``labels`` and ``dist`` are per-thread scratch
        buffers unless ``keep_labels``: valid until the next call in this thread.
    """
    warm_blas()
    n, d = X.shape
    k = centers.shape[0]
    dt = X.dtype
    prod = products_for(centers, dt, d)
    C = prod.C
    sums = np.zeros((k, d), dtype=np.float64)
    weights = np.zeros(k, dtype=np.float64)
    counts = np.zeros(k, dtype=np.int64)
    if keep_labels:
        labels = np.empty(n, dtype=np.int64)
        dist = np.empty(n, dtype=dt)
    else:
        labels = scratch("labels", (n,), np.int64)
        dist = scratch("dist", (n,), dt)
    m = max(0, min(int(n_far), n))
    hd = np.empty(m, dtype=np.float64)
    hi = np.empty(m, dtype=np.int64)
    hn = np.zeros(1, dtype=np.int64)
    w_arr = np.zeros(0, dtype=dt) if w is None else np.asarray(w)
    empty = np.zeros(0, dtype=dt)
    if prod.direct:
        sub = DIRECT_SUB_ROWS
        xs_sq = empty if exact_inertia else (row_norms_sq(X) if x_sq is None else x_sq)
        inertia = _direct_block(X if X.flags.c_contiguous else np.ascontiguousarray(X), prod.m2, prod.c_sq,
                                prod.dup, xs_sq, w_arr, bool(exact_inertia), C, sums, weights, counts, labels,
                                dist, hd, hi, hn, prod.buffer("P", sub), scratch("best", (sub,), dt), prod.pad,
                                prod.Ppad, sub)
        order = np.lexsort((hi, -hd))
        return sums, weights, counts, inertia, labels, dist, hi[order]
    sub = min(sub_rows, max(n, 1))
    P_buf = prod.buffer("P", sub)
    best_buf = scratch("best", (sub,), dt)
    inertia = 0.0
    for start in range(0, n, sub_rows):
        stop = min(start + sub_rows, n)
        Xs = X[start:stop]
        if not Xs.flags.c_contiguous:
            Xs = np.ascontiguousarray(Xs)
        best = best_buf[:stop - start]
        lab = labels[start:stop]
        prod.nearest(Xs, P_buf, best, lab)
        if exact_inertia:
            xs_sq = empty
        elif x_sq is None:
            xs_sq = row_norms_sq(Xs)
        else:
            xs_sq = x_sq[start:stop]
        inertia += _accumulate(Xs, best, xs_sq, w_arr[start:stop] if w is not None else w_arr,
                               bool(exact_inertia), C, start, sums, weights, counts, lab,
                               dist[start:stop], hd, hi, hn)
    order = np.lexsort((hi, -hd))  # farthest first, ties by index
    return sums, weights, counts, inertia, labels, dist, hi[order]


@jit
def _moments(X, mean, m2):  # pragma: no cover - compiled
    n, d = X.shape
    bad = 0
    for i in range(n):
        for f in range(d):
            v = np.float64(X[i, f])
            if not np.isfinite(v):
                bad += 1
            mean[f] += v
    if bad:
        return bad
    for f in range(d):
        mean[f] /= n
    for i in range(n):
        for f in range(d):
            t = np.float64(X[i, f]) - mean[f]
            m2[f] += t * t
    return 0


def moments_block(X):
    """Column means and sums of squared deviations of a NumPy block, in float64, in two compiled passes.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
        The block (at least one row).

    Returns
    -------
    tuple or None
        ``(mean, M2)``, each of shape (n_features,); None when the block holds a NaN or an infinity (the
        caller then names it).
    """
    d = X.shape[1]
    mean = np.zeros(d, dtype=np.float64)
    m2 = np.zeros(d, dtype=np.float64)
    Xc = X if X.flags.c_contiguous else np.ascontiguousarray(X)
    if _moments(Xc, mean, m2):
        return None
    return mean, m2
