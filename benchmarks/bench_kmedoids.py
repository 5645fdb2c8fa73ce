"""KMedoids: CLARA against PAM on data that fits in memory, time and cost, printed as a table with ratios.

    python benchmarks/bench_kmedoids.py --n 2000 4000 --k 8 --features 8 --seeds 3

PAM forms the (n, n) distance matrix (BUILD + SWAP); CLARA runs PAM on ``n_sampling_iter`` samples of
``40 + 2k`` rows (the authors' defaults) and scores every candidate set over all the data in one pass.
Blobs from scikit-learn's ``make_blobs``; both in process (``client=False``).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import make_blobs

from kmeans_dist import KMedoids


def run(n, k, d, seed, metric):
    X, _ = make_blobs(n_samples=n, n_features=d, centers=k, cluster_std=1.5, random_state=seed)
    out = {}
    for method in ("pam", "clara"):
        t0 = time.perf_counter()
        km = KMedoids(n_clusters=k, metric=metric, method=method, random_state=seed, client=False).fit(X)
        out[method] = (time.perf_counter() - t0, km.inertia_)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[2000, 4000])
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--features", type=int, default=8)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--metric", default="euclidean", choices=["euclidean", "manhattan", "cosine"])
    a = p.parse_args(argv)
    print(f"KMedoids, blobs, k={a.k}, {a.features} features, metric={a.metric}, median over {a.seeds} seeds")
    print(f"{'n':>8} {'PAM s':>9} {'CLARA s':>9} {'speed-up':>9} {'PAM cost':>12} {'CLARA cost':>12} {'cost ratio':>11}")
    for n in a.n:
        rows = [run(n, a.k, a.features, s, a.metric) for s in range(a.seeds)]
        tp, tc = np.median([r["pam"][0] for r in rows]), np.median([r["clara"][0] for r in rows])
        cp, cc = np.median([r["pam"][1] for r in rows]), np.median([r["clara"][1] for r in rows])
        ratio = np.median([r["clara"][1] / r["pam"][1] for r in rows])
        print(f"{n:>8} {tp:>9.3f} {tc:>9.3f} {tp / tc:>8.1f}x {cp:>12.1f} {cc:>12.1f} {ratio:>11.3f}")


if __name__ == "__main__":
    main()
