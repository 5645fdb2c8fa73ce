"""Bisecting k-means with scikit-learn's ``BisectingKMeans`` API, on chunked data.

The validated public estimator; the computation over the blocks is
:func:`kmeans_dist.chunked.bisecting.bisecting_on_blocks`.
"""
from __future__ import annotations

import time

import numpy as np

from .kmeans import BaseKMeans, prepare_weight, prepare_X
from .persistence import register_model
from .validation import BOOLEAN, Interval, Options
from ..chunked.bisecting import SAMPLE_ROWS, bisecting_on_blocks, descend_tree
from ..chunked.lloyd import data_stats
from ..chunked.seeding import seed_from
from ..kernels.stats import absolute_tolerance, raise_if_nonfinite
from ..kernels.sparse import is_sparse
from ..kernels.xp import get_namespace

__all__ = ["BisectingKMeans"]


def _descend_block(x, tree_centers, children, labels, block_info=None):
    lab, d2 = descend_tree(x, tree_centers, children, labels)
    off = int(block_info[0]["array-location"][0][0]) if block_info else 0
    raise_if_nonfinite(x, d2, off)
    return lab


@register_model
class BisectingKMeans(BaseKMeans):
    """Bisecting k-means (scikit-learn's ``BisectingKMeans``) on chunked data.

    Starts from one cluster and splits a leaf in two with 2-means ``n_clusters - 1`` times, keeping the
    tree: :meth:`predict` descends it (the nearer child at every node), as scikit-learn's.  X may be a
    NumPy or CuPy array, a dask array, an xarray DataArray with dims ``(sample, feature)`` or the path
    of a Zarr store; every row's leaf stays next to its block on the workers, and one pass over the
    blocks is one Lloyd iteration of all ``n_init`` tries of the current bisection.  With the same seed
    the result is the same whatever the chunking and the number of workers.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters (leaves).
    init : {"random", "k-means++"}, default="random"
        Seeding of every 2-means try.  It runs on a uniform sample of the leaf's rows: all of them when
        the leaf has at most 100,000 rows (then exactly scikit-learn's method), a sample of that many
        otherwise.
    n_init : int, default=1
        Tries per bisection; the one with the lowest inertia is kept.
    random_state : int, RandomState, Generator or None, default=None
        Seed of every random choice.
    max_iter : int, default=300
        Maximum Lloyd iterations per bisection.
    verbose : int, default=0
        Show a progress bar (one step per bisection).
    tol : float, default=1e-4
        Convergence tolerance of every 2-means on the squared center shift, relative to the mean feature
        variance of X (as scikit-learn's).
    copy_x : bool, default=True
        Accepted for scikit-learn compatibility; X is never modified.
    algorithm : {"lloyd", "elkan"}, default="lloyd"
        Accepted for scikit-learn compatibility; both run Lloyd's iterations (same result).
    bisecting_strategy : {"biggest_inertia", "largest_cluster"}, default="biggest_inertia"
        The leaf split next: the one with the largest (weighted) sum of squared distances to its center,
        or the one with the most rows.
    block_rows : "auto" or int, default="auto"
        Rows per canonical block (the floating-point summation order; results are bit-identical for a
        given ``block_rows`` whatever the input chunking and the number of workers).
    split_every : int, default=8
        Fan-in of the reduction tree.
    persist : "auto" or bool, default="auto"
        Keep the blocks in worker memory, or stream them from the source on every pass.
    client : distributed.Client, None or False, default=None
        None uses the active Dask client if any, else runs in process; False always runs in process.
    engine : {"auto", "dask", "ray", "local"}, default="auto"
        Where the blocks live (as :class:`kmeans_dist.KMeans`): the Dask client, Ray actors or this process.
    callback : callable or None, default=None
        Called after every bisection with a dict (``iteration``, ``node``, ``n_iter``, ``inertia``,
        ``seconds``).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        Centers of the leaves, in label order (depth-first, left child first).
    labels_ : ndarray or dask array of shape (n_samples,)
        Label of every training row (lazy for lazy input).
    inertia_ : float
        Sum of squared distances of the rows to the center of their leaf.
    n_iter_ : int
        Lloyd iterations run over all bisections.
    cluster_sizes_ : ndarray of shape (n_clusters,)
        Rows per leaf.
    n_features_in_ : int
        Number of features seen in fit.
    history_ : list of dict
        One record per bisection.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist import BisectingKMeans
    >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0], [10, 6], [10, 8], [10, 10]], dtype=float)
    >>> bkm = BisectingKMeans(n_clusters=3, random_state=0, client=False).fit(X)
    >>> bkm.cluster_centers_.shape, len(set(bkm.labels_.tolist()))
    ((3, 2), 3)
    >>> bool((bkm.predict(X) == bkm.labels_).all())
    True
    """

    _parameter_constraints = {
        "init": [Options(str, ("random", "k-means++"))],
        "n_init": [Interval(int, 1, None, "left")],
        "copy_x": [BOOLEAN],
        "algorithm": [Options(str, ("lloyd", "elkan"))],
        "bisecting_strategy": [Options(str, ("biggest_inertia", "largest_cluster"))],
    }
    _saved_arrays = ("_tree_centers", "_tree_children", "_tree_labels")

    def __init__(self, n_clusters=8, *, init="random", n_init=1, random_state=None, max_iter=300, verbose=0,
                 tol=1e-4, copy_x=True, algorithm="lloyd", bisecting_strategy="biggest_inertia", block_rows="auto",
                 split_every=8, persist="auto", client=None, callback=None, engine="auto"):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.random_state = random_state
        self.max_iter = max_iter
        self.verbose = verbose
        self.tol = tol
        self.copy_x = copy_x
        self.algorithm = algorithm
        self.bisecting_strategy = bisecting_strategy
        self.block_rows = block_rows
        self.split_every = split_every
        self.persist = persist
        self.client = client
        self.callback = callback
        self.engine = engine

    @staticmethod
    def _check_saved(params, attrs, arrays):
        k = params.get("n_clusters")
        C, ch, lab = (arrays.get(a) for a in BisectingKMeans._saved_arrays)
        if C is None or ch is None or lab is None:
            return "the bisecting tree (_tree_centers, _tree_children, _tree_labels) is missing"
        m = 2 * k - 1
        if C.shape != (m, attrs.get("n_features_in_")) or ch.shape != (m, 2) or lab.shape != (m,):
            return f"the bisecting tree has shapes {C.shape}, {ch.shape}, {lab.shape}; expected {m} nodes"
        if ch.dtype.kind not in "iu" or lab.dtype.kind not in "iu" or not np.isfinite(C).all():
            return "the bisecting tree holds non-integer links or non-finite centers"
        leaf = ch[:, 0] < 0
        inner = ~leaf
        if ((ch[:, 0] < 0) != (ch[:, 1] < 0)).any() or (ch[inner] <= np.arange(m)[inner, None]).any() \
                or (ch >= m).any() or sorted(lab[leaf].tolist()) != list(range(k)) or (lab[inner] != -1).any():
            return "the bisecting tree is not a tree of n_clusters leaves"
        seen = np.bincount(ch[inner].ravel(), minlength=m)
        if seen[0] != 0 or (seen[1:] != 1).any():
            return "the bisecting tree is not a tree of n_clusters leaves"
        return None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False  # dense input only (NumPy, CuPy, dask, xarray, Zarr)
        return tags

    def fit(self, X, y=None, sample_weight=None):
        """Compute bisecting k-means clustering.

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
        if is_sparse(Xa):
            raise TypeError(f"Sparse data was passed for X, but dense data is required by {type(self).__name__}. "
                            "Use X.toarray() to convert to a dense numpy array.")
        self._set_feature_names(X)
        n, d = Xa.shape
        self._check_n_clusters(n)
        w = prepare_weight(sample_weight, n, Xa.dtype, lazy)
        seed = seed_from(self.random_state)
        t_start = time.perf_counter()
        blocks = self._blocks(Xa, w)
        try:
            stats = data_stats(blocks)
            self._tol = absolute_tolerance(stats["var"], self.tol)
            with self._progress(max(1, self.n_clusters - 1), f"bisecting k={self.n_clusters}") as bar:
                def cb(rec):
                    bar.update(rec)
                    if self.callback is not None:
                        self.callback(rec)

                res = bisecting_on_blocks(blocks, self.n_clusters, init=self.init, n_init=self.n_init,
                                          strategy=self.bisecting_strategy, max_iter=self.max_iter,
                                          tol_abs=self._tol, random_state=seed, root_center=stats["mean"],
                                          final_labels=not lazy, sample_size=SAMPLE_ROWS, callback=cb)
        finally:
            blocks.release()
        self.cluster_centers_ = res.centers
        self._tree_centers, self._tree_children, self._tree_labels = (res.tree_centers, res.tree_children,
                                                                       res.tree_labels)
        self.inertia_ = res.inertia
        self.n_iter_ = res.n_iter
        self.history_ = res.history
        self.cluster_sizes_ = res.counts
        self.n_features_in_ = d
        self.fit_seconds_ = time.perf_counter() - t_start
        self._warn_distinct(res.counts)
        self._set_labels(Xa, lazy, res.labels)
        return self

    def _set_labels(self, Xa, lazy, labels=None):
        if labels is not None and not lazy:
            self.labels_ = get_namespace(Xa).asarray(labels)
        else:
            self.labels_ = self._descend(Xa, lazy)

    def _descend(self, Xa, lazy):
        C = self._tree_centers.astype(Xa.dtype, copy=False)
        if lazy:
            return Xa.map_blocks(_descend_block, C, self._tree_children, self._tree_labels, drop_axis=1,
                                 dtype=np.int64)
        return _descend_block(Xa, C, self._tree_children, self._tree_labels)

    def predict(self, X):
        """Label of every sample, descending the bisecting tree (the nearer child at every node).

        Parameters
        ----------
        X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
            Samples (a store path or fsspec URL is opened lazily).

        Returns
        -------
        labels : ndarray or dask array of shape (n_samples,)
            Lazy (a dask array) for lazy input.
        """
        Xa, lazy = self._check_test_X(X)
        return self._descend(Xa, lazy)
