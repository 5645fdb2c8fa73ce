"""Spherical k-means: unit-norm centers and cosine distance, with scikit-learn's API, on chunked data.

The validated public estimator; the iterations are :func:`kmeans_dist.chunked.spherical.spherical_on_blocks`.
"""
from __future__ import annotations

import time

import numpy as np

from .kmeans import BaseKMeans, prepare_weight, prepare_X
from .persistence import register_model
from .validation import ARRAY_LIKE, Interval, Options
from ..chunked.lloyd import data_stats, final_pass
from ..chunked.seeding import SEEDING_METHODS, init_centers, seed_from
from ..chunked.spherical import normalize_rows, spherical_on_blocks, unit_rows
from ..kernels import row_norms_sq
from ..kernels.stats import absolute_tolerance, raise_if_nonfinite
from ..kernels.sparse import is_sparse
from ..kernels.xp import get_namespace

__all__ = ["SphericalKMeans"]


def _cosine_block(x, C, block_info=None):
    if is_sparse(x):
        nrm = np.sqrt(row_norms_sq(x))
        D = 1 - np.asarray(x @ np.asarray(C).T) / np.where(nrm > 0, nrm, 1.0)[:, None]
        off = int(block_info[0]["array-location"][0][0]) if block_info else 0
        raise_if_nonfinite(x, D, off)
        return np.clip(D, 0, 2).astype(x.dtype, copy=False)
    xp = get_namespace(x)
    C = xp.asarray(C)
    nrm = xp.sqrt(row_norms_sq(x))
    one = xp.ones((), dtype=nrm.dtype)
    D = 1 - (x @ C.T) / xp.where(nrm > 0, nrm, one)[:, None]
    off = int(block_info[0]["array-location"][0][0]) if block_info else 0
    raise_if_nonfinite(x, D, off)
    return xp.clip(D, 0, 2)


@register_model
class SphericalKMeans(BaseKMeans):
    """Spherical k-means (Dhillon & Modha 2001): k-means on the unit sphere, cosine distance.

    Every row is scaled to unit norm, the centers are unit vectors, and a row belongs to the center of
    largest cosine similarity; each update is the mean of a cluster scaled back to unit norm.  These are
    exactly the iterations of "normalize the rows, then k-means with the centers renormalised after every
    update", run over the blocks as :class:`kmeans_dist.KMeans` (same inputs, same determinism).  The
    normalised rows are a copy of X (in memory, or lazily for a dask input).  Rows of norm 0 stay 0:
    their cosine distance is 1 to every center.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    init : {"k-means||", "k-means++", "random", "random-partition"} or array of shape \
(n_clusters, n_features), default="k-means||"
        Seeding, on the normalised rows (an array is renormalised).
    n_init : "auto" or int, default="auto"
        Restarts, the lowest inertia kept; "auto": 1 for k-means||, k-means++ and an array, 10 otherwise.
    max_iter : int, default=300
        Maximum iterations per restart.
    tol : float, default=1e-4
        Tolerance on the squared center shift, relative to the mean feature variance of the normalised rows.
    random_state : int, RandomState, Generator or None, default=None
        Seed of every random choice.
    block_rows : "auto" or int, default="auto"
        Rows per canonical block.
    split_every : int, default=8
        Fan-in of the reduction tree.
    persist : "auto" or bool, default="auto"
        Keep the blocks in worker memory or stream them.
    client : distributed.Client, None or False, default=None
        None uses the active Dask client if any, else runs in process; False always runs in process.
    engine : {"auto", "dask", "ray", "local"}, default="auto"
        Where the blocks live (as :class:`kmeans_dist.KMeans`): the Dask client, Ray actors or this process.
    verbose : int, default=0
        Show a progress bar.
    callback : callable or None, default=None
        Called after every iteration with a dict; returning True stops.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        Unit-norm centers.
    labels_ : ndarray or dask array of shape (n_samples,)
        Label of every training row.
    inertia_ : float
        Sum of the weighted cosine distances ``1 - cos(x, center)`` of the rows to their centers (half the
        squared Euclidean distance of the unit rows; a row of norm 0 counts 1/2).
    n_iter_ : int
        Iterations run.
    cluster_sizes_ : ndarray of shape (n_clusters,)
        Rows per cluster.
    n_features_in_ : int
        Number of features seen in fit.
    history_ : list of dict
        One record per iteration.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist import SphericalKMeans
    >>> X = np.array([[1.0, 0.1], [5.0, 0.4], [0.2, 1.0], [0.1, 7.0]])
    >>> skm = SphericalKMeans(n_clusters=2, random_state=0, client=False).fit(X)
    >>> np.linalg.norm(skm.cluster_centers_, axis=1).round(6).tolist()
    [1.0, 1.0]
    >>> bool(skm.labels_[0] == skm.labels_[1] != skm.labels_[2] == skm.labels_[3])
    True
    """

    _parameter_constraints = {
        "init": [Options(str, SEEDING_METHODS), ARRAY_LIKE],
        "n_init": [Options(str, ("auto",)), Interval(int, 1, None, "left")],
    }

    def __init__(self, n_clusters=8, *, init="k-means||", n_init="auto", max_iter=300, tol=1e-4, random_state=None,
                 block_rows="auto", split_every=8, persist="auto", client=None, verbose=0, callback=None, engine="auto"):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.block_rows = block_rows
        self.split_every = split_every
        self.persist = persist
        self.client = client
        self.verbose = verbose
        self.callback = callback
        self.engine = engine

    def _resolve_n_init(self):
        if not isinstance(self.init, str):
            return 1
        if self.n_init != "auto":
            return int(self.n_init)
        return 10 if self.init in ("random", "random-partition") else 1

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # scipy.sparse and dask arrays of sparse chunks (text, TF-IDF)
        return tags

    def fit(self, X, y=None, sample_weight=None):
        """Compute spherical k-means clustering.

        Parameters
        ----------
        X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
            Samples (a store path or fsspec URL is opened lazily).
        y : Ignored
        sample_weight : array-like of shape (n_samples,) or None
            Weight of every sample.

        Returns
        -------
        self
        """
        self._validate_params()
        Xa, lazy = prepare_X(X, engine=getattr(self, "engine", "auto"))
        self._set_feature_names(X)
        n, d = Xa.shape
        self._check_n_clusters(n)
        init = self.init
        if not isinstance(init, str):
            init = unit_rows(self._check_init_array(init, d, Xa.dtype))
        w = prepare_weight(sample_weight, n, Xa.dtype, lazy)
        seeds = np.random.default_rng(seed_from(self.random_state)).integers(0, 2**31 - 1,
                                                                            size=self._resolve_n_init())
        t_start = time.perf_counter()
        blocks = self._blocks(normalize_rows(Xa), w)
        try:
            stats = data_stats(blocks)  # also the NaN/inf check (a bad value stays bad after scaling)
            self._tol = absolute_tolerance(stats["var"], self.tol)
            best = None
            for s in seeds:
                C0 = init_centers(None, self.n_clusters, init, random_state=int(s), sample_weight=w, blocks=blocks,
                                  dtype=Xa.dtype)
                with self._progress(self.max_iter, f"spherical k-means k={self.n_clusters}") as bar:
                    def cb(state, _bar=bar):
                        _bar.update(state)
                        return self.callback(state) if self.callback is not None else None

                    res = spherical_on_blocks(blocks, C0, max_iter=self.max_iter, tol_abs=self._tol, callback=cb,
                                              final_labels=not lazy)
                if best is None or res.inertia < best.inertia:
                    best = res
        finally:
            blocks.release()
        self.cluster_centers_ = best.centers
        self.inertia_ = best.inertia
        self.n_iter_ = best.n_iter
        self.history_ = best.history
        self.cluster_sizes_ = best.counts
        self.n_features_in_ = d
        self.converged_ = best.converged
        self.fit_seconds_ = time.perf_counter() - t_start
        self._warn_distinct(best.counts)
        self._set_labels(Xa, lazy, best.labels)
        return self

    def transform(self, X):
        """Cosine distance ``1 - cos(x, center)`` of each sample to every center (1 for a zero row).

        Parameters
        ----------
        X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        distances : ndarray or dask array of shape (n_samples, n_clusters)
            In [0, 2].
        """
        Xa, lazy = self._check_test_X(X)
        return self._apply_blocks(Xa, lazy, _cosine_block, labels=False)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the sum of the cosine distances of X to their nearest centers (larger is better).

        Parameters
        ----------
        X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
            Samples.
        y : Ignored
        sample_weight : array-like of shape (n_samples,) or None
            Weight of every sample.

        Returns
        -------
        float
        """
        Xa, lazy = self._check_test_X(X)
        w = prepare_weight(sample_weight, Xa.shape[0], Xa.dtype, lazy)
        blocks = self._blocks(normalize_rows(Xa), w)
        try:
            inertia = float(final_pass(blocks, self.cluster_centers_)["inertia"]) / 2
            if not np.isfinite(inertia):
                data_stats(blocks)
            return -inertia
        finally:
            blocks.release()
