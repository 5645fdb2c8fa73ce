"""k-means with restarts on blocks already made: the moments pass, then ``n_init`` seedings and Lloyd runs, the
lowest inertia kept.  What :class:`kmeans_dist.KMeans` computes, as one function of any transport (the deep
stage runs it on the embeddings of every epoch, in process or on :class:`~kmeans_dist.chunked.driver.CollectiveBlocks`).
"""
from __future__ import annotations

import numpy as np

from ..kernels.stats import absolute_tolerance
from .lloyd import LloydResult, data_stats, lloyd_on_blocks
from .seeding import init_centers, seed_from

__all__ = ["kmeans_on_blocks"]


def kmeans_on_blocks(blocks, n_clusters: int, *, init: str = "k-means++", n_init: int = 10, max_iter: int = 300,
                     tol: float = 1e-4, random_state=None, algorithm: str = "lloyd") -> LloydResult:
    """Seed and run Lloyd ``n_init`` times on ``blocks``; the first run with the lowest inertia.

    The restarts' seeds are drawn as :class:`kmeans_dist.KMeans` draws them, so the result equals
    ``KMeans(n_clusters, init=init, n_init=n_init, max_iter=max_iter, tol=tol, random_state=random_state)`` on
    the same blocks, and it is the same for every transport and every number of processes.

    Parameters
    ----------
    blocks : LocalBlocks, DaskBlocks, StreamBlocks, RayBlocks or CollectiveBlocks
        The data (see :func:`kmeans_dist.chunked.make_blocks`); not released here.
    n_clusters : int
        Number of clusters.
    init : {"k-means++", "k-means||", "random", "random-partition"}, default="k-means++"
        Seeding of every restart.
    n_init : int, default=10
        Restarts.
    max_iter : int, default=300
        Lloyd iterations per restart.
    tol : float, default=1e-4
        Convergence tolerance, relative to the mean feature variance (scikit-learn's).
    random_state : int, Generator or None, default=None
        Seed of the restarts.
    algorithm : {"lloyd", "hamerly", "elkan"}, default="lloyd"
        As :func:`~kmeans_dist.chunked.lloyd_on_blocks`.

    Returns
    -------
    LloydResult
        ``centers``, ``inertia`` (exact, from the final pass), ``n_iter``, ``history``, ``counts``; no labels.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.chunked import make_blocks
    >>> from kmeans_dist.chunked.restarts import kmeans_on_blocks
    >>> X = np.array([[0.0, 0.0], [0.0, 0.1], [9.0, 9.0], [9.0, 9.1]])
    >>> res = kmeans_on_blocks(make_blocks(X, client=False), 2, n_init=2, random_state=0)
    >>> sorted(res.centers[:, 0].tolist()), round(res.inertia, 3)
    ([0.0, 9.0], 0.01)
    """
    stats = data_stats(blocks)
    tol_abs = absolute_tolerance(stats["var"], tol)
    seeds = np.random.default_rng(seed_from(random_state)).integers(0, 2**31 - 1, size=int(n_init))
    best = None
    for s in seeds:
        C0 = init_centers(None, int(n_clusters), init, random_state=int(s), blocks=blocks, dtype=blocks.dtype)
        res = lloyd_on_blocks(blocks, C0, max_iter=max_iter, tol_abs=tol_abs, algorithm=algorithm)
        if best is None or res.inertia < best.inertia:
            best = res
    return best
