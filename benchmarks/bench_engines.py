"""Ray against Dask against in process: per-iteration and end-to-end ``KMeans.fit`` wall time.

The same data, seed and ``block_rows`` on three engines: ``engine="ray"`` (2 actors on a local Ray with
2 CPUs), ``engine="dask"`` (a LocalCluster of 2 single-threaded worker processes) and ``engine="local"``.
Runs alternate between the engines, the best of ``--repeats`` is kept; the centers are checked to be
bit-identical across engines.  Data: MNIST (70,000 x 784, float32 scaled to [0, 1], k=10) when found, and
blobs (``--blobs N``, 32 features, k=64; the issue's size is 2,000,000).

    python benchmarks/bench_engines.py --blobs 200000 --repeats 3
    python benchmarks/bench_engines.py --blobs 2000000 --repeats 2 --max-iter 10 --no-mnist
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _fit(X, k, engine, client, max_iter):
    from kmeans_dist import KMeans

    t0 = time.perf_counter()
    km = KMeans(k, init="k-means||", random_state=0, max_iter=max_iter, tol=0.0, engine=engine,
                client=client if engine == "dask" else None).fit(X)
    total = time.perf_counter() - t0
    per_iter = float(np.median([h["seconds"] for h in km.history_]))
    return total, per_iter, km.cluster_centers_


def bench(name, X, k, client, repeats, max_iter):
    engines = ["ray", "dask", "local"]
    best = {e: (np.inf, np.inf) for e in engines}
    centers = {}
    for _ in range(repeats):
        for e in engines:  # alternating
            total, per_iter, C = _fit(X, k, e, client, max_iter)
            best[e] = (min(best[e][0], total), min(best[e][1], per_iter))
            centers[e] = C
    same = all(np.array_equal(centers["ray"], centers[e]) for e in engines)
    rows = []
    for e in engines:
        rows.append(f"| {name} | {e} | {best[e][1] * 1e3:.1f} | {best[e][0]:.2f} | "
                    f"{best[e][1] / best['dask'][1]:.2f} | {best[e][0] / best['dask'][0]:.2f} |")
    return rows, same


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blobs", type=int, default=2_000_000, help="rows of the blobs data set (32 features)")
    p.add_argument("--mnist-limit", type=int, default=None, help="first MNIST rows only")
    p.add_argument("--no-mnist", action="store_true", help="blobs only")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-iter", type=int, default=20, help="Lloyd iterations per fit (tol=0)")
    a = p.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from distributed import Client, LocalCluster

    from kmeans_dist.data import find_mnist_dir, load_mnist
    from kmeans_dist.data.datasets import blobs

    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address="127.0.0.1:0", memory_limit="6GiB")
    client = Client(cluster)
    sets = []
    if not a.no_mnist and find_mnist_dir() is not None:
        X, _ = load_mnist(limit=a.mnist_limit, scale=1 / 255)
        sets.append((f"MNIST {X.shape[0]}x{X.shape[1]} k=10", X, 10))
    Xb, _ = blobs(a.blobs, centers=64, n_features=32, random_state=0, as_numpy=True)
    sets.append((f"blobs {a.blobs}x32 k=64", Xb, 64))
    print("| data | engine | per iteration (ms) | fit (s) | iter / dask | fit / dask |")
    print("|---|---|---|---|---|---|")
    try:
        for name, X, k in sets:
            rows, same = bench(name, X, k, client, a.repeats, a.max_iter)
            print("\n".join(rows), flush=True)
            if not same:
                print(f"WARNING: centers differ between engines on {name}")
    finally:
        client.close()
        cluster.close()
        ray.shutdown()


if __name__ == "__main__":
    main()
