"""Elkan against Hamerly against Lloyd: per-iteration and end-to-end ``KMeans.fit()`` wall time.

    .venv/bin/python benchmarks/bench_algorithms.py [--n 100000] [--d 32] [--ks 10,64,256] [--stds 1]
                                                    [--repeats 3] [--no-mnist] [--out FILE]

Cases: blobs (``sklearn.datasets.make_blobs``, ``n`` x ``d`` float32, as many blobs as clusters, centers in
scikit-learn's default box of -10 to 10, random_state 0) for every blob standard deviation of ``--stds`` (at 1
the blobs are apart and k-means++ converges in 2-3 iterations; at 5 and more they overlap and Lloyd takes tens
of iterations, the case the bounds are for) and MNIST 70,000 x 784 float32 scaled to [0, 1] when
:func:`kmeans_dist.data.find_mnist_dir` finds it, for every k.  Every run is in process (``client=False``)
and starts from the same initial centers (scikit-learn's ``kmeans_plusplus``, random_state 0), with
scikit-learn's default ``max_iter=300, tol=1e-4``, so the three algorithms run the same iterations.  The
algorithms alternate within every repeat (lloyd, hamerly, elkan, lloyd, ...); the table gives the best of
``repeats`` for the whole ``fit()`` and for the median iteration (from ``history_``), and their ratios to
Lloyd (below 1: faster than Lloyd), then the first iteration (the bounds' full pass) and the slowest one of
every algorithm, each as a ratio to Lloyd's median iteration.  One warm-up fit per algorithm first (Numba
compiles on first use).
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

ALGORITHMS = ("lloyd", "hamerly", "elkan")


def cases(n, d, ks, mnist=True, stds=(1.0,)):
    from sklearn.datasets import make_blobs

    for std in stds:
        for k in ks:
            X, _ = make_blobs(n, d, centers=k, cluster_std=std, random_state=0)
            yield f"blobs {n}x{d}, std {std:g}", X.astype(np.float32), k
    if mnist:
        from kmeans_dist.data import find_mnist_dir, load_mnist

        path = find_mnist_dir()
        if path is not None:
            X = np.asarray(load_mnist(path)[0], dtype=np.float32)
            if X.max() > 1.5:
                X = X / np.float32(255)
            for k in ks:
                yield f"MNIST {X.shape[0]}x{X.shape[1]}", np.ascontiguousarray(X), k


def run_case(X, k, repeats):
    from sklearn.cluster import kmeans_plusplus

    from kmeans_dist import KMeans

    C0, _ = kmeans_plusplus(X, k, random_state=0)
    for alg in ALGORITHMS:  # warm-up: Numba compiles, BLAS spins up
        KMeans(k, init=C0, max_iter=2, algorithm=alg, client=False).fit(X[:5000])
    fit = {a: [] for a in ALGORITHMS}
    per_it = {a: [] for a in ALGORITHMS}
    first = {a: [] for a in ALGORITHMS}
    worst = {a: [] for a in ALGORITHMS}
    n_iter = {}
    for _ in range(repeats):
        for alg in ALGORITHMS:
            t0 = time.perf_counter()
            km = KMeans(k, init=C0, algorithm=alg, client=False).fit(X)
            fit[alg].append(time.perf_counter() - t0)
            its = [h["seconds"] for h in km.history_]
            per_it[alg].append(float(np.median(its)))
            first[alg].append(its[0])
            worst[alg].append(max(its))
            n_iter[alg] = km.n_iter_
    return {a: (min(fit[a]), min(per_it[a]), n_iter[a], min(first[a]), min(worst[a])) for a in ALGORITHMS}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--ks", default="10,64,256")
    ap.add_argument("--stds", default="1", help="blob standard deviations, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-mnist", action="store_true")
    ap.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    ap.add_argument("--quick", action="store_true", help="3,000 rows, k=4, stds 1 and 5, one repeat, no MNIST")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.ks, a.stds, a.repeats, a.no_mnist = 3000, "4", "1,5", 1, True
    ks = [int(v) for v in a.ks.split(",")]
    lines = [f"host: {platform.processor() or platform.machine()}, python {platform.python_version()}, "
             f"best of {a.repeats}, in process",
             "",
             "| data | k | iters | fit lloyd (s) | fit hamerly (s) | fit elkan (s) | hamerly/lloyd | elkan/lloyd "
             "| iter lloyd (ms) | iter hamerly (ms) | iter elkan (ms) | hamerly/lloyd | elkan/lloyd "
             "| first iter / lloyd iter: lloyd, hamerly, elkan | slowest iter / lloyd iter: lloyd, hamerly, elkan |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    print("\n".join(lines), flush=True)
    for name, X, k in cases(a.n, a.d, ks, mnist=not a.no_mnist, stds=[float(v) for v in a.stds.split(",")]):
        r = run_case(X, k, a.repeats)
        fl, fh, fe = (r[x][0] for x in ALGORITHMS)
        il, ih, ie = (1e3 * r[x][1] for x in ALGORITHMS)
        iters = "/".join(str(r[x][2]) for x in ALGORITHMS)
        line = (f"| {name} | {k} | {iters} | {fl:.3f} | {fh:.3f} | {fe:.3f} | {fh / fl:.2f} | {fe / fl:.2f} "
                f"| {il:.1f} | {ih:.1f} | {ie:.1f} | {ih / il:.2f} | {ie / il:.2f} "
                f"| {', '.join(f'{1e3 * r[x][3] / il:.2f}' for x in ALGORITHMS)} "
                f"| {', '.join(f'{1e3 * r[x][4] / il:.2f}' for x in ALGORITHMS)} |")
        lines.append(line)
        print(line, flush=True)
    if a.out:
        Path(a.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
