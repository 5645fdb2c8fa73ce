"""The time a user measures: the whole ``fit()`` call, against scikit-learn, in one run, alternating.

    .venv/bin/python benchmarks/bench_fit.py [--cases mnist,blobs] [--blobs-rows 2000000] [--repeats 3]
    .venv/bin/python benchmarks/bench_fit.py --out-of-core [--ooc-rows 8000000] [--worker-memory 500MiB]

In memory (MNIST 70,000 x 784 float32 k=10; blobs 2,000,000 x 32 float32 k=64): every run starts from the same
centers (k-means++ on MNIST; 64 random rows on blobs, where k-means++ converges in 2-3 iterations) and runs at most
30 iterations with ``tol=0`` (scikit-learn also stops when no label changes).  The runs alternate (scikit-learn, then each of ours,
then scikit-learn again ...) and the best of ``--repeats`` is kept.  Ours runs in process on the NumPy array,
and on a 2-process LocalCluster (1 thread per worker) from a persisted dask array and from the Zarr path.
Beside the wall time: the median iteration, and the floor measured in the same run, per iteration:
max(bytes of X / read bandwidth, 2nkd / float32 GEMM rate), both on all cores.

Out of core (``--out-of-core``): a Zarr store of 8,000,000 x 64 float32 (1.9 GiB) on 2 workers of 500 MiB,
k=32, streamed (``persist=False``): each Lloyd iteration against one plain read pass of the same store on the same
cluster (``da.from_zarr(...).sum(axis=0)``), whether any worker died, and whether the centers equal an
in-memory fit of the same data bit for bit; once with the workers as ``distributed`` starts them and once
after ``kmeans_dist.chunked.tune_worker_malloc``, alternating, each on a fresh cluster.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

N_ITER = 30


def measure_floor():
    """Read bandwidth (sum over a 1 GiB float32 array) and float32 GEMM rate, on all cores."""
    from concurrent.futures import ThreadPoolExecutor

    a = np.ones(2**28, dtype=np.float32)
    cores = len(os.sched_getaffinity(0))
    parts = np.array_split(a, cores)
    with ThreadPoolExecutor(cores) as ex:  # NumPy's sum runs on one core: one slice per core, in parallel
        list(ex.map(np.sum, parts))
        t = []
        for _ in range(5):
            t0 = time.perf_counter()
            list(ex.map(np.sum, parts))
            t.append(time.perf_counter() - t0)
    bw = a.nbytes / min(t)
    del a
    m = 4096
    A = np.random.default_rng(0).random((m, m), dtype=np.float32)
    B = np.random.default_rng(1).random((m, m), dtype=np.float32)
    A @ B
    t = []
    for _ in range(3):
        t0 = time.perf_counter()
        A @ B
        t.append(time.perf_counter() - t0)
    return bw, 2 * m**3 / min(t)


def load_case(name, blobs_rows):
    if name == "mnist":
        from kmeans_dist.data import find_mnist_dir, load_mnist

        d = find_mnist_dir()
        if d is None:
            return None
        X, _ = load_mnist(d)
        return np.ascontiguousarray(X, dtype=np.float32), 10
    from sklearn.datasets import make_blobs

    X, _ = make_blobs(n_samples=blobs_rows, n_features=32, centers=64, random_state=0)
    return X.astype(np.float32), 64


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def in_memory(args):
    import dask.array as da
    from distributed import Client, LocalCluster
    from sklearn.cluster import KMeans as SKKMeans
    from sklearn.cluster import kmeans_plusplus

    from kmeans_dist import KMeans
    from kmeans_dist.data import write_store

    bw, gemm = measure_floor()
    print(f"floor, measured in this run: read {bw / 1e9:.1f} GB/s, float32 GEMM {gemm / 1e9:.0f} GFLOP/s\n")
    rows = []
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address="127.0.0.1:0", memory_limit="6GiB")
    client = Client(cluster)
    tmp = tempfile.mkdtemp(prefix="bench-fit-")
    try:
        for name in args.cases.split(","):
            case = load_case(name, args.blobs_rows)
            if case is None:
                print(f"{name}: data not found, skipped")
                continue
            X, k = case
            n, d = X.shape
            if name == "mnist":
                C0, _ = kmeans_plusplus(X, k, random_state=0)
            else:  # k-means++ on separated blobs converges in 2-3 iterations: random rows make 30 of them
                C0 = X[np.random.default_rng(0).choice(n, k, replace=False)]
            C0 = np.ascontiguousarray(C0, dtype=np.float32)
            floor = max(X.nbytes / bw, 2 * n * k * d / gemm)
            store = write_store(os.path.join(tmp, f"{name}.zarr"), X, overwrite=True)
            Xp = client.persist(da.from_array(X, chunks=(max(1, n // 8), d)))
            client.wait_for_workers(2)
            kw = dict(n_clusters=k, init=C0, n_init=1, max_iter=N_ITER, tol=0.0)
            runs = {
                "scikit-learn lloyd": lambda: SKKMeans(algorithm="lloyd", **kw).fit(X),
                "scikit-learn elkan": lambda: SKKMeans(algorithm="elkan", **kw).fit(X),
                "ours in process, lloyd": lambda: KMeans(client=False, algorithm="lloyd", **kw).fit(X),
                "ours in process, hamerly": lambda: KMeans(client=False, algorithm="hamerly", **kw).fit(X),
                "ours 2-proc cluster, persisted dask": lambda: KMeans(client=client, **kw).fit(Xp),
                "ours 2-proc cluster, Zarr path": lambda: KMeans(client=client, **kw).fit(store),
            }
            for fn in runs.values():  # warm-up: JIT caches, BLAS, worker imports
                fn()
            best = {r: np.inf for r in runs}
            iters = {r: None for r in runs}
            n_iter = {r: None for r in runs}
            for _ in range(args.repeats):
                for r, fn in runs.items():
                    t, est = timed(fn)
                    if t < best[r]:
                        best[r] = t
                        hist = getattr(est, "history_", None)
                        iters[r] = float(np.median([h["seconds"] for h in hist])) if hist else None
                        n_iter[r] = int(est.n_iter_)
            ref = best["scikit-learn lloyd"]
            for r in runs:
                it = iters[r] if iters[r] is not None else best[r] / n_iter[r]
                rows.append((name, r, best[r], n_iter[r], best[r] / ref, it * 1e3, floor * 1e3, it / floor,
                             iters[r] is None))
            client.cancel(Xp)
    finally:
        client.close()
        cluster.close()
    print("| case | run | fit() s | iterations | vs scikit-learn lloyd | median iteration ms | floor ms | "
          "iteration / floor |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r, t, ni, ratio, it, fl, itf, approx in rows:
        mark = " (fit / iterations)" if approx else ""
        print(f"| {name} | {r} | {t:.3f} | {ni} | {ratio:.2f}x | {it:.1f}{mark} | {fl:.1f} | {itf:.2f}x |")


def _ooc_round(url, C0, k, args, tuned):
    """One configuration on a fresh 2-worker LocalCluster: the read pass (best of 3) and a streamed fit."""
    import dask.array as da
    from distributed import Client, LocalCluster

    from kmeans_dist import KMeans
    from kmeans_dist.chunked import tune_worker_malloc

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address="127.0.0.1:0", memory_limit=args.worker_memory)
    client = Client(cluster)
    try:
        if tuned:
            tune_worker_malloc(client)
        reads = []
        for _ in range(3):
            tr, _ = timed(lambda: da.from_zarr(url, component="X").sum(axis=0).compute())
            reads.append(tr)
        workers0 = set(client.scheduler_info()["workers"])
        est = KMeans(k, init=C0, n_init=1, max_iter=args.ooc_iter, tol=0.0, client=client, persist=False)
        tf, _ = timed(lambda: est.fit(url))
        workers1 = set(client.scheduler_info()["workers"])
    finally:
        client.close()
        cluster.close()
    return {"read": min(reads), "iter": float(np.median([h["seconds"] for h in est.history_])),
            "n_iter": len(est.history_), "fit": tf, "restarts": len(workers0 ^ workers1), "est": est}


def out_of_core(args):
    import dask.array as da

    from kmeans_dist import KMeans
    from kmeans_dist.data.datasets import blobs

    tmp = tempfile.mkdtemp(prefix="bench-ooc-")
    url = os.path.join(tmp, "big.zarr")
    n, d, k = args.ooc_rows, 64, 32
    t, _ = timed(lambda: blobs(n, centers=k, n_features=d, dtype="float32", url=url, overwrite=True))
    print(f"wrote {url}: {n} x {d} float32 ({n * d * 4 / 2**30:.2f} GiB) in {t:.1f} s")
    X = da.from_zarr(url, component="X")
    print(f"store chunks {X.chunks[0][0]} rows")
    C0 = np.asarray(X[:k].compute(), dtype=np.float32)
    configs = {"distributed's defaults": False, "tune_worker_malloc": True}
    runs = {name: [] for name in configs}
    for _ in range(args.ooc_rounds):  # the two configurations alternate, each on a fresh cluster
        for name, tuned in configs.items():
            runs[name].append(_ooc_round(url, C0, k, args, tuned))
    ref = KMeans(k, init=C0, n_init=1, max_iter=args.ooc_iter, tol=0.0, client=False, persist=True).fit(url)
    best = {name: min(r, key=lambda x: x["fit"]) for name, r in runs.items()}
    for b in best.values():
        b["same"] = (bool(np.array_equal(ref.cluster_centers_, b["est"].cluster_centers_))
                     and ref.inertia_ == b["est"].inertia_)
    names = list(configs)
    print(f"| quantity | {' | '.join(names)} |")
    print("| --- |" + " ---: |" * len(names))
    rows = [("workers x memory limit", lambda b: f"2 x {args.worker_memory}"),
            ("one plain read pass (best of 3)", lambda b: f"{b['read']:.2f} s"),
            (f"streamed Lloyd iteration (median of {args.ooc_iter})", lambda b: f"{b['iter']:.2f} s"),
            ("iteration / read pass", lambda b: f"{b['iter'] / b['read']:.2f}x"),
            (f"whole fit() (best of {args.ooc_rounds})", lambda b: f"{b['fit']:.1f} s"),
            ("workers lost or restarted", lambda b: str(b["restarts"])),
            ("centers and inertia bit-identical to the in-memory fit", lambda b: str(b["same"]))]
    for label, f in rows:
        print(f"| {label} | {' | '.join(f(best[nm]) for nm in names)} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="mnist,blobs")
    ap.add_argument("--blobs-rows", type=int, default=2_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out-of-core", action="store_true")
    ap.add_argument("--ooc-rows", type=int, default=8_000_000)
    ap.add_argument("--ooc-iter", type=int, default=5)
    ap.add_argument("--worker-memory", default="500MiB")
    ap.add_argument("--ooc-rounds", type=int, default=1, help="alternations of the two worker configurations")
    args = ap.parse_args()
    if args.out_of_core:
        out_of_core(args)
    else:
        in_memory(args)


if __name__ == "__main__":
    main()
