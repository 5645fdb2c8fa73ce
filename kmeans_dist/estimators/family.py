"""The k-means family by name: one entry for the CLI (``kmeans-dist fit --algorithm``) and the flows.

Each name maps to an estimator class and the parameters that select the algorithm:

============  ==========================================================
name          estimator
============  ==========================================================
lloyd         :class:`KMeans` (``algorithm="lloyd"``)
hamerly       :class:`KMeans` (``algorithm="hamerly"``)
elkan         :class:`KMeans` (``algorithm="elkan"``)
minibatch     :class:`MiniBatchKMeans`
bisecting     :class:`BisectingKMeans`
spherical     :class:`SphericalKMeans`
kmedians      :class:`KMedians`
kmedoids      :class:`KMedoids`
============  ==========================================================
"""
from __future__ import annotations

import inspect

from .bisecting import BisectingKMeans
from .kmeans import KMeans, MiniBatchKMeans
from .kmedians import KMedians
from .kmedoids import KMedoids
from .spherical import SphericalKMeans

__all__ = ["ALGORITHMS", "make_estimator"]

ALGORITHMS = {
    "lloyd": (KMeans, {"algorithm": "lloyd"}),
    "hamerly": (KMeans, {"algorithm": "hamerly"}),
    "elkan": (KMeans, {"algorithm": "elkan"}),
    "minibatch": (MiniBatchKMeans, {}),
    "bisecting": (BisectingKMeans, {}),
    "spherical": (SphericalKMeans, {}),
    "kmedians": (KMedians, {}),
    "kmedoids": (KMedoids, {}),
}


def make_estimator(algorithm: str, n_clusters: int, **params):
    """An unfitted estimator of the family, from its name and the parameters it takes.

    Parameters that the chosen estimator does not have (``batch_size`` for :class:`KMeans`, say) are
    left out, so one set of options serves every name; a named option that the estimator does not accept
    (an ``init`` such as ``"k-means||"`` for :class:`KMedoids`, ``n_init="auto"`` for
    :class:`BisectingKMeans`) is left out too (the estimator's default applies), as is an array ``init``
    for an estimator that takes no initial centers, and a ``None`` value.

    Parameters
    ----------
    algorithm : str
        One of :data:`ALGORITHMS`.
    n_clusters : int
        Number of clusters.
    **params
        Constructor parameters.

    Returns
    -------
    estimator
        Not fitted; its parameters are validated at ``fit``.

    Raises
    ------
    ValueError
        If ``algorithm`` is not a name of the family.

    Examples
    --------
    >>> from kmeans_dist.estimators import make_estimator
    >>> est = make_estimator("kmedians", 3, init="k-means++", batch_size=100, random_state=0)
    >>> type(est).__name__, est.n_clusters, est.random_state
    ('KMedians', 3, 0)
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {sorted(ALGORITHMS)}, got {algorithm!r}")
    cls, fixed = ALGORITHMS[algorithm]
    names = set(inspect.signature(cls.__init__).parameters) - {"self"}
    kw = {k: v for k, v in params.items() if k in names and v is not None}
    constraints = {**getattr(cls, "_common_constraints", {}), **cls._parameter_constraints}
    for k in [k for k, v in kw.items() if isinstance(v, str) and k in constraints]:
        # a named option of another member of the family ("k-means||" for KMedoids, n_init="auto" for
        # BisectingKMeans): this estimator's own default instead
        if not any(c.is_satisfied_by(kw[k]) for c in constraints[k]):
            kw.pop(k)
    init = kw.get("init")
    if init is not None and not isinstance(init, str) and not callable(init) and "init" in constraints:
        if not any(c.is_satisfied_by(init) for c in constraints["init"]):  # no initial centers taken
            kw.pop("init")
    return cls(n_clusters=n_clusters, **kw, **fixed)
