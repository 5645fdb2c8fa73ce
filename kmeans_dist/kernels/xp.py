"""Array-namespace choice, made once at the boundary.

Kernels receive arrays and ask :func:`get_namespace` for their namespace; they never import NumPy or
CuPy themselves.  CuPy is imported lazily, only when a CuPy array is handed in or a GPU is asked for.
"""
from __future__ import annotations

import os

import numpy as np

__all__ = ["get_namespace", "to_numpy", "gpu_available", "is_numpy_namespace"]


def get_namespace(*arrays):
    """Return the array-API namespace of ``arrays`` (NumPy, CuPy, array-api-strict, ...).

    Parameters
    ----------
    *arrays : array
        Arrays of one namespace.

    Returns
    -------
    module
        The namespace (through ``array_api_compat``).
    """
    import array_api_compat

    arrays = [a for a in arrays if a is not None and not isinstance(a, (int, float))]
    return array_api_compat.array_namespace(*arrays)


def is_numpy_namespace(xp) -> bool:
    """Whether ``xp`` is NumPy (or its array-API wrapper).

    Parameters
    ----------
    xp : module
        An array namespace.

    Returns
    -------
    bool
    """
    import array_api_compat

    return array_api_compat.is_numpy_namespace(xp)


def to_numpy(a):
    """Copy any array (NumPy, CuPy, torch, array-api-strict) to a NumPy array on the host.

    Parameters
    ----------
    a : array
        The array; a NumPy array is returned as is.

    Returns
    -------
    ndarray

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.kernels import to_numpy
    >>> to_numpy(np.arange(3)).tolist()
    [0, 1, 2]
    """
    if a is None or isinstance(a, np.ndarray):
        return a
    mod = type(a).__module__
    if mod.startswith("cupy"):
        return a.get()
    if mod.startswith("torch"):
        return a.detach().cpu().numpy()
    if mod.startswith("array_api_strict"):

        return np.asarray(_strict_to_list(a))
    return np.asarray(a)


def _strict_to_list(a):
    # array-api-strict deliberately refuses __array__ in recent versions; go through DLPack
    try:
        return np.from_dlpack(a)
    except Exception:  # pragma: no cover - very old versions
        return np.asarray(a._array)


def gpu_available() -> bool:
    """Whether a CUDA device is present and CuPy can use it (checked without importing CuPy first).

    Returns
    -------
    bool
    """
    if not os.path.exists("/dev/nvidia0"):
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False
