"""k-medians and k-medoids over the blocks of :mod:`kmeans_dist.chunked.driver` (private computations:
the estimators validate).

- :func:`cluster_medians`: the exact weighted component-wise median of every cluster, without gathering
  rows: per-cluster, per-feature histograms refined pass by pass (see :mod:`kmeans_dist.kernels.medians`)
  until the bucket holding each median holds at most ``gather_max`` rows, whose values then come back.
- :func:`kmedians_on_blocks`: Lloyd-style k-medians (L1 assignment, median update).
- :func:`clara_on_blocks`: PAM on samples fetched through the driver, every candidate medoid set scored over
  all the data in one pass, the best kept (PAM itself when the sample is the whole data).

The median of a cluster with weights ``w`` is ``(t1 + t2) / 2`` with ``t1`` the smallest value whose
cumulative weight ``F(t1)`` reaches half the cluster's weight ``W`` and ``t2`` the smallest value with
``F(t2) > W / 2``: with unit weights, exactly ``np.median``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..kernels.medians import (combine_median_partials, combine_medoid_cost, combine_range, medoid_cost_partial,
                               median_pass_partial, pam, range_partial)
from .lloyd import fetch_rows

__all__ = ["feature_range", "cluster_medians", "kmedians_on_blocks", "KMediansResult", "clara_on_blocks",
           "ClaraResult", "medoid_pass", "kmedians_final_pass", "CELLS"]

CELLS = 2**17        # histogram cells (searches x buckets) per pass, at most
GATHER_VALUES = 2**20  # values gathered per pass, at most
MAX_PASSES = 200     # a safety net: every pass strictly shrinks every interval, so this is never reached


def feature_range(blocks) -> np.ndarray:
    """One pass: per-feature ``[min, max]`` (float64, shape (2, n_features))."""
    r = blocks.map_reduce(range_partial, combine_range)
    return np.stack([r["min"], r["max"]])


def _empty_spec():
    return {"s": np.zeros(0, dtype=np.int64), "lo": np.zeros(0), "hi": np.zeros(0)}


def _spec(items):
    if not items:
        return _empty_spec()
    s, lo, hi = zip(*items)
    return {"s": np.asarray(s, dtype=np.int64), "lo": np.asarray(lo, dtype=np.float64),
            "hi": np.asarray(hi, dtype=np.float64)}


class _Searches:
    """Client-side state of the median searches of one set of labels (one per cluster and feature)."""

    def __init__(self, weight, ranges, k, d, n_buckets, gather_max):
        self.k, self.d, self.B, self.T = k, d, n_buckets, gather_max
        self.half = np.asarray(weight, dtype=np.float64) / 2
        self.t1, self.t2 = {}, {}
        self.hist, self.gather, self.above = {}, {}, {}
        for j in range(k):
            if not weight[j] > 0:
                continue
            for f in range(d):
                s = j * d + f
                lo, hi = float(ranges[0, f]), float(ranges[1, f])
                if lo == hi:  # a constant feature: every value is the median
                    self.t1[s] = self.t2[s] = lo
                else:
                    self.hist[s] = (lo, hi, 0.0)

    def done(self):
        return not (self.hist or self.gather or self.above)

    def specs(self):
        h = _spec([(s, lo, hi) for s, (lo, hi, _) in sorted(self.hist.items())])
        g = _spec([(s, lo, hi) for s, (lo, hi, _) in sorted(self.gather.items())])
        a = _spec([(s, t, t) for s, t in sorted(self.above.items())])
        return h, g, a

    def _found_t1(self, s, t1, F):
        self.t1[s] = t1
        if F == self.half[s // self.d]:  # the median is between t1 and the next value of positive weight
            self.above[s] = t1
        else:
            self.t2[s] = t1

    def update(self, part, h, g, a):
        B = self.B
        new_hist, new_gather = {}, {}
        for pos, s in enumerate(h["s"].tolist()):
            lo, hi, wb = self.hist[s]
            sl = slice(pos * B, (pos + 1) * B)
            cnt, ws, vmin, vmax = part["h_cnt"][sl], part["h_w"][sl], part["h_min"][sl], part["h_max"][sl]
            cum = wb + np.cumsum(ws)
            hit = np.flatnonzero(cum >= self.half[s // self.d])
            b = int(hit[0]) if hit.size else int(np.flatnonzero(cnt)[-1])  # rounding of float weights: the last
            below = float(cum[b - 1]) if b > 0 else wb
            nlo, nhi = float(vmin[b]), float(vmax[b])
            if nlo == nhi:
                self._found_t1(s, nlo, float(cum[b]))
            elif cnt[b] <= self.T:
                new_gather[s] = (nlo, nhi, below)
            else:
                new_hist[s] = (nlo, nhi, below)
        if g["s"].size:
            order = np.lexsort((part["g_v"], part["g_s"]))  # by search, then value
            gs, gv, gw = part["g_s"][order], part["g_v"][order], part["g_w"][order]
            starts = np.searchsorted(gs, g["s"])
            ends = np.searchsorted(gs, g["s"], side="right")
            for s, a0, a1 in zip(g["s"].tolist(), starts, ends):
                lo, hi, wb = self.gather[s]
                v, w = gv[a0:a1], gw[a0:a1]
                cum = wb + np.cumsum(w)
                hit = np.flatnonzero(cum >= self.half[s // self.d])
                i = int(hit[0]) if hit.size else v.size - 1
                t1 = float(v[i])
                last = int(np.searchsorted(v, t1, side="right")) - 1  # F(t1) counts every copy of t1
                F = float(cum[last])
                self.t1[s] = t1
                if F == self.half[s // self.d]:
                    nxt = v[(v > t1) & (w > 0)]
                    if nxt.size:
                        self.t2[s] = float(nxt[0])
                    else:
                        self.above[s] = t1
                else:
                    self.t2[s] = t1
        for pos, s in enumerate(a["s"].tolist()):
            m = float(part["a_min"][pos])
            self.t2[s] = m if np.isfinite(m) else self.t1[s]
            del self.above[s]
        for s in g["s"].tolist():
            del self.gather[s]
        self.hist = new_hist
        self.gather.update(new_gather)

    def medians(self, centers, dtype):
        C = np.array(centers, dtype=dtype, copy=True)
        for s, t1 in self.t1.items():
            j, f = divmod(s, self.d)
            a, b = np.asarray(t1, dtype=dtype), np.asarray(self.t2[s], dtype=dtype)
            C[j, f] = (a + b) / dtype.type(2)
        return C


def _buckets(n_searches, n_buckets=None):
    if n_buckets is not None:
        return int(n_buckets)
    return int(np.clip(CELLS // max(1, n_searches), 16, 256))


def cluster_medians(blocks, centers, ranges, *, n_buckets=None, gather_max=None, n_far=0):
    """Exact weighted component-wise median of every cluster of the L1-nearest-``centers`` labelling.

    Parameters
    ----------
    blocks : LocalBlocks, DaskBlocks or StreamBlocks
        The data.
    centers : ndarray of shape (n_clusters, n_features)
        The centers the labels come from.
    ranges : ndarray of shape (2, n_features)
        Per-feature minimum and maximum over all of X (:func:`feature_range`).
    n_buckets : int or None, default=None
        Buckets per histogram (None: as many as fit in ``CELLS`` cells, 16 to 256).
    gather_max : int or None, default=None
        Rows per search below which its values are gathered (None: ``GATHER_VALUES`` shared by the searches).
    n_far : int, default=0
        Rows farthest from their center returned with the assignment (to re-seed empty clusters).

    Returns
    -------
    medians : ndarray of shape (n_clusters, n_features)
        The medians; an empty cluster keeps its center.
    assignment : dict
        ``count``, ``weight``, ``inertia`` (weighted L1) of the labelling, and the far rows.
    n_passes : int
        Passes over the data (the assignment pass included).
    """
    C = np.asarray(centers, dtype=blocks.dtype)
    k, d = C.shape
    B = _buckets(k * d, n_buckets)
    T = int(gather_max) if gather_max is not None else max(B, GATHER_VALUES // max(1, k * d))
    h = _spec([(s, float(ranges[0, s % d]), float(ranges[1, s % d])) for s in range(k * d)
               if ranges[0, s % d] < ranges[1, s % d]])
    part = blocks.map_reduce(median_pass_partial, combine_median_partials, C, h, _empty_spec(), _empty_spec(), B,
                             assign=True, n_far=n_far)
    assignment = {key: part[key] for key in ("count", "weight", "inertia", "far_d", "far_i", "far_x")}
    searches = _Searches(part["weight"], ranges, k, d, B, T)
    # the searches of the empty clusters were dropped; keep the histogram positions of the others
    keep = np.asarray([s in searches.hist for s in h["s"].tolist()], dtype=bool)
    if not keep.all():
        part = _subset_hist(part, keep, B)
        h = {key: v[keep] for key, v in h.items()}
    g, a = _empty_spec(), _empty_spec()
    n_passes = 1
    searches.update(part, h, g, a)
    while not searches.done():
        if n_passes >= MAX_PASSES:  # pragma: no cover - see MAX_PASSES
            searches.gather.update(searches.hist)
            searches.hist = {}
        h, g, a = searches.specs()
        part = blocks.map_reduce(median_pass_partial, combine_median_partials, C, h, g, a, B)
        n_passes += 1
        searches.update(part, h, g, a)
    return searches.medians(C, blocks.dtype), assignment, n_passes


def _subset_hist(part, keep, B):
    cell = np.repeat(keep, B)
    out = dict(part)
    for key in ("h_cnt", "h_w", "h_min", "h_max"):
        out[key] = part[key][cell]
    return out


@dataclass
class KMediansResult:
    """The result of :func:`kmedians_on_blocks`."""
    centers: np.ndarray
    inertia: float
    n_iter: int
    history: list = field(default_factory=list)
    converged: bool = False
    counts: np.ndarray | None = None
    labels: np.ndarray | None = None
    n_passes: int = 0


def kmedians_final_pass(blocks, centers, labels=False) -> dict:
    """Weighted L1 inertia, counts (and labels) of the L1-nearest-``centers`` labelling, in one pass."""
    C = np.asarray(centers, dtype=blocks.dtype)
    e = _empty_spec()
    return blocks.map_reduce(median_pass_partial, combine_median_partials, C, e, e, e, 1, assign=True, labels=labels)


def kmedians_on_blocks(blocks, centers, *, max_iter=300, tol_abs=0.0, ranges=None, callback=None,
                       final_labels=False, n_buckets=None, gather_max=None) -> KMediansResult:
    """k-medians: label every row by its L1-nearest center, move every center to the exact component-wise
    median of its cluster; until the squared center shift is at most ``tol_abs`` or ``max_iter``.

    An empty cluster is re-seeded on the row farthest from its center (the farthest first).  With
    ``tol_abs=0`` the iterations stop when the centers no longer change: every center is then the median
    of its cluster, and the final labels are the ones those medians were computed from.
    """
    C = np.array(centers, dtype=blocks.dtype, copy=True)
    k = C.shape[0]
    if ranges is None:
        ranges = feature_range(blocks)
    history, it, converged, passes = [], 0, False, 0
    while it < max_iter:
        t0 = time.perf_counter()
        new, asg, n_p = cluster_medians(blocks, C, ranges, n_buckets=n_buckets, gather_max=gather_max, n_far=k)
        passes += n_p
        empty = np.flatnonzero(~(asg["weight"] > 0))
        for j, row in zip(empty, asg["far_x"]):
            new[j] = row
        shift = float(((new.astype(np.float64) - C.astype(np.float64)) ** 2).sum())
        it += 1
        rec = {"iteration": it, "inertia": float(asg["inertia"]), "center_shift": shift,
               "seconds": time.perf_counter() - t0, "n_passes": int(n_p), "n_relocated": int(empty.size)}
        history.append(rec)
        C = new
        stop = shift <= tol_abs
        if callback is not None and callback({**rec, "centers": C, "history": history, "converged": stop}) is True:
            break
        if stop:
            converged = True
            break
    f = kmedians_final_pass(blocks, C, labels=final_labels)
    return KMediansResult(centers=C, inertia=float(f["inertia"]), n_iter=it, history=history, converged=converged,
                          counts=f["count"], labels=f.get("labels"), n_passes=passes + 1)


# ------------------------------------------------------------------------------------------------
# k-medoids: PAM on samples, candidates scored over all the data
# ------------------------------------------------------------------------------------------------

@dataclass
class ClaraResult:
    """The result of :func:`clara_on_blocks`."""
    medoids: np.ndarray          # rows, (k, d)
    medoid_indices: np.ndarray   # global row indices, (k,)
    inertia: float
    n_iter: int
    converged: bool
    counts: np.ndarray
    labels: np.ndarray | None = None
    candidate_costs: np.ndarray | None = None
    finite: bool = True


def medoid_pass(blocks, M, n_sets, metric, labels=False) -> dict:
    """One pass: the weighted cost of each of ``n_sets`` medoid sets stacked in ``M`` (with labels for one)."""
    return blocks.map_reduce(medoid_cost_partial, combine_medoid_cost, np.asarray(M, dtype=blocks.dtype), n_sets,
                             metric, labels=labels)


def clara_on_blocks(blocks, n_clusters, metric, rng, *, n_sampling, n_sampling_iter=5, max_iter=300,
                    init="build", final_labels=False) -> ClaraResult:
    """CLARA: PAM on ``n_sampling_iter`` random samples of ``n_sampling`` rows (drawn without replacement,
    independently, fetched through the driver in one round trip), every candidate set scored over all the
    data in one pass, the best kept (the first at a tie).  A sample of all the rows is PAM itself."""
    n = blocks.n_samples
    k = int(n_clusters)
    if n_sampling >= n:
        samples = [np.arange(n, dtype=np.int64)]
    else:
        samples = [np.sort(rng.choice(n, size=int(n_sampling), replace=False)) for _ in range(int(n_sampling_iter))]
    union = np.unique(np.concatenate(samples))
    rows, ws = fetch_rows(blocks, union)
    cands = []
    for idx in samples:
        pos = np.searchsorted(union, idx)
        med, _, n_it, conv = pam(rows[pos], k, metric, None if ws is None else ws[pos], max_iter=max_iter, init=init,
                                 random_state=int(rng.integers(2**31 - 1)))
        cands.append((idx[med], n_it, conv))
    costs = None
    best = 0
    if len(cands) > 1:
        M = np.concatenate([rows[np.searchsorted(union, c[0])] for c in cands])
        costs = medoid_pass(blocks, M, len(cands), metric)["cost"]
        best = int(np.argmin(costs))
    med_idx, n_it, conv = cands[best]
    M = rows[np.searchsorted(union, med_idx)]
    f = medoid_pass(blocks, M, 1, metric, labels=final_labels)
    return ClaraResult(medoids=M, medoid_indices=med_idx, inertia=float(f["cost"][0]), n_iter=int(n_it),
                       converged=bool(conv), counts=f["count"], labels=f.get("labels"), candidate_costs=costs,
                       finite=bool(f["finite"]))
