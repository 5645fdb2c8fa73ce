"""The memory allocator of Dask worker processes, for streamed passes.

``distributed``'s nanny starts every worker process with ``MALLOC_TRIM_THRESHOLD_=65536``
(``distributed.nanny.pre-spawn-environ``), so that freed memory goes back to the operating system at once.
Setting that variable also fixes glibc's mmap threshold at its 128 KiB default, so every array larger than
that is a fresh ``mmap``, page-faulted and zeroed again, and returned on free.  A streamed pass decodes
every chunk of the store into new buffers: a Zarr chunk of 32,768 x 64 float32 (8 MiB, zstd) took 23-30 ms
to read on such a worker against 9-13 ms in a process with glibc's defaults, and a whole streamed fit of a
4,000,000 x 64 store ran 1.7x faster with the thresholds below (``benchmarks/RESULTS-fit.md``, "Out of core").

:data:`MALLOC_ENV` holds the two thresholds as environment variables, for workers started by a deployment
(they must be set before the worker process starts: the nanny passes them on, and an environment variable
takes precedence over its dask config entry).  :func:`tune_worker_malloc` sets the same thresholds in
running workers, through ``mallopt``, with a worker plugin, so that workers that join or restart later get
them too.  Either way a worker process keeps at most ``MALLOC_TRIM_THRESHOLD_`` (64 MiB) of freed memory
for reuse; allocations above ``MALLOC_MMAP_THRESHOLD_`` (32 MiB) are still mapped and unmapped one by one.
Neither changes a result: only where the bytes come from.
"""
from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["MALLOC_ENV", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "MallocThresholds", "set_malloc_thresholds",
           "tune_worker_malloc"]

#: Allocations up to this size come from the heap and are reused (a decoded chunk of a few MiB).
MMAP_THRESHOLD = 32 * 2**20
#: Freed memory at the top of the heap beyond this is returned to the operating system.
TRIM_THRESHOLD = 64 * 2**20
#: The thresholds as glibc's environment variables, for worker processes started by a deployment.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3


def set_malloc_thresholds(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds of this process (``mallopt``).

    Parameters
    ----------
    mmap_threshold : int, default=MMAP_THRESHOLD
        Bytes above which an allocation is mapped on its own.
    trim_threshold : int, default=TRIM_THRESHOLD
        Bytes of free memory at the top of the heap above which it is returned to the system.

    Returns
    -------
    bool
        Whether both were set: False where the C library is not glibc (macOS, musl), which changes nothing.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(_M_TRIM_THRESHOLD,
                                                                                    int(trim_threshold)))


def _plugin_class():
    """:class:`MallocThresholds`, built on first use: importing this module does not import ``distributed``
    (the class needs its ``WorkerPlugin`` base to be registered as a worker plugin)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class MallocThresholds(WorkerPlugin):
        """A worker plugin that calls :func:`set_malloc_thresholds` in every worker, now and when one joins."""

        name = "kmeans-dist-malloc-thresholds"

        def __init__(self, mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD):
            self.mmap_threshold = mmap_threshold
            self.trim_threshold = trim_threshold

        def setup(self, worker=None):
            worker_set = set_malloc_thresholds(self.mmap_threshold, self.trim_threshold)
            if worker is not None:
                worker.kmeans_dist_malloc = worker_set  # what the worker reports (tune_worker_malloc)
            return worker_set

    MallocThresholds.__module__ = __name__
    MallocThresholds.__qualname__ = "MallocThresholds"
    return MallocThresholds


def __getattr__(name):
    if name == "MallocThresholds":  # one class object per process, so that instances pickle by reference
        cls = globals()["MallocThresholds"] = _plugin_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _reported(dask_worker=None):
    return bool(getattr(dask_worker, "kmeans_dist_malloc", False))


def tune_worker_malloc(client, mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> dict:
    """Raise glibc's mmap and trim thresholds in the workers of ``client`` (see the module's text).

    Registers :class:`MallocThresholds` with the scheduler, so that workers that join or restart later
    get the same thresholds.

    Parameters
    ----------
    client : distributed.Client
        The cluster's client.
    mmap_threshold, trim_threshold : int
        As :func:`set_malloc_thresholds`.

    Returns
    -------
    dict
        Worker address -> whether the thresholds were set there.
    """
    plugin = globals().get("MallocThresholds") or __getattr__("MallocThresholds")
    client.register_plugin(plugin(mmap_threshold, trim_threshold))
    return client.run(_reported)
