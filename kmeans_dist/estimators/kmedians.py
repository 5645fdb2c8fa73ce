"""k-medians: L1 distance and component-wise median centers, with scikit-learn's API, on chunked data.

The validated public estimator; the iterations are :func:`kmeans_dist.chunked.medians.kmedians_on_blocks`,
whose medians are exact and computed over the blocks without gathering rows.
"""
from __future__ import annotations

import time

import numpy as np

from .kmeans import BaseKMeans, prepare_weight, prepare_X
from .persistence import register_model
from .validation import ARRAY_LIKE, NONE, Interval, Options
from ..chunked.lloyd import data_stats
from ..chunked.medians import feature_range, kmedians_final_pass, kmedians_on_blocks
from ..chunked.seeding import init_centers, seed_from
from ..kernels.medians import nearest, pairwise_distances
from ..kernels.sparse import is_sparse
from ..kernels.stats import absolute_tolerance, raise_if_nonfinite
from ..kernels.xp import get_namespace

__all__ = ["KMedians"]


def _offset(block_info) -> int:
    return int(block_info[0]["array-location"][0][0]) if block_info else 0


def _l1_predict_block(x, C, block_info=None):
    labels, dist = nearest(x, get_namespace(x).asarray(C), "manhattan")
    raise_if_nonfinite(x, dist, _offset(block_info))
    return labels


def _l1_transform_block(x, C, block_info=None):
    D = pairwise_distances(x, get_namespace(x).asarray(C), "manhattan")
    raise_if_nonfinite(x, D, _offset(block_info))
    return D


def refuse_sparse(est, X):
    """Raise a TypeError naming the estimator if X is a sparse matrix (the median estimators take dense X)."""
    if is_sparse(X) or getattr(getattr(X, "_meta", None), "format", None) is not None:
        raise TypeError(f"{type(est).__name__} does not accept sparse input: pass a dense array "
                        "(for example X.toarray()).")


@register_model
class KMedians(BaseKMeans):
    """k-medians: every row belongs to its L1-nearest center, every center is the component-wise median of
    its rows.

    Each iteration labels the rows by Manhattan distance and moves every center to the *exact* (weighted)
    median of its cluster, feature by feature, computed over the blocks without gathering rows: per-cluster,
    per-feature histograms are refined pass by pass until the bucket holding each median holds few rows,
    whose values then come back (usually two to four passes per iteration; see
    :mod:`kmeans_dist.chunked.medians`).  With unit weights the median is ``np.median``'s (the mean of the
    two middle values for an even count).  Each iteration lowers (never raises) the sum of L1 distances.

    With ``tol=0`` (the default) the iterations stop when the centers no longer change: then every center
    is exactly the component-wise median of its cluster and every label is the L1-nearest center (the
    lowest index at a tie).  An empty cluster is re-seeded on the row farthest from its center.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    init : {"k-means++", "k-means||", "random"} or array of shape (n_clusters, n_features), \
default="k-means++"
        Seeding (the Euclidean seedings of :class:`kmeans_dist.KMeans`), or the centers.
    n_init : "auto" or int, default="auto"
        Restarts, the lowest sum of L1 distances kept; "auto" is 1 for k-means++, k-means|| and an array,
        10 for random.
    max_iter : int, default=300
        Maximum number of iterations per restart.
    tol : float, default=0.0
        Stop when the squared center shift is at most ``tol`` times the mean feature variance (0: when
        the centers no longer change).
    random_state : int, RandomState, Generator or None, default=None
        Seed of every random choice.  With the same seed the result is the same whatever the chunking and
        the number of workers.
    n_buckets : int or None, default=None
        Buckets per histogram of the median passes (None: 16 to 256, so that a pass's partial stays small).
    block_rows : "auto" or int, default="auto"
        Rows per canonical block.
    split_every : int, default=8
        Fan-in of the reduction tree.
    persist : "auto" or bool, default="auto"
        Keep the blocks in worker memory (``"auto"``: when X takes at most half of it), else stream them.
    client : distributed.Client, None or False, default=None
        None uses the active Dask client if there is one, else runs in process; False always in process.
    engine : {"auto", "dask", "ray", "local"}, default="auto"
        Where the blocks live (see :class:`kmeans_dist.KMeans`).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        The medians.
    labels_ : ndarray or dask array of shape (n_samples,)
        L1-nearest center of every training row (lazy for lazy input).
    inertia_ : float
        Sum of the (weighted) L1 distances of the rows to their nearest center.
    n_iter_ : int
        Iterations run.
    n_passes_ : int
        Passes over the data of the kept restart (assignment and median passes).
    converged_ : bool
        Whether the iterations stopped on ``tol`` before ``max_iter``.
    cluster_sizes_ : ndarray of shape (n_clusters,)
        Rows per cluster.
    n_features_in_ : int
        Number of features seen in fit.
    history_ : list of dict
        One record per iteration: ``iteration``, ``inertia``, ``center_shift``, ``seconds``, ``n_passes``.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist import KMedians
    >>> X = np.array([[1.0, 2.0], [1.0, 4.0], [1.0, 0.0], [10.0, 2.0], [10.0, 4.0], [10.0, 0.0], [10.0, 30.0]])
    >>> km = KMedians(n_clusters=2, init=np.array([[0.0, 0.0], [9.0, 9.0]]), client=False).fit(X)
    >>> km.cluster_centers_.tolist()  # the outlier moves the second median from 2 to 3 only (the mean: to 9)
    [[1.0, 2.0], [10.0, 3.0]]
    >>> km.predict(np.array([[0.0, 0.0], [12.0, 3.0]])).tolist()
    [0, 1]
    """

    _parameter_constraints = {
        "init": [Options(str, ("k-means++", "k-means||", "random")), ARRAY_LIKE],
        "n_init": [Options(str, ("auto",)), Interval(int, 1, None, "left")],
        "n_buckets": [Interval(int, 2, None, "left"), NONE],
    }
    _saved_scalars = ("n_passes_",)

    def __init__(self, n_clusters=8, *, init="k-means++", n_init="auto", max_iter=300, tol=0.0, random_state=None,
                 n_buckets=None, block_rows="auto", split_every=8, persist="auto", client=None, engine="auto"):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.n_buckets = n_buckets
        self.block_rows = block_rows
        self.split_every = split_every
        self.persist = persist
        self.client = client
        self.engine = engine

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags

    def _resolve_n_init(self):
        if not isinstance(self.init, str):
            return 1
        if self.n_init == "auto":
            return 10 if self.init == "random" else 1
        return int(self.n_init)

    def _check_test_X(self, X):
        refuse_sparse(self, X)
        return super()._check_test_X(X)

    def fit(self, X, y=None, sample_weight=None):
        """Compute k-medians clustering.

        Parameters
        ----------
        X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
            Samples (a store path or fsspec URL is opened lazily).
        y : Ignored
        sample_weight : array-like of shape (n_samples,) or None
            Weight of every sample: the centers are weighted medians, the inertia a weighted sum.

        Returns
        -------
        self
        """
        self._validate_params()
        refuse_sparse(self, X)
        Xa, lazy = prepare_X(X, engine=getattr(self, "engine", "auto"))
        self._set_feature_names(X)
        n, d = Xa.shape
        self._check_n_clusters(n)
        init = self.init if isinstance(self.init, str) else self._check_init_array(self.init, d, Xa.dtype)
        w = prepare_weight(sample_weight, n, Xa.dtype, lazy)
        seeds = np.random.default_rng(seed_from(self.random_state)).integers(0, 2**31 - 1,
                                                                             size=self._resolve_n_init())
        t_start = time.perf_counter()
        blocks = self._blocks(Xa, w)
        try:
            stats = data_stats(blocks)  # raises on NaN / infinity, naming the first bad value
            self._tol = absolute_tolerance(stats["var"], self.tol)
            ranges = feature_range(blocks)
            best = None
            for s in seeds:
                C0 = init if not isinstance(init, str) else init_centers(
                    None, self.n_clusters, init, random_state=int(s), sample_weight=w, blocks=blocks, dtype=Xa.dtype)
                res = kmedians_on_blocks(blocks, C0, max_iter=self.max_iter, tol_abs=self._tol, ranges=ranges,
                                         final_labels=not lazy, n_buckets=self.n_buckets)
                if best is None or res.inertia < best.inertia:
                    best = res
        finally:
            blocks.release()
        self.cluster_centers_ = best.centers
        self.inertia_ = best.inertia
        self.n_iter_ = best.n_iter
        self.n_passes_ = best.n_passes
        self.history_ = best.history
        self.cluster_sizes_ = best.counts
        self.converged_ = best.converged
        self.n_features_in_ = d
        self.fit_seconds_ = time.perf_counter() - t_start
        self._warn_distinct(best.counts)
        self.labels_ = self._apply_blocks(Xa, lazy, _l1_predict_block, labels=True) if lazy else best.labels
        return self

    def predict(self, X):
        """Index of the L1-nearest center of each sample (the lowest index at a tie).

        Parameters
        ----------
        X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        labels : ndarray or dask array of shape (n_samples,)
        """
        Xa, lazy = self._check_test_X(X)
        return self._apply_blocks(Xa, lazy, _l1_predict_block, labels=True)

    def transform(self, X):
        """Manhattan (L1) distance of each sample to every center.

        Parameters
        ----------
        X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        distances : ndarray or dask array of shape (n_samples, n_clusters)
        """
        Xa, lazy = self._check_test_X(X)
        return self._apply_blocks(Xa, lazy, _l1_transform_block, labels=False)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the sum of (weighted) L1 distances of X to the nearest center, in one pass.

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
        blocks = self._blocks(Xa, w)
        try:
            inertia = float(kmedians_final_pass(blocks, self.cluster_centers_)["inertia"])
            if not np.isfinite(inertia):
                data_stats(blocks)  # names the first bad value
            return -inertia
        finally:
            blocks.release()
