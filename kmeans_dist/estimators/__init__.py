"""The estimators: validated public entries with scikit-learn's API over the chunked layer.

- :class:`KMeans` (full Lloyd or Hamerly's bounded Lloyd) and :class:`MiniBatchKMeans`;
- :func:`save_model` / :func:`load_model`: JSON + npz, no pickle.
"""
from .kmeans import KMeans, MiniBatchKMeans
from .persistence import ModelFileError, load_model, save_model

__all__ = ["KMeans", "MiniBatchKMeans", "ModelFileError", "load_model", "save_model"]
