"""The estimators: validated public entries with scikit-learn's API over the chunked layer.

- :class:`KMeans` (full Lloyd or Hamerly's bounded Lloyd) and :class:`MiniBatchKMeans`;
- :class:`BisectingKMeans` (scikit-learn's bisecting k-means) and :class:`SphericalKMeans` (cosine);
- :class:`KMedians` (L1, exact medians) and :class:`KMedoids` (PAM, CLARA);
- :class:`AnomalyScoresMixin`: ``score_samples``, ``anomaly_threshold``, ``predict_outliers`` on all of them;
- :func:`save_model` / :func:`load_model`: JSON + npz, no pickle; :class:`ModelFileError` for a
  saved model that cannot be trusted (unreadable, edited, truncated, or of an unknown class).

Parameters are checked by :mod:`kmeans_dist.estimators.validation` with scikit-learn's wording.
"""
from .kmeans import KMeans, MiniBatchKMeans
from .persistence import ModelFileError, load_model, save_model
from .anomaly import AnomalyScoresMixin
from .bisecting import BisectingKMeans
from .spherical import SphericalKMeans
from .kmedians import KMedians
from .kmedoids import KMedoids
from .family import ALGORITHMS, make_estimator

__all__ = ["ALGORITHMS", "make_estimator", "KMeans", "MiniBatchKMeans", "BisectingKMeans", "SphericalKMeans", "KMedians", "KMedoids", "AnomalyScoresMixin", "ModelFileError", "load_model", "save_model"]
