"""In-memory k-means on one array of any namespace: k-means++ seeding, Lloyd, and restarts.

Used on the candidates of k-means||, on latent embeddings by :mod:`kmeans_dist.deep`, and by the
estimators when the data is one in-memory block.  CuPy arrays stay on the GPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .distances import row_norms_sq, sq_distances
from .lloyd import finalize_centers, lloyd_partial
from .stats import absolute_tolerance
from .xp import get_namespace, is_numpy_namespace, to_numpy

__all__ = ["kmeans_plusplus", "KMeansResult", "lloyd_inmemory", "kmeans_inmemory"]


def kmeans_plusplus(X, n_clusters: int, rng: np.random.Generator, sample_weight=None,
                    n_local_trials: int | None = None):
    """Greedy k-means++ (Arthur & Vassilvitskii 2007, with local trials as scikit-learn).

    Random draws happen on the host, distances on the array's device.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        NumPy, CuPy or any array-API array.
    n_clusters : int
        Number of centers to draw.
    rng : numpy.random.Generator
        Source of every random draw.
    sample_weight : array of shape (n_samples,) or None, default=None
        Weight of every row.
    n_local_trials : int or None, default=None
        Candidates tried per center (None: ``2 + int(log(n_clusters))``, as scikit-learn).

    Returns
    -------
    centers : array of shape (n_clusters, n_features)
        The chosen rows, in ``X``'s namespace.
    indices : ndarray of shape (n_clusters,)
        Their row indices.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.kernels import kmeans_plusplus
    >>> X = np.array([[0.0, 0.0], [0.0, 0.1], [9.0, 9.0], [9.0, 9.1]])
    >>> centers, idx = kmeans_plusplus(X, 2, np.random.default_rng(0))
    >>> sorted(int(i) // 2 for i in idx)
    [0, 1]
    """
    xp = get_namespace(X)
    n = X.shape[0]
    f64 = xp.float64
    if sample_weight is None:
        w = np.ones(n, dtype=np.float64)
    else:
        w = np.asarray(to_numpy(sample_weight), dtype=np.float64)
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    x_sq = row_norms_sq(X)
    idx0 = int(rng.choice(n, p=w / w.sum()))
    indices = [idx0]
    closest = xp.astype(sq_distances(X, X[idx0:idx0 + 1, ...], x_sq=x_sq)[:, 0], f64)
    w_dev = xp.asarray(w, dtype=f64) if not is_numpy_namespace(xp) else w
    pot = float(to_numpy(xp.sum(closest * w_dev)))
    for _ in range(1, n_clusters):
        if pot <= 0:  # fewer distinct points than clusters: pick uniformly among the rest
            cand = rng.choice(n, size=n_local_trials)
        else:
            cum = np.cumsum(to_numpy(closest) * w)
            r = rng.uniform(size=n_local_trials) * cum[-1]
            cand = np.minimum(np.searchsorted(cum, r), n - 1)
        cand_x = xp.take(X, xp.asarray(cand), axis=0)
        D = xp.astype(sq_distances(X, cand_x, x_sq=x_sq), f64)  # (n, trials)
        D = xp.minimum(D, closest[:, None])
        pots = to_numpy(xp.sum(D * w_dev[:, None], axis=0))
        best = int(np.argmin(pots))
        pot = float(pots[best])
        closest = D[:, best]
        indices.append(int(cand[best]))
    idx = xp.asarray(np.asarray(indices))
    return xp.take(X, idx, axis=0), np.asarray(indices)


@dataclass
class KMeansResult:
    """The result of one in-memory k-means run.

    Attributes
    ----------
    centers : array of shape (n_clusters, n_features)
        Final centers, in the namespace of the input.
    labels : array of shape (n_samples,)
        Index of the nearest final center of every row.
    inertia : float
        Weighted sum of squared distances to the nearest final center.
    n_iter : int
        Number of Lloyd iterations run.
    history : list of dict
        One ``{"iteration", "inertia", "center_shift"}`` record per iteration.
    """

    centers: object
    labels: object
    inertia: float
    n_iter: int
    history: list


def lloyd_inmemory(X, centers, sample_weight=None, *, max_iter: int = 300, tol: float = 1e-4,
                   tol_is_absolute: bool = False) -> KMeansResult:
    """Lloyd's algorithm on one in-memory array (any namespace), numerics as scikit-learn's lloyd.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        NumPy, CuPy or any array-API array; CuPy stays on the GPU.
    centers : array of shape (n_clusters, n_features)
        Initial centers.
    sample_weight : array of shape (n_samples,) or None, default=None
        Weight of every row.
    max_iter : int, default=300
        Maximum number of iterations.
    tol : float, default=1e-4
        Tolerance on the squared center shift, relative to the mean feature variance.
    tol_is_absolute : bool, default=False
        Take ``tol`` as the absolute bound instead.

    Returns
    -------
    KMeansResult
        Final centers, labels, inertia, iterations and history.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.kernels import lloyd_inmemory
    >>> X = np.array([[0.0], [1.0], [10.0], [11.0]])
    >>> res = lloyd_inmemory(X, np.array([[0.0], [10.0]]))
    >>> res.centers.ravel().tolist(), float(res.inertia)
    ([0.5, 10.5], 1.0)
    """
    xp = get_namespace(X, centers)
    if not tol_is_absolute and tol > 0:
        tol = absolute_tolerance(to_numpy(xp.var(xp.astype(X, xp.float64), axis=0)), tol)
    centers_h = to_numpy(centers)
    history = []
    n_iter = 0
    for i in range(max_iter):
        part = lloyd_partial(X, sample_weight, xp.asarray(centers_h) if not is_numpy_namespace(xp) else centers_h)
        new, _ = finalize_centers(part, centers_h)
        shift = float(((new.astype(np.float64) - centers_h) ** 2).sum())
        history.append({"iteration": i + 1, "inertia": part["inertia"], "center_shift": shift})
        centers_h = new
        n_iter = i + 1
        if shift <= tol:
            break
    C = centers_h if is_numpy_namespace(xp) else xp.asarray(centers_h)
    final = lloyd_partial(X, sample_weight, C, exact_inertia=True, return_labels=True)
    return KMeansResult(C, final["labels"], final["inertia"], n_iter, history)


def kmeans_inmemory(X, n_clusters: int, *, n_init: int = 10, max_iter: int = 300, tol: float = 1e-4,
                    random_state=None, sample_weight=None) -> KMeansResult:
    """k-means++ seeding and Lloyd, ``n_init`` restarts, the lowest inertia kept, on one array.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        NumPy or CuPy (or any array-API) array; CuPy stays on the GPU.
    n_clusters : int
        Number of clusters.
    n_init : int, default=10
        Number of k-means++ restarts; the first one with the lowest inertia is kept.
    max_iter : int, default=300
        Maximum number of Lloyd iterations per restart.
    tol : float, default=1e-4
        Convergence tolerance, relative to the mean feature variance (as scikit-learn's).
    random_state : int, numpy Generator or None
        Seed of the host random generator that draws the k-means++ candidates.
    sample_weight : array of shape (n_samples,) or None
        Weight of every row.

    Returns
    -------
    KMeansResult
        ``centers``, ``labels``, ``inertia``, ``n_iter`` and the per-iteration ``history`` of the kept run.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.kernels import kmeans_inmemory
    >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> res = kmeans_inmemory(X, 2, n_init=2, random_state=0)
    >>> sorted(np.bincount(res.labels).tolist())
    [2, 2]
    """
    rng = np.random.default_rng(random_state)
    best = None
    for _ in range(n_init):
        C0 = kmeans_plusplus(X, n_clusters, rng, sample_weight=sample_weight)[0]
        res = lloyd_inmemory(X, C0, sample_weight, max_iter=max_iter, tol=tol)
        if best is None or res.inertia < best.inertia:
            best = res
    return best
