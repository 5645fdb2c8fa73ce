"""kmeans-dist: chunked, distributed k-means on Dask and Zarr with a scikit-learn API.

Layers, from the bottom up (each imports only from the layers below it):

- :mod:`kmeans_dist.kernels`: in-memory per-block kernels over the array API (NumPy or CuPy);
- :mod:`kmeans_dist.data`: Zarr stores, ingest and synthetic data sets;
- :mod:`kmeans_dist.chunked`: the block driver and its passes (Lloyd, mini-batch, seeding, moments);
- :mod:`kmeans_dist.estimators` and :mod:`kmeans_dist.metrics`: KMeans, MiniBatchKMeans, model files,
  and clustering metrics over the same driver;
- :mod:`kmeans_dist.selection`: choosing k;
- :mod:`kmeans_dist.deep`: deep k-means in plain PyTorch;
- :mod:`kmeans_dist.cli`: the ``kmeans-dist`` command.
"""
from .chunked import standardize
from .estimators import KMeans, MiniBatchKMeans, load_model, save_model

__version__ = "0.1.0"
__all__ = ["KMeans", "MiniBatchKMeans", "load_model", "save_model", "standardize", "__version__"]
