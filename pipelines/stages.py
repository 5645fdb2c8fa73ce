"""Pipeline stages: plain Python functions composed from the library.

Every stage takes and returns *references* (store URLs, paths of small ``.npy``/``.npz`` files, small
dicts of parameters and results), never whole arrays, so the stages can run as Prefect tasks on Dask
workers and their results can be cached and persisted cheaply.

Every stage that passes over the data takes ``engine`` (``"auto"``, ``"dask"``, ``"ray"`` or ``"local"``,
as the library's estimators) and ``ray_address``; see :func:`use_engine`.  The engine is never part of a
cache key: the library's results are bit-identical whatever the engine, so a result computed on Dask
serves a run on Ray and the other way round.

Stages are idempotent: each writes only inside the run's output folder, to deterministic paths, and
every write is atomic (a temporary sibling then ``os.replace``), so re-running a finished stage (as
Dask does when a worker dies) rewrites identical files, and a killed stage leaves nothing that looks
finished.

Layout of a run folder::

    data/input.zarr           ingested source (absent when the source already is a Zarr store)
    data/standardized.zarr    standardized copy (when asked for)
    seeds/<name>.npy          initial centers
    fits/<name>/checkpoint.npz  Lloyd checkpoint (centers, iteration, history), replaced every iteration
    fits/<name>/fit.npz       final centers, inertia, history (written once, when the fit ends)
    metrics/<name>.json       evaluation
    plots/*.png, report.md, summary.json
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import threading
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from kmeans_dist.data.atomic import atomic_write_bytes, atomic_write_json, json_default

__all__ = [
    "STAGE_VERSION",
    "use_engine",
    "connect_ray",
    "fingerprint",
    "stage_key",
    "atomic_write_bytes",
    "atomic_write_json",
    "save_npz_atomic",
    "write_checkpoint",
    "read_checkpoint",
    "ingest",
    "standardize",
    "seed",
    "fit_lloyd",
    "fit_minibatch",
    "evaluate",
    "report",
    "choose_k_report",
]

#: bump when a stage's output for the same inputs changes (invalidates cached results)
STAGE_VERSION = "1"

_log = logging.getLogger("kmeans_dist.pipelines")

_SMALL_FILE = 1 << 20  # files up to this size are fingerprinted by content, larger ones by size+mtime

_RAY_LOCK = threading.Lock()  # stages running in threads of one process connect to Ray once


# --------------------------------------------------------------------------------------------------
# engines
# --------------------------------------------------------------------------------------------------

def connect_ray(address: str | None = None) -> bool:
    """Connect this process to Ray unless it is connected already; a local Ray listens on 127.0.0.1 only.

    With ``address`` (or ``RAY_ADDRESS`` set): :func:`kmeans_dist.chunked.ray_engine.connect` to that
    cluster.  Without: a local Ray started by :func:`pipelines.ray_local.init_local_ray`, every one of its
    servers bound to the loopback interface.  Safe to call from several threads at once.

    Parameters
    ----------
    address : str, optional
        ``ray://host:10001``, ``host:6379`` or ``"auto"``; None or empty: ``RAY_ADDRESS``, else a local Ray.

    Returns
    -------
    bool
        True when this call connected (or started Ray), False when Ray was already initialized.
    """
    import sys

    with _RAY_LOCK:
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            return False
        if address or os.environ.get("RAY_ADDRESS"):
            from kmeans_dist.chunked.ray_engine import connect

            return connect(address or None, log_to_driver=False)
        from pipelines.ray_local import init_local_ray

        init_local_ray(log_to_driver=False)
        return True


def use_engine(engine: str = "auto", ray_address: str | None = None) -> str:
    """Check a stage's ``engine`` and ``ray_address``; connect to Ray when the engine is Ray.

    Parameters
    ----------
    engine : {"auto", "dask", "ray", "local"}, default: "auto"
        As the library's ``engine`` (:func:`kmeans_dist.chunked.driver.make_blocks`): ``"auto"`` is the
        given or active Dask client, else a connected Ray, else in process; ``"dask"`` needs a Dask
        client; ``"ray"`` holds the blocks in Ray actors; ``"local"`` runs in process.
    ray_address : str, optional
        Ray cluster for ``engine="ray"`` (:func:`connect_ray`; none: a local Ray on 127.0.0.1).  Given with
        ``engine="auto"``, it means ``"ray"`` (as ``kmeans-dist fit --ray-address``).

    Returns
    -------
    str
        The engine to pass to the library: ``engine``, or ``"ray"`` for ``"auto"`` with an address.

    Raises
    ------
    ValueError
        If ``engine`` is not one of the four names, or ``ray_address`` is given with ``"dask"`` or
        ``"local"``.

    Examples
    --------
    >>> use_engine("local")
    'local'
    >>> try:
    ...     use_engine("spark")
    ... except ValueError as exc:
    ...     print(exc)
    engine must be one of 'auto', 'dask', 'ray', 'local'; got 'spark'
    """
    from kmeans_dist.chunked.driver import ENGINES

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(repr(e) for e in ENGINES)}; got {engine!r}")
    ray_address = (str(ray_address).strip() or None) if ray_address is not None else None
    if ray_address and engine == "auto":
        engine = "ray"
    if ray_address and engine != "ray":
        raise ValueError(f"ray_address is for engine='ray' (or 'auto'); got engine={engine!r} with "
                         f"ray_address={ray_address!r}")
    if engine == "ray":
        connect_ray(ray_address)
    return engine


# --------------------------------------------------------------------------------------------------
# references, fingerprints and keys
# --------------------------------------------------------------------------------------------------

def _ref_path(ref) -> str:
    if isinstance(ref, dict):
        for k in ("url", "path"):
            if k in ref:
                return str(ref[k])
        raise KeyError(f"reference {ref!r} has neither 'url' nor 'path'")
    return os.fspath(ref)


def _is_remote(s: str) -> bool:
    return "://" in s and not s.startswith("file://")


def fingerprint(ref) -> str:
    """Return a content fingerprint of the data a reference points to.

    Local files and folders (Zarr stores, ``.npy``, MNIST folders): a hash over every file's relative
    path, size and modification time, and over the *content* of small files (Zarr metadata, centers;
    files up to 1 MiB).  Hidden files and folders inside a folder are skipped.
    ``'sklearn-digits'``: the scikit-learn version.  Remote stores: the Zarr metadata.
    A local path that does not exist gives ``'missing:<path>'``.

    Parameters
    ----------
    ref : str, os.PathLike or dict
        A path, a store URL, ``'sklearn-digits'``, or a stage reference (a dict with a ``'url'`` or a
        ``'path'`` key).

    Returns
    -------
    str
        The fingerprint: a SHA-256 hex digest for local and remote data,
        ``'sklearn-digits:<version>'`` or ``'missing:<path>'`` otherwise.

    Raises
    ------
    KeyError
        If ``ref`` is a dict with neither a ``'url'`` nor a ``'path'`` key.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "centers.npy").write_bytes(b"abc")
    >>> fp = fingerprint(d / "centers.npy")
    >>> len(fp)
    64
    >>> fp == fingerprint({"path": str(d / "centers.npy")})
    True
    >>> _ = (d / "centers.npy").write_bytes(b"abd")
    >>> fp == fingerprint(d / "centers.npy")
    False
    >>> fingerprint(d / "absent.npy").startswith("missing:")
    True
    """
    s = _ref_path(ref)
    if s == "sklearn-digits":
        import sklearn

        return f"sklearn-digits:{sklearn.__version__}"
    if _is_remote(s):
        from kmeans_dist.data import store_info

        info = store_info(s)
        return "remote:" + hashlib.sha256(json.dumps(info, sort_keys=True, default=str).encode()).hexdigest()
    p = Path(s.removeprefix("file://"))
    if not p.exists():
        return f"missing:{p}"
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file()
                                          and not any(part.startswith(".") for part in f.relative_to(p).parts))
    for f in files:
        st = f.stat()
        rel = f.name if f == p else f.relative_to(p).as_posix()
        h.update(f"{rel}\0{st.st_size}\0".encode())
        if st.st_size <= _SMALL_FILE:
            h.update(hashlib.sha256(f.read_bytes()).digest())
        else:
            h.update(f"{st.st_mtime_ns}".encode())
    return h.hexdigest()


def stage_key(stage: str, inputs: dict[str, Any] | None = None, params: dict[str, Any] | None = None) -> str:
    """Return the cache key of a stage.

    The key hashes the stage's name and version (:data:`STAGE_VERSION`), the fingerprints
    (:func:`fingerprint`) of its inputs and its parameters, so a changed input or parameter, or a
    bumped stage version, gives a new key.

    Parameters
    ----------
    stage : str
        Name of the stage.
    inputs : dict, optional
        Input references by name; each is fingerprinted (``None`` values stay ``None``).
    params : dict, optional
        The stage's other parameters (JSON-serializable; other values are keyed by ``str``).

    Returns
    -------
    str
        32 hexadecimal characters.

    Raises
    ------
    KeyError
        If an input is a dict with neither a ``'url'`` nor a ``'path'`` key.

    Examples
    --------
    >>> key = stage_key("seed", params={"k": 3})
    >>> len(key)
    32
    >>> key == stage_key("seed", params={"k": 3})
    True
    >>> key == stage_key("seed", params={"k": 4})
    False
    """
    doc = {
        "stage": stage,
        "version": STAGE_VERSION,
        "inputs": {k: (None if v is None else fingerprint(v)) for k, v in sorted((inputs or {}).items())},
        "params": params or {},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:32]


# --------------------------------------------------------------------------------------------------
# atomic files and checkpoints
# --------------------------------------------------------------------------------------------------

def save_npz_atomic(path, **arrays) -> str:
    """Write arrays to an ``.npz`` file atomically.

    The archive is built in memory, then written to a temporary sibling and moved into place with
    ``os.replace``: a reader sees the previous file or the new one, never a partial file.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file; missing parent folders are created.
    **arrays : array_like
        The arrays to store, by name (as for :func:`numpy.savez`).

    Returns
    -------
    str
        The path written.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from pathlib import Path
    >>> p = save_npz_atomic(Path(tempfile.mkdtemp()) / "fit.npz", centers=np.zeros((2, 3)))
    >>> with np.load(p) as z:
    ...     z["centers"].shape
    (2, 3)
    """
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def _save_npy_atomic(path, arr) -> str:
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr))
    return atomic_write_bytes(path, buf.getvalue())


def write_checkpoint(directory, *, key: str, centers, iteration: int, history: list, extra: dict | None = None) -> str:
    """Atomically replace ``directory/checkpoint.npz`` with (centers, iteration, history).

    One file, one ``os.replace``: a reader sees the previous checkpoint or this one, never a mix.
    The metadata (``key``, ``iteration``, ``history`` and ``extra``) is stored as JSON next to the
    centers.

    Parameters
    ----------
    directory : str or os.PathLike
        Folder of the checkpoint (created if missing).
    key : str
        Cache key of the fit; :func:`read_checkpoint` only returns a checkpoint of the same key.
    centers : array_like
        Current centers, shape ``(k, n_features)``.
    iteration : int
        Number of iterations done.
    history : list
        Per-iteration history entries (JSON-serializable dicts).
    extra : dict, optional
        More metadata to store (e.g. ``converged``).

    Returns
    -------
    str
        Path of the checkpoint file.

    Examples
    --------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = write_checkpoint(d, key="abc", centers=[[0.0, 1.0]], iteration=3, history=[])
    >>> ckpt = read_checkpoint(d, "abc")
    >>> ckpt["iteration"], ckpt["centers"].shape
    (3, (1, 2))
    """
    directory = Path(directory)
    meta = {"key": key, "iteration": int(iteration), "history": history, **(extra or {})}
    path = save_npz_atomic(directory / "checkpoint.npz", centers=np.asarray(centers),
                           meta=np.array(json.dumps(meta, default=json_default)))
    return path


def read_checkpoint(directory, key: str | None = None) -> dict | None:
    """Return the checkpoint in ``directory`` if there is one (for ``key``, when given), else None.

    An unreadable checkpoint is logged and ignored (returns None); with atomic writes this should
    not happen.

    Parameters
    ----------
    directory : str or os.PathLike
        Folder holding ``checkpoint.npz``.
    key : str, optional
        Cache key the checkpoint must have been written with; a checkpoint of another key is
        ignored.

    Returns
    -------
    dict or None
        ``centers`` (a NumPy array) and the stored metadata (``key``, ``iteration``, ``history`` and
        any extra entries), or None when there is no usable checkpoint.

    Examples
    --------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> read_checkpoint(d) is None
    True
    >>> _ = write_checkpoint(d, key="abc", centers=[[0.0]], iteration=1, history=[])
    >>> read_checkpoint(d, key="other") is None
    True
    """
    path = Path(directory) / "checkpoint.npz"
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            centers = np.array(z["centers"])
            meta = json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:  # pragma: no cover - atomic writes
        _log.warning("ignoring unreadable checkpoint %s: %s", path, exc)
        return None
    if key is not None and meta.get("key") != key:
        return None
    return {"centers": centers, **meta}


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------

def _store_ref(url: str, **extra) -> dict:
    from kmeans_dist.data import store_info

    info = store_info(url)
    attrs = info["attrs"]
    n, d = info["shape"]
    image_shape = attrs.get("image_shape")
    if image_shape is None and d == 784:
        image_shape = [28, 28]
    if image_shape is not None and int(np.prod(image_shape)) != d:
        image_shape = None
    ref = {"url": str(url), "shape": [int(n), int(d)], "dtype": info["dtype"], "chunks": list(info["chunks"]),
           "has_labels": bool(info["has_labels"]), "image_shape": image_shape,
           "source": attrs.get("source"), "fingerprint": fingerprint(url)}
    ref.update(extra)
    return ref


def _is_zarr_store(p: Path) -> bool:
    return p.is_dir() and (p / "zarr.json").exists() and (p / "X").is_dir()


def _open_X(store: dict):
    from kmeans_dist.data import open_store

    return open_store(store["url"])


# --------------------------------------------------------------------------------------------------
# stages
# --------------------------------------------------------------------------------------------------

def ingest(source: str, out_dir, *, limit: int | None = None, chunk_rows: int | None = None,
           logger: logging.Logger | None = None) -> dict:
    """Make ``source`` a Zarr store and return its reference.

    A Zarr store is used in place (never copied, never modified); anything else (``.npy``, CSV,
    Parquet, an MNIST folder, ``'sklearn-digits'``) is streamed into ``out_dir/data/input.zarr``
    (overwritten if present; the source is never the output, nor inside it).

    Parameters
    ----------
    source : str
        A Zarr store (path or fsspec URL), a ``.npy``/CSV/Parquet file, an MNIST folder, ``'mnist'``
        or ``'sklearn-digits'``.
    out_dir : str or os.PathLike
        The run folder.
    limit : int, optional
        Keep only the first ``limit`` rows of an MNIST folder.
    chunk_rows : int, optional
        Rows per chunk of the written store (default: the library's choice; 10 000 for MNIST).
    logger : logging.Logger, optional
        Where to log (default: the ``kmeans_dist.pipelines`` logger).

    Returns
    -------
    dict
        The store reference: ``url``, ``shape``, ``dtype``, ``chunks``, ``has_labels``,
        ``image_shape``, ``source``, ``fingerprint``, ``copied`` (False for a store used in place)
        and ``seconds``.

    Raises
    ------
    kmeans_dist.data.DataError
        If ``source`` does not exist or cannot be read, or the output would overwrite the source.
    """
    from kmeans_dist.data import check_output, ingest as _ingest, ingest_mnist, resolve_source

    log = logger or _log
    t0 = time.perf_counter()
    src = str(source)
    resolve_source(src)
    p = Path(src.removeprefix("file://"))
    if _is_remote(src) or _is_zarr_store(p):
        ref = _store_ref(src if _is_remote(src) else str(p.resolve()), copied=False)
        log.info("Using the Zarr store %s in place: %d x %d", ref["url"], *ref["shape"])
    else:
        target = Path(out_dir) / "data" / "input.zarr"
        check_output(target, [src], overwrite=True)  # the source is never the output, nor inside it
        kw: dict[str, Any] = {"overwrite": True}
        if chunk_rows:
            kw["chunk_rows"] = chunk_rows
        if p.is_dir() and any(p.glob("*idx3*")):
            if chunk_rows is None:
                kw["chunk_rows"] = 10_000
            ingest_mnist(p, target, limit=limit, **kw)
        else:
            _ingest(src, target, **kw)
        ref = _store_ref(str(target), copied=True)
        log.info("Ingested %s into %s: %d x %d (%s)", src, target, *ref["shape"], ref["dtype"])
    ref["source"] = src
    ref["seconds"] = time.perf_counter() - t0
    return ref


def standardize(store: dict, out_dir, *, client=None, engine: str = "auto", ray_address: str | None = None,
                logger: logging.Logger | None = None) -> dict:
    """Write the standardized copy of ``store`` to ``out_dir/data/standardized.zarr``.

    Every feature is shifted to mean 0 and scaled to standard deviation 1; the target is
    overwritten if present.  The means and standard deviations are kept in the store's attributes
    (:func:`report` uses them to show the centers in the original units).

    Parameters
    ----------
    store : dict
        Reference of the input store (from :func:`ingest`).
    out_dir : str or os.PathLike
        The run folder.
    client : distributed.Client, optional
        Dask client to compute on (default: the current scheduler).
    engine : {"auto", "dask", "ray", "local"}, default: "auto"
        Where the moments pass runs (see :func:`use_engine`); the copy is written by Dask, on the active
        scheduler with ``"dask"``, in process threads with ``"ray"`` and ``"local"``.  Not part of the
        cache key: every engine gives the same result, bit for bit.
    ray_address : str, optional
        Ray cluster to connect to with ``engine="ray"`` (see :func:`use_engine`).
    logger : logging.Logger, optional
        Where to log (default: the ``kmeans_dist.pipelines`` logger).

    Returns
    -------
    dict
        Reference of the standardized store, like :func:`ingest`'s, with ``standardized_from`` (the
        input store's URL) and the input's ``source`` and ``image_shape``.
    """
    from kmeans_dist.chunked.preprocessing import standardize_store

    log = logger or _log
    t0 = time.perf_counter()
    target = Path(out_dir) / "data" / "standardized.zarr"
    engine = use_engine(engine, ray_address)
    standardize_store(store["url"], str(target), client=client, overwrite=True, engine=engine)
    ref = _store_ref(str(target), copied=True, standardized_from=store["url"])
    ref["source"] = store.get("source")
    ref["image_shape"] = store.get("image_shape")
    ref["seconds"] = time.perf_counter() - t0
    log.info("Standardized %s into %s", store["url"], target)
    return ref


def seed(store: dict, out_dir, *, k: int, init: str = "k-means++", random_state: int | None = 0,
         name: str = "seed", client=None, engine: str = "auto", ray_address: str | None = None,
         logger: logging.Logger | None = None) -> dict:
    """Compute initial centers for ``k`` clusters and save them to ``out_dir/seeds/<name>.npy``.

    The file is written atomically.

    Parameters
    ----------
    store : dict
        Reference of the data store (from :func:`ingest` or :func:`standardize`).
    out_dir : str or os.PathLike
        The run folder.
    k : int
        Number of clusters.
    init : str, default: "k-means++"
        Seeding method (``'k-means++'``, ``'k-means||'``, ``'random'``, ``'random-partition'``).
    random_state : int, optional
        Seed of the seeding.
    name : str, default: "seed"
        File name (without ``.npy``) of the centers.
    client : distributed.Client, optional
        Dask client to compute on (default: the current scheduler).
    engine : {"auto", "dask", "ray", "local"}, default: "auto"
        Where the passes over the data run (see :func:`use_engine`).  Not part of the cache key: every
        engine gives the same result, bit for bit.
    ray_address : str, optional
        Ray cluster to connect to with ``engine="ray"`` (see :func:`use_engine`).
    logger : logging.Logger, optional
        Where to log (default: the ``kmeans_dist.pipelines`` logger).

    Returns
    -------
    dict
        The seed reference: ``path``, ``k``, ``init``, ``random_state``, ``name`` and ``seconds``.

    Raises
    ------
    kmeans_dist.data.DataError
        If ``k`` is larger than the number of samples.
    """
    from kmeans_dist.data import DataError
    from kmeans_dist.chunked.seeding import init_centers

    log = logger or _log
    t0 = time.perf_counter()
    n, d = store["shape"]
    if k > n:
        raise DataError(f"k={k} is larger than the number of samples ({n}) in {store['url']}; choose k <= {n}")
    engine = use_engine(engine, ray_address)
    C = init_centers(_open_X(store), k, method=init, random_state=random_state, client=client, engine=engine)
    path = _save_npy_atomic(Path(out_dir) / "seeds" / f"{name}.npy", C)
    log.info("Seeded %d centers with %s (random_state=%s) in %.2f s", k, init, random_state,
             time.perf_counter() - t0)
    return {"path": path, "k": int(k), "init": init, "random_state": random_state, "name": name,
            "seconds": time.perf_counter() - t0}


def _lloyd_impl():
    """The library's resumable Lloyd driver."""
    from kmeans_dist.chunked.lloyd import lloyd

    return lloyd


def fit_lloyd(store: dict, init: dict, out_dir, *, max_iter: int = 300, tol: float = 1e-4, name: str = "fit",
              key: str | None = None, client=None, progress: Callable[[int, int], None] | None = None,
              logger: logging.Logger | None = None, algorithm: str = "lloyd", engine: str = "auto",
              ray_address: str | None = None) -> dict:
    """Run Lloyd iterations from the centers in ``init``, checkpointed after every iteration.

    The checkpoint (centers, iteration, history) lives in ``out_dir/fits/<name>/checkpoint.npz`` and is
    replaced atomically each iteration.  If a checkpoint for the same key (same data, same initial
    centers, same parameters) exists, the fit resumes from it; the result is bit-identical to an
    uninterrupted run because the library's reduction order is fixed.  The final result goes to
    ``fit.npz`` once; a later call with the same key returns it without iterating.

    Parameters
    ----------
    store : dict
        Reference of the data store (from :func:`ingest` or :func:`standardize`).
    init : dict
        Reference of the initial centers (from :func:`seed`).
    out_dir : str or os.PathLike
        The run folder.
    max_iter : int, default: 300
        Maximum number of iterations.
    tol : float, default: 1e-4
        Convergence tolerance on the center shift.
    name : str, default: "fit"
        Name of the fit: its files go to ``out_dir/fits/<name>/``.
    key : str, optional
        Cache key of the fit (default: :func:`stage_key` of the store, the initial centers,
        ``max_iter``, ``tol`` and, unless "lloyd", ``algorithm``).
    client : distributed.Client, optional
        Dask client to compute on (default: the current scheduler).
    progress : callable, optional
        Called as ``progress(iteration, max_iter)`` after every iteration.
    logger : logging.Logger, optional
        Where to log (default: the ``kmeans_dist.pipelines`` logger).
    algorithm : {"lloyd", "hamerly"}, default: "lloyd"
        "lloyd" or "hamerly" (the same iterations with bounds, see :class:`kmeans_dist.KMeans`).
    engine : {"auto", "dask", "ray", "local"}, default: "auto"
        Where the passes over the data run (see :func:`use_engine`).  Not part of the cache key (a checkpoint
        written on one engine resumes on another): every engine gives the same result, bit for bit.
    ray_address : str, optional
        Ray cluster to connect to with ``engine="ray"`` (see :func:`use_engine`).

    Returns
    -------
    dict
        The fit reference: ``key``, ``name``, ``path`` (of ``fit.npz``), ``k``, ``n_iter``,
        ``inertia``, ``converged``, ``history``, ``resumed_from`` (the iteration resumed from, 0 for
        a fresh fit), ``algorithm`` and ``seconds``.
    """
    log = logger or _log
    t0 = time.perf_counter()
    engine = use_engine(engine, ray_address)
    params = {"max_iter": max_iter, "tol": tol}
    if algorithm != "lloyd":  # keys of earlier "lloyd" runs stay valid
        params["algorithm"] = algorithm
    key = key or stage_key("fit_lloyd", {"store": store, "init": init}, params)
    fdir = Path(out_dir) / "fits" / name
    done = _read_fit(fdir / "fit.npz", key)
    if done is not None:
        log.info("Fit %s already finished (%d iterations); reusing %s", name, done["n_iter"], done["path"])
        done["seconds"] = time.perf_counter() - t0
        return done

    centers = np.load(init["path"])
    start, history, converged = 0, [], False
    ckpt = read_checkpoint(fdir, key)
    if ckpt is not None:
        centers, start, history = ckpt["centers"], int(ckpt["iteration"]), list(ckpt["history"])
        converged = bool(ckpt.get("converged", False))
        log.info("Resuming fit %s from its checkpoint at iteration %d", name, start)
    last = [time.perf_counter()]

    def callback(state: dict):
        it = int(state["iteration"])
        hist = [_clean(h) for h in state["history"]] if state.get("history") is not None else \
            history + [_clean(state)]
        write_checkpoint(fdir, key=key, centers=state["centers"], iteration=it, history=hist,
                         extra={"converged": bool(state.get("converged", False)), "pid": os.getpid()})
        if progress is not None:
            progress(it, max_iter)
        now = time.perf_counter()
        if now - last[0] > 5:
            last[0] = now
            log.info("fit %s: iteration %d, inertia %.6g", name, it, float(state["inertia"]))

    lloyd = _lloyd_impl()
    # a checkpoint taken at convergence: no further iteration, only the final pass
    res = lloyd(_open_X(store), centers, max_iter=start if converged else max_iter, tol=tol, client=client,
                callback=callback, start_iteration=start, history=list(history), algorithm=algorithm,
                engine=engine)
    if converged:
        res.converged = True
    hist = [_clean(h) for h in res.history]
    out = {"key": key, "name": name, "n_iter": int(res.n_iter), "inertia": float(res.inertia),
           "converged": bool(getattr(res, "converged", res.n_iter < max_iter)), "history": hist,
           "resumed_from": start, "algorithm": algorithm, "k": int(np.shape(res.centers)[0])}
    path = save_npz_atomic(fdir / "fit.npz", centers=np.asarray(res.centers),
                           meta=np.array(json.dumps(out, default=json_default)))
    out["path"] = path
    out["seconds"] = time.perf_counter() - t0
    log.info("Fit %s: %d iterations, inertia %.6g, converged=%s (%.2f s)", name, out["n_iter"], out["inertia"],
             out["converged"], out["seconds"])
    return out


def _clean(entry: dict) -> dict:
    """A history entry as plain JSON values (no centers, no nested history)."""
    return {k: _scalar(v) for k, v in entry.items() if k not in ("centers", "history", "converged")}


def _scalar(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray) and v.ndim == 0:
        return v.item()
    return v


def _read_fit(path: Path, key: str) -> dict | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # pragma: no cover
        return None
    if meta.get("key") != key:
        return None
    meta["path"] = str(path)
    return meta


def load_centers(fit: dict) -> np.ndarray:
    """Load the final centers of a fit reference.

    Parameters
    ----------
    fit : dict
        A fit reference (from :func:`fit_lloyd` or :func:`fit_minibatch`), or any dict whose
        ``'path'`` is an ``.npz`` file with a ``centers`` array.

    Returns
    -------
    numpy.ndarray
        The centers, shape ``(k, n_features)``.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from pathlib import Path
    >>> p = save_npz_atomic(Path(tempfile.mkdtemp()) / "fit.npz", centers=np.eye(2))
    >>> load_centers({"path": p})
    array([[1., 0.],
           [0., 1.]])
    """
    with np.load(fit["path"], allow_pickle=False) as z:
        return np.array(z["centers"])


def fit_minibatch(store: dict, init: dict, out_dir, *, batch_size: int = 1024, max_iter: int = 100,
                  tol: float = 0.0, random_state: int | None = 0, name: str = "fit", key: str | None = None,
                  client=None, engine: str = "auto", ray_address: str | None = None,
                  logger: logging.Logger | None = None) -> dict:
    """Run mini-batch k-means from the centers in ``init`` (no checkpoints: each step is cheap).

    The result goes to ``out_dir/fits/<name>/fit.npz`` (atomically); a later call with the same key
    returns it without fitting again.

    Parameters
    ----------
    store : dict
        Reference of the data store (from :func:`ingest` or :func:`standardize`).
    init : dict
        Reference of the initial centers (from :func:`seed`).
    out_dir : str or os.PathLike
        The run folder.
    batch_size : int, default: 1024
        Samples per mini-batch.
    max_iter : int, default: 100
        Maximum number of steps.
    tol : float, default: 0.0
        Convergence tolerance (0: run ``max_iter`` steps).
    random_state : int, optional
        Seed of the batch sampling.
    name : str, default: "fit"
        Name of the fit: its files go to ``out_dir/fits/<name>/``.
    key : str, optional
        Cache key of the fit (default: :func:`stage_key` of the store, the initial centers and the
        other parameters).
    client : distributed.Client, optional
        Dask client to compute on (default: the current scheduler).
    engine : {"auto", "dask", "ray", "local"}, default: "auto"
        Where the passes over the data run (see :func:`use_engine`).  Not part of the cache key: every
        engine gives the same result, bit for bit.
    ray_address : str, optional
        Ray cluster to connect to with ``engine="ray"`` (see :func:`use_engine`).
    logger : logging.Logger, optional
        Where to log (default: the ``kmeans_dist.pipelines`` logger).

    Returns
    -------
    dict
        The fit reference, with the same entries as :func:`fit_lloyd`'s (``algorithm`` is
        ``'minibatch'``).
    """
    from kmeans_dist import MiniBatchKMeans

    log = logger or _log
    t0 = time.perf_counter()
    engine = use_engine(engine, ray_address)
    key = key or stage_key("fit_minibatch", {"store": store, "init": init},
                           {"batch_size": batch_size, "max_iter": max_iter, "tol": tol,
                            "random_state": random_state})
    fdir = Path(out_dir) / "fits" / name
    done = _read_fit(fdir / "fit.npz", key)
    if done is not None:
        done["seconds"] = time.perf_counter() - t0
        return done
    C0 = np.load(init["path"])
    est = MiniBatchKMeans(n_clusters=C0.shape[0], init=C0, n_init=1, batch_size=batch_size, max_iter=max_iter,
                          random_state=random_state, tol=tol, compute_labels=False, client=client, engine=engine)
    est.fit(_open_X(store))
    hist = [{k: _scalar(v) for k, v in h.items() if k != "centers"} for h in (getattr(est, "history_", None) or [])]
    out = {"key": key, "name": name, "n_iter": int(getattr(est, "n_iter_", max_iter)),
           "inertia": float(getattr(est, "inertia_", float("nan"))), "converged": True, "history": hist,
           "resumed_from": 0, "algorithm": "minibatch", "k": int(C0.shape[0])}
    path = save_npz_atomic(fdir / "fit.npz", centers=np.asarray(est.cluster_centers_),
                           meta=np.array(json.dumps(out, default=json_default)))
    out["path"] = path
    out["seconds"] = time.perf_counter() - t0
    log.info("Mini-batch fit %s: %d steps in %.2f s", name, out["n_iter"], out["seconds"])
    return out


def fit_family(store: dict, init: dict, out_dir, *, algorithm: str, max_iter: int = 300, tol: float = 1e-4,
               random_state: int | None = 0, name: str = "fit", key: str | None = None, client=None,
               engine: str = "auto", ray_address: str | None = None,
               logger: logging.Logger | None = None) -> dict:
    """Fit another member of the k-means family (``bisecting``, ``spherical``, ``kmedians``, ``kmedoids``,
    ``elkan``; see :func:`kmeans_dist.estimators.make_estimator`) and save its centers.

    The estimator starts from the centers in ``init`` when it takes initial centers (spherical, k-medians,
    Elkan), and from its own seeding with ``random_state`` otherwise (bisecting, k-medoids).  The result
    goes to ``out_dir/fits/<name>/fit.npz`` (atomically) and the fitted model to ``out_dir/fits/<name>/model``;
    a later call with the same key returns it without fitting again.

    Parameters
    ----------
    store : dict
        Reference of the data store (from :func:`ingest` or :func:`standardize`).
    init : dict
        Reference of the initial centers (from :func:`seed`).
    out_dir : str or os.PathLike
        The run folder.
    algorithm : str
        A name of :data:`kmeans_dist.estimators.ALGORITHMS`.
    max_iter : int, default: 300
        Maximum number of iterations.
    tol : float, default: 1e-4
        Convergence tolerance, where the estimator has one.
    random_state : int, optional
        Seed of the estimator's own random choices.
    name : str, default: "fit"
        Name of the fit: its files go to ``out_dir/fits/<name>/``.
    key : str, optional
        Cache key of the fit (default: :func:`stage_key` of the store, the initial centers and the
        other parameters).
    client : distributed.Client, optional
        Dask client to compute on (default: the current scheduler).
    engine : {"auto", "dask", "ray", "local"}, default: "auto"
        Where the passes over the data run (see :func:`use_engine`).  Not part of the cache key: every
        engine gives the same result, bit for bit.
    ray_address : str, optional
        Ray cluster to connect to with ``engine="ray"`` (see :func:`use_engine`).
    logger : logging.Logger, optional
        Where to log (default: the ``kmeans_dist.pipelines`` logger).

    Returns
    -------
    dict
        The fit reference, with the same entries as :func:`fit_lloyd`'s.

    Raises
    ------
    ValueError
        If ``engine`` is invalid, or not ``"auto"`` for an estimator without an ``engine`` parameter.
    """
    from kmeans_dist.estimators import make_estimator

    log = logger or _log
    t0 = time.perf_counter()
    engine = use_engine(engine, ray_address)
    key = key or stage_key("fit_family", {"store": store, "init": init},
                           {"algorithm": algorithm, "max_iter": max_iter, "tol": tol, "random_state": random_state})
    fdir = Path(out_dir) / "fits" / name
    done = _read_fit(fdir / "fit.npz", key)
    if done is not None:
        done["seconds"] = time.perf_counter() - t0
        return done
    C0 = np.load(init["path"])
    est = make_estimator(algorithm, int(C0.shape[0]), init=C0, n_init=1, max_iter=max_iter, tol=tol,
                         random_state=random_state, client=client, engine=engine)
    if engine != "auto" and "engine" not in est.get_params():
        raise ValueError(f"algorithm {algorithm!r} ({type(est).__name__}) takes no engine; run it with "
                         "engine='auto'")
    est.fit(_open_X(store))
    hist = [{k: _scalar(v) for k, v in h.items() if k != "centers"} for h in (getattr(est, "history_", None) or [])]
    out = {"key": key, "name": name, "n_iter": int(getattr(est, "n_iter_", 0)),
           "inertia": float(getattr(est, "inertia_", float("nan"))), "converged": True, "history": hist,
           "resumed_from": 0, "algorithm": algorithm, "k": int(C0.shape[0])}
    est.save(fdir / "model", overwrite=True)
    path = save_npz_atomic(fdir / "fit.npz", centers=np.asarray(est.cluster_centers_),
                           meta=np.array(json.dumps(out, default=json_default)))
    out["path"] = path
    out["seconds"] = time.perf_counter() - t0
    log.info("%s fit %s: %d iterations in %.2f s", algorithm, name, out["n_iter"], out["seconds"])
    return out


# --------------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------------

def evaluate(store: dict, fit: dict, out_dir, *, silhouette_sample: int = 2000, random_state: int = 0,
             client=None, split_every: int = 8, engine: str = "auto", ray_address: str | None = None,
             logger: logging.Logger | None = None) -> dict:
    """Evaluate a fit and write the metrics to ``out_dir/metrics/<name>.json``.

    Inertia and cluster sizes over all samples; ARI/NMI/accuracy against the store's labels (if any);
    Calinski-Harabasz, Davies-Bouldin, and the silhouette estimated on a seeded sample.  Two passes over the
    data (:func:`kmeans_dist.metrics.partition_scores`): sizes, inertia, the partition's centroids, the
    cluster x class table and the sample rows in the first; the distances to the centroids and from the
    sample in the second.  Each pass's chunk partials are summed in a ``split_every``-ary tree on the
    cluster.  The JSON file is written atomically.

    Parameters
    ----------
    store : dict
        Reference of the data store the fit was computed on.
    fit : dict
        The fit reference (from :func:`fit_lloyd` or :func:`fit_minibatch`); its ``name`` names the
        metrics file.
    out_dir : str or os.PathLike
        The run folder.
    silhouette_sample : int, default: 2000
        Size of the sample the silhouette is estimated on.
    random_state : int, default: 0
        Seed of the silhouette sample.
    client : distributed.Client, optional
        Dask client to compute on (default: the current scheduler).
    split_every : int, default: 8
        Arity of the tree that sums the chunk partials.
    engine : {"auto", "dask", "ray", "local"}, default: "auto"
        Where the passes over the data run (see :func:`use_engine`).  Not part of the cache key: every
        engine gives the same result, bit for bit.
    ray_address : str, optional
        Ray cluster to connect to with ``engine="ray"`` (see :func:`use_engine`).
    logger : logging.Logger, optional
        Where to log (default: the ``kmeans_dist.pipelines`` logger).

    Returns
    -------
    dict
        The scores of :func:`kmeans_dist.metrics.partition_scores` (``inertia``, ``cluster_sizes``,
        ...), with ``seconds`` and ``path`` (of the JSON file).
    """
    from kmeans_dist import metrics as M
    from kmeans_dist.data import open_labels

    log = logger or _log
    t0 = time.perf_counter()
    engine = use_engine(engine, ray_address)
    centers = load_centers(fit)
    X = _open_X(store)
    y = open_labels(store["url"]) if store.get("has_labels") else None
    out: dict[str, Any] = M.partition_scores(X, centers, y, silhouette_sample=silhouette_sample,
                                             random_state=random_state, split_every=split_every,
                                             client=client, engine=engine)
    out["seconds"] = time.perf_counter() - t0
    path = atomic_write_json(Path(out_dir) / "metrics" / f"{fit.get('name', 'fit')}.json", out)
    out["path"] = path
    log.info("Evaluated %s: inertia %.6g%s", fit.get("name"), out["inertia"],
             "".join(f", {m} {out[m]:.4f}" for m in ("ari", "nmi", "silhouette") if out.get(m) is not None))
    return out


# --------------------------------------------------------------------------------------------------
# reports and plots
# --------------------------------------------------------------------------------------------------

def ms_per_iteration(fit: dict) -> float | None:
    """Return the median wall time of the fit's Lloyd iterations, in milliseconds.

    Parameters
    ----------
    fit : dict
        A fit reference; its ``history`` entries may have ``seconds``.

    Returns
    -------
    float or None
        The median in milliseconds, or None without a history (or without timed entries).

    Examples
    --------
    >>> ms_per_iteration({"history": [{"seconds": 0.01}, {"seconds": 0.03}, {"seconds": 0.02}]})
    20.0
    >>> ms_per_iteration({}) is None
    True
    """
    secs = [h["seconds"] for h in (fit.get("history") or []) if h.get("seconds") is not None]
    return float(np.median(secs)) * 1e3 if secs else None


def _ms_per_iteration(fit: dict) -> str:
    ms = ms_per_iteration(fit)
    return "-" if ms is None else f"{ms:.1f} ms"


def _plot_inertia(history: list, path: Path) -> str | None:
    from kmeans_dist.plots import plot_inertia

    pts = [{"iteration": h.get("iteration", i + 1), "inertia": h["inertia"]}
           for i, h in enumerate(history) if h.get("inertia") is not None]
    return plot_inertia(pts, str(path), title="Inertia per Lloyd iteration") if pts else None


def _plot_sizes(counts, path: Path) -> str:
    from kmeans_dist.plots import plot_cluster_sizes

    return plot_cluster_sizes(np.asarray(counts), str(path))


def _plot_grid(centers, image_shape, path: Path) -> str:
    from kmeans_dist.plots import plot_centroid_grid

    return plot_centroid_grid(centers, tuple(image_shape), str(path))


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def report(out_dir, *, store: dict, fit: dict, metrics: dict, params: dict, timings: dict,
           title: str = "k-means clustering", logger: logging.Logger | None = None) -> dict:
    """Write plots and a markdown summary in the run folder; return their paths and the markdown text.

    Plots go to ``out_dir/plots/`` (inertia per iteration, cluster sizes and, for image data, a grid
    of the centers in the original units), the summary to ``out_dir/report.md`` and
    ``out_dir/summary.json`` (both written atomically).

    Parameters
    ----------
    out_dir : str or os.PathLike
        The run folder.
    store : dict
        Reference of the data store the fit was computed on.
    fit : dict
        The fit reference (from :func:`fit_lloyd` or :func:`fit_minibatch`).
    metrics : dict
        The fit's evaluation (from :func:`evaluate`).
    params : dict
        The run's parameters (shown in the report and stored in the summary).
    timings : dict
        Seconds per stage.
    title : str, default: "k-means clustering"
        Title of the report.
    logger : logging.Logger, optional
        Where to log (default: the ``kmeans_dist.pipelines`` logger).

    Returns
    -------
    dict
        ``markdown`` (the report text, with absolute links), ``report_path``, ``summary_path`` and
        ``plots`` (paths by plot name).
    """
    log = logger or _log
    out = Path(out_dir)
    pdir = out / "plots"
    pdir.mkdir(parents=True, exist_ok=True)
    plots = {}
    p = _plot_inertia(fit.get("history") or [], pdir / "inertia.png")
    if p:
        plots["inertia"] = p
    plots["cluster_sizes"] = _plot_sizes(metrics["cluster_sizes"], pdir / "cluster_sizes.png")
    centers = load_centers(fit)
    image_shape = store.get("image_shape")
    if image_shape and int(np.prod(image_shape)) == centers.shape[1]:
        raw = centers
        if store.get("standardized_from"):
            from kmeans_dist.data import store_info

            a = store_info(store["url"])["attrs"]
            if "mean" in a and "std" in a:
                std = np.asarray(a["std"], dtype=np.float64)
                raw = centers * np.where(std == 0, 1.0, std) + np.asarray(a["mean"])
        plots["centroids"] = _plot_grid(np.asarray(raw, dtype=np.float64), image_shape, pdir / "centroids.png")
    n, d = store["shape"]
    rows = [
        ("data", f"`{store.get('source')}` → `{store['url']}`"),
        ("shape", f"{n} samples × {d} features ({store.get('dtype')})"),
        ("k", fit.get("k")),
        ("init", params.get("init")),
        ("algorithm", fit.get("algorithm")),
        ("standardized", bool(store.get("standardized_from"))),
        ("iterations", fit.get("n_iter")),
        ("time per Lloyd iteration (median)", _ms_per_iteration(fit)),
        ("converged", fit.get("converged")),
        ("resumed from iteration", fit.get("resumed_from") or 0),
        ("inertia", _fmt(metrics.get("inertia"))),
    ]
    names = {"ari": "ARI", "nmi": "NMI", "accuracy": "accuracy (Hungarian)", "silhouette": "silhouette",
             "calinski_harabasz": "Calinski-Harabasz", "davies_bouldin": "Davies-Bouldin"}
    for m, label in names.items():
        if metrics.get(m) is not None:
            v = _fmt(metrics[m])
            if m == "silhouette" and metrics.get("silhouette_se"):
                v += f" ± {metrics['silhouette_se']:.2g} (sample)"
            rows.append((label, v))
    sizes = metrics["cluster_sizes"]
    rows.append(("cluster sizes", f"min {min(sizes)}, max {max(sizes)}, empty {metrics.get('empty_clusters', 0)}"))
    md = [f"# {title}", "", "| | |", "|---|---|"]
    md += [f"| {a} | {_fmt(b)} |" for a, b in rows]
    md += ["", "## Time per stage", "", "| stage | seconds |", "|---|---|"]
    md += [f"| {s} | {t:.2f} |" for s, t in timings.items()]
    md += ["", "## Plots", ""]
    md += [f"- [{name}]({Path(path).resolve().as_uri()})" for name, path in plots.items()]
    md += ["", f"Run folder: `{out.resolve()}`", ""]
    text = "\n".join(md)
    rel_md = text.replace(f"{out.resolve().as_uri()}/", "")
    report_path = atomic_write_bytes(out / "report.md", rel_md.encode())
    summary = {"params": params, "store": store, "fit": {k: v for k, v in fit.items() if k != "history"},
               "metrics": metrics, "timings": timings, "plots": plots, "report": report_path}
    summary_path = atomic_write_json(out / "summary.json", summary)
    log.info("Report written to %s", report_path)
    return {"markdown": text, "report_path": report_path, "summary_path": summary_path, "plots": plots}


def choose_k_report(out_dir, *, results: list[dict], params: dict, timings: dict,
                    logger: logging.Logger | None = None) -> dict:
    """Write elbow and silhouette curves over k, a suggested k, and a markdown summary.

    Plots go to ``out_dir/plots/`` (``elbow.png``, and ``silhouette.png`` when some result has a
    silhouette), the summary to ``out_dir/report.md`` and ``out_dir/summary.json`` (both written
    atomically).  The suggested k per criterion comes from :func:`kmeans_dist.selection.assemble`
    (Kneedle elbow).

    Parameters
    ----------
    out_dir : str or os.PathLike
        The run folder.
    results : list of dict
        One dict per k with ``k``, ``inertia`` and optionally ``silhouette``/``ari``/``nmi`` (and
        ``calinski_harabasz``, ``davies_bouldin``, ``n_iter``, ...).
    params : dict
        The run's parameters (stored in the summary).
    timings : dict
        Seconds per stage.
    logger : logging.Logger, optional
        Where to log (default: the ``kmeans_dist.pipelines`` logger).

    Returns
    -------
    dict
        ``markdown``, ``report_path``, ``summary_path``, ``plots`` (paths by plot name) and ``best``
        (the suggested k by criterion).
    """
    log = logger or _log
    out = Path(out_dir)
    pdir = out / "plots"
    pdir.mkdir(parents=True, exist_ok=True)
    results = sorted(results, key=lambda r: r["k"])
    ks = [r["k"] for r in results]
    inertia = [r["inertia"] for r in results]
    sil = [r.get("silhouette") for r in results]
    from kmeans_dist.plots import pyplot

    plt = pyplot()
    plots = {}
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ks, inertia, marker="o")
    ax.set_xlabel("k")
    ax.set_ylabel("inertia")
    ax.set_title("Elbow curve")
    fig.tight_layout()
    fig.savefig(pdir / "elbow.png", dpi=100)
    plt.close(fig)
    plots["elbow"] = str(pdir / "elbow.png")
    if any(s is not None for s in sil):
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([k for k, s in zip(ks, sil) if s is not None], [s for s in sil if s is not None], marker="o")
        ax.set_xlabel("k")
        ax.set_ylabel("silhouette (sample)")
        ax.set_title("Silhouette curve")
        fig.tight_layout()
        fig.savefig(pdir / "silhouette.png", dpi=100)
        plt.close(fig)
        plots["silhouette"] = str(pdir / "silhouette.png")
    best = _recommend(results)
    cols = ["inertia", "silhouette", "calinski_harabasz", "davies_bouldin", "ari", "nmi", "n_iter"]
    cols = [c for c in cols if any(r.get(c) is not None for r in results)]
    md = ["# Choosing k", "", "| k | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    md += ["| " + " | ".join([str(r["k"])] + [_fmt(r.get(c)) for c in cols]) + " |" for r in results]
    md += ["", "Suggested k: " + ", ".join(f"{m}: **{k}**" for m, k in best.items()), ""]
    md += ["## Time per stage", "", "| stage | seconds |", "|---|---|"]
    md += [f"| {s} | {t:.2f} |" for s, t in timings.items()]
    md += ["", "## Plots", ""] + [f"- [{n}]({Path(p).resolve().as_uri()})" for n, p in plots.items()]
    md += ["", f"Run folder: `{out.resolve()}`", ""]
    text = "\n".join(md)
    report_path = atomic_write_bytes(out / "report.md", text.replace(f"{out.resolve().as_uri()}/", "").encode())
    summary_path = atomic_write_json(out / "summary.json", {"params": params, "results": results, "best": best,
                                                            "timings": timings, "plots": plots})
    log.info("choose_k report written to %s (suggested: %s)", report_path, best)
    return {"markdown": text, "report_path": report_path, "summary_path": summary_path, "plots": plots,
            "best": best}


def _recommend(results: list[dict]) -> dict:
    """A recommended k per criterion (elbow, silhouette, Calinski-Harabasz, Davies-Bouldin), by
    :func:`kmeans_dist.selection.assemble` (Kneedle elbow)."""
    rows = []
    for r in results:
        row = {"k": r["k"], "inertia": r["inertia"], "fit_inertia": r.get("fit_inertia", r["inertia"]),
               "n_iter": r.get("n_iter", math.nan), "seconds": r.get("seconds", math.nan),
               "log_w": math.log(r["inertia"]) if r["inertia"] > 0 else -math.inf}
        for c in ("silhouette", "silhouette_se", "calinski_harabasz", "davies_bouldin"):
            v = r.get(c)
            row[c] = math.nan if v is None else v
        rows.append(row)
    from kmeans_dist.selection import assemble

    _, rec = assemble(rows)
    return {c: v for c, v in rec.items() if v is not None}
