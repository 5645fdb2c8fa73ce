"""The estimators: validated public entries with scikit-learn's API over the chunked layer.

- :class:`KMeans` (full Lloyd or Hamerly's bounded Lloyd) and :class:`MiniBatchKMeans`;
- :func:`save_model` / :func:`load_model`: JSON + npz, no pickle; :class:`ModelFileError` for a
  saved model that cannot be trusted (unreadable, edited, truncated, or of an unknown class).

Parameters are checked by :mod:`kmeans_dist.estimators.validation` with scikit-learn's wording.
"""
from .kmeans import KMeans, MiniBatchKMeans
from .persistence import ModelFileError, load_model, save_model

__all__ = ["KMeans", "MiniBatchKMeans", "ModelFileError", "load_model", "save_model"]
