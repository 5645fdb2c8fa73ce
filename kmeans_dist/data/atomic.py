"""Atomic writes: a reader, or a crash, sees the old file or folder or the new one, never a mix.

Every output the project writes (stores, models, stage results, checkpoints, plots) goes through these
helpers: the content is written to a temporary sibling, flushed to disk, then renamed into place.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["atomic_dir", "atomic_write_bytes", "atomic_write_json", "json_default"]


def atomic_write_bytes(path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically (temporary sibling, fsync, ``os.replace``).

    Parameters
    ----------
    path : str or path-like
        The target file; its folder is created if missing.
    data : bytes
        The whole content.

    Returns
    -------
    str
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return str(path)


def json_default(o):
    """JSON encoding of NumPy scalars and arrays and of paths (``json.dumps(..., default=json_default)``)."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o)}")


def atomic_write_json(path, obj) -> str:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=json_default).encode())


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
