"""Sparse k-means benchmark: kmeans-dist against scikit-learn on TF-IDF-like CSR data, fit() wall time.

    .venv/bin/python benchmarks/bench_sparse.py [--n 200000] [--d 50000] [--density 0.001] [--k 20]
        [--iters 20] [--repeats 3]

Data: random CSR (positions uniform without repeats, ``numpy.random.default_rng(0)``), counts ``floor(5u) + 1`` scaled by a log IDF
and l2-normalised per row, float64.  Every run starts from the same initial centers (k random rows, seed 1),
with ``n_init=1``, ``tol=0`` and ``max_iter=--iters``, so all run the same number of Lloyd iterations;
scikit-learn with ``algorithm="lloyd"`` on all cores, kmeans-dist in process (``client=False``) and on a
2-process LocalCluster (1 thread per worker, blocks persisted).  The three are run alternately, best of
``--repeats``; the table gives the wall time of ``fit()`` and its ratio to scikit-learn's, and checks that
the centers agree.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def tfidf_like(n: int, d: int, density: float, seed: int = 0):
    """Random TF-IDF-like CSR rows: integer counts, log IDF weights, unit l2 norm (empty rows stay empty)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    flat = np.unique(rng.integers(0, n * d, size=int(round(n * d * density)), dtype=np.int64))
    X = sp.csr_matrix((np.floor(rng.random(flat.size) * 5) + 1.0, (flat // d, flat % d)), shape=(n, d))
    df = np.bincount(X.indices, minlength=d)
    idf = np.log((1 + n) / (1 + df)) + 1.0
    X.data *= idf[X.indices]
    norms = np.sqrt(np.bincount(np.repeat(np.arange(n), np.diff(X.indptr)), weights=X.data ** 2, minlength=n))
    norms[norms == 0] = 1.0
    X.data /= np.repeat(norms, np.diff(X.indptr))
    return X


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=50_000)
    ap.add_argument("--density", type=float, default=0.001)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    from distributed import Client, LocalCluster
    from sklearn.cluster import KMeans as SKKMeans

    from kmeans_dist import KMeans

    t0 = time.perf_counter()
    X = tfidf_like(args.n, args.d, args.density)
    C0 = np.asarray(X[np.random.default_rng(1).choice(args.n, args.k, replace=False)].toarray())
    print(f"data: {args.n} x {args.d} CSR, nnz {X.nnz} (density {X.nnz / (args.n * args.d):.4%}), "
          f"k={args.k}, {args.iters} iterations; made in {time.perf_counter() - t0:.1f} s", flush=True)
    common = dict(init=C0, n_init=1, tol=0.0, max_iter=args.iters)

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", memory_limit="8GiB") as cluster, Client(cluster) as client:
        runs = {
            "scikit-learn (lloyd, all cores)": lambda: SKKMeans(args.k, algorithm="lloyd", **common).fit(X),
            "kmeans-dist, in process": lambda: KMeans(args.k, client=False, **common).fit(X),
            "kmeans-dist, LocalCluster 2x1": lambda: KMeans(args.k, client=client, persist=True, **common).fit(X),
        }
        best = {name: np.inf for name in runs}
        centers = {}
        for _ in range(args.repeats):  # alternating
            for name, fit in runs.items():
                t = time.perf_counter()
                m = fit()
                best[name] = min(best[name], time.perf_counter() - t)
                centers[name] = (m.cluster_centers_, m.n_iter_)
    ref_name = next(iter(runs))
    ref = centers[ref_name][0]
    print()
    print(f"| run | fit() best of {args.repeats} (s) | ratio to scikit-learn | n_iter | max rel. center diff |")
    print("|---|---|---|---|---|")
    for name in runs:
        C, it = centers[name]
        diff = float(np.abs(C - ref).max() / max(np.abs(ref).max(), 1e-300))
        print(f"| {name} | {best[name]:.2f} | {best[name] / best[ref_name]:.2f} | {it} | {diff:.1e} |")
    print(f"\ncommand: python benchmarks/bench_sparse.py --n {args.n} --d {args.d} --density {args.density} "
          f"--k {args.k} --iters {args.iters} --repeats {args.repeats}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
