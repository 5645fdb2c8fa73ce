"""Distributed moments and standardization (one pass, per-chunk count/mean/M2 merged by Chan's formula).

The same pass checks that every value is finite and says where it is not (block and row range), so
no separate validation pass is ever made.
"""
from __future__ import annotations

import warnings

import numpy as np

from ._xp import get_namespace, to_numpy

__all__ = ["moments", "standardize", "standardize_store", "stats_chunk", "combine_stats", "check_stats",
           "NonFiniteError"]


class NonFiniteError(ValueError):
    """X contains NaN or infinity."""


def stats_chunk(X, w, offset):
    """Per-block partial: count, mean, M2 (float64), and the first non-finite value if any."""
    xp = get_namespace(X)
    n = int(X.shape[0])
    finite_rows = xp.all(xp.isfinite(X), axis=1)
    n_bad_rows = n - int(to_numpy(xp.sum(xp.astype(finite_rows, xp.int64))))
    part = {"n": n, "offset": int(offset), "bad": None}
    if n_bad_rows:
        Xh = to_numpy(X)
        rows, cols = np.nonzero(~np.isfinite(Xh))
        v = Xh[rows[0], cols[0]]
        part["bad"] = {"n_values": int(rows.size), "n_rows": n_bad_rows, "row": int(offset + rows[0]),
                       "feature": int(cols[0]), "kind": "NaN" if np.isnan(v) else "infinity",
                       "has_nan": bool(np.isnan(Xh[rows, cols]).any()), "block_rows": (int(offset), int(offset + n - 1))}
        part["mean"] = np.zeros(X.shape[1])
        part["M2"] = np.zeros(X.shape[1])
        return part
    X64 = xp.astype(X, xp.float64)
    mean = xp.mean(X64, axis=0)
    c = X64 - mean
    part["mean"] = to_numpy(mean)
    part["M2"] = to_numpy(xp.sum(c * c, axis=0))
    return part


def combine_stats(parts):
    """Chan et al.'s parallel update of (n, mean, M2), folded in the order given."""
    parts = [p for p in parts if p is not None]
    out = {"n": parts[0]["n"], "mean": parts[0]["mean"].copy(), "M2": parts[0]["M2"].copy(),
           "bad": list(parts[0]["bad"] if isinstance(parts[0]["bad"], list) else ([parts[0]["bad"]] if parts[0]["bad"] else []))}
    for p in parts[1:]:
        na, nb = out["n"], p["n"]
        n = na + nb
        if nb:
            delta = p["mean"] - out["mean"]
            out["mean"] = out["mean"] + delta * (nb / n)
            out["M2"] = out["M2"] + p["M2"] + delta * delta * (na * nb / n)
        out["n"] = n
        bad = p["bad"]
        if bad:
            out["bad"].extend(bad if isinstance(bad, list) else [bad])
    return out


def check_stats(stats, block_rows: int | None = None, name: str = "X"):
    """Raise a clear error if the stats pass found NaN or infinity."""
    bad = stats.get("bad") or []
    if not bad:
        return
    total = sum(b["n_values"] for b in bad)
    first = min(bad, key=lambda b: b["row"])
    kinds = "NaN" if any(b["has_nan"] for b in bad) else "infinity"
    blk = "" if not block_rows else f" block {first['row'] // block_rows}"
    lo, hi = first["block_rows"]
    raise NonFiniteError(
        f"Input {name} contains {kinds}: {total} non-finite value(s) in {sum(b['n_rows'] for b in bad)} row(s); "
        f"the first is a {first['kind']} at row {first['row']}, feature {first['feature']} "
        f"(chunk{blk}, rows {lo} to {hi}). Remove or impute these rows first."
    )


def _finish(stats):
    n = stats["n"]
    return {"n": n, "mean": stats["mean"], "var": stats["M2"] / n, "bad": stats["bad"]}


def moments(X, *, client=None, split_every: int = 8, block_rows="auto", blocks=None):
    """Mean and (population) variance of every feature in one distributed pass.

    Returns ``{"n", "mean", "var"}`` (float64).  Raises :class:`NonFiniteError` naming the chunk and rows
    if X holds NaN or infinity.
    """
    from ._driver import make_blocks
    from .data import as_dask_array

    if blocks is None:
        blocks = make_blocks(as_dask_array(X), block_rows=block_rows, split_every=split_every, client=client,
                             persist=False)
    stats = blocks.map_reduce(stats_chunk, combine_stats)
    check_stats(stats, blocks.block_rows)
    out = _finish(stats)
    out.pop("bad")
    return out


def _scale_block(x, mean, scale):
    xp = get_namespace(x)
    m = xp.asarray(mean, dtype=x.dtype)
    s = xp.asarray(scale, dtype=x.dtype)
    return (x - m) / s


def standardize(X, *, mean=None, var=None, client=None, with_mean: bool = True, with_std: bool = True):
    """Lazily standardized X (dask array): ``(X - mean) / std``; zero-variance features left unscaled.

    If ``mean``/``var`` are not given they are computed with :func:`moments` (one pass).
    """
    from .data import as_dask_array

    Xd = as_dask_array(X)
    if mean is None or var is None:
        m = moments(Xd, client=client)
        mean, var = m["mean"], m["var"]
    mean = np.asarray(mean, dtype=np.float64) if with_mean else np.zeros(Xd.shape[1])
    std = np.sqrt(np.asarray(var, dtype=np.float64))
    zero = std == 0
    if zero.any() and with_std:
        warnings.warn(f"{int(zero.sum())} feature(s) have zero variance and are left unscaled "
                      f"(first: feature {int(np.flatnonzero(zero)[0])}).", UserWarning, stacklevel=2)
    scale = np.where(zero | (not with_std), 1.0, std)
    return Xd.map_blocks(_scale_block, mean, scale, dtype=Xd.dtype)


def standardize_store(src_url, dst_url, *, client=None, overwrite: bool = False, chunk_rows=None) -> dict:
    """Write the standardized ``X`` of store ``src_url`` (and its labels) to a new store ``dst_url``.

    The source is never modified; the target is written atomically.  Returns the moments used.
    """
    from .data import open_labels, open_store, store_info, write_store

    X = open_store(src_url)
    m = moments(X, client=client)
    Z = standardize(X, mean=m["mean"], var=m["var"])
    info = store_info(src_url)
    attrs = dict(info["attrs"])
    attrs.update({"standardized_from": str(src_url), "mean": m["mean"].tolist(), "std": np.sqrt(m["var"]).tolist()})
    write_store(dst_url, Z, labels=open_labels(src_url), chunk_rows=chunk_rows or info["chunks"][0],
                feature_names=attrs.pop("feature_names", None), attrs=attrs, overwrite=overwrite)
    return m
