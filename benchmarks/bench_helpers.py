"""Shared pieces of bench_seeding.py, bench_minibatch.py and bench_scaling.py (issue 23's targets 4-6).

The floor (read bandwidth, GEMM rate), ``timed`` and the data sets come from bench_fit.py; this module adds the
alternating runner, one inertia evaluator used for every library, and a Markdown table printer.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from bench_fit import load_case, measure_floor, timed  # noqa: E402,F401  (re-exported for the scripts)


def inertia_of(X, C, chunk_rows: int = 65536) -> float:
    """Sum over the rows of the squared distance to the nearest row of ``C``, in float64, chunk by chunk.

    The same evaluation for every library's centers: ``|x|^2 - 2 x.c + |c|^2`` in float64, clipped at 0.
    """
    C = np.asarray(C, dtype=np.float64)
    c_sq = np.einsum("ij,ij->i", C, C)
    total = 0.0
    for s in range(0, X.shape[0], chunk_rows):
        x = np.asarray(X[s:s + chunk_rows], dtype=np.float64)
        D = np.einsum("ij,ij->i", x, x)[:, None] - 2.0 * (x @ C.T) + c_sq[None, :]
        total += float(np.maximum(D.min(axis=1), 0.0).sum())
    return total


def alternate(runs: dict, repeats: int, warmup: bool = True) -> dict:
    """Run ``runs[name](rep)`` for rep in range(repeats), alternating the names inside each repeat.

    Returns ``{name: [(seconds, result), ...]}`` in repeat order.  With ``warmup`` every run is called once
    first (``rep=0``), untimed: JIT caches, BLAS threads, worker imports.
    """
    if warmup:
        for fn in runs.values():
            fn(0)
    out = {name: [] for name in runs}
    for rep in range(repeats):
        for name, fn in runs.items():
            out[name].append(timed(lambda: fn(rep)))
    return out


def best(results):
    """(seconds, result) of the fastest of ``results``."""
    return min(results, key=lambda r: r[0])


def median_iteration(est):
    """Median of ``est.history_[i]["seconds"]`` or None when the estimator keeps no history."""
    hist = getattr(est, "history_", None)
    return float(np.median([h["seconds"] for h in hist])) if hist else None


def table(headers, rows, right=None):
    """Print a Markdown table; columns in ``right`` (default: all but the first) are right-aligned."""
    if right is None:
        right = set(range(1, len(headers)))
    def cell(c):  # a literal "|" (k-means||) would split the cell
        return str(c).replace("|", "\\|")

    print("| " + " | ".join(cell(h) for h in headers) + " |")
    print("| " + " | ".join("---:" if i in right else "---" for i in range(len(headers))) + " |")
    for r in rows:
        print("| " + " | ".join(cell(c) for c in r) + " |")
    print()


def blobs_case(n_rows: int):
    """make_blobs(n_rows, 32, centers=64, random_state=0) as float32, and k=64 (bench_fit's blobs)."""
    return load_case("blobs", n_rows)


def mnist_case(limit=None):
    """MNIST 70,000 x 784 float32 and k=10 (the first ``limit`` rows if given), or None when absent."""
    case = load_case("mnist", 0)
    if case is None or limit is None:
        return case
    X, k = case
    return np.ascontiguousarray(X[:limit]), k

