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

__all__ = ["atomic_dir", "atomic_write_bytes", "atomic_write_json", "json_default", "check_output", "OutputError", "OutputExistsError"]


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


class OutputError(ValueError):
    """An output path that would destroy an input, replace something not asked for, or cannot be written."""


class OutputExistsError(OutputError, FileExistsError):
    """The output exists and replacing it was not asked for."""


def _resolved(p) -> Path:
    return Path(os.path.expanduser(os.fspath(p).removeprefix("file://"))).resolve()


def check_output(out, inputs=(), *, overwrite: bool = False) -> Path:
    """Refuse an output that would destroy data, before any compute.

    Parameters
    ----------
    out : str or path-like
        The output path (local).
    inputs : iterable of str or path-like
        The inputs of the same command (stores, models, files; remote URLs are skipped).
    overwrite : bool, default=False
        Whether an existing ``out`` may be replaced.  Never when it is an input.

    Returns
    -------
    Path
        ``out``, resolved.

    Raises
    ------
    OutputError
        If ``out`` is, contains or lies inside an input; if it exists and ``overwrite`` is False; or if
        its folder cannot be written.
    """
    target = _resolved(out)
    for inp in inputs:
        if inp is None or ("://" in os.fspath(inp) and not os.fspath(inp).startswith("file://")):
            continue
        src = _resolved(inp)
        if target == src or src in target.parents or target in src.parents:
            what = "is" if target == src else ("lies inside" if src in target.parents else "contains")
            raise OutputError(f"Output {os.fspath(out)!r} {what} the input {os.fspath(inp)!r}; an input is "
                              "never overwritten: choose another output path")
    if target.exists() and not overwrite:
        raise OutputExistsError(f"Output {os.fspath(out)!r} already exists; pass overwrite=True (--overwrite) to "
                          "replace it")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"Output {os.fspath(out)!r} cannot be written: {os.fspath(parent)!r} is not a "
                          "writable folder")
    return target


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic rename (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):  # pragma: no cover - not Linux/glibc
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    rc = fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    return rc == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process
        return True
    return True


@contextmanager
def _writer_lock(target: Path):
    """An exclusive lock file ``.NAME.lock`` beside ``target``: a second concurrent writer gets a clear error.
    A lock left by a dead process (same host) is taken over."""
    lock = target.parent / f".{target.name}.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and not _pid_alive(pid):
                lock.unlink(missing_ok=True)
                continue
            raise OutputError(f"Output {os.fspath(target)!r} is being written by another process (pid {pid or '?'}, "
                              f"lock {os.fspath(lock)!r}); wait for it, or remove the lock if that process is gone")
    else:  # pragma: no cover - lost the race twice
        raise OutputError(f"Output {os.fspath(target)!r} is being written by another process")
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        lock.unlink(missing_ok=True)


@contextmanager
def atomic_dir(target, overwrite: bool = False):
    """Yield a temporary path for a folder to be written; move it to ``target`` on success, atomically.

    The yielded path (``.NAME.tmp-XXXX/content``, not yet created) lies one level down in a hidden
    temporary folder, so a crashed writer leaves nothing that opens as ``target`` or as a store; such
    leftovers are removed by the next write of the same target.  A lock file makes a second concurrent
    writer fail with :class:`OutputError` instead of mixing results.  An existing target is an error unless
    ``overwrite``; then it is swapped with the new folder in one rename (``renameat2(RENAME_EXCHANGE)`` on
    Linux; elsewhere two renames) and deleted, so a reader sees the old folder or the new one, never none.

    Parameters
    ----------
    target : str or path-like
        The folder to write.
    overwrite : bool, default=False
        Replace an existing ``target``.

    Yields
    ------
    Path
        Where to write the folder's content.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise OutputExistsError(f"Output {os.fspath(target)!r} already exists; pass overwrite=True to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    with _writer_lock(target):
        for stale in target.parent.glob(f".{target.name}.tmp-*"):  # left by a crashed writer (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        content = tmp / "content"
        try:
            yield content
            if not content.exists():
                content.mkdir()
            if target.exists():
                if not overwrite:
                    raise OutputError(f"Output {os.fspath(target)!r} appeared while it was being written")
                if _exchange(content, target):
                    shutil.rmtree(content, ignore_errors=True)  # now the old folder
                else:  # pragma: no cover - no RENAME_EXCHANGE
                    old = tmp / "old"
                    os.replace(target, old)
                    os.replace(content, target)
            else:
                os.replace(content, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
