"""k-medoids: centers that are rows of X, with scikit-learn's API; PAM in memory, CLARA on chunked data.

The validated public estimator; PAM is :func:`kmeans_dist.kernels.medians.pam`, CLARA
:func:`kmeans_dist.chunked.medians.clara_on_blocks`.
"""
from __future__ import annotations

import time

import numpy as np

from .kmeans import BaseKMeans, prepare_weight, prepare_X
from .kmedians import refuse_sparse
from .persistence import register_model
from .validation import NONE, Interval, Options
from ..chunked.lloyd import data_stats
from ..chunked.medians import clara_on_blocks, medoid_pass
from ..chunked.seeding import seed_from
from ..kernels.medians import METRICS, nearest, pairwise_distances
from ..kernels.stats import raise_if_nonfinite
from ..kernels.xp import get_namespace

__all__ = ["KMedoids", "PAM_MAX_SAMPLES"]

PAM_MAX_SAMPLES = 5000  # method="auto" runs PAM on in-memory data up to this many rows ((n, n) float64 distances)


def _offset(block_info) -> int:
    return int(block_info[0]["array-location"][0][0]) if block_info else 0


def _predict_block(x, C, metric, block_info=None):
    labels, dist = nearest(x, get_namespace(x).asarray(C), metric)
    raise_if_nonfinite(x, dist, _offset(block_info))
    return labels


def _transform_block(x, C, metric, block_info=None):
    D = pairwise_distances(x, get_namespace(x).asarray(C), metric)
    raise_if_nonfinite(x, D, _offset(block_info))
    return D


@register_model
class KMedoids(BaseKMeans):
    """k-medoids: the centers are rows of X (medoids), each row belongs to its nearest medoid, and the
    cost is the sum of the (weighted) distances, Euclidean, Manhattan or cosine.

    Two methods (Kaufman & Rousseeuw, *Finding Groups in Data*, 1990):

    - ``"pam"``: BUILD (a greedy start), then SWAP: while some exchange of one medoid with one non-medoid
      lowers the cost, the best such exchange is made (all pairs evaluated in O(n^2) per swap, as
      FastPAM1 of Schubert & Rousseeuw 2019).  It forms the (n, n) distance matrix in memory.
      **Guarantee**: the result is swap-optimal: no single medoid/non-medoid exchange lowers the cost
      (by more than a relative 1e-12), unless ``max_iter`` swaps were reached (``converged_`` is False).
      It is a local optimum, not necessarily the global one (k-medoids is NP-hard).
    - ``"clara"``: for chunked or large data.  ``n_sampling_iter`` samples of ``n_sampling`` rows are drawn
      at random (fetched through the driver, never the whole data), PAM runs on each, every candidate
      medoid set is scored over all the data in one pass, and the set of lowest cost is kept.
      **Guarantee**: the medoids are rows of X; their cost over all the data is the lowest among the
      candidates, and each candidate is swap-optimal on its sample; there is no bound against the optimum
      on the whole data (a sample can miss a small cluster).  With ``n_sampling >= n_samples`` it is PAM.

    ``"auto"`` is PAM for in-memory input of at most ``PAM_MAX_SAMPLES`` (5000) rows, CLARA otherwise.
    PAM on lazy input (a dask array, a store) fetches every row into memory.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of medoids.
    metric : {"euclidean", "manhattan", "cosine"}, default="euclidean"
        The distance (cosine: ``1 - cos``, a zero row at distance 1 of everything).
    method : {"auto", "pam", "clara"}, default="auto"
        See above.
    init : {"build", "random"}, default="build"
        PAM's start: BUILD, or ``n_clusters`` rows drawn at random (then SWAP).
    max_iter : int, default=300
        Most SWAP iterations (swaps) per PAM run.
    n_sampling : int or None, default=None
        Rows per CLARA sample (None: ``40 + 2 * n_clusters``, the authors' default).
    n_sampling_iter : int, default=5
        CLARA samples (the authors' default).
    random_state : int, RandomState, Generator or None, default=None
        Seed of the samples and of the "random" start.  With the same seed the result is the same
        whatever the chunking and the number of workers.
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
        The medoids (rows of X).
    medoid_indices_ : ndarray of shape (n_clusters,)
        Their row indices in X.
    labels_ : ndarray or dask array of shape (n_samples,)
        Nearest medoid of every training row (lazy for lazy input).
    inertia_ : float
        Sum of the (weighted) distances of the rows to their nearest medoid.
    n_iter_ : int
        SWAP iterations of the PAM run that gave the medoids (the swaps made, plus the last evaluation of all
        pairs, which found no improving swap, when ``converged_``).
    converged_ : bool
        Whether that run ended with no improving swap left.
    cluster_sizes_ : ndarray of shape (n_clusters,)
        Rows per cluster.
    n_features_in_ : int
        Number of features seen in fit.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist import KMedoids
    >>> X = np.array([[1.0, 2.0], [1.0, 4.0], [1.0, 0.0], [4.0, 2.0], [4.0, 4.0], [4.0, 0.0]])
    >>> km = KMedoids(n_clusters=2, metric="manhattan", client=False).fit(X)
    >>> km.medoid_indices_.tolist(), km.inertia_
    ([0, 3], 8.0)
    >>> km.predict(np.array([[0.0, 0.0], [5.0, 3.0]])).tolist()
    [0, 1]
    """

    _parameter_constraints = {
        "metric": [Options(str, METRICS)],
        "method": [Options(str, ("auto", "pam", "clara"))],
        "init": [Options(str, ("build", "random"))],
        "n_sampling": [Interval(int, 1, None, "left"), NONE],
        "n_sampling_iter": [Interval(int, 1, None, "left")],
    }
    _saved_arrays = ("medoid_indices_",)
    _saved_scalars = ("_method",)

    def __init__(self, n_clusters=8, *, metric="euclidean", method="auto", init="build", max_iter=300,
                 n_sampling=None, n_sampling_iter=5, random_state=None, block_rows="auto", split_every=8,
                 persist="auto", client=None, engine="auto"):
        self.n_clusters = n_clusters
        self.metric = metric
        self.method = method
        self.init = init
        self.max_iter = max_iter
        self.n_sampling = n_sampling
        self.n_sampling_iter = n_sampling_iter
        self.random_state = random_state
        self.block_rows = block_rows
        self.split_every = split_every
        self.persist = persist
        self.client = client
        self.engine = engine

    @staticmethod
    def _check_saved(params, attrs, arrays):
        idx = arrays.get("medoid_indices_")
        if idx is None:
            return "no medoid_indices_ array"
        if idx.dtype.kind not in "iu" or idx.shape != (params.get("n_clusters"),) or (idx < 0).any():
            return f"medoid_indices_ is {idx.dtype} {idx.shape}, expected n_clusters non-negative integers"
        if attrs.get("_method") not in (None, "pam", "clara"):
            return f"_method is {attrs.get('_method')!r}, expected 'pam' or 'clara'"
        return None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags

    def _check_test_X(self, X):
        refuse_sparse(self, X)
        return super()._check_test_X(X)

    def fit(self, X, y=None, sample_weight=None):
        """Compute k-medoids clustering (PAM or CLARA, see the class).

        Parameters
        ----------
        X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
            Samples (a store path or fsspec URL is opened lazily).
        y : Ignored
        sample_weight : array-like of shape (n_samples,) or None
            Weight of every sample in the cost.

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
        w = prepare_weight(sample_weight, n, Xa.dtype, lazy)
        k = self.n_clusters
        method = self.method
        if method == "auto":
            method = "pam" if (not lazy and n <= PAM_MAX_SAMPLES) else "clara"
        self._method = method
        size = n if method == "pam" else min(n, max(k, self.n_sampling if self.n_sampling is not None else 40 + 2 * k))
        rng = np.random.default_rng(seed_from(self.random_state))
        t_start = time.perf_counter()
        blocks = self._blocks(Xa, w)
        try:
            data_stats(blocks)  # raises on NaN / infinity, naming the first bad value
            res = clara_on_blocks(blocks, k, self.metric, rng, n_sampling=size, n_sampling_iter=self.n_sampling_iter,
                                  max_iter=self.max_iter, init=self.init, final_labels=not lazy)
        finally:
            blocks.release()
        self.cluster_centers_ = np.asarray(res.medoids, dtype=Xa.dtype)
        self.medoid_indices_ = np.asarray(res.medoid_indices, dtype=np.int64)
        self.inertia_ = res.inertia
        self.n_iter_ = res.n_iter
        self.converged_ = res.converged
        self.cluster_sizes_ = res.counts
        self.candidate_costs_ = res.candidate_costs
        self.n_features_in_ = d
        self.fit_seconds_ = time.perf_counter() - t_start
        self._warn_distinct(res.counts)
        self.labels_ = self._apply_blocks(Xa, lazy, _predict_block, self.metric, labels=True) if lazy else res.labels
        return self

    def predict(self, X):
        """Index of the nearest medoid of each sample (the lowest index at a tie).

        Parameters
        ----------
        X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        labels : ndarray or dask array of shape (n_samples,)
        """
        Xa, lazy = self._check_test_X(X)
        return self._apply_blocks(Xa, lazy, _predict_block, self.metric, labels=True)

    def transform(self, X):
        """Distance (``metric``) of each sample to every medoid.

        Parameters
        ----------
        X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        distances : ndarray or dask array of shape (n_samples, n_clusters)
        """
        Xa, lazy = self._check_test_X(X)
        return self._apply_blocks(Xa, lazy, _transform_block, self.metric, labels=False)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the sum of (weighted) distances of X to the nearest medoid, in one pass.

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
            f = medoid_pass(blocks, self.cluster_centers_, 1, self.metric)
            if not f["finite"]:
                data_stats(blocks)  # names the first bad value
            return -float(f["cost"][0])
        finally:
            blocks.release()
