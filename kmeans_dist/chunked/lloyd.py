"""Chunked Lloyd and mini-batch k-means over the blocks of :mod:`kmeans_dist.chunked.driver`.

These are the private computations: they assume validated input (the estimators validate).  One
Lloyd iteration is one pass over the data and one scheduler round trip: map
:func:`~kmeans_dist.kernels.lloyd_partial` over the blocks, reduce the partials as a fixed tree,
finalize the centers on the client.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..kernels import sparse
from ..kernels.xp import get_namespace, to_numpy
from ..kernels import (combine_lloyd_partials, finalize_centers, hamerly_partial, lloyd_partial, minibatch_update,
                       row_norms_sq_cached)
from ..kernels.hamerly import bound_params
from ..kernels.stats import absolute_tolerance, check_stats, combine_stats, stats_chunk
from ..kernels.tree import tree_combine
from ..kernels.elkan import elkan_params, elkan_partial

__all__ = ["lloyd", "lloyd_on_blocks", "LloydResult", "data_stats", "final_pass", "minibatch_on_blocks",
           "minibatch_step"]


@dataclass
class LloydResult:
    """The result of :func:`lloyd` / :func:`lloyd_on_blocks`.

    Attributes
    ----------
    centers : ndarray of shape (n_clusters, n_features)
        Final centers.
    inertia : float
        Exact inertia of the final centers (direct differences).
    n_iter : int
        Lloyd iterations run (resumed ones included).
    history : list of dict
        One record per iteration: ``iteration``, ``inertia``, ``center_shift``, ``seconds``.
    converged : bool
        Whether the tolerance was reached before ``max_iter``.
    """
    centers: np.ndarray
    inertia: float
    n_iter: int
    history: list = field(default_factory=list)
    converged: bool = False
    counts: np.ndarray | None = None
    weights: np.ndarray | None = None
    labels: np.ndarray | None = None


def _centers_for(X, centers):
    if sparse.is_sparse(X):  # sparse blocks take dense NumPy centers
        return np.asarray(centers, dtype=X.dtype)
    xp = get_namespace(X)
    return xp.asarray(np.asarray(centers, dtype=to_numpy(X[:1, ...]).dtype))


def _lloyd_chunk(X, w, offset, centers):
    return lloyd_partial(X, w, _centers_for(X, centers), offset=offset, x_sq=row_norms_sq_cached(X))


def _hamerly_chunk(X, w, offset, state, centers, bounds):
    return hamerly_partial(X, w, _centers_for(X, centers), state, bounds, offset=offset)


def _elkan_chunk(X, w, offset, state, centers, params):
    return elkan_partial(X, w, _centers_for(X, centers), state, params, offset=offset)


def _elkan_stream_chunk(X, w, offset, centers, params):
    """An Elkan pass over a block that is not kept between passes: no state, every distance computed."""
    return elkan_partial(X, w, _centers_for(X, centers), None, params, offset=offset)[1]


def _final_chunk(X, w, offset, centers, labels=False):
    p = lloyd_partial(X, w, _centers_for(X, centers), offset=offset, exact_inertia=True, n_far=0,
                      return_labels=labels)
    out = {"inertia": p["inertia"], "count": p["count"], "weight": p["weight"]}
    if labels:
        out["labels"] = to_numpy(p["labels"]).astype(np.int64, copy=False)
    return out


def _combine_final(parts):
    out = {"inertia": parts[0]["inertia"], "count": parts[0]["count"].copy(), "weight": parts[0]["weight"].copy()}
    for p in parts[1:]:
        out["inertia"] += p["inertia"]
        out["count"] += p["count"]
        out["weight"] += p["weight"]
    if "labels" in parts[0]:  # consecutive blocks, in order
        out["labels"] = np.concatenate([p["labels"] for p in parts])
    return out


def data_stats(blocks) -> dict:
    """One pass: n, mean, variance per feature; raises if X holds NaN/inf (naming block and rows)."""
    stats = blocks.map_reduce(stats_chunk, combine_stats)
    check_stats(stats, blocks.block_rows, chunks=blocks.source_chunks)
    return {"n": stats["n"], "mean": stats["mean"], "var": stats["M2"] / stats["n"]}


def final_pass(blocks, centers, labels: bool = False) -> dict:
    """Exact inertia (direct differences, as scikit-learn's ``_inertia``) and cluster sizes; with
    ``labels``, also every row's nearest center (host NumPy, int64), in the same pass."""
    return blocks.map_reduce(_final_chunk, _combine_final, np.asarray(centers), labels=labels)


def lloyd_on_blocks(blocks, centers, *, max_iter: int = 300, tol_abs: float = 0.0, callback=None,
                    start_iteration: int = 0, history=None, final: bool = True,
                    final_labels: bool = False, algorithm: str = "lloyd") -> LloydResult:
    """Lloyd iterations from ``centers`` until ``center shift^2 <= tol_abs`` or ``max_iter``.

    ``algorithm="hamerly"`` runs the same iterations with Hamerly's bounds kept next to the blocks, as
    per-block state through ``blocks.map_state`` (:mod:`kmeans_dist.kernels.hamerly`; streamed blocks, which do
    not stay in memory, run plain Lloyd): most
    distance computations are skipped once the centers settle; the
    labels and centers are Lloyd's (see there for the one exception, near-ties within rounding), the
    per-iteration inertia comes from per-center sums in float64.

    ``algorithm="elkan"`` runs the same iterations with Elkan's bounds (:mod:`kmeans_dist.kernels.elkan`): one
    lower bound per center and row, kept as per-block state through ``blocks.map_state`` (next to the blocks:
    in the list this function holds for local blocks, in worker memory for Dask blocks; streamed blocks run
    every pass without state).  Labels, centers and history equal Hamerly's bit for bit.

    ``start_iteration``/``history`` resume an interrupted run: pass the checkpointed centers, the number
    of iterations already done and their history; the result equals an uninterrupted run bit for bit.
    """
    centers = np.array(centers, dtype=blocks.dtype, copy=True)
    history = list(history or [])
    converged = False
    it = int(start_iteration)
    # bounds need blocks that stay in memory between passes; streamed blocks are read anew every pass
    bounded = algorithm == "hamerly" and centers.shape[0] >= 2 and getattr(blocks, "kind", "") != "stream"
    elkan = algorithm == "elkan" and centers.shape[0] >= 2
    states = None  # Hamerly's and Elkan's per-block states, owned here (see LocalBlocks/DaskBlocks.map_state)
    prev = None
    while it < max_iter:
        t0 = time.perf_counter()
        if bounded:
            bounds = {"pass": it - int(start_iteration), **bound_params(centers, prev)}
            prev = centers
            states, parts = blocks.map_state(_hamerly_chunk, states, centers, bounds)
            part = tree_combine(parts, combine_lloyd_partials, blocks.split_every)
        elif elkan:
            params = elkan_params(centers, prev, it - int(start_iteration))
            prev = centers
            if getattr(blocks, "kind", "") == "stream":
                part = blocks.map_reduce(_elkan_stream_chunk, combine_lloyd_partials, centers, params)
            else:
                states, parts = blocks.map_state(_elkan_chunk, states, centers, params)
                part = tree_combine(parts, combine_lloyd_partials, blocks.split_every)
        else:
            part = blocks.map_reduce(_lloyd_chunk, combine_lloyd_partials, centers)
        new, n_reloc = finalize_centers(part, centers)
        shift = float(((new.astype(np.float64) - centers.astype(np.float64)) ** 2).sum())
        centers = new
        it += 1
        rec = {"iteration": it, "inertia": float(part["inertia"]), "center_shift": shift,
               "seconds": time.perf_counter() - t0, "n_relocated": int(n_reloc)}
        history.append(rec)
        stop = shift <= tol_abs
        if callback is not None:
            ret = callback({**rec, "centers": centers, "history": history, "converged": stop})
            if ret is True:
                break
        if stop:
            converged = True
            break
    states = None  # the bounds go (on workers, with the last references to their tasks)
    res = LloydResult(centers=centers, inertia=float("nan"), n_iter=it, history=history, converged=converged)
    if final:
        f = final_pass(blocks, centers, labels=final_labels)
        res.inertia, res.counts, res.weights = float(f["inertia"]), f["count"], f["weight"]
        res.labels = f.get("labels")
    return res


def lloyd(X, centers, *, sample_weight=None, max_iter: int = 300, tol: float = 1e-4, client=None, callback=None,
          start_iteration: int = 0, history=None, block_rows="auto", split_every: int = 8, persist="auto",
          algorithm: str = "lloyd", engine: str = "auto") -> LloydResult:
    """Full Lloyd k-means from given ``centers`` on chunked X.

    Parameters
    ----------
    X : array-like, dask array, xarray.DataArray or str of shape (n_samples, n_features)
        NumPy, dask, xarray or a Zarr path/URL.
    centers : array of shape (n_clusters, n_features)
        Initial centers.
    sample_weight : array-like of shape (n_samples,) or None, default=None
        Weight of every row.
    max_iter : int, default=300
        Maximum number of iterations.
    tol : float, default=1e-4
        Tolerance on the squared center shift, relative to the mean feature variance (as scikit-learn).
    client : distributed.Client, None or False, default=None
        None: the active client if any; False: in process.
    callback : callable or None, default=None
        Called on the client after each iteration with a dict (iteration, centers, inertia,
        center_shift, seconds, history); returning True stops early.
    start_iteration : int, default=0
        Iterations already done (resuming from a checkpoint).
    history : list of dict or None, default=None
        Their history (resuming).
    block_rows : "auto" or int, default="auto"
        Rows per canonical block.
    split_every : int, default=8
        Fan-in of the reduction tree.
    persist : "auto" or bool, default="auto"
        Keep the blocks in worker memory or stream them.
    algorithm : {"lloyd", "elkan", "hamerly"}, default="lloyd"
        Plain Lloyd, or Elkan's or Hamerly's bounded Lloyd (same iterations).
    engine : {"auto", "dask", "ray", "local"}, default="auto"
        Where the passes run, as :func:`~kmeans_dist.chunked.driver.make_blocks` (the result is the same).

    Returns
    -------
    LloydResult

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.chunked import lloyd
    >>> X = np.array([[0.0], [1.0], [10.0], [11.0]])
    >>> res = lloyd(X, np.array([[0.0], [10.0]]), client=False)
    >>> res.centers.ravel().tolist(), res.inertia, res.converged
    ([0.5, 10.5], 1.0, True)
    """
    from .driver import make_blocks
    from ..data import as_dask_array

    Xd = as_dask_array(X)
    blocks = make_blocks(Xd, sample_weight, block_rows=block_rows, split_every=split_every, client=client,
                         persist=persist, engine=engine)
    try:
        stats = data_stats(blocks)
        tol_abs = absolute_tolerance(stats["var"], tol)
        return lloyd_on_blocks(blocks, np.asarray(centers, dtype=blocks.dtype), max_iter=max_iter, tol_abs=tol_abs,
                               callback=callback, start_iteration=start_iteration, history=history,
                               algorithm=algorithm)
    finally:
        blocks.release()


# ------------------------------------------------------------------------------------------------
# mini-batch (Sculley 2010, per-center counts as scikit-learn's MiniBatchKMeans)
# ------------------------------------------------------------------------------------------------

def minibatch_step(Xb, wb, centers, weight_sums, rng, *, reassignment_ratio=0.01, random_reassign=False):
    """One mini-batch step on an in-memory batch: returns (centers, weight_sums, batch_inertia, n_reassigned)."""
    part = lloyd_partial(Xb, wb, _centers_for(Xb, centers), n_far=0)
    new, W = minibatch_update(centers, weight_sums, part)
    n_re = 0
    if random_reassign and reassignment_ratio > 0:
        to_re = W < reassignment_ratio * W.max()
        nb = Xb.shape[0]
        if to_re.sum() > 0.5 * nb:
            dont = np.argsort(W)[int(0.5 * nb):]
            to_re[dont] = False
        n_re = int(to_re.sum())
        if n_re:
            pick = rng.choice(nb, size=n_re, replace=False)
            new[to_re] = sparse.take_rows(Xb, pick) if sparse.is_sparse(Xb) else np.asarray(to_numpy(Xb))[pick]
            W[to_re] = np.min(W[~to_re])
    return new, W, part["inertia"], n_re


def _fetch_rows_chunk(X, w, offset, state, rows):
    r = np.asarray(rows, dtype=np.int64)
    local = r[(r >= offset) & (r < offset + X.shape[0])] - offset
    if local.size == 0:
        return state, None
    order = np.argsort(local, kind="stable")
    if sparse.is_sparse(X):  # sparse rows stay sparse (CSR)
        xs = sparse.as_csr(X)[local[order]]
    else:
        xp = get_namespace(X)
        xs = to_numpy(xp.take(X, xp.asarray(local[order]), axis=0))
    ws = None if w is None else np.asarray(to_numpy(w))[local[order]]
    return state, (local[order] + offset, xs, ws)


def fetch_rows(blocks, rows):
    """Rows (with their weights) at global indices ``rows`` (any order, repeats allowed): one round trip."""
    rows = np.asarray(rows, dtype=np.int64)
    uniq = np.unique(rows)
    _, res = blocks.map_state(_fetch_rows_chunk, None, uniq, only={blocks.block_of(r) for r in uniq})
    idx = np.concatenate([r[0] for r in res if r is not None])
    got = [r[1] for r in res if r is not None]
    if sparse.is_sparse(got[0]):
        import scipy.sparse as sp

        xs = sparse.as_csr(sp.vstack(got, format="csr"))
    else:
        xs = np.concatenate(got)
    has_w = any(r is not None and r[2] is not None for r in res)
    ws = np.concatenate([r[2] for r in res if r is not None]) if has_w else None
    pos = np.searchsorted(idx, rows)
    return xs[pos], (None if ws is None else ws[pos])


def minibatch_on_blocks(blocks, centers, *, batch_size=1024, max_iter=100, max_steps=None, tol_abs=0.0,
                        max_no_improvement=10, reassignment_ratio=0.01, rng=None, callback=None,
                        prefetch_bytes=64 * 2**20):
    """Mini-batch k-means: batches drawn uniformly (O(batch) per step), weights applied in the update.

    Batches for several steps are fetched from the workers in one round trip; the steps run on the
    client.  Stops after ``max_iter`` epochs, on center shift <= ``tol_abs`` or when the smoothed batch
    inertia has not improved for ``max_no_improvement`` steps (scikit-learn's rule).
    """
    rng = rng or np.random.default_rng()
    n, d = blocks.n_samples, blocks.n_features
    b = min(batch_size, n)
    n_steps = max_steps if max_steps is not None else max(1, (max_iter * n) // b)
    centers = np.array(centers, dtype=blocks.dtype, copy=True)
    k = centers.shape[0]
    W = np.zeros(k)
    ewa, ewa_min, no_improve = None, None, 0
    history = []
    row_bytes = d * blocks.dtype.itemsize
    if getattr(blocks, "sparse", False):  # rows travel as CSR: about 1% of the dense size assumed
        row_bytes = max(1, row_bytes // 100)
    per_fetch = max(1, int(prefetch_bytes // max(1, b * row_bytes)))
    step = 0
    since_reassign = 0
    t0 = time.perf_counter()
    converged = False
    while step < n_steps:
        m = min(per_fetch, n_steps - step)
        idx = rng.integers(0, n, size=m * b)
        Xs, ws = fetch_rows(blocks, idx)
        for j in range(m):
            Xb = Xs[j * b:(j + 1) * b]
            wb = None if ws is None else ws[j * b:(j + 1) * b]
            since_reassign += b
            rr = bool((W == 0).any() or since_reassign >= 10 * k)
            if rr:
                since_reassign = 0
            old = centers
            centers, W, inertia, n_re = minibatch_step(Xb, wb, centers, W, rng, reassignment_ratio=reassignment_ratio,
                                                      random_reassign=rr)
            step += 1
            batch_inertia = inertia / b
            shift = float(((centers.astype(np.float64) - old.astype(np.float64)) ** 2).sum())
            alpha = min(1.0, b * 2.0 / (n + 1))
            ewa = batch_inertia if ewa is None else ewa * (1 - alpha) + batch_inertia * alpha
            rec = {"iteration": step, "inertia": float(batch_inertia), "ewa_inertia": float(ewa),
                   "center_shift": shift, "seconds": time.perf_counter() - t0, "n_reassigned": n_re}
            history.append(rec)
            t0 = time.perf_counter()
            if callback is not None and callback({**rec, "centers": centers}) is True:
                return centers, W, step, history, False
            if tol_abs > 0 and shift <= tol_abs:
                converged = True
                break
            if ewa_min is None or ewa < ewa_min:
                no_improve, ewa_min = 0, ewa
            else:
                no_improve += 1
            if max_no_improvement is not None and no_improve >= max_no_improvement:
                converged = True
                break
        if converged:
            break
    return centers, W, step, history, converged
