"""Data layer: Zarr v3 stores read as dask arrays / xarray DataArrays with dims ``(sample, feature)``.

A *store* written by this module is a Zarr v3 group holding

- ``X``: float array ``(sample, feature)``, chunked along samples, with ``dimension_names``;
- optionally ``labels``: integer array ``(sample,)`` (ground truth, e.g. MNIST digits);
- group attributes: ``feature_names``, ``source``, ``n_samples``, ``n_features`` and any user attrs.

Writes are atomic for local paths (written to a temporary sibling, then renamed), so a crash never
leaves a half-written store that opens.  Ingest streams chunk by chunk: nothing larger than a chunk
is ever held in memory.  The input store is never modified.
"""
from __future__ import annotations

import gzip
import os
import shutil
import struct
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

__all__ = [
    "DataError",
    "as_dask_array",
    "as_labels_array",
    "open_store",
    "open_dataarray",
    "open_labels",
    "write_store",
    "store_info",
    "ingest",
    "ingest_numpy",
    "ingest_npy",
    "ingest_table",
    "ingest_mnist",
    "read_idx",
    "iter_idx_chunks",
    "load_mnist",
    "find_mnist_dir",
    "is_local_path",
    "atomic_dir",
    "DIMS",
]

DIMS = ("sample", "feature")
DEFAULT_CHUNK_BYTES = 32 * 2**20


class DataError(ValueError):
    """Bad or unreadable input data (missing path, empty store, undecodable chunk, wrong shape)."""


# --------------------------------------------------------------------------------------------------
# paths and atomic writes
# --------------------------------------------------------------------------------------------------

def is_local_path(url) -> bool:
    s = os.fspath(url)
    return "://" not in s or s.startswith("file://")


def _local(url) -> Path:
    s = os.fspath(url)
    return Path(s[len("file://"):] if s.startswith("file://") else s)


@contextmanager
def atomic_dir(target, overwrite: bool = False):
    """Yield a temporary directory next to ``target``; rename it to ``target`` on success.

    On error the temporary directory is removed and ``target`` is untouched.  With ``overwrite`` an
    existing target is replaced (moved aside, then deleted after the rename).
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _rows_per_chunk(n_features: int, itemsize: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    return int(max(1, chunk_bytes // max(1, n_features * itemsize)))


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
        raise DataError(f"Cannot open {os.fspath(url)!r} as a Zarr group: {exc}") from exc


def open_store(url, *, array: str = "X", storage_options=None):
    """Open ``array`` of a Zarr store (path or fsspec URL) as a dask array chunked as stored."""
    import dask.array as da

    g = _open_group(url, storage_options)
    if array not in g:
        raise DataError(f"Zarr store {os.fspath(url)!r} has no array {array!r} "
                        f"(it holds: {sorted(g.keys()) or 'nothing'}); is it an empty store?")
    z = g[array]
    if any(s == 0 for s in z.shape):
        raise DataError(f"Zarr store {os.fspath(url)!r}: array {array!r} is empty (shape {z.shape})")
    return da.from_array(_CheckedArray(z, os.fspath(url), array), chunks=z.chunks, asarray=True,
                         name=f"zarr-{array}-" + _token(url, z), meta=np.empty((0,) * z.ndim, dtype=z.dtype))


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


class _CheckedArray:
    """A Zarr array whose reads name the chunk and row range when a chunk cannot be decoded."""

    def __init__(self, z, url, name):
        self.z, self.url, self.name = z, url, name
        self.shape, self.dtype, self.ndim = z.shape, z.dtype, z.ndim

    def __getitem__(self, key):
        try:
            return self.z[key]
        except Exception as exc:
            rows = key[0] if isinstance(key, tuple) else key
            where = f"rows {rows.start} to {rows.stop - 1}" if isinstance(rows, slice) and rows.stop is not None else str(key)
            chunk = (rows.start // self.z.chunks[0]) if isinstance(rows, slice) and rows.start is not None else "?"
            raise DataError(f"Cannot decode chunk {chunk} ({where}) of array {self.name!r} in {self.url!r}: "
                            f"{type(exc).__name__}: {exc}. The store is corrupt; re-ingest it.") from exc


def open_dataarray(url, *, array: str = "X", storage_options=None):
    """Open a store as an ``xarray.DataArray`` with dims ``(sample, feature)`` (dask-backed)."""
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
    """The ``labels`` array of a store as a dask array, or None when the store has none."""
    g = _open_group(url, storage_options)
    if "labels" not in g:
        return None
    import dask.array as da

    z = g["labels"]
    return da.from_array(_CheckedArray(z, os.fspath(url), "labels"), chunks=z.chunks, asarray=True,
                         name="zarr-labels-" + _token(url, z), meta=np.empty((0,), dtype=z.dtype))


def store_info(url, storage_options=None) -> dict:
    """Shape, dtype, chunks and attributes of a store, without reading any chunk."""
    g = _open_group(url, storage_options)
    if "X" not in g:
        raise DataError(f"Zarr store {os.fspath(url)!r} has no array 'X'")
    z = g["X"]
    return {
        "url": os.fspath(url),
        "shape": tuple(int(s) for s in z.shape),
        "dtype": str(z.dtype),
        "chunks": tuple(int(c) for c in z.chunks),
        "has_labels": "labels" in g,
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


def as_dask_array(X, *, chunks=None, name: str = "X", allow_1d: bool = False):
    """Any supported input (NumPy, CuPy, dask, xarray, Zarr path/URL) as a 2-D float dask array.

    Checks shape and dtype from metadata only (no pass over the data): 2-D, at least one sample and
    one feature, numeric.  Integers and booleans become float64; float32 stays float32.
    """
    import dask.array as da

    if isinstance(X, (list, tuple)):
        X = np.asarray(X)
    if isinstance(X, np.ndarray) and X.dtype.kind in "OUSV":
        raise TypeError(f"{name} must have a numeric dtype, got dtype {X.dtype} "
                        f"({'object' if X.dtype.kind == 'O' else 'string/bytes'}); convert it first.")
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
        raise TypeError(f"{name} must be real-valued, got complex dtype {Xd.dtype}.")
    if Xd.ndim == 2 and Xd.numblocks[1] != 1:
        Xd = Xd.rechunk({1: -1})
    return Xd


def as_labels_array(y, n_samples: int | None = None, name: str = "labels"):
    """Labels (NumPy, dask, xarray, or a Zarr store path holding ``labels``) as a 1-D int dask array."""
    import dask.array as da

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
    z = g.create_array("X", shape=(n, d), chunks=(rows, d), dtype=dtype, dimension_names=DIMS)
    zl = None
    if with_labels:
        zl = g.create_array("labels", shape=(n,), chunks=(rows,), dtype="int64", dimension_names=("sample",))
    a = dict(attrs or {})
    a.update({"n_samples": int(n), "n_features": int(d), "format": "kmeans-dist/1"})
    if feature_names is not None:
        a["feature_names"] = [str(f) for f in feature_names]
    g.attrs.update(a)
    return g, z, zl


def write_store(url, X, *, labels=None, chunk_rows: int | None = None, feature_names=None,
                attrs: dict | None = None, overwrite: bool = False, dtype=None) -> str:
    """Write X (NumPy/dask/xarray) and optional labels to a Zarr v3 store, chunked along samples.

    Dask input is written chunk by chunk on whatever scheduler is active (never gathered).  Local
    targets are written atomically.  Returns the store URL.
    """
    import dask.array as da

    Xd = as_dask_array(X)
    if dtype is not None:
        Xd = Xd.astype(dtype)
    n, d = Xd.shape
    rows = chunk_rows or _rows_per_chunk(d, Xd.dtype.itemsize)
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
        _, z, zl = _create_arrays(root, n, d, Xd.dtype, rows, yd is not None, feature_names, attrs)
        targets, sources = [z], [Xd]
        if zl is not None:
            targets.append(zl)
            sources.append(yd)
        da.store(sources, targets, lock=False)

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


def _write_stream(url, blocks: Iterable[tuple[np.ndarray, np.ndarray | None]], n: int, d: int, dtype,
                  rows: int, with_labels: bool, feature_names=None, attrs=None, overwrite=False) -> str:
    """Write an iterator of (X_block, labels_block) of ``rows`` rows each (last may be shorter)."""

    def _write(root):
        _, z, zl = _create_arrays(root, n, d, dtype, rows, with_labels, feature_names, attrs)
        start = 0
        for xb, yb in blocks:
            stop = start + xb.shape[0]
            z[start:stop] = xb
            if zl is not None:
                zl[start:stop] = yb
            start = stop
        if start != n:
            raise DataError(f"source ended after {start} rows, expected {n}")

    return _write_to(url, _write, overwrite)


# --------------------------------------------------------------------------------------------------
# ingest
# --------------------------------------------------------------------------------------------------

def ingest_numpy(X, url, *, labels=None, **kw) -> str:
    """Write an in-memory array (and labels) to a store."""
    return write_store(url, X, labels=labels, attrs={"source": kw.pop("source", "numpy"), **kw.pop("attrs", {})}, **kw)


def ingest_npy(path, url, *, labels=None, chunk_rows=None, overwrite=False, dtype=None) -> str:
    """Stream a ``.npy`` file (memory-mapped, chunk by chunk) into a store."""
    arr = np.load(path, mmap_mode="r")
    if arr.ndim != 2:
        raise ValueError(f"Expected a 2D array in {path}, got shape {arr.shape}")
    n, d = arr.shape
    dt = np.dtype(dtype) if dtype is not None else (arr.dtype if arr.dtype.kind == "f" else np.float64)
    rows = min(chunk_rows or _rows_per_chunk(d, dt.itemsize), n)
    lab = None if labels is None else (np.load(labels, mmap_mode="r") if isinstance(labels, (str, os.PathLike)) else np.asarray(labels))

    def blocks():
        for s in range(0, n, rows):
            yield np.asarray(arr[s:s + rows], dtype=dt), (None if lab is None else np.asarray(lab[s:s + rows]))

    return _write_stream(url, blocks(), n, d, dt, rows, lab is not None,
                         attrs={"source": os.fspath(path)}, overwrite=overwrite)


def ingest_table(path, url, *, columns=None, label_column=None, chunk_rows=None, overwrite=False,
                 dtype="float64") -> str:
    """CSV or Parquet (file, glob or directory) through ``dask.dataframe``, partition by partition."""
    import dask.dataframe as dd

    p = os.fspath(path)
    if p.endswith((".parquet", ".pq")) or (os.path.isdir(p) and any(f.endswith(".parquet") for f in os.listdir(p))):
        df = dd.read_parquet(p)
    else:
        df = dd.read_csv(p)
    cols = list(columns) if columns is not None else [c for c in df.columns if c != label_column]
    X = df[cols].astype(dtype).to_dask_array(lengths=True)
    y = df[label_column].to_dask_array(lengths=True) if label_column else None
    return write_store(url, X, labels=y, chunk_rows=chunk_rows, feature_names=cols,
                       attrs={"source": p}, overwrite=overwrite)


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open_maybe_gzip(path):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _idx_header(f, path):
    head = f.read(4)
    if len(head) != 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {head!r})")
    ndim = head[3]
    dims = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
    return np.dtype(_IDX_DTYPES[head[2]]), dims


def iter_idx_chunks(path, rows: int) -> Iterator[np.ndarray]:
    """Stream an IDX file (gzip or not) ``rows`` items at a time, each flattened to 2-D (or 1-D)."""
    with _open_maybe_gzip(path) as f:
        dt, dims = _idx_header(f, path)
        item = int(np.prod(dims[1:])) if len(dims) > 1 else 1
        remaining = dims[0]
        while remaining > 0:
            r = min(rows, remaining)
            buf = f.read(r * item * dt.itemsize)
            if len(buf) != r * item * dt.itemsize:
                raise DataError(f"{path} is truncated: expected {dims[0]} items")
            a = np.frombuffer(buf, dtype=dt)
            yield a.reshape(r, item) if len(dims) > 1 else a
            remaining -= r


def read_idx(path) -> np.ndarray:
    """Read a whole IDX file (for small files such as label vectors)."""
    with _open_maybe_gzip(path) as f:
        dt, dims = _idx_header(f, path)
        a = np.frombuffer(f.read(), dtype=dt)
    if a.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {a.size}")
    return a.reshape(dims).astype(dt.newbyteorder("="))


def _idx_dims(path):
    with _open_maybe_gzip(path) as f:
        return _idx_header(f, path)


MNIST_FILES = {
    "train": ("train-images.idx3-ubyte", "train-labels.idx1-ubyte"),
    "test": ("t10k-images.idx3-ubyte", "t10k-labels.idx1-ubyte"),
}


def _find_file(directory: Path, stem: str) -> Path:
    for cand in (stem + ".gz", stem, stem.replace(".idx", "-idx") + ".gz", stem.replace(".idx", "-idx")):
        p = directory / cand
        if p.exists():
            return p
    raise DataError(f"MNIST file {stem}[.gz] not found in {directory}")


def find_mnist_dir(default: str | os.PathLike | None = None) -> Path | None:
    """The MNIST directory: ``$MNIST_DIR``, else ``default``, else ``../shared/data/mnist``; None if absent."""
    cands = [os.environ.get("MNIST_DIR"), default]
    here = Path(__file__).resolve().parent.parent
    cands += [here.parent / "shared" / "data" / "mnist", Path.cwd().parent / "shared" / "data" / "mnist"]
    for c in cands:
        if c and Path(c).is_dir():
            try:
                _find_file(Path(c), MNIST_FILES["train"][0])
                return Path(c)
            except DataError:
                continue
    return None


def ingest_mnist(directory, url, *, splits=("train", "test"), limit: int | None = None,
                 chunk_rows: int = 10_000, scale: float | None = None, overwrite: bool = False,
                 dtype="float32") -> str:
    """Stream MNIST IDX files (gzip or not) into a store: X (n, 784) and labels.

    ``splits`` are concatenated in order (train then test gives all 70,000 images); ``limit`` keeps
    the first rows; ``scale`` multiplies pixel values (e.g. 1/255 for [0, 1]).
    """
    directory = Path(directory)
    files = [(_find_file(directory, MNIST_FILES[s][0]), _find_file(directory, MNIST_FILES[s][1])) for s in splits]
    counts = []
    d = None
    for img, _lab in files:
        _, dims = _idx_dims(img)
        counts.append(dims[0])
        d = int(np.prod(dims[1:]))
    n_total = sum(counts)
    n = min(n_total, limit) if limit else n_total
    rows = min(chunk_rows, n)
    dt = np.dtype(dtype)

    def blocks():
        left = n
        pend_x, pend_y = [], []
        for img, lab in files:
            labels = read_idx(lab).astype(np.int64)
            pos = 0
            for xb in iter_idx_chunks(img, rows):
                if left <= 0:
                    return
                xb = xb[:left]
                yb = labels[pos:pos + xb.shape[0]]
                pos += xb.shape[0]
                left -= xb.shape[0]
                xf = xb.astype(dt)
                if scale is not None:
                    xf *= dt.type(scale)
                pend_x.append(xf)
                pend_y.append(yb)
                have = sum(a.shape[0] for a in pend_x)
                while have >= rows:
                    X = np.concatenate(pend_x)
                    Y = np.concatenate(pend_y)
                    yield X[:rows], Y[:rows]
                    pend_x, pend_y = [X[rows:]], [Y[rows:]]
                    have -= rows
        if pend_x and sum(a.shape[0] for a in pend_x):
            yield np.concatenate(pend_x), np.concatenate(pend_y)

    names = [f"px_{i // 28}_{i % 28}" for i in range(d)] if d == 784 else None
    return _write_stream(url, blocks(), n, d, dt, rows, True, feature_names=names,
                         attrs={"source": f"mnist:{directory}", "splits": list(splits),
                                "image_shape": [28, 28] if d == 784 else None, "scale": scale},
                         overwrite=overwrite)


def load_mnist(directory=None, *, limit: int | None = None, scale: float | None = None):
    """MNIST in memory as ``(X float32 (n, 784), y int64)``: all 70,000 images unless ``limit``."""
    directory = find_mnist_dir(directory)
    if directory is None:
        raise DataError("MNIST not found: set MNIST_DIR to a folder with the IDX files")
    xs, ys = [], []
    for s in ("train", "test"):
        img, lab = (_find_file(directory, f) for f in MNIST_FILES[s])
        xs.append(read_idx(img).reshape(-1, 784).astype(np.float32))
        ys.append(read_idx(lab).astype(np.int64))
    X, y = np.concatenate(xs), np.concatenate(ys)
    if limit:
        X, y = X[:limit], y[:limit]
    if scale is not None:
        X *= np.float32(scale)
    return X, y


def ingest(source, url, **kw) -> str:
    """Ingest any supported source into a store: array, ``.npy``, CSV/Parquet, MNIST directory or
    ``"sklearn-digits"`` (the 8x8 digits set shipped inside scikit-learn)."""
    if isinstance(source, str) and source == "sklearn-digits":
        from sklearn.datasets import load_digits

        dg = load_digits()
        return write_store(url, dg.data.astype(np.float32), labels=dg.target, overwrite=kw.get("overwrite", False),
                           chunk_rows=kw.get("chunk_rows"),
                           attrs={"source": "sklearn-digits", "image_shape": [8, 8]})
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.is_dir() and (any(p.glob("*idx3-ubyte*")) or any(p.glob("*idx3*"))):
            return ingest_mnist(p, url, **kw)
        if p.suffix == ".npy":
            return ingest_npy(p, url, **kw)
        if p.suffix in (".csv", ".parquet", ".pq") or p.is_dir() or "*" in p.name:
            return ingest_table(p, url, **kw)
        if not p.exists():
            raise DataError(f"Source {os.fspath(source)!r} does not exist")
        raise DataError(f"Don't know how to ingest {os.fspath(source)!r} (expected .npy, .csv, .parquet, "
                        "an MNIST folder, or 'sklearn-digits')")
    return write_store(url, source, **{k: v for k, v in kw.items() if k in ("labels", "chunk_rows", "feature_names", "attrs", "overwrite", "dtype")})
