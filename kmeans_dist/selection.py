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
    curve.
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
    """Smallest k with ``Gap(k) >= Gap(k+1) - s_{k+1}`` (consecutive ks); None if no k qualifies."""
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
    """Reference data set ``b`` as a lazy dask array with the given row ``chunks`` (tuple of ints);
    each chunk is drawn on whichever worker computes it."""
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

    Row keys: ``k``, ``inertia`` (W_k: within-cluster sum of squares around the cluster means),
    ``fit_inertia`` (k-means' own inertia to its centers), ``n_iter``, ``silhouette``,
    ``silhouette_se`` (0 when exact), ``silhouette_method``, ``calinski_harabasz``,
    ``davies_bouldin`` (NaN for k = 1), ``log_w``, ``ref_log_w`` (list of B values: log W*_kb),
    ``seconds``.  ``silhouette``: ``"exact"``, ``"sample"`` (estimate from
    ``silhouette_exact_max`` points with a standard error), ``"auto"`` (exact up to
    ``silhouette_exact_max`` samples), or ``"none"``.  ``gap_B=0`` skips the gap statistic.
    ``bounds``: from :func:`reference_bounds` (computed here when None; pass it when evaluating
    several k separately so it is computed once).
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
    """A recommended k per criterion from an assembled table (see :func:`assemble`)."""
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
    """Result of :func:`choose_k`: ``table`` (xarray Dataset indexed by k), ``recommendations``
    (criterion -> k or None) and the raw ``rows``."""

    table: object
    recommendations: dict
    rows: list = field(default_factory=list)

    def plot(self, path=None, **kw):
        return plot_selection(self.table, self.recommendations, path, **kw)

    def __repr__(self):
        recs = ", ".join(f"{c}={v}" for c, v in self.recommendations.items())
        return f"KSelection(k={self.table['k'].values.tolist()}, {recs})"


def choose_k(X, k_range=range(1, 11), *, random_state: int = 0, n_init: int = 3, max_iter: int = 300,
             tol: float = 1e-4, silhouette: str = "auto", silhouette_exact_max: int = 20_000, gap_B: int = 10,
             reference: str = "uniform", client=None, kmeans_kwargs: dict | None = None, plot=None,
             inmemory_bytes: int = INMEMORY_BYTES) -> KSelection:
    """Evaluate every k in ``k_range`` (see :func:`evaluate_k`) and recommend one per criterion.

    ``client``: a ``distributed.Client`` (None: the active one if any, else the threaded scheduler).
    ``plot``: a path to save the curves to (PNG/SVG/PDF), or True to just build the figure
    (``result.figure``).  Include k = 1 in the range for the gap statistic to be able to say "no
    structure"; the elbow needs at least 3 values of k.
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
    """Curves of every criterion against k (matplotlib), with the recommended k marked; saves to
    ``path`` if given and returns the figure."""
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
