"""Save and load fitted models without pickle: a directory with ``model.json`` and ``arrays.npz``.

Written atomically (temporary sibling directory, then rename): a crash never leaves a model that
loads half-written.  Loading uses ``np.load(allow_pickle=False)`` and checks the format version;
a model that fails the checks of :func:`load_model` raises :class:`ModelFileError`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..data import atomic_dir

__all__ = ["save_model", "load_model", "FORMAT", "ModelFileError", "register_model", "MODEL_CLASSES"]

FORMAT = "kmeans-dist-model/2"
_READABLE = ("kmeans-dist-model/1", FORMAT)  # /1 files carry no array schema; the structural checks still apply


class ModelFileError(ValueError):
    """A saved model that cannot be trusted: unreadable, edited, truncated, or of an unknown class."""
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
    """Class decorator: let :func:`load_model` rebuild instances of ``cls`` by its name.

    Parameters
    ----------
    cls : type
        An estimator class (constructible from its ``get_params(deep=False)``).

    Returns
    -------
    type
        ``cls`` itself, now registered under ``cls.__name__``.
    """
    MODEL_CLASSES[cls.__name__] = cls
    return cls


def save_model(est, path, overwrite: bool = False) -> str:
    """Save a fitted KMeans / MiniBatchKMeans to directory ``path`` (atomic).

    The directory holds ``model.json`` (format version, class name, constructor parameters,
    scalar fitted attributes, the per-iteration history and the name, shape and dtype of every
    saved array, which :func:`load_model` checks) and ``arrays.npz`` (the centers,
    cluster sizes and an array ``init``); no pickle.  It is written in a temporary sibling
    directory, then renamed into place, so a crash never leaves a half-written model.  The
    ``client`` and ``callback`` parameters are not saved (they come back as None), nor is a
    ``random_state`` that is not an int.

    A class may list more fitted arrays in ``_saved_arrays`` and scalars in ``_saved_scalars``, and
    check them on load with a static ``_check_saved(params, attrs, arrays)`` that returns a message
    (the problem) or None.

    Parameters
    ----------
    est : KMeans or MiniBatchKMeans
        A fitted estimator.
    path : str or path-like
        Directory to write.
    overwrite : bool, default=False
        Replace an existing ``path``.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    ValueError
        If ``est`` is not fitted.
    kmeans_dist.data.atomic.OutputExistsError
        If ``path`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from kmeans_dist import KMeans, load_model, save_model
    >>> X = np.array([[0., 0.], [0., 1.], [1., 0.], [10., 10.], [10., 11.], [11., 10.]])
    >>> km = KMeans(n_clusters=2, n_init=1, random_state=0).fit(X)
    >>> path = save_model(km, os.path.join(tempfile.mkdtemp(), "model"))
    >>> sorted(os.listdir(path))
    ['arrays.npz', 'model.json']
    >>> bool(np.array_equal(load_model(path).cluster_centers_, km.cluster_centers_))
    True
    """
    if not hasattr(est, "cluster_centers_"):
        raise ValueError("Only fitted models can be saved; call fit first.")
    params = est.get_params(deep=False)
    arrays = {}
    for k in ("client", "callback"):
        if k in params:
            params[k] = None
    if callable(params.get("init")):
        raise ValueError(f"{type(est).__name__} was made with a callable init ({params['init']!r}), which a model "
                         "file cannot hold without pickle; set init to its result (an array) or to a seeding name "
                         "before saving.")
    if not isinstance(params.get("init"), str):
        arrays["param_init"] = np.asarray(params["init"])
        params["init"] = {"__array__": "param_init"}
    if params.get("random_state") is not None and not isinstance(params["random_state"], (int, np.integer)):
        params["random_state"] = None
    for a in _ARRAY_ATTRS + tuple(getattr(type(est), "_saved_arrays", ())):
        if getattr(est, a, None) is not None:
            arrays[a] = np.asarray(getattr(est, a))
    meta = {
        "format": FORMAT,
        "class": type(est).__name__,
        "params": {k: _jsonable(v) for k, v in params.items()},
        "attrs": {a: _jsonable(getattr(est, a)) for a in _SCALAR_ATTRS + tuple(getattr(type(est), "_saved_scalars", ()))
                  if hasattr(est, a)},
        "history": [{k: _jsonable(v) for k, v in h.items()} for h in getattr(est, "history_", [])],
        "arrays": {k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in arrays.items()},
    }
    with atomic_dir(Path(path), overwrite=overwrite) as tmp:
        tmp.mkdir(parents=True)
        np.savez(tmp / "arrays.npz", **arrays)
        with open(tmp / "model.json", "w") as f:
            json.dump(meta, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
    return os.fspath(path)


def _fail(path, what):
    raise ModelFileError(f"Saved model {os.fspath(path)!r} cannot be loaded: {what}")


def _read_meta(path: Path) -> dict:
    mj = path / "model.json"
    try:
        with open(mj) as f:
            meta = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(mj, f"{type(exc).__name__}: {exc}")
    if not isinstance(meta, dict):
        _fail(mj, "the JSON is not an object")
    if meta.get("format") not in _READABLE:
        _fail(mj, f"format {meta.get('format')!r} is not one of {_READABLE}")
    for key, kind in (("class", str), ("params", dict), ("attrs", dict)):
        if not isinstance(meta.get(key), kind):
            _fail(mj, f"{key!r} is missing or not a {kind.__name__}")
    if meta["class"] not in MODEL_CLASSES:
        _fail(mj, f"class {meta['class']!r} is not one of {sorted(MODEL_CLASSES)}")
    unknown = set(meta["attrs"]) - set(_SCALAR_ATTRS) - set(getattr(MODEL_CLASSES[meta["class"]], "_saved_scalars", ()))
    if unknown:
        _fail(mj, f"unknown attributes {sorted(unknown)}")
    return meta


def _read_arrays(path: Path, meta: dict) -> dict:
    az = path / "arrays.npz"
    try:
        with np.load(az, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # BadZipFile, truncated members, pickled objects, ...
        _fail(az, f"{type(exc).__name__}: {exc}")
    allowed = set(_ARRAY_ATTRS) | {"param_init"} | set(getattr(MODEL_CLASSES[meta["class"]], "_saved_arrays", ()))
    if set(arrays) - allowed:
        _fail(az, f"unexpected arrays {sorted(set(arrays) - allowed)} (allowed: {sorted(allowed)})")
    schema = meta.get("arrays")
    if schema is not None:
        if not isinstance(schema, dict) or set(schema) != set(arrays):
            _fail(az, f"holds arrays {sorted(arrays)}, model.json lists {sorted(schema or {})}")
        for k, v in arrays.items():
            want = schema[k]
            if not isinstance(want, dict) or list(v.shape) != want.get("shape") or v.dtype.str != want.get("dtype"):
                _fail(az, f"array {k!r} is {v.dtype.str} {list(v.shape)}, model.json says {want}")
    return arrays


def _check_model(path: Path, meta: dict, arrays: dict) -> None:
    params, attrs = meta["params"], meta["attrs"]
    C = arrays.get("cluster_centers_")
    if C is None:
        _fail(path, "no cluster_centers_ array")
    k, d = params.get("n_clusters"), attrs.get("n_features_in_")
    if C.ndim != 2 or C.dtype.kind != "f" or (k, d) != C.shape:
        _fail(path, f"cluster_centers_ is {C.dtype} {C.shape}, expected float (n_clusters={k}, n_features_in_={d})")
    if not np.isfinite(C).all():
        _fail(path, "cluster_centers_ holds NaN or infinity")
    for name in ("cluster_sizes_", "_counts"):
        a = arrays.get(name)
        if a is not None and (a.shape != (k,) or a.dtype.kind not in "iuf" or not np.isfinite(a).all()):
            _fail(path, f"{name} is {a.dtype} {a.shape}, expected {k} finite numbers")
    check = getattr(MODEL_CLASSES.get(meta["class"]), "_check_saved", None)
    if check is not None:  # a class's own checks of its extra arrays; returns a message or None
        what = check(params, attrs, arrays)
        if what:
            _fail(path, what)
    init = params.get("init")
    if isinstance(init, dict):
        a = arrays.get(init.get("__array__"))
        if a is None or a.shape != C.shape:
            _fail(path, f"the init array {init!r} is missing or not of shape {C.shape}")


def load_model(path):
    """Load a model saved by :func:`save_model` (no pickle), validating every part of it.

    Parameters
    ----------
    path : str or path-like
        The model folder (``model.json`` and ``arrays.npz``).

    Returns
    -------
    KMeans or MiniBatchKMeans
        The fitted estimator.

    Raises
    ------
    FileNotFoundError
        If there is no model at ``path``.
    ModelFileError
        If a file is unreadable or truncated, the JSON does not match the arrays (names, shapes, dtypes),
        the centers are not finite or not of shape ``(n_clusters, n_features_in_)``, the class is not an
        estimator of this package, or a parameter is invalid.  The message names the file.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from kmeans_dist import KMeans, load_model, save_model
    >>> X = np.array([[0., 0.], [0., 1.], [1., 0.], [10., 10.], [10., 11.], [11., 10.]])
    >>> km = KMeans(n_clusters=2, n_init=1, random_state=0).fit(X)
    >>> model = load_model(save_model(km, os.path.join(tempfile.mkdtemp(), "model")))
    >>> type(model).__name__, model.n_clusters
    ('KMeans', 2)
    >>> bool((model.predict(X) == km.predict(X)).all())
    True
    """
    path = Path(path)
    mj, az = path / "model.json", path / "arrays.npz"
    if not mj.exists() or not az.exists():
        raise FileNotFoundError(f"No saved model at {path} (expected model.json and arrays.npz)")
    meta = _read_meta(path)
    arrays = _read_arrays(path, meta)
    _check_model(path, meta, arrays)
    cls = MODEL_CLASSES[meta["class"]]
    params = dict(meta["params"])
    if isinstance(params.get("init"), dict):
        params["init"] = arrays.pop(params["init"]["__array__"])
    try:
        est = cls(**params)
        est._validate_params()
    except (TypeError, ValueError) as exc:
        _fail(mj, f"invalid parameters: {exc}")
    for k, v in arrays.items():
        setattr(est, k, v)
    for k, v in meta["attrs"].items():
        setattr(est, k, v)
    est.history_ = meta.get("history", [])
    return est
