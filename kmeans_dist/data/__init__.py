"""Data and IO: Zarr v3 stores read as dask arrays or xarray objects with dims ``(sample, feature)``.

- :mod:`~kmeans_dist.data.store`: open, check, write (atomically) and describe stores; coerce any input
  (NumPy, dask, xarray, a store path or fsspec URL) to a dask array;
- :mod:`~kmeans_dist.data.ingest`: stream a source (``.npy``, CSV/Parquet, MNIST IDX files, scikit-learn's
  digits) into a store chunk by chunk;
- :mod:`~kmeans_dist.data.datasets`: seeded synthetic teaching data sets (blobs, anisotropic, unequal sizes,
  moons, rings), generated chunk by chunk and identical whatever the chunking.

An input store is never modified: every write goes to a new store.
"""
from . import datasets
from .ingest import (MNIST_FILES, SOURCE_KINDS, resolve_source, find_mnist_dir, ingest, ingest_mnist, ingest_npy, ingest_sparse_npz, ingest_table, iter_idx_chunks,
                     load_mnist, read_idx)
from .atomic import OutputError, OutputExistsError, atomic_dir, atomic_write_bytes, atomic_write_json, check_output
from .store import (DIMS, STORE_FORMAT, DataError, IntegrityWarning, check_integrity, as_dask_array, as_labels_array, is_local_path, open_dataarray,
                    open_labels, open_store, row_reader, store_info, write_store, check_sparse, write_sparse_store, chunk_fingerprint)

__all__ = [
    "datasets", "chunk_fingerprint", "DIMS", "STORE_FORMAT", "IntegrityWarning", "check_integrity", "DataError", "as_dask_array", "as_labels_array", "atomic_dir", "atomic_write_bytes", "OutputError", "OutputExistsError", "check_output",
    "atomic_write_json", "is_local_path",
    "open_dataarray", "open_labels", "open_store", "row_reader", "store_info", "write_store", "check_sparse", "write_sparse_store",
    "MNIST_FILES", "SOURCE_KINDS", "resolve_source", "find_mnist_dir", "ingest", "ingest_mnist", "ingest_npy", "ingest_sparse_npz", "ingest_table", "iter_idx_chunks",
    "load_mnist", "read_idx",
]
