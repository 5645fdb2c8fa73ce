"""Save and load fitted models without pickle: a directory with ``model.json`` and ``arrays.npz``.

Written atomically (temporary sibling directory, then rename): a crash never leaves a model that
loads half-written.  Loading uses ``np.load(allow_pickle=False)`` and checks the format version.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..data import atomic_dir

__all__ = ["save_model", "load_model", "FORMAT"]

FORMAT = "kmeans-dist-model/1"
_ARRAY_ATTRS = ("cluster_centers_", "cluster_sizes_", "_counts")
_SCALAR_ATTRS = ("inertia_", "n_iter_", "n_features_in_", "n_steps_", "converged_", "fit_seconds_",
                 "seeding_seconds_", "_tol")


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v


MODEL_CLASSES: dict = {}


def register_model(cls):
    """Class decorator: let :func:`load_model` rebuild instances of ``cls`` by its name."""
    MODEL_CLASSES[cls.__name__] = cls
    return cls


def save_model(est, path, overwrite: bool = True) -> str:
    """Save a fitted KMeans / MiniBatchKMeans to directory ``path`` (atomic)."""
    if not hasattr(est, "cluster_centers_"):
        raise ValueError("Only fitted models can be saved; call fit first.")
    params = est.get_params(deep=False)
    arrays = {}
    for k in ("client", "callback"):
        params[k] = None
    if not isinstance(params.get("init"), str):
        arrays["param_init"] = np.asarray(params["init"])
        params["init"] = {"__array__": "param_init"}
    if params.get("random_state") is not None and not isinstance(params["random_state"], (int, np.integer)):
        params["random_state"] = None
    for a in _ARRAY_ATTRS:
        if getattr(est, a, None) is not None:
            arrays[a] = np.asarray(getattr(est, a))
    meta = {
        "format": FORMAT,
        "class": type(est).__name__,
        "params": {k: _jsonable(v) for k, v in params.items()},
        "attrs": {a: _jsonable(getattr(est, a)) for a in _SCALAR_ATTRS if hasattr(est, a)},
        "history": [{k: _jsonable(v) for k, v in h.items()} for h in getattr(est, "history_", [])],
    }
    with atomic_dir(Path(path), overwrite=overwrite) as tmp:
        tmp.mkdir(parents=True)
        np.savez(tmp / "arrays.npz", **arrays)
        with open(tmp / "model.json", "w") as f:
            json.dump(meta, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
    return os.fspath(path)


def load_model(path):
    """Load a model saved by :func:`save_model` (no pickle)."""
    path = Path(path)
    mj, az = path / "model.json", path / "arrays.npz"
    if not mj.exists() or not az.exists():
        raise FileNotFoundError(f"No saved model at {path} (expected model.json and arrays.npz)")
    with open(mj) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} model (format {meta.get('format')!r})")
    cls = MODEL_CLASSES[meta["class"]]
    with np.load(az, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    params = dict(meta["params"])
    if isinstance(params.get("init"), dict):
        params["init"] = arrays.pop(params["init"]["__array__"])
    est = cls(**params)
    for k, v in arrays.items():
        setattr(est, k, v)
    for k, v in meta["attrs"].items():
        setattr(est, k, v)
    est.history_ = meta.get("history", [])
    return est
