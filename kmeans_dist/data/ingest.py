"""Ingest: stream a source (array, ``.npy``, CSV/Parquet, MNIST IDX files, scikit-learn's digits) into a store.

Every source is read chunk by chunk: nothing larger than a chunk is held in memory, and the store is
written atomically (see :func:`kmeans_dist.data.store.write_stream`).
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Iterator

import numpy as np

from .store import DataError, rows_per_chunk, write_sparse_store, write_store, write_stream

__all__ = ["resolve_source", "SOURCE_KINDS", "ingest", "ingest_npy", "ingest_sparse_npz", "ingest_table", "ingest_mnist", "read_idx", "iter_idx_chunks", "load_mnist",
           "find_mnist_dir", "MNIST_FILES"]


def ingest_npy(path, url, *, labels=None, chunk_rows=None, overwrite=False, dtype=None) -> str:
    """Stream a ``.npy`` file (memory-mapped) into a store, chunk by chunk.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npy`` file of shape ``(n_samples, n_features)``.
    url : str or os.PathLike
        Target store.
    labels : array-like, str or None, default=None
        Labels, or the path of a ``.npy`` file holding them.
    chunk_rows : int or None, default=None
        Rows per stored chunk.
    overwrite : bool, default=False
        Replace an existing store.
    dtype : dtype or None, default=None
        Cast to this dtype.

    Returns
    -------
    str
        The store URL.
    """
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # truncated, not .npy, object arrays
        raise DataError(f"Cannot read {os.fspath(path)!r} as a .npy array: {exc}") from None
    if arr.ndim != 2:
        raise DataError(f"Expected a 2-D array (samples x features) in {os.fspath(path)!r}, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{os.fspath(path)!r} holds {arr.dtype} values; k-means needs numbers (bool, int or float)")
    if 0 in arr.shape:
        raise DataError(f"{os.fspath(path)!r} is empty (shape {arr.shape})")
    n, d = arr.shape
    dt = np.dtype(dtype) if dtype is not None else (arr.dtype if arr.dtype.kind == "f" else np.float64)
    rows = min(chunk_rows or rows_per_chunk(d, dt.itemsize), n)
    lab = None if labels is None else (np.load(labels, mmap_mode="r") if isinstance(labels, (str, os.PathLike)) else np.asarray(labels))

    def blocks():
        for s in range(0, n, rows):
            yield np.asarray(arr[s:s + rows], dtype=dt), (None if lab is None else np.asarray(lab[s:s + rows]))

    return write_stream(url, blocks(), n, d, dt, rows, lab is not None,
                         attrs={"source": os.fspath(path)}, overwrite=overwrite)


def ingest_sparse_npz(path, url, *, labels=None, chunk_rows=None, overwrite=False, dtype=None) -> str:
    """Ingest a scipy.sparse matrix saved with ``scipy.sparse.save_npz`` into a store as a CSR group.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file.
    url : str or os.PathLike
        Target store.
    labels : array-like, str or None, default=None
        Labels, or the path of a ``.npy`` file holding them.
    chunk_rows : int or None, default=None
        Rows per stored chunk.
    overwrite : bool, default=False
        Replace an existing store.
    dtype : dtype or None, default=None
        Cast to this dtype.

    Returns
    -------
    str
        The store URL (see :func:`kmeans_dist.data.write_sparse_store`).
    """
    import scipy.sparse as sp

    try:
        X = sp.load_npz(path)
    except (ValueError, OSError, KeyError) as exc:
        raise DataError(f"Cannot read {os.fspath(path)!r} as a scipy.sparse .npz matrix: {exc}") from None
    lab = np.load(labels) if isinstance(labels, (str, os.PathLike)) else labels
    return write_sparse_store(url, X, labels=lab, chunk_rows=chunk_rows, overwrite=overwrite, dtype=dtype,
                              attrs={"source": os.fspath(path)})


def _numeric_partition(part, cols, dtype, offsets, source, partition_info=None):
    """One partition as numbers; the first cell that is missing or not a number is a :class:`DataError`
    naming the file, the row (0-based, over the whole table, header excluded) and the column."""
    import pandas as pd

    start = offsets[partition_info["number"]] if partition_info else 0
    out = {}
    for c in cols:
        v = pd.to_numeric(part[c], errors="coerce")
        bad = v.isna().to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raw = part[c].iloc[i]
            what = "is missing (an empty cell or a short row)" if pd.isna(raw) else f"is {raw!r}, not a number"
            raise DataError(f"{source}: row {start + i}, column {c!r} {what}; k-means needs a number in every "
                            "cell: fix or drop that row")
        out[c] = v.astype(dtype)
    return pd.DataFrame(out, index=part.index)


def ingest_table(path, url, *, columns=None, label_column=None, chunk_rows=None, overwrite=False,
                 dtype="float64") -> str:
    """Stream a CSV or Parquet file into a store (numeric columns as X, one optional label column).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.csv`` or ``.parquet`` file.
    url : str or os.PathLike
        Target store.
    columns : list of str or None, default=None
        Feature columns (None: every numeric column but the label column).
    label_column : str or None, default=None
        Column stored as ``labels``.
    chunk_rows : int or None, default=None
        Rows per stored chunk.
    overwrite : bool, default=False
        Replace an existing store.

    Returns
    -------
    str
        The store URL.
    """
    import dask.dataframe as dd

    p = os.fspath(path)
    try:
        if p.endswith((".parquet", ".pq")) or (os.path.isdir(p) and any(f.endswith(".parquet") for f in os.listdir(p))):
            df = dd.read_parquet(p)
        else:
            df = dd.read_csv(p, dtype=object)  # numbers are parsed below, where a bad cell can be named
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read {p!r} as a table: {type(exc).__name__}: {exc}") from None
    cols = list(columns) if columns is not None else [c for c in df.columns if c != label_column]
    missing = [c for c in cols + ([label_column] if label_column else []) if c not in df.columns]
    if missing:
        raise DataError(f"{p!r} has no column(s) {missing}; its columns are {list(df.columns)}")
    lengths = [int(n) for n in df.map_partitions(len).compute()]
    offsets = [0] + list(np.cumsum(lengths)[:-1])
    meta = {c: np.dtype(dtype) for c in cols}
    Xdf = df[cols].map_partitions(_numeric_partition, cols, dtype, offsets, p, meta=meta)
    X = Xdf.to_dask_array(lengths=lengths)
    y = None
    if label_column:
        y = df[[label_column]].map_partitions(_numeric_partition, [label_column], "int64", offsets, p,
                                              meta={label_column: np.dtype("int64")})[label_column]
        y = y.to_dask_array(lengths=lengths)
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
    """Read an IDX file (gzip or not) ``rows`` items at a time.

    Parameters
    ----------
    path : str or os.PathLike
        The IDX file.
    rows : int
        Items per chunk.

    Yields
    ------
    ndarray
        Consecutive chunks of the file's items.
    """
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
    """Read a whole IDX file (gzip or not) as a NumPy array of its stored shape.

    Parameters
    ----------
    path : str or os.PathLike
        The IDX file.

    Returns
    -------
    ndarray
    """
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
    """The folder holding the MNIST IDX files: ``$MNIST_DIR``, else ``default``, else ``../shared/data/mnist``.

    Parameters
    ----------
    default : str, os.PathLike or None, default=None
        A folder to try after ``$MNIST_DIR``.

    Returns
    -------
    pathlib.Path or None
        None when no candidate holds the files.
    """
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

    Parameters
    ----------
    directory : str or os.PathLike
        Folder with the IDX files.
    url : str or os.PathLike
        Target store.
    splits : tuple of str, default=("train", "test")
        Concatenated in order (train then test gives all 70,000 images).
    limit : int or None, default=None
        Keep the first rows.
    chunk_rows : int, default=10000
        Rows per stored chunk.
    scale : float or None, default=None
        Multiplies pixel values (e.g. 1/255 for [0, 1]).
    overwrite : bool, default=False
        Replace an existing store.
    dtype : str, default="float32"
        Dtype of X.

    Returns
    -------
    str
        The store URL.
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
            if left <= 0:
                break
            labels = read_idx(lab).astype(np.int64)
            pos = 0
            for xb in iter_idx_chunks(img, rows):
                if left <= 0:  # the limit is reached: the pending tail is written below
                    break
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
    return write_stream(url, blocks(), n, d, dt, rows, True, feature_names=names,
                         attrs={"source": f"mnist:{directory}", "splits": list(splits),
                                "image_shape": [28, 28] if d == 784 else None, "scale": scale},
                         overwrite=overwrite)


def load_mnist(directory=None, *, limit: int | None = None, scale: float | None = None):
    """MNIST in memory as ``(X float32 (n, 784), y int64)``: all 70,000 images unless ``limit``.

    Parameters
    ----------
    directory : str, os.PathLike or None, default=None
        Folder with the IDX files (None: :func:`find_mnist_dir`).
    limit : int or None, default=None
        Keep the first rows.
    scale : float or None, default=None
        Multiplies pixel values.

    Returns
    -------
    X : ndarray of shape (n, 784), float32
    y : ndarray of shape (n,), int64

    Raises
    ------
    DataError
        When MNIST is not found.
    """
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


SOURCE_KINDS = ("a Zarr store (path or fsspec URL), a .npy, .csv or .parquet file, an MNIST folder, 'mnist' "
                "or 'sklearn-digits'")


def resolve_source(source) -> str:
    """Check that ``source`` names something this project can read, and resolve it.

    ``'mnist'`` becomes the MNIST folder (:func:`find_mnist_dir`), a local path becomes absolute, and
    remote URLs and ``'sklearn-digits'`` are returned as given (a remote store is checked when opened).
    The one place that says what a source may be: the CLI, the stages and the flows all call it.

    Parameters
    ----------
    source : str or path-like
        What to read.

    Returns
    -------
    str
        The resolved source.

    Raises
    ------
    DataError
        If ``source`` does not exist, or is ``'mnist'`` and no MNIST folder is found.
    """
    src = os.fspath(source)
    if src == "sklearn-digits":
        return src
    if src == "mnist":
        d = find_mnist_dir()
        if d is None:
            raise DataError("source 'mnist': no MNIST folder found; set MNIST_DIR to a folder holding the IDX "
                            "files (train-images-idx3-ubyte.gz, ...) or use 'sklearn-digits'")
        return str(d)
    if "://" in src and not src.startswith("file://"):
        return src
    p = Path(os.path.expanduser(src.removeprefix("file://")))
    if not p.exists():
        raise DataError(f"Source {src!r} does not exist; give {SOURCE_KINDS}")
    return str(p.resolve())


def ingest(source, url, **kw) -> str:
    """Ingest any supported source into a store.

    Parameters
    ----------
    source : array-like, str or os.PathLike
        An array, a ``.npy`` file, a CSV/Parquet file, an MNIST directory or ``"sklearn-digits"`` (the 8x8
        digits set shipped inside scikit-learn).
    url : str or os.PathLike
        Target store; never the source.
    **kw
        Passed to the reader: ``overwrite``, ``chunk_rows``, ``limit``, ``scale``, ``label_column``, ...

    Returns
    -------
    str
        The store URL.

    Examples
    --------
    >>> import tempfile, os
    >>> from kmeans_dist.data import ingest, store_info
    >>> url = ingest("sklearn-digits", os.path.join(tempfile.mkdtemp(), "digits.zarr"))
    >>> store_info(url)["shape"]
    (1797, 64)
    """
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
        if p.suffix == ".npz":  # a scipy.sparse matrix (scipy.sparse.save_npz): a CSR group
            return ingest_sparse_npz(p, url, **kw)
        if p.suffix in (".csv", ".parquet", ".pq") or p.is_dir() or "*" in p.name:
            return ingest_table(p, url, **kw)
        resolve_source(p)
        raise DataError(f"Don't know how to ingest {os.fspath(source)!r} (expected .npy, .npz, .csv, .parquet, "
                        "an MNIST folder, or 'sklearn-digits')")
    return write_store(url, source, **{k: v for k, v in kw.items() if k in ("labels", "chunk_rows", "feature_names", "attrs", "overwrite", "dtype")})
