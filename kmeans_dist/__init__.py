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
import importlib

__version__ = "0.1.0"

# The public names, imported on first use: a Dask worker or Ray actor that unpickles a kernel of
# kmeans_dist.kernels or kmeans_dist.chunked then loads only that layer (not scikit-learn, the estimators
# and their dependencies), which keeps its memory small.
_EXPORTS = {
    "KMeans": "estimators", "MiniBatchKMeans": "estimators", "BisectingKMeans": "estimators",
    "SphericalKMeans": "estimators", "KMedians": "estimators", "KMedoids": "estimators",
    "AnomalyScoresMixin": "estimators", "load_model": "estimators", "save_model": "estimators",
    "standardize": "chunked",
}
__all__ = list(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
