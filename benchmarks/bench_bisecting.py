"""BisectingKMeans benchmark: kmeans-dist against scikit-learn's ``BisectingKMeans`` on blobs.

    .venv/bin/python benchmarks/bench_bisecting.py [--n 2000000] [--d 32] [--k 64] [--repeats 3]
                                                   [--strategy biggest_inertia] [--client local|dask]

Blobs: ``make_blobs(n, d, centers=k, cluster_std=1, random_state=0)`` in float32.  Both libraries fit
with the same parameters (``init="random"``, ``n_init=1``, ``random_state=0``, ``tol=1e-4``); the fits
alternate (ours, scikit-learn's, ours, ...) and the best ``fit()`` wall time of ``--repeats`` is kept.
``--client local`` runs in this process (blocks in memory); ``--client dask`` on a LocalCluster of two
worker processes (1 thread each) bound to 127.0.0.1.  Printed: a table with both times, their ratio
(scikit-learn / kmeans-dist: above 1 means kmeans-dist is faster) and the inertia ratio.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2_000_000)
    p.add_argument("--d", type=int, default=32)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--strategy", default="biggest_inertia", choices=["biggest_inertia", "largest_cluster"])
    p.add_argument("--client", default="local", choices=["local", "dask"])
    a = p.parse_args(argv)

    from sklearn.cluster import BisectingKMeans as SkBisectingKMeans
    from sklearn.datasets import make_blobs

    from kmeans_dist import BisectingKMeans

    X, _ = make_blobs(a.n, a.d, centers=a.k, cluster_std=1.0, random_state=0)
    X = X.astype(np.float32)
    client = False
    if a.client == "dask":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0")
        client = Client(cluster)
    kw = dict(n_clusters=a.k, init="random", n_init=1, random_state=0, tol=1e-4, bisecting_strategy=a.strategy)
    makers = {"kmeans-dist": lambda: BisectingKMeans(**kw, client=client),
              "scikit-learn": lambda: SkBisectingKMeans(**kw)}
    times = {name: [] for name in makers}
    inertia = {}
    for _ in range(a.repeats):
        for name, make in makers.items():  # alternating
            est = make()
            t0 = time.perf_counter()
            est.fit(X)
            times[name].append(time.perf_counter() - t0)
            inertia[name] = float(est.inertia_)
    best = {name: min(t) for name, t in times.items()}
    print(f"BisectingKMeans fit(), blobs {a.n:,} x {a.d} float32, k={a.k}, {a.strategy}, client={a.client}, "
          f"best of {a.repeats}; {platform.processor() or platform.machine()}")
    print(f"| library | fit (s) | inertia |")
    print(f"|---|---:|---:|")
    for name in makers:
        print(f"| {name} | {best[name]:.2f} | {inertia[name]:.6g} |")
    print(f"\ntime ratio scikit-learn / kmeans-dist: {best['scikit-learn'] / best['kmeans-dist']:.2f}   "
          f"inertia ratio kmeans-dist / scikit-learn: {inertia['kmeans-dist'] / inertia['scikit-learn']:.4f}")
    if client is not False:
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()
