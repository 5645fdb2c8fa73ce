"""scikit-learn compatible estimators: :class:`KMeans` and :class:`MiniBatchKMeans`.

Three layers, as scikit-learn's ``_kmeans.py``: the public ``fit`` validates once (parameters as data,
input from metadata, finiteness within the first pass), the private computations in
:mod:`kmeans_dist.chunked.lloyd` / :mod:`kmeans_dist.chunked.seeding` assume valid input, and the per-chunk kernels in
:mod:`kmeans_dist.kernels` never validate.  Constructor arguments are stored as given; resolved
values live in private attributes.
"""
from __future__ import annotations

import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from .validation import (ANY, ARRAY_LIKE, BOOLEAN, CALLABLE, NONE, RANDOM_STATE, Interval, Options,
                          validate_params)
from ..kernels.xp import get_namespace, to_numpy
from ..kernels.sparse import block_namespace, is_sparse
from .persistence import register_model, save_model
from .anomaly import AnomalyScoresMixin
from ..kernels import assign_labels, kmeans_plusplus, lloyd_partial, sq_distances
from ..kernels.stats import absolute_tolerance, raise_if_nonfinite
from ..chunked.driver import LocalBlocks, get_client, make_blocks
from ..chunked.lloyd import data_stats, fetch_rows, final_pass, lloyd_on_blocks, minibatch_on_blocks, minibatch_step
from ..chunked.seeding import SEEDING_METHODS, seed_from, init_centers
from ..chunked.min_size import enforce_min_cluster_size

__all__ = ["KMeans", "MiniBatchKMeans"]


def _is_lazy(X) -> bool:
    import dask.array as da

    if isinstance(X, da.Array):
        return True
    try:
        import xarray as xr

        if isinstance(X, xr.DataArray):
            return isinstance(X.data, da.Array)
    except ImportError:  # pragma: no cover
        pass
    import os

    return isinstance(X, (str, os.PathLike))


def _is_device_array(X) -> bool:
    return hasattr(X, "__cuda_array_interface__")


def _prepare_X(X, name="X", engine="auto"):
    """(array for the driver, is_lazy): dask for lazy inputs, an in-memory array otherwise.

    A Ray Dataset with an ``engine`` other than "ray" or "auto" is refused before it is executed."""
    from ..data import as_dask_array, check_sparse

    if any(c.__module__.startswith("ray.data") for c in type(X).__mro__):  # a Ray Dataset: for engine="ray"
        import dask.array as da

        if engine not in ("auto", "ray"):
            raise TypeError(f"A Ray Dataset is read by Ray actors: use engine='ray' (or 'auto'), not {engine!r}; "
                            "or convert it first (ds.to_pandas()).")

        from ..chunked.ray_engine import dataset_input

        src = dataset_input(X, name=name)  # numeric columns, checked from the schema and one row
        Xd = as_dask_array(da.empty(src.shape, dtype=src.dtype, chunks=-1), name=name)
        return src.astype(Xd.dtype), False
    if is_sparse(X):  # in-memory scipy.sparse stays sparse: canonical CSR, float64/float32
        return check_sparse(X, name=name), False
    if isinstance(X, np.ndarray) and X.dtype.kind not in "OUSV":
        # the same metadata checks on a data-less stand-in: dask.array.from_array would copy and hash X
        import dask.array as da

        Xd = as_dask_array(da.empty(X.shape, dtype=X.dtype, chunks=-1), name=name)
        return np.ascontiguousarray(X, dtype=Xd.dtype), False
    Xd = as_dask_array(X, name=name)  # metadata-only checks: ndim, dtype, empty
    if _is_lazy(X):
        return Xd, True
    if _is_device_array(X):
        xp = get_namespace(X)
        return (X if X.dtype == Xd.dtype else xp.astype(X, Xd.dtype)), False
    try:
        import xarray as xr

        if isinstance(X, xr.DataArray):
            X = X.transpose("sample", "feature").values if set(X.dims) == {"sample", "feature"} else X.values
    except ImportError:  # pragma: no cover
        pass
    return np.ascontiguousarray(np.asarray(X), dtype=Xd.dtype), False


def _feature_names(X):
    """Column names of a pandas DataFrame or the ``feature`` coordinate of an xarray DataArray, else None."""
    if is_sparse(X):  # scipy.sparse has no names (a COO array's ``coords`` are its indices)
        return None
    cols = getattr(X, "columns", None)
    if cols is not None and hasattr(X, "iloc"):
        names = list(cols)
    else:
        coords = getattr(X, "coords", None)
        if coords is None or "feature" not in coords or getattr(X, "ndim", 0) != 2:
            return None
        names = [str(v) for v in np.asarray(coords["feature"].values).tolist()]
    if not all(isinstance(n, str) for n in names):
        return None
    return np.asarray(names, dtype=object)


def _prepare_weight(sample_weight, n, dtype, lazy):
    if sample_weight is None:
        return None
    import dask.array as da

    if isinstance(sample_weight, da.Array):
        if sample_weight.shape != (n,):
            raise ValueError(f"sample_weight.shape == {sample_weight.shape}, expected {(n,)}!")
        return sample_weight.astype(dtype)
    w = np.asarray(to_numpy(sample_weight) if not np.isscalar(sample_weight) else sample_weight, dtype=np.float64)
    if w.ndim == 0:
        w = np.full(n, float(w))
    if w.ndim != 1:
        raise ValueError("Sample weights must be 1D array or scalar")
    if w.shape != (n,):
        raise ValueError(f"sample_weight.shape == {w.shape}, expected {(n,)}!")
    if not np.all(np.isfinite(w)):
        raise ValueError("Input sample_weight contains NaN or infinity.")
    if np.any(w < 0):
        raise ValueError("Negative values in data passed to sample_weight")
    return w.astype(dtype)


class _BaseKMeans(AnomalyScoresMixin, TransformerMixin, ClusterMixin, BaseEstimator):
    _common_constraints = {
        "n_clusters": [Interval(int, 1, None, "left")],
        "max_iter": [Interval(int, 1, None, "left")],
        "tol": [Interval(float, 0, None, "left")],
        "random_state": [RANDOM_STATE],
        "block_rows": [Options(str, ("auto",)), Interval(int, 1, None, "left")],
        "split_every": [Interval(int, 2, None, "left")],
        "persist": [Options(str, ("auto",)), BOOLEAN],
        "client": [ANY],
        "engine": [Options(str, ("auto", "dask", "ray", "local"))],
        "verbose": [Interval(int, 0, None, "left"), BOOLEAN],
        "callback": [CALLABLE, NONE],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # scipy.sparse input (any format, read as CSR) and dask arrays of it
        return tags

    # -------------------------------------------------------------------------------- validation
    def _validate_params(self):
        cons = {**self._common_constraints, **self._parameter_constraints}
        validate_params(cons, self.get_params(deep=False), type(self).__name__)

    def _check_n_clusters(self, n_samples):
        if n_samples < self.n_clusters:
            raise ValueError(f"n_samples={n_samples} should be >= n_clusters={self.n_clusters}.")

    def _check_init_array(self, init, n_features, dtype):
        init = np.asarray(to_numpy(init), dtype=dtype)
        if init.ndim != 2 or init.shape[0] != self.n_clusters:
            raise ValueError(f"The shape of the initial centers {init.shape} does not match the number of "
                             f"clusters {self.n_clusters}.")
        if init.shape[1] != n_features:
            raise ValueError(f"The shape of the initial centers {init.shape} does not match the number of "
                             f"features of the data {n_features}.")
        if not np.all(np.isfinite(init)):
            raise ValueError("The initial centers contain NaN or infinity.")
        return init

    def _check_fitted(self):
        if not hasattr(self, "cluster_centers_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                                 "appropriate arguments before using this estimator.")

    def _set_feature_names(self, X):
        names = _feature_names(X)
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    def _check_feature_names(self, X):
        names, fitted = _feature_names(X), getattr(self, "feature_names_in_", None)
        if names is None or fitted is None:
            return
        if len(names) != len(fitted) or (names != fitted).any():
            raise ValueError("The feature names should match those that were passed during fit: got "
                             f"{list(names)[:10]}, fitted with {list(fitted)[:10]}. Reorder or rename the columns.")

    def get_feature_names_out(self, input_features=None):
        """Names of the :meth:`transform` outputs: ``<classname>0`` ... ``<classname>{n_clusters-1}``.

        Parameters
        ----------
        input_features : array-like of str or None
            Ignored except for a consistency check with ``feature_names_in_``.

        Returns
        -------
        ndarray of str objects
        """
        self._check_fitted()
        if input_features is not None and hasattr(self, "feature_names_in_"):
            if list(input_features) != list(self.feature_names_in_):
                raise ValueError("input_features is not equal to feature_names_in_")
        prefix = type(self).__name__.lower()
        return np.asarray([f"{prefix}{i}" for i in range(self.cluster_centers_.shape[0])], dtype=object)

    def _check_test_X(self, X):
        self._check_fitted()
        self._check_feature_names(X)
        Xa, lazy = _prepare_X(X, engine=getattr(self, "engine", "auto"))
        if Xa.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {Xa.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")
        return Xa, lazy

    def _blocks(self, Xa, w):
        return make_blocks(Xa, w, block_rows=self.block_rows, split_every=self.split_every, client=self.client,
                           persist=self.persist, engine=self.engine)

    def _progress(self, total, desc):
        """A rich progress bar when ``verbose >= 3``, else a no-op context."""
        if int(self.verbose) < 3:
            return _NullProgress()
        return _RichProgress(total, desc, self.client)

    def _say(self, msg):
        """scikit-learn's verbose lines (``1 <= verbose <= 2``; 3 and more show a progress bar instead)."""
        if 1 <= int(self.verbose) <= 2:
            print(msg)

    def _init_from_callable(self, init, X, random_state, n_features, dtype):
        """Centers from a callable ``init(X, n_clusters, random_state=...)``, checked as an init array."""
        return self._check_init_array(init(X, self.n_clusters, random_state=random_state), n_features, dtype)

    # -------------------------------------------------------------------------------- predict & co
    def _centers_like(self, X):
        xp = block_namespace(X)
        C = self.cluster_centers_.astype(X.dtype, copy=False)
        return C if not _is_device_array(X) else xp.asarray(C)

    def predict(self, X):
        """Index of the closest center of each sample.

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
        if getattr(Xa, "is_ray_dataset", False):  # a Ray Dataset: labelled by the Ray actors, block by block
            blocks = self._blocks(Xa, None)
            try:
                return final_pass(blocks, self.cluster_centers_, labels=True)["labels"]
            finally:
                blocks.release()
        if lazy:
            C = self.cluster_centers_.astype(Xa.dtype, copy=False)
            return Xa.map_blocks(_predict_block, C, drop_axis=1, dtype=np.int64)
        labels, dist = assign_labels(Xa, self._centers_like(Xa))
        raise_if_nonfinite(Xa, dist)
        return labels

    def _apply_blocks(self, Xa, lazy, kernel, *args, labels: bool):
        """``kernel(x, C, *args)`` on in-memory ``Xa``, or block by block (lazily) on a dask ``Xa``: one row
        of labels (``labels=True``) or of ``n_clusters`` distances per sample.  The one place where the
        estimators' predict and transform meet the array kinds."""
        C = self.cluster_centers_.astype(Xa.dtype, copy=False)
        if not lazy:
            return kernel(Xa, C, *args)
        if labels:
            return Xa.map_blocks(kernel, C, *args, drop_axis=1, dtype=np.int64)
        return Xa.map_blocks(kernel, C, *args, chunks=(Xa.chunks[0], (C.shape[0],)), dtype=Xa.dtype)

    def transform(self, X):
        """Euclidean distance of each sample to every center.

        Parameters
        ----------
        X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
            Samples (a store path or fsspec URL is opened lazily).

        Returns
        -------
        distances : ndarray or dask array of shape (n_samples, n_clusters)
        """
        Xa, lazy = self._check_test_X(X)
        if lazy:
            C = self.cluster_centers_.astype(Xa.dtype, copy=False)
            return Xa.map_blocks(_transform_block, C, chunks=(Xa.chunks[0], (C.shape[0],)), dtype=Xa.dtype)
        return _transform_block(Xa, self._centers_like(Xa))

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return ``labels_`` (see :meth:`fit`)."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def fit_transform(self, X, y=None, sample_weight=None):
        """Fit, then return the distances of X to the centers (see :meth:`fit` and :meth:`transform`)."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the inertia of X on the fitted centers, in one pass.

        Parameters
        ----------
        X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
            Samples (a store path or fsspec URL is opened lazily).
        y : Ignored
        sample_weight : array-like of shape (n_samples,) or None
            Weight of every sample.

        Returns
        -------
        float
            ``-inertia``, so that larger is better.
        """
        Xa, lazy = self._check_test_X(X)
        w = _prepare_weight(sample_weight, Xa.shape[0], Xa.dtype, lazy)
        blocks = self._blocks(Xa, w)
        try:
            inertia = float(final_pass(blocks, self.cluster_centers_)["inertia"])
            if not np.isfinite(inertia):  # only then a second pass, to name the first bad value
                data_stats(blocks)  # raises NonFiniteError naming the first bad value
            return -inertia
        finally:
            blocks.release()

    def save(self, path, overwrite: bool = False):
        """Save the fitted model without pickle (JSON + npz), atomically; see :func:`kmeans_dist.save_model`.

        Parameters
        ----------
        path : str or path-like
            Target folder.
        overwrite : bool, default=False
            Replace an existing model at ``path``.

        Returns
        -------
        str
            ``path``.
        """
        return save_model(self, path, overwrite=overwrite)

    def _set_labels(self, Xa, lazy, labels=None):
        if lazy:
            C = self.cluster_centers_.astype(Xa.dtype, copy=False)
            self.labels_ = Xa.map_blocks(_predict_block, C, drop_axis=1, dtype=np.int64)
        elif labels is not None:  # from the final pass, on the host
            ray_ds = getattr(Xa, "is_ray_dataset", False)  # rows in Ray's object store: labels in NumPy
            self.labels_ = np.asarray(labels) if ray_ds else block_namespace(Xa).asarray(labels)
        else:
            self.labels_, _ = assign_labels(Xa, self._centers_like(Xa))

    def _warn_distinct(self, counts):
        n_distinct = int(np.count_nonzero(counts))
        if n_distinct < self.n_clusters:
            warnings.warn(f"Number of distinct clusters ({n_distinct}) found smaller than n_clusters "
                          f"({self.n_clusters}). Possibly due to duplicate points in X.", ConvergenceWarning,
                          stacklevel=3)


# public names for the other estimators of the family (private names are not imported across modules)
BaseKMeans, prepare_X, prepare_weight = _BaseKMeans, _prepare_X, _prepare_weight


def _block_offset(block_info) -> int:
    return int(block_info[0]["array-location"][0][0]) if block_info else 0


def _predict_block(x, C, block_info=None):
    labels, dist = assign_labels(x, C)
    raise_if_nonfinite(x, dist, _block_offset(block_info))
    return labels


def _transform_block(x, C, block_info=None):
    xp = block_namespace(x)
    D = xp.sqrt(sq_distances(x, xp.asarray(C)))
    raise_if_nonfinite(x, D, _block_offset(block_info))
    return D


class _NullProgress:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def update(self, rec):
        pass


class _RichProgress:
    def __init__(self, total, desc, client):
        self.total, self.desc, self.client = total, desc, client

    def __enter__(self):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        c = get_client(self.client)
        if c is not None and getattr(c, "dashboard_link", None):
            from rich import print as rprint

            rprint(f"[dim]Dask dashboard: {c.dashboard_link}[/dim]")
        self.p = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                          TextColumn("inertia {task.fields[inertia]:.6g}"), TimeElapsedColumn(), transient=False)
        self.p.__enter__()
        self.t = self.p.add_task(self.desc, total=self.total, inertia=float("nan"))
        return self

    def __exit__(self, *a):
        return self.p.__exit__(*a)

    def update(self, rec):
        self.p.update(self.t, completed=rec["iteration"], inertia=rec.get("inertia", float("nan")))


@register_model
class KMeans(_BaseKMeans):
    """K-means clustering on chunked data, with scikit-learn's API.

    X may be a NumPy or CuPy array, a dask array, an xarray DataArray with dims ``(sample, feature)``, or
    the path or fsspec URL of a Zarr store.  Each Lloyd iteration is one pass over the data: every block
    returns per-cluster sums, counts and inertia, combined by a fixed reduction tree.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    init : {"k-means||", "k-means++", "random", "random-partition"}, callable or array of shape \
(n_clusters, n_features), default="k-means||"
        Seeding.  k-means|| (Bahmani et al. 2012) makes ``init_rounds`` passes over the data; k-means++ is
        scikit-learn's greedy variant with local trials (two round trips per center); "random" draws
        ``n_clusters`` distinct rows; "random-partition" averages a random partition.  A callable is called
        as scikit-learn's, ``init(X, n_clusters, random_state=RandomState)``, once per restart, and returns
        the centers; it receives X as validated for the driver (an in-memory array for in-memory input, the
        dask array for lazy input: a store path, a dask array or a dask-backed DataArray), not centered
        (scikit-learn passes its mean-centered copy), so the centers it returns are in X's coordinates.
    n_init : "auto" or int, default="auto"
        Number of restarts; the one with the lowest inertia is kept.  "auto" is 1 for k-means||,
        k-means++ and an array, 10 for random, random-partition and a callable (as scikit-learn's).
    max_iter : int, default=300
        Maximum number of Lloyd iterations per restart.
    tol : float, default=1e-4
        Convergence tolerance on the squared center shift, relative to the mean feature variance (as
        scikit-learn's).
    random_state : int, RandomState, Generator or None, default=None
        Seed of every random choice.  With the same seed the result is the same whatever the chunking and
        the number of workers.
    copy_x : bool, default=True
        scikit-learn's meaning: whether X may be modified during the fit.  This estimator never modifies X
        (it does not center the data: distances are accumulated in float64 per block instead), so X is
        left unchanged for both values and both give the same result; ``False`` saves nothing more, since
        no copy of C-contiguous float input is ever made.
    oversampling_factor : float or None, default=None
        Candidates drawn per k-means|| round (None: ``2 * n_clusters``).
    init_rounds : int, default=5
        Number of k-means|| rounds.
    algorithm : {"lloyd", "elkan", "hamerly"}, default="lloyd"
        "elkan" and "hamerly" run the same Lloyd iterations with bounds kept next to the blocks (in worker
        memory on a cluster) that skip most distance computations once the centers settle.  Both give the
        same labels and centers as "lloyd" except at near-ties within float rounding, which they decide by
        exact distance (as scikit-learn's "elkan"); "elkan" and "hamerly" give the same result bit for bit.
        "elkan" keeps ``n_clusters`` lower bounds per row (``n_clusters * itemsize + 20`` bytes per row of
        worker memory; streamed data runs it without bounds), "hamerly" one (28 bytes per row; streamed
        data runs plain Lloyd).  When each wins (``benchmarks/bench_algorithms.py``, in process, same
        init, fit() wall time relative to "lloyd"): on well separated blobs (100,000 x 32) "hamerly" is
        about 2x faster than "lloyd" for k = 64 and 256 and "elkan" 1.2-1.4x, while for k = 10 (2
        iterations) "lloyd" is fastest; on MNIST (70,000 x 784, overlapping clusters) "elkan" is 4-7%
        faster than "lloyd" for k = 10 to 256 and "hamerly" 1.1-2.5x slower.  The default stays "lloyd"
        (scikit-learn's default): no bound beats it everywhere, it needs no extra memory, and its labels
        are the GEMM's exactly.  CuPy blocks run the plain Lloyd pass.
    min_cluster_size : int or None, default=None
        Minimum rows per cluster (the small-cluster problem; None: no bound).  After Lloyd converges, while
        a cluster holds fewer rows, the biggest cluster is split in two by 2-means and the smallest
        cluster re-seeded in one half, then Lloyd runs again.  If that leaves a cluster too small, the
        constrained k-means of Bradley, Bennett and Demiriz (a min-cost-flow assignment, solved over the
        blocks through its dual prices; exactly in memory when duplicate rows tie) makes every cluster meet
        the bound; ``labels_`` of in-memory input are then that assignment (lazy ``labels_`` and
        :meth:`predict` stay the nearest center).  See :mod:`kmeans_dist.chunked.min_size`.
        Needs ``n_samples >= n_clusters * min_cluster_size``.
    block_rows : "auto" or int, default="auto"
        Rows per canonical block.  The floating-point summation order is fixed by the blocks, so for a given
        ``block_rows`` results are bit-identical whatever the input chunking and the number of workers.
        "auto" gives about 8 MiB per block.
    split_every : int, default=8
        Fan-in of the reduction tree that combines the blocks' partials.
    persist : "auto" or bool, default="auto"
        Keep the blocks in worker memory (``"auto"``: when X takes at most half of it); otherwise stream
        them from the source on every pass.
    client : distributed.Client, None or False, default=None
        None uses the active Dask client if there is one, else runs in process; False always runs in
        process.
    engine : {"auto", "dask", "ray", "local"}, default="auto"
        Where the blocks live: "auto" is the Dask client (``client`` or the active one), else a connected
        Ray cluster, else this process; "ray" holds them in Ray actors (bit-identical results to "dask"
        and "local"); "local" runs in process.
    verbose : int, default=0
        1 or 2: scikit-learn's messages ("Initialization complete", "Iteration i, inertia x.",
        "Converged at iteration i: ..."); 3 or more: a progress bar per restart (and the Dask dashboard
        link) instead.
    callback : callable or None, default=None
        Called after every Lloyd iteration with a dict (``iteration``, ``centers``, ``inertia``,
        ``center_shift``, ``seconds``, ``history``); returning True stops the iterations.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        Final centers.
    labels_ : ndarray or dask array of shape (n_samples,)
        Label of every training row (a lazy dask array for lazy input).
    inertia_ : float
        Sum of squared distances of the rows to their nearest final center.
    n_iter_ : int
        Number of Lloyd iterations run.
    n_features_in_ : int
        Number of features seen in fit.
    cluster_sizes_ : ndarray of shape (n_clusters,)
        Rows per cluster.
    history_ : list of dict
        One record per iteration: ``iteration``, ``inertia``, ``center_shift``, ``seconds``.
    converged_ : bool
        Whether the center shift fell to the tolerance before ``max_iter`` (False when ``max_iter`` or a callback
        ended the iterations).
    seeding_seconds_ : float
        Wall time of the seeding of the kept restart, in seconds.
    fit_seconds_ : float
        Wall time of the whole ``fit`` call (validation, blocks, seeding, every restart, the final pass), in
        seconds: what a user timing ``fit()`` measures.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist import KMeans
    >>> X = np.array([[1.0, 2.0], [1.0, 4.0], [1.0, 0.0], [10.0, 2.0], [10.0, 4.0], [10.0, 0.0]])
    >>> km = KMeans(n_clusters=2, random_state=0).fit(X)
    >>> sorted(km.cluster_centers_[:, 0].tolist())
    [1.0, 10.0]
    >>> km.predict(np.array([[0.0, 0.0], [12.0, 3.0]])).tolist() == [km.predict(X[:1])[0], km.predict(X[3:4])[0]]
    True
    """

    _parameter_constraints = {
        "init": [Options(str, SEEDING_METHODS), CALLABLE, ARRAY_LIKE],
        "n_init": [Options(str, ("auto",)), Interval(int, 1, None, "left")],
        "copy_x": [BOOLEAN],
        "oversampling_factor": [Interval(float, 0, None, "neither"), NONE],
        "init_rounds": [Interval(int, 1, None, "left")],
        "algorithm": [Options(str, ("lloyd", "elkan", "hamerly"))],
        "min_cluster_size": [Interval(int, 1, None, "left"), NONE],
    }

    def __init__(self, n_clusters=8, *, init="k-means||", n_init="auto", max_iter=300, tol=1e-4,
                 random_state=None, copy_x=True, oversampling_factor=None, init_rounds=5, algorithm="lloyd",
                 min_cluster_size=None, block_rows="auto", split_every=8, persist="auto", client=None, verbose=0,
                 callback=None, engine="auto"):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.copy_x = copy_x
        self.oversampling_factor = oversampling_factor
        self.init_rounds = init_rounds
        self.algorithm = algorithm
        self.min_cluster_size = min_cluster_size
        self.block_rows = block_rows
        self.split_every = split_every
        self.persist = persist
        self.client = client
        self.engine = engine
        self.verbose = verbose
        self.callback = callback

    def _resolve_n_init(self):
        if self.n_init != "auto":
            n = int(self.n_init)
            if not isinstance(self.init, str) and not callable(self.init) and n != 1:
                warnings.warn("Explicit initial center position passed: performing only one init in "
                              f"{type(self).__name__} instead of n_init={n}.", RuntimeWarning, stacklevel=3)
                n = 1
            return n
        if callable(self.init) or (isinstance(self.init, str) and self.init in ("random", "random-partition")):
            return 10
        return 1

    def fit(self, X, y=None, sample_weight=None):
        """Compute k-means clustering.

        One pass for the moments (and the NaN/inf check), the seeding passes, one pass per Lloyd
        iteration, and one final pass for the labels and the exact inertia.

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
        Xa, lazy = _prepare_X(X, engine=getattr(self, "engine", "auto"))
        self._set_feature_names(X)
        n, d = Xa.shape
        self._check_n_clusters(n)
        init = self.init
        if not isinstance(init, str) and not callable(init):
            init = self._check_init_array(init, d, Xa.dtype)
        w = _prepare_weight(sample_weight, n, Xa.dtype, lazy)
        self._n_init = self._resolve_n_init()
        seed = seed_from(self.random_state)
        seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=self._n_init)
        if self.min_cluster_size is not None and n < self.n_clusters * self.min_cluster_size:
            raise ValueError(f"n_samples={n} should be >= n_clusters * min_cluster_size="
                             f"{self.n_clusters * self.min_cluster_size}.")
        t_start = time.perf_counter()
        blocks = self._blocks(Xa, w)
        try:
            stats = data_stats(blocks)
            self._tol = absolute_tolerance(stats["var"], self.tol)
            best = None
            for s in seeds:
                t0 = time.perf_counter()
                if callable(init):  # the input as given (a dask array for lazy input), not centered
                    C0 = self._init_from_callable(init, Xa, np.random.RandomState(int(s)), d, Xa.dtype)
                else:
                    C0 = init_centers(None, self.n_clusters, init, random_state=int(s), sample_weight=w,
                                      blocks=blocks, oversampling_factor=self.oversampling_factor,
                                      init_rounds=self.init_rounds, dtype=Xa.dtype)
                t_seed = time.perf_counter() - t0
                self._say("Initialization complete")
                with self._progress(self.max_iter, f"k-means k={self.n_clusters}") as bar:
                    def cb(state, _bar=bar):
                        _bar.update(state)
                        i = state["iteration"] - 1  # scikit-learn counts from 0
                        self._say(f"Iteration {i}, inertia {state['inertia']}.")
                        if state["converged"]:
                            if state["center_shift"] == 0:  # the labels did not change
                                self._say(f"Converged at iteration {i}: strict convergence.")
                            else:
                                self._say(f"Converged at iteration {i}: center shift {state['center_shift']} "
                                          f"within tolerance {self._tol}.")
                        return self.callback(state) if self.callback is not None else None

                    # in-memory input: labels_ come from the final pass (lazy input gets lazy labels)
                    res = lloyd_on_blocks(blocks, C0, max_iter=self.max_iter, tol_abs=self._tol, callback=cb,
                                          final_labels=not lazy, algorithm=self.algorithm)
                res.seeding_seconds = t_seed
                if best is None or res.inertia < best.inertia:
                    best = res
            if self.min_cluster_size is not None:  # the small-cluster rule, see kmeans_dist.chunked.min_size
                seeding = best.seeding_seconds
                best = enforce_min_cluster_size(blocks, best, self.min_cluster_size, max_iter=self.max_iter,
                                                tol_abs=self._tol, final_labels=not lazy, algorithm=self.algorithm)
                best.seeding_seconds = seeding
        finally:
            blocks.release()
        self.cluster_centers_ = best.centers
        self.inertia_ = best.inertia
        self.n_iter_ = best.n_iter
        self.history_ = best.history
        self.cluster_sizes_ = best.counts
        self.seeding_seconds_ = best.seeding_seconds
        self.fit_seconds_ = time.perf_counter() - t_start
        self.n_features_in_ = d
        self.converged_ = best.converged
        self._warn_distinct(best.counts)
        self._set_labels(Xa, lazy, best.labels)
        return self


@register_model
class MiniBatchKMeans(_BaseKMeans):
    """Mini-batch k-means (Sculley 2010, with per-center counts as scikit-learn's) on chunked data.

    Batches are drawn uniformly with replacement in O(batch_size) per step (sample weights enter the
    update, not the draw) and fetched from the workers several steps at a time.  ``polish_iter`` full
    Lloyd passes can follow.  :meth:`partial_fit` updates from in-memory batches (streams).

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    init : {"k-means++", "k-means||", "random", "random-partition"}, callable or array of shape \
(n_clusters, n_features), default="k-means++"
        Seeding, run on a random sample of ``init_size`` rows (as scikit-learn's), ``n_init`` times.  A
        callable is called as ``init(sample, n_clusters, random_state=RandomState)`` on that sample (an
        in-memory array) and returns the centers.
    max_iter : int, default=100
        Maximum number of passes' worth of steps (``max_iter * n_samples / batch_size`` steps).
    batch_size : int, default=1024
        Rows per mini-batch.
    verbose : int, default=0
        1 or 2: scikit-learn's messages (per init, per step); 3 or more: a progress bar instead.
    compute_labels : bool, default=True
        Compute ``labels_`` and ``inertia_`` over the whole data after fitting.
    random_state : int, RandomState, Generator or None, default=None
        Seed of every random choice.
    tol : float, default=0.0
        Early stop when the smoothed squared center shift falls below ``tol`` times the mean feature
        variance (0 disables it).
    max_no_improvement : int or None, default=10
        Early stop after this many steps without improvement of the smoothed batch inertia (None disables).
    init_size : int or None, default=None
        Rows of the seeding sample (None: ``3 * batch_size``, at least ``3 * n_clusters``).
    n_init : "auto" or int, default="auto"
        Seedings tried on the sample, the one with the lowest sample inertia kept; "auto" is 1 for
        k-means++, k-means|| and an array, 3 otherwise.
    reassignment_ratio : float, default=0.01
        Centers with fewer than this fraction of the largest count are re-seeded on random rows.
    polish_iter : int, default=0
        Full Lloyd iterations run after the mini-batch steps.
    block_rows : "auto" or int, default="auto"
        Rows per canonical block.  The floating-point summation order is fixed by the blocks, so for a given
        ``block_rows`` results are bit-identical whatever the input chunking and the number of workers.
        "auto" gives about 8 MiB per block.
    split_every : int, default=8
        Fan-in of the reduction tree that combines the blocks' partials.
    persist : "auto" or bool, default="auto"
        Keep the blocks in worker memory (``"auto"``: when X takes at most half of it); otherwise stream
        them from the source on every pass.
    client : distributed.Client, None or False, default=None
        None uses the active Dask client if there is one, else runs in process; False always runs in
        process.
    engine : {"auto", "dask", "ray", "local"}, default="auto"
        Where the blocks live: "auto" is the Dask client (``client`` or the active one), else a connected
        Ray cluster, else this process; "ray" holds them in Ray actors (bit-identical results to "dask"
        and "local"); "local" runs in process.
    callback : callable or None, default=None
        Called after every step with a dict of the step's state; returning True stops.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        Final centers.
    labels_ : ndarray or dask array of shape (n_samples,)
        Label of every training row (with ``compute_labels``).
    inertia_ : float
        Sum of squared distances to the nearest final center (with ``compute_labels``).
    n_iter_ : int
        Passes' worth of steps run.
    n_steps_ : int
        Mini-batch steps run.
    n_features_in_ : int
        Number of features seen in fit.
    history_ : list of dict
        One record per step.
    fit_seconds_ : float
        Wall time of the whole ``fit`` call, in seconds.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist import MiniBatchKMeans
    >>> X = np.array([[1.0, 2.0], [1.0, 4.0], [1.0, 0.0], [10.0, 2.0], [10.0, 4.0], [10.0, 0.0]])
    >>> mbk = MiniBatchKMeans(n_clusters=2, batch_size=6, random_state=0).fit(X)
    >>> mbk.cluster_centers_.shape
    (2, 2)
    """

    _parameter_constraints = {
        "init": [Options(str, SEEDING_METHODS), CALLABLE, ARRAY_LIKE],
        "n_init": [Options(str, ("auto",)), Interval(int, 1, None, "left")],
        "batch_size": [Interval(int, 1, None, "left")],
        "compute_labels": [BOOLEAN],
        "max_no_improvement": [Interval(int, 0, None, "left"), NONE],
        "init_size": [Interval(int, 1, None, "left"), NONE],
        "reassignment_ratio": [Interval(float, 0, None, "left")],
        "polish_iter": [Interval(int, 0, None, "left")],
    }

    def __init__(self, n_clusters=8, *, init="k-means++", max_iter=100, batch_size=1024, verbose=0,
                 compute_labels=True, random_state=None, tol=0.0, max_no_improvement=10, init_size=None,
                 n_init="auto", reassignment_ratio=0.01, polish_iter=0, block_rows="auto", split_every=8,
                 persist="auto", client=None, callback=None, engine="auto"):
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.verbose = verbose
        self.compute_labels = compute_labels
        self.random_state = random_state
        self.tol = tol
        self.max_no_improvement = max_no_improvement
        self.init_size = init_size
        self.n_init = n_init
        self.reassignment_ratio = reassignment_ratio
        self.polish_iter = polish_iter
        self.block_rows = block_rows
        self.split_every = split_every
        self.persist = persist
        self.client = client
        self.engine = engine
        self.callback = callback

    def _resolve(self, n):
        self._batch_size = min(self.batch_size, n)
        init_size = self.init_size if self.init_size is not None else 3 * self._batch_size
        if init_size < self.n_clusters:
            init_size = 3 * self.n_clusters
        self._init_size = min(init_size, n)
        explicit = not isinstance(self.init, str) and not callable(self.init)
        if self.n_init == "auto":
            self._n_init = 1 if (explicit or self.init in ("k-means++", "k-means||")) else 3
        else:
            self._n_init = int(self.n_init)
            if explicit and self._n_init != 1:
                warnings.warn("Explicit initial center position passed: performing only one init in "
                              f"{type(self).__name__} instead of n_init={self._n_init}.", RuntimeWarning,
                              stacklevel=3)
                self._n_init = 1

    def _init_on_sample(self, blocks, init, rng, seed):
        """Seed on a random subset of ``init_size`` rows (as scikit-learn); best of n_init on it."""
        if not isinstance(init, str) and not callable(init):
            return init
        idx = rng.choice(blocks.n_samples, size=self._init_size, replace=False)
        S, _ = fetch_rows(blocks, np.sort(idx))
        best, best_in = None, np.inf
        for i in range(self._n_init):
            self._say(f"Init {i + 1}/{self._n_init} with method {init}")
            if callable(init):  # on the sample, as scikit-learn's
                C = self._init_from_callable(init, S, np.random.RandomState(int(rng.integers(2**31 - 1))),
                                             S.shape[1], S.dtype)
            elif init == "k-means||":  # on the sample too, as every other init (init_size and n_init apply)
                C = init_centers(None, self.n_clusters, init, random_state=int(rng.integers(2**31 - 1)),
                                 blocks=LocalBlocks(S, None, S.shape[0]), dtype=S.dtype)
            elif init == "k-means++" and is_sparse(S):  # the chunked k-means++ takes sparse blocks
                C = init_centers(None, self.n_clusters, init, random_state=int(rng.integers(2**31 - 1)),
                                 blocks=LocalBlocks(S, None, S.shape[0]), dtype=S.dtype)
            elif init == "k-means++":
                C, _ = kmeans_plusplus(S, self.n_clusters, rng)
            elif init == "random":
                C = S[rng.choice(S.shape[0], size=self.n_clusters, replace=False)]
                C = C.toarray() if is_sparse(C) else C
            elif is_sparse(S):  # random-partition on the sample, sums from the CSR structure
                C = init_centers(None, self.n_clusters, init, random_state=int(rng.integers(2**31 - 1)),
                                 blocks=LocalBlocks(S, None, S.shape[0]), dtype=S.dtype)
            else:  # random-partition on the sample
                lab = rng.integers(0, self.n_clusters, size=S.shape[0])
                C = np.stack([S[lab == j].mean(axis=0) if np.any(lab == j) else S[j] for j in range(self.n_clusters)])
            inertia = lloyd_partial(S, None, C.astype(S.dtype), n_far=0)["inertia"]
            self._say(f"Inertia for init {i + 1}/{self._n_init}: {inertia}")
            if inertia < best_in:
                best, best_in = C, inertia
        return np.asarray(best, dtype=blocks.dtype)

    def fit(self, X, y=None, sample_weight=None):
        """Compute mini-batch k-means: seeding on a sample, the mini-batch steps, optional Lloyd polish.

        Parameters
        ----------
        X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
            Samples (a store path or fsspec URL is opened lazily).
        y : Ignored
        sample_weight : array-like of shape (n_samples,) or None
            Weight of every sample (it enters the updates, not the draws).

        Returns
        -------
        self
        """
        self._validate_params()
        Xa, lazy = _prepare_X(X, engine=getattr(self, "engine", "auto"))
        self._set_feature_names(X)
        n, d = Xa.shape
        self._check_n_clusters(n)
        self._resolve(n)
        init = self.init
        if not isinstance(init, str) and not callable(init):
            init = self._check_init_array(init, d, Xa.dtype)
        w = _prepare_weight(sample_weight, n, Xa.dtype, lazy)
        seed = seed_from(self.random_state)
        rng = self._rng = np.random.default_rng(seed)  # partial_fit after fit goes on with the same stream
        self._n_since_last_reassign = 0
        t_start = time.perf_counter()
        blocks = self._blocks(Xa, w)
        try:
            stats = data_stats(blocks)
            self._tol = absolute_tolerance(stats["var"], self.tol)
            C0 = self._init_on_sample(blocks, init, rng, seed)
            n_steps = max(1, (self.max_iter * n) // self._batch_size)
            with self._progress(n_steps, f"mini-batch k={self.n_clusters}") as bar:
                def cb(state):
                    bar.update(state)
                    self._say(f"Minibatch step {state['iteration']}/{n_steps}: mean batch inertia: "
                              f"{state['inertia']}, ewa inertia: {state['ewa_inertia']}")
                    return self.callback(state) if self.callback is not None else None

                C, W, steps, hist, conv = minibatch_on_blocks(
                    blocks, C0, batch_size=self._batch_size, max_iter=self.max_iter, tol_abs=self._tol,
                    max_no_improvement=self.max_no_improvement, reassignment_ratio=self.reassignment_ratio,
                    rng=rng, callback=cb)
            self.n_steps_ = steps
            self.history_ = hist
            if self.polish_iter:
                res = lloyd_on_blocks(blocks, C, max_iter=self.polish_iter, tol_abs=0.0, final=False)
                C = res.centers
                self.polish_history_ = res.history
            f = final_pass(blocks, C, labels=self.compute_labels and not lazy)
        finally:
            blocks.release()
        self.cluster_centers_ = C
        self._counts = W
        self.inertia_ = float(f["inertia"])
        self.cluster_sizes_ = f["count"]
        self.n_iter_ = int(np.ceil(steps * self._batch_size / n))
        self.n_features_in_ = d
        self.converged_ = conv
        self.fit_seconds_ = time.perf_counter() - t_start
        if self.compute_labels:
            self._set_labels(Xa, lazy, f.get("labels"))
        return self

    def partial_fit(self, X, y=None, sample_weight=None):
        """Update the centers with one in-memory mini-batch (the first call seeds on it).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            One batch.
        y : Ignored
        sample_weight : array-like of shape (n_samples,) or None
            Weight of every sample of the batch.

        Returns
        -------
        self
        """
        first = not hasattr(self, "cluster_centers_")
        if first:
            self._validate_params()
        else:
            self._check_feature_names(X)
        Xa, lazy = _prepare_X(X, engine=getattr(self, "engine", "auto"))
        self._set_feature_names(X)
        if lazy:
            Xa = Xa.compute()
            Xa = Xa if is_sparse(Xa) else np.asarray(Xa)
        n, d = Xa.shape
        w = _prepare_weight(sample_weight, n, Xa.dtype, False)
        raise_if_nonfinite(Xa, Xa)  # before any state changes: a bad batch leaves the estimator as it was
        if first:
            self._check_n_clusters(n)
            self._set_feature_names(X)
            self._resolve(n)
            self._rng = np.random.default_rng(seed_from(self.random_state))
            init = self.init
            if not isinstance(init, str) and not callable(init):
                init = self._check_init_array(init, d, Xa.dtype)
            else:
                self._init_size = min(self._init_size, n)
                init = self._init_on_sample(LocalBlocks(Xa, None, n), init, self._rng, seed_from(self.random_state))
            self.cluster_centers_ = np.asarray(init, dtype=Xa.dtype)
            self._counts = np.zeros(self.n_clusters)
            self._n_since_last_reassign = 0
            self.n_steps_ = 0
            self.n_features_in_ = d
        elif d != self.n_features_in_:
            raise ValueError(f"X has {d} features, but MiniBatchKMeans is expecting {self.n_features_in_} "
                             "features as input.")
        if not hasattr(self, "_rng"):  # a loaded model: its generator and resolved sizes are not saved
            self._rng = np.random.default_rng(seed_from(self.random_state))
            self._resolve(max(n, self.n_clusters))
        self._n_since_last_reassign = getattr(self, "_n_since_last_reassign", 0) + self._batch_size
        rr = bool((self._counts == 0).any() or self._n_since_last_reassign >= 10 * self.n_clusters)
        if rr:
            self._n_since_last_reassign = 0
        C, W, _, _ = minibatch_step(Xa, w, self.cluster_centers_, self._counts, self._rng,
                                    reassignment_ratio=self.reassignment_ratio, random_reassign=rr)
        self.cluster_centers_, self._counts = C, W
        self.n_steps_ += 1
        if self.compute_labels:
            p = lloyd_partial(Xa, w, C.astype(Xa.dtype), n_far=0, exact_inertia=True, return_labels=True)
            self.labels_, self.inertia_ = p["labels"], p["inertia"]
        return self
