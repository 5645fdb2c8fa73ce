"""Data layer: Zarr v3 stores read as dask arrays / xarray DataArrays with dims ``(sample, feature)``.

A *store* written by this module is a Zarr v3 group holding

- ``X``: float array ``(sample, feature)``, chunked along samples, with ``dimension_names``;
- optionally ``labels``: integer array ``(sample,)`` (ground truth, e.g. MNIST digits);
- group attributes: ``feature_names``, ``source``, ``n_samples``, ``n_features`` and any user attrs.

Writes are atomic for local paths (written to a temporary sibling, then renamed), so a crash never
leaves a half-written store that opens.  Stores written here carry a checksum in every chunk (zstd with
its content checksum) and a manifest of their chunk counts; every chunk is written, even an all-zero one.
Reading checks that each chunk exists (a missing chunk is an error naming the chunk and its rows, never
zeros), and a flipped byte fails the checksum.  Stores written elsewhere still open, with a warning that
their integrity cannot be checked.  Ingest streams chunk by chunk: nothing larger than a chunk
is ever held in memory.  The input store is never modified.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from .atomic import atomic_dir
from ..kernels.tree import auto_block_rows

__all__ = [
    "DataError",
    "as_dask_array",
    "as_labels_array",
    "open_store",
    "row_reader",
    "open_dataarray",
    "open_labels",
    "write_store",
    "store_info",
    "is_local_path",
    "atomic_dir",
    "DIMS",
    "STORE_FORMAT",
    "IntegrityWarning",
    "check_integrity",
    "write_stream",
    "rows_per_chunk",
    "chunk_fingerprint",
    "DEFAULT_CHUNK_BYTES",
    "check_sparse",
    "write_sparse_store",
    "SPARSE_LAYOUT",
]

DIMS = ("sample", "feature")
STORE_FORMAT = "kmeans-dist/2"  # /2: checksummed chunks, every chunk written, chunk counts in the attributes
# one canonical block per stored chunk by default: a streamed pass then holds about 8 MiB per task (plus the
# chunk being decoded), which keeps workers of a few hundred MiB alive on data far larger than their memory
DEFAULT_CHUNK_BYTES = 8 * 2**20
SPARSE_LAYOUT = "csr"  # the layout marker of a sparse X group (see write_sparse_store)


class DataError(ValueError):
    """Bad or unreadable input data (missing path, empty store, undecodable chunk, wrong shape)."""


# --------------------------------------------------------------------------------------------------
# paths and atomic writes
# --------------------------------------------------------------------------------------------------

def is_local_path(url) -> bool:
    """Whether ``url`` names a local path (no fsspec protocol other than ``file://``).

    Parameters
    ----------
    url : str or os.PathLike
        A path or URL.

    Returns
    -------
    bool
    """
    s = os.fspath(url)
    return "://" not in s or s.startswith("file://")


def _local(url) -> Path:
    s = os.fspath(url)
    return Path(s[len("file://"):] if s.startswith("file://") else s)


def rows_per_chunk(n_features: int, itemsize: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows per stored chunk: about ``chunk_bytes``, and a whole number of canonical blocks.

    Then a streamed pass reads every chunk in one task and needs no rechunk graph
    (:class:`kmeans_dist.chunked.StreamBlocks`).

    Parameters
    ----------
    n_features : int
        Columns of X.
    itemsize : int
        Bytes per element.
    chunk_bytes : int
        Target bytes per chunk.

    Returns
    -------
    int
        At least 1.
    """
    block = auto_block_rows(n_features, itemsize)  # a whole number of canonical blocks per chunk
    return int(block * max(1, chunk_bytes // max(1, block * n_features * itemsize)))


# --------------------------------------------------------------------------------------------------
# opening
# --------------------------------------------------------------------------------------------------

def _open_group(url, storage_options=None):
    import zarr

    if is_local_path(url) and not _local(url).exists():
        raise DataError(f"No Zarr store at {os.fspath(url)!r}: the path does not exist")
    try:
        return zarr.open_group(os.fspath(url) if not is_local_path(url) else str(_local(url)), mode="r",
                               storage_options=storage_options)
    except Exception as exc:  # zarr raises several types for a missing/corrupt group
        meta = _local(url) / "zarr.json" if is_local_path(url) else None
        where = f" (its metadata file {os.fspath(meta)!r} is unreadable or invalid)" if meta and meta.exists() else ""
        raise DataError(f"Cannot open {os.fspath(url)!r} as a Zarr group{where}: {type(exc).__name__}: {exc}") from exc


def open_store(url, *, array: str = "X", storage_options=None):
    """Open ``array`` of a Zarr store (path or fsspec URL) as a dask array chunked as stored.

    Only metadata is read; every chunk is read (and its checksum verified) when a task needs it.

    Parameters
    ----------
    url : str or os.PathLike
        A local path or an fsspec URL (``s3://...``, ``gs://...``).
    array : str, default="X"
        Name of the array in the store's group.
    storage_options : dict or None, default=None
        Passed to fsspec.

    Returns
    -------
    dask.array.Array
        Lazy, chunked along samples as stored.

    Raises
    ------
    DataError
        When the store or the array does not exist, or a chunk is missing.

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> from kmeans_dist.data import write_store, open_store
    >>> url = write_store(os.path.join(tempfile.mkdtemp(), "s.zarr"), np.ones((10, 3), np.float32), chunk_rows=4)
    >>> X = open_store(url)
    >>> X.shape, X.chunks[0], str(X.dtype)
    ((10, 3), (4, 4, 2), 'float32')
    """
    import dask.array as da

    g = _open_group(url, storage_options)
    z = _open_array(g, url, array)
    if z is None:
        raise DataError(f"Zarr store {os.fspath(url)!r} has no array {array!r} "
                        f"(it holds: {sorted(g.keys()) or 'nothing'}); is it an empty store?")
    if _is_csr_group(z):
        return _open_csr(g, z, url, array)
    if any(s == 0 for s in z.shape):
        raise DataError(f"Zarr store {os.fspath(url)!r}: array {array!r} is empty (shape {z.shape})")
    if np.dtype(z.dtype).kind not in "biuf":
        raise DataError(f"Zarr store {os.fspath(url)!r}: array {array!r} holds {z.dtype} values; k-means needs "
                        "numbers (bool, int or float): convert the column(s) before ingesting")
    check_integrity(g, z, url, array)
    fps = (dict(g.attrs).get("chunk_fingerprints") or {}).get(array)
    reader = _CheckedArray(z, os.fspath(url), array, fps)
    out = da.from_array(reader, chunks=z.chunks, asarray=True, name=f"zarr-{array}-" + _token(url, z),
                        meta=np.empty((0,) * z.ndim, dtype=z.dtype))
    _ROW_READERS[out.name] = reader
    return out


# dask array name -> the checked reader of the store it was opened from (see row_reader)
_ROW_READERS: dict = {}


def row_reader(a):
    """The checked store reader behind a dask array that :func:`open_store` returned, else None.

    ``reader[start:stop]`` reads those rows (every feature) as one NumPy array, with the same checks as the dask
    array's chunks (a missing chunk, a chunk that does not decode, a chunk swapped with another are errors that
    name it).  A task can read its rows itself instead of depending on one read task per chunk.  Any array
    derived from the opened one (a slice, a dtype change, a rechunk) has another name and gets None.

    Parameters
    ----------
    a : object
        Usually a dask array.

    Returns
    -------
    object or None
        The reader (picklable: it holds the Zarr array, not its data).

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> from kmeans_dist.data import write_store, open_store, row_reader
    >>> url = write_store(os.path.join(tempfile.mkdtemp(), "s.zarr"), np.arange(12.0).reshape(6, 2), chunk_rows=4)
    >>> X = open_store(url)
    >>> row_reader(X)[3:5].tolist(), row_reader(X[1:]) is None
    ([[6.0, 7.0], [8.0, 9.0]], True)
    """
    name = getattr(a, "name", None)
    return _ROW_READERS.get(name) if isinstance(name, str) else None


def _open_array(group, url, name):
    """``group[name]``, or None when absent; an invalid array metadata file is a :class:`DataError`."""
    try:
        return group[name] if name in group else None
    except Exception as exc:  # an unreadable or invalid array zarr.json
        meta = f"{os.fspath(url)}/{name}/zarr.json"
        raise DataError(f"Cannot open array {name!r} of {os.fspath(url)!r}: its metadata file {meta!r} is "
                        f"unreadable or invalid ({type(exc).__name__}: {exc})") from exc


class IntegrityWarning(UserWarning):
    """A store whose chunks carry no checksum: a corrupt or missing chunk may go unnoticed."""


def check_integrity(group, z, url, name: str) -> None:
    """Check a store's chunk manifest at open (stores written by this project), or warn (other stores).

    Raises
    ------
    DataError
        If chunks listed in the manifest are missing from the store.
    """
    import warnings

    attrs = dict(group.attrs)
    counts = attrs.get("chunk_counts") if attrs.get("format") == STORE_FORMAT else None
    if counts is None or name not in counts:
        warnings.warn(f"Zarr store {os.fspath(url)!r} was not written by kmeans-dist (or by an older version): "
                      f"its chunks carry no checksum, so the integrity of array {name!r} cannot be checked; "
                      "missing chunks are still refused when read.", IntegrityWarning, stacklevel=3)
        return
    want = {"X": (attrs.get("n_samples"), attrs.get("n_features")), "labels": (attrs.get("n_samples"),)}.get(name)
    if want is not None and tuple(z.shape) != tuple(want):
        raise DataError(f"Zarr store {os.fspath(url)!r}: array {name!r} has shape {tuple(z.shape)}, its manifest says "
                        f"{tuple(want)}; the store was altered: re-ingest it.")
    have = int(z.nchunks_initialized)
    if have != int(counts[name]):
        raise DataError(f"Zarr store {os.fspath(url)!r}: array {name!r} holds {have} of its {counts[name]} chunks; "
                        "the store is incomplete or was altered: re-ingest it.")


def _token(url, z):
    from dask.base import tokenize

    return tokenize(os.fspath(url), z.shape, str(z.dtype), z.chunks, _store_mtime(url))


def _store_mtime(url):
    if not is_local_path(url):
        return None
    p = _local(url)
    try:
        return max(f.stat().st_mtime_ns for f in p.rglob("*") if f.is_file())
    except ValueError:
        return None


def chunk_fingerprint(x) -> int:
    """Identity of a chunk's rows: CRC-32 of its first, middle and last rows and its row count.

    The zstd checksum of every chunk catches corrupt bytes; this catches whole chunk files that were swapped
    or replaced by another valid chunk of the same shape.  Stores written here list it per chunk
    (``chunk_fingerprints`` in the group's attributes) and every read of a whole chunk checks it.  Cheap: three
    rows are hashed, not the chunk.

    Parameters
    ----------
    x : ndarray of shape (n_rows, ...) with n_rows >= 1
        The chunk, decoded.

    Returns
    -------
    int
        An unsigned 32-bit value.
    """
    import zlib

    x = np.asarray(x)
    n = x.shape[0]
    rows = np.ascontiguousarray(x[[0, n // 2, n - 1]])
    return zlib.crc32(rows.tobytes(), zlib.crc32(str(n).encode()))


def _fingerprint_block(x):
    return np.array([chunk_fingerprint(x)], dtype=np.int64)


class _CheckedArray:
    """A Zarr array whose reads name the chunk and row range when a chunk cannot be decoded."""

    def __init__(self, z, url, name, fingerprints=None):
        self.z, self.url, self.name = z, url, name
        self.shape, self.dtype, self.ndim = z.shape, z.dtype, z.ndim
        self.fingerprints = None if fingerprints is None else [int(f) for f in fingerprints]

    def _check_identity(self, key, out):
        """Whole chunks in ``out`` must be the rows written there (see :func:`chunk_fingerprint`)."""
        fps = self.fingerprints
        rows = key[0] if isinstance(key, tuple) else key
        if fps is None or not isinstance(rows, slice) or (self.ndim == 2 and out.shape[1] != self.shape[1]):
            return  # only reads of whole rows hold whole chunks
        step, n = self.z.chunks[0], self.shape[0]
        start = rows.start or 0
        stop = n if rows.stop is None else min(rows.stop, n)
        for i in range(-(-start // step), -(-stop // step)):
            lo, hi = i * step, min((i + 1) * step, n)
            if hi > stop or i >= len(fps):
                break
            got = chunk_fingerprint(out[lo - start:hi - start])
            if got != fps[i]:
                other = [j for j, f in enumerate(fps) if f == got and j != i]
                what = f"holds the rows written as chunk {other[0]}" if other else "does not hold the rows written there"
                raise DataError(f"Chunk {i} (rows {lo} to {hi - 1}) of array {self.name!r} in {self.url!r} {what} "
                                "(its fingerprint differs from the store's manifest): a chunk file was swapped or "
                                "replaced; re-ingest the store.")

    def _check_present(self, key):
        from zarr.core.sync import sync

        rows = key[0] if isinstance(key, tuple) else key
        if not isinstance(rows, slice):
            return
        step = self.z.chunks[0]
        start = rows.start or 0
        stop = self.z.shape[0] if rows.stop is None else min(rows.stop, self.z.shape[0])
        n_col = -(-self.z.shape[1] // self.z.chunks[1]) if self.z.ndim == 2 else 1
        for i in range(start // step, -(-stop // step)):
            for j in range(n_col):
                ckey = self.z.metadata.encode_chunk_key((i, j) if self.z.ndim == 2 else (i,))
                if not sync(self.z.store.exists(f"{self.z.path}/{ckey}")):
                    lo, hi = i * step, min((i + 1) * step, self.z.shape[0]) - 1
                    raise DataError(f"Chunk {i} (rows {lo} to {hi}) of array {self.name!r} in {self.url!r} is "
                                    f"missing (no {ckey!r}): the store is incomplete; re-ingest it. A missing "
                                    "chunk is never read as zeros.")

    def __getitem__(self, key):
        self._check_present(key)
        try:
            out = self.z[key]
        except Exception as exc:
            rows = key[0] if isinstance(key, tuple) else key
            where = f"rows {rows.start} to {rows.stop - 1}" if isinstance(rows, slice) and rows.stop is not None else str(key)
            chunk = (rows.start // self.z.chunks[0]) if isinstance(rows, slice) and rows.start is not None else "?"
            raise DataError(f"Cannot decode chunk {chunk} ({where}) of array {self.name!r} in {self.url!r}: "
                            f"{type(exc).__name__}: {exc}. The store is corrupt; re-ingest it.") from exc
        self._check_identity(key, out)
        return out


def open_dataarray(url, *, array: str = "X", storage_options=None):
    """Open a store as an ``xarray.DataArray`` with dims ``(sample, feature)`` (dask-backed).

    Parameters
    ----------
    url : str or os.PathLike
        A local path or an fsspec URL.
    array : str, default="X"
        Name of the array in the store's group.
    storage_options : dict or None, default=None
        Passed to fsspec.

    Returns
    -------
    xarray.DataArray
        Lazy; the store's attributes in ``attrs``.
    """
    import xarray as xr

    X = open_store(url, array=array, storage_options=storage_options)
    g = _open_group(url, storage_options)
    attrs = dict(g.attrs)
    coords = {}
    names = attrs.get("feature_names")
    if names is not None and len(names) == X.shape[1]:
        coords["feature"] = list(names)
    return xr.DataArray(X, dims=DIMS, coords=coords, attrs=attrs, name=array)


def open_labels(url, *, storage_options=None):
    """The ``labels`` array of a store as a dask array, or None when the store has none.

    Parameters
    ----------
    url : str or os.PathLike
        A local path or an fsspec URL.
    storage_options : dict or None, default=None
        Passed to fsspec.

    Returns
    -------
    dask.array.Array or None
        Integer labels of shape ``(n_samples,)``.
    """
    g = _open_group(url, storage_options)
    z = _open_array(g, url, "labels")
    if z is None:
        return None
    import dask.array as da

    check_integrity(g, z, url, "labels")
    fps = (dict(g.attrs).get("chunk_fingerprints") or {}).get("labels")
    return da.from_array(_CheckedArray(z, os.fspath(url), "labels", fps), chunks=z.chunks, asarray=True,
                         name="zarr-labels-" + _token(url, z), meta=np.empty((0,), dtype=z.dtype))


def store_info(url, storage_options=None) -> dict:
    """Shape, dtype, chunks and attributes of a store, without reading any chunk.

    Parameters
    ----------
    url : str or os.PathLike
        A local path or an fsspec URL.
    storage_options : dict or None, default=None
        Passed to fsspec.

    Returns
    -------
    dict
        ``shape``, ``dtype``, ``chunks``, ``has_labels``, ``attrs`` and the other metadata of the store.
    """
    g = _open_group(url, storage_options)
    z = _open_array(g, url, "X")
    if z is None:
        raise DataError(f"Zarr store {os.fspath(url)!r} has no array 'X'")
    if _is_csr_group(z):
        a = dict(z.attrs)
        return {"url": os.fspath(url), "shape": tuple(int(v) for v in a["shape"]), "dtype": str(a["dtype"]),
                "chunks": (int(a["chunk_rows"]), int(a["shape"][1])), "has_labels": _open_array(g, url, "labels") is not None,
                "attrs": dict(g.attrs), "layout": SPARSE_LAYOUT, "nnz": int(sum(a["nnz"]))}
    return {
        "url": os.fspath(url),
        "shape": tuple(int(s) for s in z.shape),
        "dtype": str(z.dtype),
        "chunks": tuple(int(c) for c in z.chunks),
        "has_labels": _open_array(g, url, "labels") is not None,
        "attrs": dict(g.attrs),
    }


def _coerce_dask(X, chunks=None):
    import dask.array as da

    if isinstance(X, da.Array):
        return X
    try:
        import xarray as xr

        if isinstance(X, xr.DataArray):
            if X.ndim == 2 and X.dims != DIMS and set(X.dims) == set(DIMS):
                X = X.transpose(*DIMS)
            data = X.data
            return data if isinstance(data, da.Array) else da.from_array(np.asarray(data), chunks=chunks or "auto")
    except ImportError:  # pragma: no cover
        pass
    if isinstance(X, (str, os.PathLike)):
        return open_store(X)
    if hasattr(X, "__cuda_array_interface__"):
        return da.from_array(X, chunks=chunks or (X.shape[0],) + tuple(X.shape[1:]), asarray=False)
    arr = np.asarray(X)
    if chunks is None:
        chunks = (arr.shape[0],) + arr.shape[1:] if arr.ndim >= 1 else ()
    return da.from_array(arr, chunks=chunks)


def _is_sparse(X) -> bool:
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover
        return False
    return sp.issparse(X)


def as_dask_array(X, *, chunks=None, name: str = "X", allow_1d: bool = False):
    """Any supported input (NumPy, CuPy, dask, xarray, Zarr path/URL) as a 2-D float dask array.

    Checks shape and dtype from metadata only (no pass over the data): 2-D, at least one sample and one
    feature, numeric.  Integers and booleans become float64; float32 stays float32.

    Parameters
    ----------
    X : array-like, dask array, xarray.DataArray, str or os.PathLike
        The input; a string or path is opened with :func:`open_store`.
    chunks : int, tuple or None, default=None
        Chunking for in-memory input (None: one chunk).
    name : str, default="X"
        The input's name in error messages.
    allow_1d : bool, default=False
        Accept a 1-D input as a single feature.

    Returns
    -------
    dask.array.Array

    Raises
    ------
    DataError
        When the input is not 2-D, empty, or not numeric.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.data import as_dask_array
    >>> X = as_dask_array(np.arange(6).reshape(3, 2))
    >>> X.shape, str(X.dtype)
    ((3, 2), 'float64')
    """

    if isinstance(X, (list, tuple)):
        X = np.asarray(X)
    if _is_sparse(X):  # in-memory scipy.sparse: one CSR chunk (or ``chunks`` rows per chunk)
        import dask.array as da

        Xs = check_sparse(X, name=name)
        rows = Xs.shape[0] if chunks is None else (chunks if isinstance(chunks, int) else chunks[0])
        return da.from_array(Xs, chunks=(rows, Xs.shape[1]), asarray=False, meta=Xs[:0])
    if isinstance(X, np.ndarray) and X.dtype.kind == "O":  # numbers held as objects are numbers (as scikit-learn)
        try:
            if any(v is None for v in X.ravel()):  # numpy would read None as NaN
                raise TypeError("None is not a number")
            X = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{name} must have a numeric dtype: its object values cannot be read as numbers "
                            f"({exc}).") from None
    if isinstance(X, np.ndarray) and X.dtype.kind in "USV":
        raise TypeError(f"{name} must have a numeric dtype, got dtype {X.dtype} (string/bytes); convert it first.")
    Xd = _coerce_dask(X, chunks)
    if Xd.dtype.kind in "OUSVMm":
        raise TypeError(f"{name} must have a numeric dtype, got dtype {Xd.dtype}.")
    if Xd.ndim != 2 and not (allow_1d and Xd.ndim == 1):
        raise ValueError(
            f"Expected a 2D array for {name}, got {Xd.ndim}D array with shape {Xd.shape} instead. "
            + ("Reshape your data using array.reshape(-1, 1) if it has a single feature or "
               "array.reshape(1, -1) if it contains a single sample." if Xd.ndim == 1 else
               "Flatten the trailing dimensions into features, e.g. X.reshape(n_samples, -1).")
        )
    if Xd.shape[0] == 0:
        raise ValueError(f"Found array with 0 sample(s) (shape={Xd.shape}) while a minimum of 1 is required.")
    if Xd.ndim == 2 and Xd.shape[1] == 0:
        raise ValueError(f"Found array with 0 feature(s) (shape={Xd.shape}) while a minimum of 1 is required.")
    if Xd.dtype.kind in "biu":
        Xd = Xd.astype(np.float64)
    elif Xd.dtype.kind == "f" and Xd.dtype.itemsize < 4:
        Xd = Xd.astype(np.float32)
    elif Xd.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} has dtype {Xd.dtype}; pass its real part or "
                         "modulus.")
    if Xd.ndim == 2 and Xd.numblocks[1] != 1:
        Xd = Xd.rechunk({1: -1})
    if _is_sparse(getattr(Xd, "_meta", None)):  # dask array of sparse chunks: every chunk canonical CSR
        from ..kernels.sparse import canonical_csr

        Xd = Xd.map_blocks(canonical_csr, dtype=Xd.dtype, meta=canonical_csr(Xd._meta))
    return Xd


def check_sparse(X, *, name: str = "X"):
    """Validate an in-memory scipy.sparse input and return it as canonical CSR of a float dtype.

    Any format (CSR, CSC, COO, ...) becomes CSR with sorted, unique column indices; integers and booleans
    become float64 (so does long double); the array/matrix type (``csr_array`` or ``csr_matrix``) is kept.
    Finiteness is checked on the stored values by the first pass over the data, as for dense input.

    Parameters
    ----------
    X : scipy.sparse array or matrix of shape (n_samples, n_features)
        The input.
    name : str, default="X"
        The input's name in error messages.

    Returns
    -------
    scipy.sparse CSR array or matrix

    Raises
    ------
    ValueError
        When X is empty or complex.
    TypeError
        When X does not hold numbers.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> from kmeans_dist.data import check_sparse
    >>> X = check_sparse(sp.coo_matrix(([1, 2], ([0, 1], [1, 0])), shape=(2, 3)))
    >>> X.format, str(X.dtype), X.shape
    ('csr', 'float64', (2, 3))
    """
    from ..kernels.sparse import canonical_csr

    if X.ndim != 2:
        raise ValueError(f"Expected a 2D array for {name}, got {X.ndim}D sparse array with shape {X.shape} instead.")
    kind = np.dtype(X.dtype).kind
    if kind == "c":
        raise ValueError(f"Complex data not supported: {name} has dtype {X.dtype}; pass its real part or modulus.")
    if kind not in "biuf":
        raise TypeError(f"{name} must have a numeric dtype, got dtype {X.dtype}.")
    if X.shape[0] == 0:
        raise ValueError(f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is required.")
    if X.shape[1] == 0:
        raise ValueError(f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
    X = canonical_csr(X)
    if X.dtype not in (np.float32, np.float64):  # integers, booleans, long double
        X = X.astype(np.float64)
    return X


def as_labels_array(y, n_samples: int | None = None, name: str = "labels"):
    """Labels (NumPy, dask, xarray, or a Zarr store path holding ``labels``) as a 1-D int dask array.

    Parameters
    ----------
    y : array-like, dask array, xarray.DataArray, str or os.PathLike
        The labels.
    n_samples : int or None, default=None
        Expected length (checked when given).
    name : str, default="labels"
        The input's name in error messages.

    Returns
    -------
    dask.array.Array
    """

    if isinstance(y, (str, os.PathLike)):
        y = open_labels(y)
        if y is None:
            raise DataError(f"The store has no 'labels' array to use as {name}")
    y = _coerce_dask(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
    if n_samples is not None and y.shape[0] != n_samples:
        raise ValueError(f"{name} has {y.shape[0]} entries but X has {n_samples} samples")
    return y


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------

def _create_arrays(root, n, d, dtype, rows, with_labels, feature_names, attrs):
    import zarr

    g = zarr.open_group(str(root), mode="w", zarr_format=3)
    safe = {"compressors": [zarr.codecs.ZstdCodec(level=0, checksum=True)], "config": {"write_empty_chunks": True}}
    z = g.create_array("X", shape=(n, d), chunks=(rows, d), dtype=dtype, dimension_names=DIMS, **safe)
    zl = None
    if with_labels:
        zl = g.create_array("labels", shape=(n,), chunks=(rows,), dtype="int64", dimension_names=("sample",),
                            **safe)
    a = dict(attrs or {})
    a.update({"n_samples": int(n), "n_features": int(d), "format": STORE_FORMAT,
              "chunk_counts": {"X": int(z.nchunks), **({"labels": int(zl.nchunks)} if zl is not None else {})}})
    if feature_names is not None:
        a["feature_names"] = [str(f) for f in feature_names]
    g.attrs.update(a)
    return g, z, zl


def write_store(url, X, *, labels=None, chunk_rows: int | None = None, feature_names=None,
                attrs: dict | None = None, overwrite: bool = False, dtype=None) -> str:
    """Write X (NumPy/dask/xarray) and optional labels to a Zarr v3 store, chunked along samples.

    Dask input is written chunk by chunk on whatever scheduler is active (never gathered).  Local targets
    are written atomically (a hidden sibling folder, then one rename); chunks carry zstd checksums and the
    store a manifest of its chunks.

    Parameters
    ----------
    url : str or os.PathLike
        Target path or fsspec URL; never one of the inputs.
    X : array-like, dask array or xarray.DataArray of shape (n_samples, n_features)
        The data.
    labels : array-like of shape (n_samples,) or None, default=None
        Optional labels, stored as ``labels``.
    chunk_rows : int or None, default=None
        Rows per stored chunk (None: about 8 MiB per chunk, a whole number of canonical blocks).
    feature_names : list of str or None, default=None
        Stored as the ``feature`` coordinate.
    attrs : dict or None, default=None
        Extra attributes of the group.
    overwrite : bool, default=False
        Replace an existing store.
    dtype : dtype or None, default=None
        Cast X to this dtype (None: keep it).

    Returns
    -------
    str
        The store URL.

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> from kmeans_dist.data import write_store, store_info
    >>> url = write_store(os.path.join(tempfile.mkdtemp(), "s.zarr"), np.zeros((5, 2)), labels=np.arange(5))
    >>> info = store_info(url)
    >>> info["shape"], info["has_labels"]
    ((5, 2), True)
    """
    import dask.array as da

    Xd = as_dask_array(X)
    if _is_sparse(Xd._meta):  # sparse X: a CSR group
        return write_sparse_store(url, X, labels=labels, chunk_rows=chunk_rows, feature_names=feature_names,
                                  attrs=attrs, overwrite=overwrite, dtype=dtype)
    if dtype is not None:
        Xd = Xd.astype(dtype)
    n, d = Xd.shape
    rows = chunk_rows or rows_per_chunk(d, Xd.dtype.itemsize)
    rows = min(rows, n)
    Xd = Xd.rechunk({0: rows, 1: -1})
    yd = None
    if labels is not None:
        yd = as_labels_array(labels, n).astype("int64").rechunk({0: rows})
    if feature_names is None:
        try:
            import xarray as xr

            if isinstance(X, xr.DataArray) and "feature" in X.coords:
                feature_names = [str(v) for v in X.coords["feature"].values]
        except ImportError:  # pragma: no cover
            pass

    def _write(root):
        import dask

        g, z, zl = _create_arrays(root, n, d, Xd.dtype, rows, yd is not None, feature_names, attrs)
        targets, sources = [z], [Xd]
        if zl is not None:
            targets.append(zl)
            sources.append(yd)
        # the chunks' fingerprints in the same graph as the writes: every chunk is computed once
        fp = {"X": Xd.map_blocks(_fingerprint_block, drop_axis=1, chunks=((1,) * Xd.numblocks[0],), dtype=np.int64)}
        if yd is not None:
            fp["labels"] = yd.map_blocks(_fingerprint_block, chunks=((1,) * yd.numblocks[0],), dtype=np.int64)
        _, fps = dask.compute(da.store(sources, targets, lock=False, compute=False), fp)
        g.attrs["chunk_fingerprints"] = {k: [int(v) for v in a] for k, a in fps.items()}

    return _write_to(url, _write, overwrite)


def _write_to(url, write, overwrite: bool) -> str:
    """``write(root)`` into a local store atomically (a temporary folder renamed into place: a crash leaves
    nothing that opens), or straight into a remote one."""
    if is_local_path(url):
        with atomic_dir(_local(url), overwrite=overwrite) as tmp:
            write(tmp)
    else:
        write(url)
    return os.fspath(url)


def write_stream(url, blocks: Iterable[tuple[np.ndarray, np.ndarray | None]], n: int, d: int, dtype,
                  rows: int, with_labels: bool, feature_names=None, attrs=None, overwrite=False) -> str:
    """Write a store from an iterator of ``(X_block, labels_block)`` pairs, one chunk at a time.

    Parameters
    ----------
    url : str or os.PathLike
        Target path or fsspec URL.
    blocks : iterable of (ndarray, ndarray or None)
        Consecutive row blocks and their labels.
    n : int
        Total number of rows.
    d : int
        Number of features.
    dtype : dtype
        Dtype of X.

    Returns
    -------
    str
        The store URL.
    """

    def _write(root):
        g, z, zl = _create_arrays(root, n, d, dtype, rows, with_labels, feature_names, attrs)
        start = 0
        fps = {"X": {}, "labels": {}}
        for xb, yb in blocks:
            stop = start + xb.shape[0]
            z[start:stop] = xb
            if zl is not None:
                zl[start:stop] = yb
            if start % rows == 0 and stop == min(start + rows, n):  # a whole chunk: its fingerprint from memory
                fps["X"][start // rows] = chunk_fingerprint(np.asarray(xb, dtype=z.dtype))
                if zl is not None:
                    fps["labels"][start // rows] = chunk_fingerprint(np.asarray(yb, dtype=zl.dtype))
            start = stop
        if start != n:
            raise DataError(f"source ended after {start} rows, expected {n}")
        # a chunk written in pieces is read back once for its fingerprint
        arrays = {"X": z} if zl is None else {"X": z, "labels": zl}
        g.attrs["chunk_fingerprints"] = {
            name: [fps[name][i] if i in fps[name] else chunk_fingerprint(a[i * rows:(i + 1) * rows])
                   for i in range(-(-n // rows))] for name, a in arrays.items()}

    return _write_to(url, _write, overwrite)


# --------------------------------------------------------------------------------------------------
# sparse stores: X as a CSR group
# --------------------------------------------------------------------------------------------------

def _is_csr_group(z) -> bool:
    """Whether ``z`` (a member of a store's group) is a sparse X group written by :func:`write_sparse_store`."""
    import zarr

    return isinstance(z, zarr.Group) and z.attrs.get("layout") == SPARSE_LAYOUT


def write_sparse_store(url, X, *, labels=None, chunk_rows: int | None = None, feature_names=None,
                       attrs: dict | None = None, overwrite: bool = False, dtype=None) -> str:
    """Write a sparse X (scipy.sparse, or a dask array of sparse chunks) to a store as a CSR group.

    The group ``X`` holds one subgroup per row chunk, ``X/<i>``, with three 1-D arrays: ``data`` (the
    stored values), ``indices`` (their columns, int64) and ``indptr`` (row starts within the chunk, int64,
    ``rows + 1`` values), each one zstd chunk with its content checksum.  The attributes of ``X`` hold the
    layout marker (``"layout": "csr"``), the shape, the dtype, the rows per chunk and the number of stored
    values of every chunk; the group's attributes hold the same manifest as a dense store (format,
    ``n_samples``, ``n_features``, chunk counts).  A dask input is written one chunk at a time (never
    gathered); local targets are written atomically.  :func:`open_store` opens it as a dask array of CSR
    chunks.

    Parameters
    ----------
    url : str or os.PathLike
        Target path or fsspec URL.
    X : scipy.sparse array or matrix, or dask array of sparse chunks, of shape (n_samples, n_features)
        The data (any sparse format).
    labels : array-like of shape (n_samples,) or None, default=None
        Optional labels, stored as a dense ``labels`` array.
    chunk_rows : int or None, default=None
        Rows per stored chunk (None: the dask input's first chunk, else about 8 MiB of stored values
        per chunk).
    feature_names : list of str or None, default=None
        Stored as the ``feature`` coordinate.
    attrs : dict or None, default=None
        Extra attributes of the group.
    overwrite : bool, default=False
        Replace an existing store.
    dtype : dtype or None, default=None
        Cast X to this dtype (None: keep it, integers become float64).

    Returns
    -------
    str
        The store URL.

    Examples
    --------
    >>> import tempfile, os, scipy.sparse as sp
    >>> from kmeans_dist.data import write_sparse_store, open_store
    >>> X = sp.random(10, 6, density=0.3, format="csr", random_state=0)
    >>> url = write_sparse_store(os.path.join(tempfile.mkdtemp(), "s.zarr"), X, chunk_rows=4)
    >>> Xd = open_store(url)
    >>> Xd.chunks[0], type(Xd.blocks[0].compute()).__name__, (Xd.compute() != X).nnz
    ((4, 4, 2), 'csr_matrix', 0)
    """
    import dask.array as da
    import zarr

    Xd = as_dask_array(X)
    if not _is_sparse(Xd._meta):
        raise DataError("write_sparse_store needs sparse input (scipy.sparse or a dask array of sparse chunks); "
                        "use write_store for dense data")
    if dtype is not None:
        Xd = Xd.astype(dtype)
    n, d = (int(v) for v in Xd.shape)
    if chunk_rows is None:
        if isinstance(X, da.Array):
            chunk_rows = int(Xd.chunks[0][0])
        else:
            nnz_row = max(1.0, X.nnz / n) if _is_sparse(X) else 1.0
            chunk_rows = int(max(1, DEFAULT_CHUNK_BYTES // int(nnz_row * (Xd.dtype.itemsize + 8))))
    rows = int(min(chunk_rows, n))
    Xd = Xd.rechunk({0: rows, 1: -1})
    yd = None if labels is None else as_labels_array(labels, n).astype("int64").rechunk({0: rows})
    safe = {"compressors": [zarr.codecs.ZstdCodec(level=0, checksum=True)], "config": {"write_empty_chunks": True}}

    def _write(root):
        from ..kernels.sparse import canonical_csr

        g = zarr.open_group(str(root), mode="w", zarr_format=3)
        gx = g.create_group("X")
        nnz, n_chunks = [], 0
        for i in range(Xd.numblocks[0]):
            b = canonical_csr(Xd.blocks[i].compute())
            gi = gx.create_group(str(i))
            for key, arr in (("data", b.data), ("indices", b.indices.astype(np.int64)),
                             ("indptr", b.indptr.astype(np.int64))):
                za = gi.create_array(key, shape=arr.shape, chunks=(max(1, arr.shape[0]),), dtype=arr.dtype, **safe)
                if arr.shape[0]:
                    za[:] = arr
                    n_chunks += 1
            nnz.append(int(b.nnz))
        gx.attrs.update({"layout": SPARSE_LAYOUT, "shape": [n, d], "dtype": str(Xd.dtype), "chunk_rows": rows,
                         "nnz": nnz})
        counts = {"X": n_chunks}
        if yd is not None:
            zl = g.create_array("labels", shape=(n,), chunks=(rows,), dtype="int64", dimension_names=("sample",), **safe)
            da.store(yd, zl, lock=False)
            counts["labels"] = int(zl.nchunks)
        a = dict(attrs or {})
        a.update({"n_samples": n, "n_features": d, "format": STORE_FORMAT, "layout": SPARSE_LAYOUT,
                  "chunk_counts": counts})
        if feature_names is not None:
            a["feature_names"] = [str(f) for f in feature_names]
        g.attrs.update(a)

    return _write_to(url, _write, overwrite)


def _open_csr(g, gx, url, name):
    """A sparse X group as a dask array of CSR chunks, one per stored row chunk (checked as dense stores)."""
    import dask.array as da
    import scipy.sparse as sp

    a = dict(gx.attrs)
    n, d = (int(v) for v in a["shape"])
    rows, nnz = int(a["chunk_rows"]), [int(v) for v in a["nnz"]]
    dtype = np.dtype(a["dtype"])
    m = -(-n // rows)
    attrs = dict(g.attrs)
    counts = attrs.get("chunk_counts") if attrs.get("format") == STORE_FORMAT else None
    if counts is None or name not in counts or len(nnz) != m:
        raise DataError(f"Zarr store {os.fspath(url)!r}: sparse group {name!r} has no valid manifest; re-ingest it.")
    if (attrs.get("n_samples"), attrs.get("n_features")) != (n, d):
        raise DataError(f"Zarr store {os.fspath(url)!r}: sparse group {name!r} has shape {(n, d)}, its manifest says "
                        f"{(attrs.get('n_samples'), attrs.get('n_features'))}; the store was altered: re-ingest it.")
    reader = _CSRReader(gx, os.fspath(url), name, (n, d), dtype, rows, nnz)
    have = reader.n_chunks_present()
    if have != int(counts[name]):
        raise DataError(f"Zarr store {os.fspath(url)!r}: sparse group {name!r} holds {have} of its {counts[name]} "
                        "chunks; the store is incomplete or was altered: re-ingest it.")
    meta = sp.csr_matrix((0, d), dtype=dtype)
    chunks = (tuple(min(rows, n - o) for o in range(0, n, rows)), (d,))
    from dask.base import tokenize

    token = tokenize(os.fspath(url), (n, d), str(dtype), rows, nnz, _store_mtime(url))
    return da.from_array(reader, chunks=chunks, asarray=False, meta=meta, name=f"zarr-csr-{name}-{token}")


class _CSRReader:
    """Array-like over a CSR group: ``reader[rows, cols]`` reads the row chunks it covers (CSR, checked)."""

    def __init__(self, gx, url, name, shape, dtype, rows, nnz):
        self.gx, self.url, self.name = gx, url, name
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), 2
        self.rows, self.nnz = int(rows), list(nnz)

    def n_chunks_present(self) -> int:
        total = 0
        for i in range(len(self.nnz)):
            gi = self.gx.get(str(i)) if str(i) in self.gx else None
            if gi is None:
                continue
            for key in ("data", "indices", "indptr"):
                if key in gi:
                    total += int(gi[key].nchunks_initialized)
        return total

    def _chunk(self, i):
        import scipy.sparse as sp

        n_i = min(self.rows, self.shape[0] - i * self.rows)
        lo, hi = i * self.rows, i * self.rows + n_i - 1
        try:
            gi = self.gx[str(i)]
            parts = {}
            for key, size in (("data", self.nnz[i]), ("indices", self.nnz[i]), ("indptr", n_i + 1)):
                za = gi[key]
                if tuple(za.shape) != (size,):
                    raise DataError(f"array {key!r} has shape {tuple(za.shape)}, expected {(size,)}")
                if size and za.nchunks_initialized == 0:
                    raise DataError(f"array {key!r} is missing its chunk")
                parts[key] = za[:] if size else np.zeros(0, dtype=za.dtype)
        except Exception as exc:
            raise DataError(f"Cannot read sparse chunk {i} (rows {lo} to {hi}) of {self.name!r} in {self.url!r}: "
                            f"{type(exc).__name__}: {exc}. The store is corrupt or incomplete; re-ingest it. A missing "
                            "chunk is never read as zeros.") from exc
        ip = parts["indptr"]
        if ip[0] != 0 or ip[-1] != self.nnz[i] or np.any(np.diff(ip) < 0):
            raise DataError(f"Sparse chunk {i} (rows {lo} to {hi}) of {self.name!r} in {self.url!r} has an invalid "
                            "indptr; the store is corrupt: re-ingest it.")
        return sp.csr_matrix((parts["data"].astype(self.dtype, copy=False), parts["indices"], ip),
                             shape=(n_i, self.shape[1]))

    def __getitem__(self, key):
        import scipy.sparse as sp

        rows = key[0] if isinstance(key, tuple) else key
        cols = key[1] if isinstance(key, tuple) and len(key) > 1 else slice(None)
        start, stop, _ = rows.indices(self.shape[0])
        if stop <= start:
            return sp.csr_matrix((0, self.shape[1]), dtype=self.dtype)[:, cols]
        first, last = start // self.rows, (stop - 1) // self.rows
        blocks = [self._chunk(i) for i in range(first, last + 1)]
        M = blocks[0] if len(blocks) == 1 else sp.vstack(blocks, format="csr")
        off = first * self.rows
        out = M[start - off:stop - off]
        if cols != slice(None) and cols != slice(0, self.shape[1]) and cols != slice(0, self.shape[1], 1):
            out = out[:, cols]
        return out
