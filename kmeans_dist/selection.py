"""Choosing the number of clusters k: elbow (Kneedle), silhouette, Calinski-Harabasz, Davies-Bouldin
and the gap statistic, on chunked data.

Layout, so that the k values can be fitted in one call or as separate tasks (e.g. one Prefect task
per k):

- :func:`reference_bounds` — one small dict describing the box the gap statistic's reference data
  are drawn from (the data's bounding box, or its principal-component box), computed in one or
  three passes over X;
- :func:`evaluate_k` — fits k-means for ONE k and returns a small dict *row* (inertia, silhouette,
  Calinski-Harabasz, Davies-Bouldin, log W_k and the B reference log W*_kb);
- :func:`assemble` — rows -> an ``xarray.Dataset`` indexed by ``k`` (with the gap, its standard
  deviation and standard error) and a recommendation per criterion;
- :func:`choose_k` — all of the above in one call, returning a :class:`KSelection` that can
  :meth:`~KSelection.plot` the curves with the recommended k marked.

Gap statistic (Tibshirani, Walther & Hastie 2001): ``W_k`` is the pooled within-cluster sum of
squares around the cluster means; ``Gap(k) = mean_b log W*_kb - log W_k`` over ``B`` reference data
sets drawn uniformly over the box; ``sd_k`` is the standard deviation of the ``log W*_kb`` (1/B,
as in the paper) and ``s_k = sd_k sqrt(1 + 1/B)``; the recommended k is the smallest with
``Gap(k) >= Gap(k+1) - s_{k+1}``.  Reference data sets are generated chunk by chunk on the workers
(chunk ``c`` of reference ``b`` from ``numpy.random.default_rng([seed, b, c])``), never on the client,
and are the same for every k (so the evaluation of one k is reproducible on its own).

k-means is :class:`kmeans_dist.KMeans` on chunked data; data (and reference sets) that are a single
in-memory chunk of at most ``inmemory_bytes`` are clustered inside one task with the in-memory kernel
:func:`kmeans_dist.kernels.kmeans_inmemory` (what the estimator does with one block, without its
per-pass scheduling overhead).
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from .chunked.driver import canonical_rows, compute, delayed_tree, row_blocks
from .data import as_dask_array
from .plots import pyplot

__all__ = [
    "CRITERIA",
    "kneedle",
    "gap_choice",
    "reference_bounds",
    "reference_data",
    "evaluate_k",
    "assemble",
    "recommend",
    "choose_k",
    "KSelection",
    "plot_selection",
]

CRITERIA = ("elbow", "silhouette", "calinski_harabasz", "davies_bouldin", "gap")
INMEMORY_BYTES = 64 * 2**20


# --------------------------------------------------------------------------------------------------
# recommendations from curves
# --------------------------------------------------------------------------------------------------

def kneedle(x, y, *, curve: str = "convex", direction: str = "decreasing"):
    """The knee of a curve by the Kneedle method (Satopaa et al. 2011), offline variant.

    Normalises x and y to [0, 1], flips the curve so that it is concave increasing, and returns the
    x at the maximum of the difference curve ``y_n - x_n`` (ties: the smallest x).  For an inertia
    curve use the defaults (convex, decreasing).  Returns None for fewer than 3 points or a flat
    curve.  Points where x or y is not finite are dropped first; the points need not be sorted.

    Parameters
    ----------
    x : array-like of shape (n_points,)
        Abscissae (e.g. the values of k).
    y : array-like of shape (n_points,)
        Ordinates (e.g. the inertia, or its log).
    curve : {"convex", "concave"}, default="convex"
        Shape of the curve.
    direction : {"decreasing", "increasing"}, default="decreasing"
        Whether y decreases or increases with x.

    Returns
    -------
    float or None
        The x of the knee, or None when there is no knee to find.

    Examples
    --------
    >>> from kmeans_dist.selection import kneedle
    >>> kneedle([1, 2, 3, 4, 5, 6], [100, 40, 20, 15, 12, 10])
    3.0
    >>> print(kneedle([1, 2], [10, 5]))
    None
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3:
        return None
    order = np.argsort(x)
    x, y = x[order], y[order]
    xr, yr = x.max() - x.min(), y.max() - y.min()
    if xr == 0 or yr == 0:
        return None
    xn = (x - x.min()) / xr
    yn = (y - y.min()) / yr
    if direction == "decreasing":
        yn = 1.0 - yn            # now increasing
    if curve == "convex":
        # a convex decreasing curve flipped vertically is concave increasing; a convex increasing
        # one is flipped about both axes
        if direction == "increasing":
            xn, yn = 1.0 - xn[::-1], 1.0 - yn[::-1]
            x = x[::-1]
    diff = yn - xn
    return x[int(np.argmax(diff))].item()


def gap_choice(ks, gap, s):
    """Smallest k with ``Gap(k) >= Gap(k+1) - s_{k+1}`` (consecutive ks); None if no k qualifies.

    Tibshirani, Walther & Hastie's rule; only pairs of consecutive k (``k`` and ``k + 1`` both
    present) are compared.

    Parameters
    ----------
    ks : array-like of int of shape (n_k,)
        The values of k, sorted increasingly.
    gap : array-like of shape (n_k,)
        ``Gap(k)`` for each k.
    s : array-like of shape (n_k,)
        ``s_k = sd_k * sqrt(1 + 1/B)`` for each k.

    Returns
    -------
    int or None
        The recommended k.

    Examples
    --------
    >>> from kmeans_dist.selection import gap_choice
    >>> gap_choice([1, 2, 3], [0.1, 0.9, 0.95], [0.05, 0.05, 0.05])
    2
    >>> print(gap_choice([1, 2, 3], [0.1, 0.5, 0.9], [0.01, 0.01, 0.01]))
    None
    """
    ks = np.asarray(ks)
    gap = np.asarray(gap, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    for i in range(len(ks) - 1):
        if ks[i + 1] != ks[i] + 1:
            continue
        if gap[i] >= gap[i + 1] - s[i + 1]:
            return int(ks[i])
    return None


# --------------------------------------------------------------------------------------------------
# reference data for the gap statistic
# --------------------------------------------------------------------------------------------------

def _minmax_chunk(x):
    x = np.asarray(x, dtype=np.float64)
    return {"lo": x.min(axis=0), "hi": x.max(axis=0), "sum": x.sum(axis=0), "n": np.array([x.shape[0]])}


def _minmax_combine(parts):
    return {"lo": np.min([p["lo"] for p in parts], axis=0), "hi": np.max([p["hi"] for p in parts], axis=0),
            "sum": np.sum([p["sum"] for p in parts], axis=0), "n": np.sum([p["n"] for p in parts], axis=0)}


def _scatter_chunk(x, mean):
    xc = np.asarray(x, dtype=np.float64) - mean
    return {"s": xc.T @ xc}


def _proj_minmax_chunk(x, mean, V):
    z = (np.asarray(x, dtype=np.float64) - mean) @ V
    return {"lo": z.min(axis=0), "hi": z.max(axis=0), "sum": z.sum(axis=0), "n": np.array([z.shape[0]])}


def _canonical_chunks(Xd) -> tuple:
    """The driver's canonical row blocks of X: a function of its shape and dtype, never of its chunking."""
    n = int(Xd.shape[0])
    rows = canonical_rows(n, int(Xd.shape[1]), Xd.dtype.itemsize)
    return tuple(min(rows, n - o) for o in range(0, n, rows))


def _reduce(X, chunk_fn, combine, *args):
    from dask import delayed

    args_d = [delayed(a, pure=True) if isinstance(a, np.ndarray) else a for a in args]
    parts = [delayed(chunk_fn, pure=True)(b, *args_d) for b in row_blocks(X, _canonical_chunks(X)[0])]
    (res,) = compute(delayed_tree(parts, combine))
    return res


def reference_bounds(X, method: str = "uniform", *, client=None) -> dict:
    """The box reference data are drawn from (a small dict, picklable, to pass to :func:`evaluate_k`).

    ``"uniform"``: the data's bounding box (one pass: per-feature min and max).
    ``"pca"``: the box of the data in its principal-component coordinates (Tibshirani et al.'s
    method (b)); three passes: mean, scatter matrix (d x d, float64), projected min and max.

    Parameters
    ----------
    X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
        Samples (a Zarr store path is opened lazily).
    method : {"uniform", "pca"}, default="uniform"
        The box: the bounding box, or the principal-component box.
    client : distributed.Client, optional
        Client to compute on (None: the active one if any, else the threaded scheduler).

    Returns
    -------
    dict
        ``method``, ``lo`` and ``hi`` (the box's corners, float64 of shape (n_features,)),
        ``n_features``; with ``"pca"`` also ``mean`` and ``V`` (the principal axes, columns by
        decreasing variance).

    Raises
    ------
    ValueError
        If ``method`` is neither ``"uniform"`` nor ``"pca"``.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.selection import reference_bounds
    >>> b = reference_bounds(np.array([[0., 1.], [2., 3.], [1., 5.]]))
    >>> b["method"], b["lo"].tolist(), b["hi"].tolist()
    ('uniform', [0.0, 1.0], [2.0, 5.0])
    """
    Xd = as_dask_array(X)
    with _as_current(client):
        mm = _reduce(Xd, _minmax_chunk, _minmax_combine)
        if method == "uniform":
            return {"method": "uniform", "lo": mm["lo"], "hi": mm["hi"], "n_features": Xd.shape[1]}
        if method != "pca":
            raise ValueError(f"reference must be 'uniform' or 'pca', got {method!r}")
        mean = mm["sum"] / mm["n"][0]
        S = _reduce(Xd, _scatter_chunk, _sum_s, mean)["s"]
        _, V = np.linalg.eigh(S)
        V = V[:, ::-1].copy()
        pm = _reduce(Xd, _proj_minmax_chunk, _minmax_combine, mean, V)
        return {"method": "pca", "lo": pm["lo"], "hi": pm["hi"], "mean": mean, "V": V, "n_features": Xd.shape[1]}


def _sum_s(parts):
    out = parts[0]["s"].copy()
    for p in parts[1:]:
        out += p["s"]
    return {"s": out}


def _ref_rows(bounds, rows, seed, b, c, dtype):
    rng = np.random.default_rng([seed, b, c])
    lo, hi = bounds["lo"], bounds["hi"]
    Z = lo + rng.random((rows, lo.shape[0])) * (hi - lo)
    if bounds["method"] == "pca":
        Z = Z @ bounds["V"].T + bounds["mean"]
    return Z.astype(dtype, copy=False)


def _ref_block(bounds, seed, b, dtype, block_info=None):
    info = block_info[None]
    loc = info["array-location"][0]
    return _ref_rows(bounds, loc[1] - loc[0], seed, b, info["chunk-location"][0], dtype)


def reference_data(bounds: dict, chunks, b: int, random_state: int = 0, dtype=np.float64):
    """Reference data set ``b`` as a lazy dask array with the given row ``chunks`` (tuple of ints).

    Each chunk is drawn on whichever worker computes it, never on the client: chunk ``c`` of
    reference ``b`` comes from ``numpy.random.default_rng([random_state, b, c])``, uniform over
    the box of ``bounds`` (rotated back to the data's coordinates for ``"pca"``), so the same
    arguments always give the same data.

    Parameters
    ----------
    bounds : dict
        The box, from :func:`reference_bounds`.
    chunks : tuple of int
        Rows per chunk (their sum is the number of rows).
    b : int
        Index of the reference data set.
    random_state : int, default=0
        Seed shared by all reference data sets.
    dtype : numpy dtype, default=numpy.float64
        Dtype of the data.

    Returns
    -------
    dask.array.Array of shape (sum(chunks), n_features)
        The lazy reference data.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.selection import reference_bounds, reference_data
    >>> bounds = reference_bounds(np.array([[0., 1.], [2., 3.], [1., 5.]]))
    >>> R = reference_data(bounds, (4, 4), b=0, random_state=0)
    >>> R.shape, R.chunks[0]
    ((8, 2), (4, 4))
    >>> bool(((R >= bounds["lo"]) & (R <= bounds["hi"])).all().compute())
    True
    """
    import dask.array as da

    d = int(bounds["n_features"])
    return da.map_blocks(_ref_block, bounds, int(random_state), int(b), np.dtype(dtype), dtype=dtype,
                         chunks=(tuple(int(c) for c in chunks), (d,)))


# --------------------------------------------------------------------------------------------------
# fitting and per-k evaluation
# --------------------------------------------------------------------------------------------------

@contextmanager
def _as_current(client):
    if client is None:
        yield None
        return
    with client.as_current():
        yield client


def _wss_numpy(X, labels, k):
    """Within-cluster sum of squares around the cluster means (direct differences, float64)."""
    X = np.asarray(X, dtype=np.float64)
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros((k, X.shape[1]))
    np.add.at(sums, labels, X)
    means = sums / np.maximum(counts, 1)[:, None]
    diff = X - means[labels]
    return float(np.einsum("ij,ij->", diff, diff))


def _fit_inmemory(X, k, seed, n_init, max_iter, tol):
    from .kernels import kmeans_inmemory

    X = np.asarray(X)
    if k == 1:
        lab = np.zeros(X.shape[0], dtype=np.int64)
        return {"labels": lab, "wss": _wss_numpy(X, lab, 1), "fit_inertia": _wss_numpy(X, lab, 1), "n_iter": 0}
    r = kmeans_inmemory(X, k, n_init=n_init, max_iter=max_iter, tol=tol, random_state=seed)
    lab = np.asarray(r.labels, dtype=np.int64)
    return {"labels": lab, "wss": _wss_numpy(X, lab, k), "fit_inertia": float(r.inertia), "n_iter": int(r.n_iter)}


def _ref_fit_inmemory(bounds, n, seed, b, dtype, k, n_init, max_iter, tol, fit_seed):
    R = _ref_rows(bounds, n, seed, b, 0, dtype)
    out = _fit_inmemory(R, k, fit_seed, n_init, max_iter, tol)
    return math.log(out["wss"])


def _small(Xd, inmemory_bytes) -> bool:
    return Xd.nbytes <= inmemory_bytes


def _fit_chunked(Xd, k, seed, n_init, max_iter, tol, client, kmeans_kwargs):
    from .estimators import KMeans
    from .metrics import inertia

    if k == 1:
        lab = Xd[:, 0].map_blocks(lambda x: np.zeros(x.shape[0], dtype=np.int64), dtype=np.int64)
        w = inertia(Xd, lab)
        return {"labels": lab, "wss": w, "fit_inertia": w, "n_iter": 0}
    km = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, tol=tol, random_state=seed, client=client,
                **(kmeans_kwargs or {}))
    km.fit(Xd)
    lab = km.labels_
    return {"labels": lab, "wss": inertia(Xd, lab), "fit_inertia": float(km.inertia_), "n_iter": int(km.n_iter_)}


def evaluate_k(X, k: int, *, random_state: int = 0, n_init: int = 3, max_iter: int = 300, tol: float = 1e-4,
               silhouette: str | int = "auto", silhouette_exact_max: int = 20_000, gap_B: int = 10,
               reference: str = "uniform", bounds: dict | None = None, client=None,
               kmeans_kwargs: dict | None = None, inmemory_bytes: int = INMEMORY_BYTES) -> dict:
    """Fit k-means with ``k`` clusters and evaluate every criterion; returns one small dict row.

    The k-means seed is derived from ``(random_state, k)`` and the reference data sets from
    ``random_state`` alone, so the row of one k is reproducible on its own (e.g. as one task per
    k).  Data that are a single in-memory chunk of at most ``inmemory_bytes`` are clustered
    inside one task with :func:`kmeans_dist.kernels.kmeans_inmemory`; larger data with
    :class:`kmeans_dist.KMeans` on chunks.

    Parameters
    ----------
    X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
        Samples (a Zarr store path is opened lazily).
    k : int
        Number of clusters, ``1 <= k <= n_samples``.
    random_state : int, default=0
        Seed of the k-means fits, the silhouette sample and the reference data.
    n_init : int, default=3
        k-means initialisations per fit (the best is kept).
    max_iter : int, default=300
        Maximum Lloyd iterations per fit.
    tol : float, default=1e-4
        k-means convergence tolerance.
    silhouette : {"auto", "exact", "sample", "none"}, default="auto"
        ``"exact"``, ``"sample"`` (estimate from ``silhouette_exact_max`` points with a standard
        error), ``"auto"`` (exact up to ``silhouette_exact_max`` samples), or ``"none"``.
    silhouette_exact_max : int, default=20000
        Threshold of ``"auto"`` and sample size of ``"sample"``.
    gap_B : int, default=10
        Number of reference data sets of the gap statistic; 0 skips the gap statistic.
    reference : {"uniform", "pca"}, default="uniform"
        Box of the reference data (see :func:`reference_bounds`), used when ``bounds`` is None.
    bounds : dict, optional
        From :func:`reference_bounds` (computed here when None; pass it when evaluating
        several k separately so it is computed once).
    client : distributed.Client, optional
        Client to compute on (None: the active one if any, else the threaded scheduler).
    kmeans_kwargs : dict, optional
        Extra keyword arguments of :class:`kmeans_dist.KMeans` (chunked fits only).
    inmemory_bytes : int, default=64 MiB
        Largest data (and reference data) clustered in one task with the in-memory kernel.

    Returns
    -------
    dict
        Row keys: ``k``, ``inertia`` (W_k: within-cluster sum of squares around the cluster
        means), ``fit_inertia`` (k-means' own inertia to its centers), ``n_iter``,
        ``silhouette``, ``silhouette_se`` (0 when exact), ``silhouette_method``,
        ``calinski_harabasz``, ``davies_bouldin`` (NaN for k = 1), ``log_w``, ``seconds``; with
        the gap statistic also ``ref_log_w`` (list of B values: log W*_kb) and ``reference``.

    Raises
    ------
    ValueError
        If ``k < 1``, ``k > n_samples``, or ``silhouette`` or ``reference`` is not one of the
        names above.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.selection import evaluate_k
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 0.3, (30, 2)), rng.normal(5, 0.3, (30, 2))])
    >>> row = evaluate_k(X, 2, gap_B=2, random_state=0)
    >>> row["k"], row["silhouette_method"], len(row["ref_log_w"])
    (2, 'exact', 2)
    >>> row["silhouette"] > 0.9
    True
    """
    import dask
    from dask import delayed

    from . import metrics as M

    t0 = time.perf_counter()
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    Xd = as_dask_array(X)
    n = int(Xd.shape[0])
    if k > n:
        raise ValueError(f"n_samples={n} should be >= n_clusters={k}.")
    seed = int(random_state)
    fit_seed = int(np.random.default_rng([seed, k]).integers(2**31 - 1))
    with _as_current(client):
        small = _small(Xd, inmemory_bytes)
        if small:
            whole = Xd.rechunk({0: -1, 1: -1}).to_delayed()[0, 0]
            (fit,) = dask.compute(delayed(_fit_inmemory, pure=True)(whole, k, fit_seed, n_init, max_iter, tol))
        else:
            fit = _fit_chunked(Xd, k, fit_seed, n_init, max_iter, tol, client, kmeans_kwargs)
        labels = fit["labels"]
        row = {"k": k, "inertia": float(fit["wss"]), "fit_inertia": float(fit["fit_inertia"]),
               "n_iter": fit["n_iter"], "log_w": math.log(fit["wss"]) if fit["wss"] > 0 else -math.inf}
        if k >= 2 and k < n:
            st = M.cluster_statistics(Xd, labels, check_labels=True)
            row["calinski_harabasz"] = M.calinski_harabasz_from_stats(st)
            row["davies_bouldin"] = M.davies_bouldin_from_stats(st)
            mode = silhouette
            if mode == "auto":
                mode = "exact" if n <= silhouette_exact_max else "sample"
            if mode == "exact":
                row["silhouette"] = M.silhouette_score(Xd, labels)
                row["silhouette_se"] = 0.0
            elif mode == "sample":
                est = M.silhouette_estimate(Xd, labels, n_sampled=silhouette_exact_max, random_state=seed)
                row["silhouette"], row["silhouette_se"] = est.score, est.std_error
            elif mode in ("none", None):
                row["silhouette"], row["silhouette_se"] = math.nan, math.nan
            else:
                raise ValueError(f"silhouette must be 'auto', 'exact', 'sample' or 'none', got {silhouette!r}")
            row["silhouette_method"] = str(mode)
        else:
            row.update(calinski_harabasz=math.nan, davies_bouldin=math.nan, silhouette=math.nan,
                       silhouette_se=math.nan, silhouette_method="undefined")
        if gap_B and gap_B > 0:
            if bounds is None:
                bounds = reference_bounds(Xd, reference)
            row["ref_log_w"] = _reference_log_w(Xd, bounds, k, int(gap_B), seed, fit_seed, n_init, max_iter,
                                                tol, client, kmeans_kwargs, small)
            row["reference"] = bounds["method"]
    row["seconds"] = time.perf_counter() - t0
    return row


def _reference_log_w(Xd, bounds, k, B, seed, fit_seed, n_init, max_iter, tol, client, kmeans_kwargs, small):
    import dask
    from dask import delayed

    dtype = Xd.dtype
    if small:
        f = delayed(_ref_fit_inmemory, pure=True)
        bd = delayed(bounds, pure=True)
        tasks = [f(bd, int(Xd.shape[0]), seed, b, dtype, k, n_init, max_iter, tol, fit_seed) for b in range(B)]
        return [float(v) for v in dask.compute(*tasks)]
    out = []
    for b in range(B):  # each fit is itself a distributed computation over the chunks
        R = reference_data(bounds, _canonical_chunks(Xd), b, seed, dtype)
        fit = _fit_chunked(R, k, fit_seed, n_init, max_iter, tol, client, kmeans_kwargs)
        out.append(math.log(fit["wss"]))
    return out


# --------------------------------------------------------------------------------------------------
# assembling rows
# --------------------------------------------------------------------------------------------------

def assemble(rows: list[dict]):
    """Rows from :func:`evaluate_k` -> ``(xarray.Dataset indexed by k, recommendations dict)``.

    Adds the gap statistic: ``ref_log_w_mean``, ``gap``, ``gap_sd`` (1/B standard deviation) and
    ``gap_s`` (= ``gap_sd * sqrt(1 + 1/B)``).  Recommendations: ``elbow`` (Kneedle knee of the
    log-inertia curve log W_k: on the log scale the knee depends on relative drops, so it does not
    drift to smaller k when the range of k is short), ``silhouette`` (max), ``calinski_harabasz`` (max), ``davies_bouldin`` (min),
    ``gap`` (smallest k with Gap(k) >= Gap(k+1) - s_{k+1}; None when no k qualifies).

    Parameters
    ----------
    rows : list of dict
        One row per k, from :func:`evaluate_k`, in any order; the gap statistic is added only
        when every row has ``ref_log_w``.

    Returns
    -------
    table : xarray.Dataset
        The criteria indexed by ``k`` (and ``ref_log_w`` over ``(k, b)``); attributes ``B``,
        ``reference`` and ``recommended_<criterion>`` (-1 for None).
    recommendations : dict
        Criterion -> recommended k or None (see :func:`recommend`).

    Raises
    ------
    ValueError
        If two rows have the same k.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.selection import assemble, evaluate_k
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 0.3, (30, 2)), rng.normal(5, 0.3, (30, 2))])
    >>> rows = [evaluate_k(X, k, gap_B=2, random_state=0) for k in (1, 2, 3)]
    >>> table, rec = assemble(rows)
    >>> table["k"].values.tolist(), rec["gap"], rec["silhouette"]
    ([1, 2, 3], 2, 2)
    """
    import xarray as xr

    rows = sorted(rows, key=lambda r: r["k"])
    ks = np.array([r["k"] for r in rows], dtype=np.int64)
    if len(set(ks.tolist())) != len(ks):
        raise ValueError(f"duplicate k in rows: {ks.tolist()}")

    def col(key, default=math.nan):
        return np.array([r.get(key, default) for r in rows], dtype=np.float64)

    data = {
        "inertia": ("k", col("inertia")),
        "fit_inertia": ("k", col("fit_inertia")),
        "n_iter": ("k", col("n_iter")),
        "log_w": ("k", col("log_w")),
        "silhouette": ("k", col("silhouette")),
        "silhouette_se": ("k", col("silhouette_se")),
        "calinski_harabasz": ("k", col("calinski_harabasz")),
        "davies_bouldin": ("k", col("davies_bouldin")),
        "seconds": ("k", col("seconds")),
    }
    has_gap = all("ref_log_w" in r for r in rows) and rows
    B = 0
    if has_gap:
        ref = np.array([r["ref_log_w"] for r in rows], dtype=np.float64)
        B = ref.shape[1]
        ref_mean = ref.mean(axis=1)
        gap = ref_mean - col("log_w")
        sd = np.sqrt(np.mean((ref - ref_mean[:, None]) ** 2, axis=1))
        s = sd * math.sqrt(1.0 + 1.0 / B)
        data.update(ref_log_w=(("k", "b"), ref), ref_log_w_mean=("k", ref_mean), gap=("k", gap),
                    gap_sd=("k", sd), gap_s=("k", s))
    ds = xr.Dataset(data, coords={"k": ks})
    rec = recommend(ds)
    ds.attrs.update({"B": int(B), "reference": rows[0].get("reference", "") if rows else "",
                     **{f"recommended_{c}": (-1 if v is None else int(v)) for c, v in rec.items()}})
    return ds, rec


def recommend(ds) -> dict:
    """A recommended k per criterion from an assembled table (see :func:`assemble`).

    ``elbow``: Kneedle knee of log W_k; ``silhouette`` and ``calinski_harabasz``: the maximum;
    ``davies_bouldin``: the minimum (NaN values ignored); ``gap``: :func:`gap_choice`.

    Parameters
    ----------
    ds : xarray.Dataset
        Table indexed by ``k`` with ``inertia``, ``silhouette``, ``calinski_harabasz``,
        ``davies_bouldin`` and optionally ``gap`` and ``gap_s``.

    Returns
    -------
    dict
        Criterion (one of :data:`CRITERIA`) -> recommended k, or None when the criterion
        cannot recommend one.
    """
    ks = ds["k"].values

    def arg(var, fn):
        v = ds[var].values
        ok = np.isfinite(v)
        if not ok.any():
            return None
        idx = np.flatnonzero(ok)
        return int(ks[idx[fn(v[ok])]])

    rec = {
        "elbow": kneedle(ks, np.log(ds["inertia"].values)),
        "silhouette": arg("silhouette", np.argmax),
        "calinski_harabasz": arg("calinski_harabasz", np.argmax),
        "davies_bouldin": arg("davies_bouldin", np.argmin),
        "gap": gap_choice(ks, ds["gap"].values, ds["gap_s"].values) if "gap" in ds else None,
    }
    return {c: (None if v is None else int(v)) for c, v in rec.items()}


# --------------------------------------------------------------------------------------------------
# one call
# --------------------------------------------------------------------------------------------------

@dataclass
class KSelection:
    """Result of :func:`choose_k`: the table, the recommendations and the raw rows.

    Attributes
    ----------
    table : xarray.Dataset
        Every criterion indexed by ``k`` (see :func:`assemble`).
    recommendations : dict
        Criterion -> recommended k or None.
    rows : list of dict
        The raw rows of :func:`evaluate_k`, one per k.
    figure : matplotlib.figure.Figure
        Only when :func:`choose_k` was called with ``plot``: the figure of the curves.
    """

    table: object
    recommendations: dict
    rows: list = field(default_factory=list)

    def plot(self, path=None, **kw):
        """Plot the curves of every criterion with the recommended k marked.

        Parameters
        ----------
        path : str or path-like, optional
            File to save the figure to (PNG/SVG/PDF); the figure is then closed.
        **kw
            Keyword arguments of :func:`plot_selection` (``title``).

        Returns
        -------
        matplotlib.figure.Figure
            The figure.
        """
        return plot_selection(self.table, self.recommendations, path, **kw)

    def __repr__(self):
        recs = ", ".join(f"{c}={v}" for c, v in self.recommendations.items())
        return f"KSelection(k={self.table['k'].values.tolist()}, {recs})"


def choose_k(X, k_range=range(1, 11), *, random_state: int = 0, n_init: int = 3, max_iter: int = 300,
             tol: float = 1e-4, silhouette: str = "auto", silhouette_exact_max: int = 20_000, gap_B: int = 10,
             reference: str = "uniform", client=None, kmeans_kwargs: dict | None = None, plot=None,
             inmemory_bytes: int = INMEMORY_BYTES) -> KSelection:
    """Evaluate every k in ``k_range`` (see :func:`evaluate_k`) and recommend one per criterion.

    The reference box of the gap statistic is computed once (:func:`reference_bounds`) and the
    reference data sets are the same for every k.  Include k = 1 in the range for the gap
    statistic to be able to say "no structure"; the elbow needs at least 3 values of k.

    Parameters
    ----------
    X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
        Samples (a Zarr store path is opened lazily).
    k_range : iterable of int, default=range(1, 11)
        The values of k to evaluate.
    random_state : int, default=0
        Seed of the k-means fits, the silhouette samples and the reference data.
    n_init : int, default=3
        k-means initialisations per fit (the best is kept).
    max_iter : int, default=300
        Maximum Lloyd iterations per fit.
    tol : float, default=1e-4
        k-means convergence tolerance.
    silhouette : {"auto", "exact", "sample", "none"}, default="auto"
        How the silhouette is computed (see :func:`evaluate_k`).
    silhouette_exact_max : int, default=20000
        Threshold of ``"auto"`` and sample size of ``"sample"``.
    gap_B : int, default=10
        Number of reference data sets of the gap statistic; 0 skips the gap statistic.
    reference : {"uniform", "pca"}, default="uniform"
        Box of the reference data (see :func:`reference_bounds`).
    client : distributed.Client, optional
        A ``distributed.Client`` (None: the active one if any, else the threaded scheduler).
    kmeans_kwargs : dict, optional
        Extra keyword arguments of :class:`kmeans_dist.KMeans` (chunked fits only).
    plot : str, path-like or bool, optional
        A path to save the curves to (PNG/SVG/PDF), or True to just build the figure
        (``result.figure``).
    inmemory_bytes : int, default=64 MiB
        Largest data (and reference data) clustered in one task with the in-memory kernel.

    Returns
    -------
    KSelection
        The table indexed by k, the recommendation per criterion and the raw rows.

    Raises
    ------
    ValueError
        If ``k_range`` is empty, or as :func:`evaluate_k` (a k outside ``[1, n_samples]``,
        an unknown ``silhouette`` or ``reference``).

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.selection import choose_k
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 0.3, (30, 2)), rng.normal(5, 0.3, (30, 2))])
    >>> res = choose_k(X, k_range=range(1, 4), gap_B=2, random_state=0)
    >>> res.recommendations["gap"], res.recommendations["silhouette"]
    (2, 2)
    >>> res.table["k"].values.tolist()
    [1, 2, 3]
    """
    ks = [int(k) for k in k_range]
    if not ks:
        raise ValueError("k_range is empty")
    Xd = as_dask_array(X)
    with _as_current(client):
        bounds = reference_bounds(Xd, reference) if gap_B else None
        rows = [evaluate_k(Xd, k, random_state=random_state, n_init=n_init, max_iter=max_iter, tol=tol,
                           silhouette=silhouette, silhouette_exact_max=silhouette_exact_max, gap_B=gap_B,
                           reference=reference, bounds=bounds, client=client, kmeans_kwargs=kmeans_kwargs,
                           inmemory_bytes=inmemory_bytes) for k in ks]
    table, rec = assemble(rows)
    res = KSelection(table, rec, rows)
    if plot:
        res.figure = res.plot(None if plot is True else plot)
    return res


def plot_selection(table, recommendations: dict, path=None, *, title: str | None = None):
    """Curves of every criterion against k (matplotlib), with the recommended k marked.

    One panel per criterion (inertia, silhouette, Calinski-Harabasz, Davies-Bouldin, and the gap
    statistic when the table has it); the gap is drawn with ``s_k`` error bars and an estimated
    silhouette with 1.96 standard errors.  Saves to ``path`` if given and returns the figure.

    Parameters
    ----------
    table : xarray.Dataset
        Table indexed by ``k``, from :func:`assemble`.
    recommendations : dict
        Criterion -> recommended k or None, from :func:`assemble`.
    path : str or path-like, optional
        File to save the figure to (its format from the suffix); the figure is then closed.
    title : str, optional
        Title of the figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    plt = pyplot()
    ks = table["k"].values
    panels = [("inertia", "elbow", "inertia (W_k)"), ("silhouette", "silhouette", "silhouette (max)"),
              ("calinski_harabasz", "calinski_harabasz", "Calinski-Harabasz (max)"),
              ("davies_bouldin", "davies_bouldin", "Davies-Bouldin (min)")]
    if "gap" in table:
        panels.append(("gap", "gap", "gap statistic"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), constrained_layout=True)
    for ax, (var, crit, label) in zip(np.atleast_1d(axes), panels):
        y = table[var].values
        if var == "gap":
            ax.errorbar(ks, y, yerr=table["gap_s"].values, marker="o", capsize=3)
        elif var == "silhouette" and np.any(np.nan_to_num(table["silhouette_se"].values) > 0):
            ax.errorbar(ks, y, yerr=1.96 * table["silhouette_se"].values, marker="o", capsize=3)
        else:
            ax.plot(ks, y, marker="o")
        kr = recommendations.get(crit)
        if kr is not None and kr in ks:
            i = int(np.flatnonzero(ks == kr)[0])
            ax.axvline(kr, color="tab:red", ls="--", lw=1)
            ax.plot([kr], [y[i]], marker="*", ms=14, color="tab:red", zorder=5)
        ax.set_title(f"{label}\nrecommended k = {kr}")
        ax.set_xlabel("k")
        ax.set_xticks(ks)
    if title:
        fig.suptitle(title)
    if path is not None:
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return fig
