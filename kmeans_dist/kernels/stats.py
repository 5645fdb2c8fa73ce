"""Per-block moments and finiteness: count, mean and M2 (float64), merged by Chan et al.'s formula.

The same pass checks that every value is finite and says where it is not (block and row range), so no
separate validation pass is ever made.
"""
from __future__ import annotations

import numpy as np

from . import fused, sparse
from .xp import get_namespace, to_numpy

__all__ = ["NonFiniteError", "stats_chunk", "combine_stats", "check_stats", "finish_stats", "absolute_tolerance", "raise_if_nonfinite"]


class NonFiniteError(ValueError):
    """``X`` contains NaN or infinity; the message names the chunk and the rows."""


def stats_chunk(X, w, offset):
    """Per-block partial of the moments pass: count, mean, M2 (float64), and the first non-finite value if any.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
        The block.
    w : array of shape (n_rows,) or None
        Sample weights; only checked here (negative or non-finite weights are reported, and their sum
        kept): the moments are unweighted.
    offset : int
        Global index of the block's first row.

    Returns
    -------
    dict
        The partial, merged by :func:`combine_stats`.
    """
    if sparse.is_sparse(X):
        return _stats_chunk_sparse(X, w, offset)
    xp = get_namespace(X)
    n = int(X.shape[0])
    if isinstance(X, np.ndarray) and fused.available() and n > 0:
        mm = fused.moments_block(X)  # one compiled pass when every value is finite
        if mm is not None:
            part = {"n": n, "offset": int(offset), "bad": None, "w_bad": None, "w_sum": float(n),
                    "mean": mm[0], "M2": mm[1]}
            if w is not None:
                _weight_check(part, w, offset)
            return part
    finite_rows = xp.all(xp.isfinite(X), axis=1)
    n_bad_rows = n - int(to_numpy(xp.sum(xp.astype(finite_rows, xp.int64))))
    part = {"n": n, "offset": int(offset), "bad": None, "w_bad": None, "w_sum": float(n)}
    if w is not None:  # the weights are checked in the same pass that first reads them
        wh = np.asarray(to_numpy(w), dtype=np.float64)
        wrong = ~np.isfinite(wh) | (wh < 0)
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            part["w_bad"] = {"row": int(offset + i), "value": float(wh[i]), "n_values": int(wrong.sum())}
        part["w_sum"] = float(wh[~wrong].sum())
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


def _weight_check(part, w, offset):
    wh = np.asarray(to_numpy(w), dtype=np.float64)
    wrong = ~np.isfinite(wh) | (wh < 0)
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        part["w_bad"] = {"row": int(offset + i), "value": float(wh[i]), "n_values": int(wrong.sum())}
    part["w_sum"] = float(wh[~wrong].sum())


def _stats_chunk_sparse(X, w, offset):
    """:func:`stats_chunk` of a scipy.sparse block: finiteness of the stored values, moments with the zeros."""
    n = int(X.shape[0])
    part = {"n": n, "offset": int(offset), "bad": None, "w_bad": None, "w_sum": float(n)}
    if w is not None:
        _weight_check(part, w, offset)
    rows, cols, vals = sparse.nonfinite(X)
    if rows.size:
        part["bad"] = {"n_values": int(rows.size), "n_rows": int(np.unique(rows).size), "row": int(offset + rows[0]),
                       "feature": int(cols[0]), "kind": "NaN" if np.isnan(vals[0]) else "infinity",
                       "has_nan": bool(np.isnan(vals).any()), "block_rows": (int(offset), int(offset + n - 1))}
        part["mean"] = np.zeros(X.shape[1])
        part["M2"] = np.zeros(X.shape[1])
        return part
    part["mean"], part["M2"] = sparse.moments(X)
    return part


def combine_stats(parts):
    """Chan et al.'s parallel update of ``(n, mean, M2)``, folded in the order given.

    Parameters
    ----------
    parts : list of dict
        Partials of :func:`stats_chunk` or of earlier combines.

    Returns
    -------
    dict
        One partial of the same form.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.kernels import stats_chunk, combine_stats, finish_stats
    >>> X = np.array([[1.0], [2.0], [3.0], [4.0]])
    >>> st = combine_stats([stats_chunk(X[:1], None, 0), stats_chunk(X[1:], None, 1)])
    >>> m = finish_stats(st)
    >>> m["n"], m["mean"].tolist(), m["var"].tolist()
    (4, [2.5], [1.25])
    """
    parts = [p for p in parts if p is not None]
    out = {"n": parts[0]["n"], "mean": parts[0]["mean"].copy(), "M2": parts[0]["M2"].copy(),
           "w_sum": parts[0].get("w_sum", float(parts[0]["n"])),
           "w_bad": dict(parts[0]["w_bad"]) if parts[0].get("w_bad") else None,
           "bad": list(parts[0]["bad"] if isinstance(parts[0]["bad"], list) else ([parts[0]["bad"]] if parts[0]["bad"] else []))}
    for p in parts[1:]:
        na, nb = out["n"], p["n"]
        n = na + nb
        if nb:
            delta = p["mean"] - out["mean"]
            out["mean"] = out["mean"] + delta * (nb / n)
            out["M2"] = out["M2"] + p["M2"] + delta * delta * (na * nb / n)
        out["n"] = n
        out["w_sum"] += p.get("w_sum", float(nb))
        wb = p.get("w_bad")
        if wb:  # parts come in row order: the first bad weight stays the first
            if out["w_bad"] is None:
                out["w_bad"] = dict(wb)
            else:
                out["w_bad"]["n_values"] += wb["n_values"]
        bad = p["bad"]
        if bad:
            out["bad"].extend(bad if isinstance(bad, list) else [bad])
    return out


def check_stats(stats, block_rows: int | None = None, name: str = "X", chunks=None):
    """Raise a clear error if the stats pass found NaN or infinity in X, or bad sample weights.

    Parameters
    ----------
    stats : dict
        The combined partial of the moments pass.
    block_rows : int or None, default=None
        Rows per canonical block (to turn block positions into rows).
    name : str, default="X"
        The input's name in the message.
    chunks : tuple of int or None, default=None
        The input's row chunk sizes: the message then names the input's chunk and its rows.

    Raises
    ------
    NonFiniteError
        When X holds NaN or infinity.
    ValueError
        When the sample weights are negative, non-finite or all zero.
    """
    wb = stats.get("w_bad")
    if wb:
        what = "NaN or infinity" if not np.isfinite(wb["value"]) else "negative values"
        raise ValueError(f"sample_weight contains {what}: {wb['n_values']} bad weight(s); the first is "
                         f"{wb['value']!r} at row {wb['row']}. Weights must be finite and >= 0.")
    if stats.get("w_sum", 1.0) <= 0 and stats.get("n", 0) > 0:
        raise ValueError("Sample weights must contain at least one non-zero number (sample_weight sums to zero: "
                         "every weight is 0, so there is nothing to cluster).")
    bad = stats.get("bad") or []
    if not bad:
        return
    total = sum(b["n_values"] for b in bad)
    first = min(bad, key=lambda b: b["row"])
    kinds = "NaN" if any(b["has_nan"] for b in bad) else "infinity"
    if chunks:  # name the input's own chunk (a store's chunk), not an internal block
        ends = np.cumsum(chunks)
        i = int(np.searchsorted(ends, first["row"], side="right"))
        blk, lo, hi = f" {i}", int(ends[i] - chunks[i]), int(ends[i] - 1)
    else:
        blk = "" if not block_rows else f" block {first['row'] // block_rows}"
        lo, hi = first["block_rows"]
    raise NonFiniteError(
        f"Input {name} contains {kinds}: {total} non-finite value(s) in {sum(b['n_rows'] for b in bad)} row(s); "
        f"the first is a {first['kind']} at row {first['row']}, feature {first['feature']} "
        f"(chunk{blk}, rows {lo} to {hi}). Remove or impute these rows first."
    )


def finish_stats(stats):
    """Population mean and variance of every feature from combined stats.

    Parameters
    ----------
    stats : dict
        The combined partial of the moments pass.

    Returns
    -------
    dict
        ``n`` (rows), ``mean`` and ``var`` (population variance; both float64, shape ``(n_features,)``)
        and ``bad`` (the first non-finite value found, or None).
    """
    n = stats["n"]
    return {"n": n, "mean": stats["mean"], "var": stats["M2"] / n, "bad": stats["bad"]}


def absolute_tolerance(var, tol: float) -> float:
    """scikit-learn's convergence tolerance: ``tol`` times the mean feature variance (0 when ``tol`` is 0).

    Parameters
    ----------
    var : array of shape (n_features,)
        Per-feature variance of the data.
    tol : float
        Relative tolerance, as ``KMeans(tol=...)``.

    Returns
    -------
    float
        The bound on the squared center shift (Frobenius norm) below which Lloyd stops.
    """
    return float(np.mean(np.asarray(var, dtype=np.float64)) * tol) if tol > 0 else 0.0


def raise_if_nonfinite(X, row_values, offset: int = 0, name: str = "X") -> None:
    """Raise :class:`NonFiniteError` for ``X`` if a per-row result computed from it is not finite.

    A NaN or infinite value in a row makes its distances NaN, so checking the (n,) or (n, k) results of a
    pass costs nothing extra on clean data; only then is ``X`` scanned, to name the first bad value with
    the same message as ``fit``.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
        The block the values were computed from.
    row_values : array
        Per-row results of that block (distances).
    offset : int, default=0
        Global index of the block's first row.
    name : str, default="X"
        The input's name in the message.
    """
    if sparse.is_sparse(row_values):  # the block itself: its stored values
        row_values = row_values.data
    xp = get_namespace(row_values)
    if bool(xp.all(xp.isfinite(row_values))):
        return
    bad = stats_chunk(X, None, offset)["bad"]
    if bad is not None:
        check_stats({"bad": [bad]}, name=name)
