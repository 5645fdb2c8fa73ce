"""kmeans-dist: chunked, distributed k-means on Dask and Zarr with a scikit-learn API."""
from .estimators import KMeans, MiniBatchKMeans
from .io import load_model, save_model

__version__ = "0.1.0"
__all__ = ["KMeans", "MiniBatchKMeans", "load_model", "save_model", "__version__"]
