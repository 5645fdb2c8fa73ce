"""Cost per row per Lloyd iteration in n and in k, against scikit-learn (issue 23, target 6).

Target: for n = 10^5, 10^6, 10^7 and 10^8 rows (d=32, k=64; the largest streamed from disk), the cost per row
stays flat in n; for k = 8 ... 1024 at n = 10^6 it is what the GEMM predicts.

Full size (on a quiet machine; the streamed 10^8 rows need about 16 GB of free disk for the Zarr store with its
labels, 10^7 about 1.6 GB):

    .venv/bin/python benchmarks/bench_scaling.py --max-n 100000000 --stream-ns 10000000,100000000 \\
        --repeats 3 --plot benchmarks/scaling.png

In memory only (the defaults: n up to 10^7, nothing streamed):

    .venv/bin/python benchmarks/bench_scaling.py --repeats 3 --plot benchmarks/scaling.png

Smoke test (< 60 s):

    .venv/bin/python benchmarks/bench_scaling.py --quick

Data: ``kmeans_dist.data.datasets.blobs(n, centers=64, n_features=32, dtype="float32", random_state=0)`` (the
same generator for the in-memory arrays and the streamed stores).  Every fit starts from the same k random rows
(seed 0) and runs ``--iters`` Lloyd iterations (default 5) with ``tol=0``, ``n_init=1``.

- In memory (every n of ``--ns`` up to ``--max-n`` and ``--max-in-memory``, default 10^7, and every k of
  ``--ks`` at ``--k-rows``): scikit-learn ``KMeans(algorithm="lloyd")`` and ours ``KMeans(client=False)`` on
  the NumPy array, alternating, one untimed warm-up each, the best of ``--repeats`` kept.
- Streamed (every n of ``--stream-ns`` up to ``--max-n``; an n in both lists is run both ways): the store is
  written to a temporary folder under ``--tmp`` (skipped with a message when ``shutil.disk_usage`` shows too
  little room), then ours ``KMeans(client=client, persist=False).fit(path)`` runs on a LocalCluster of 2
  workers x 1 thread, with ``kmeans_dist.chunked.tune_worker_malloc`` (an untimed warm-up fit first unless
  ``--no-stream-warmup``); scikit-learn is not run (it
  needs the array in memory).  The store is deleted afterwards.  Where the machine's memory exceeds the store,
  part of the reads may come from the page cache rather than the disk.

Columns, all in ns per row per iteration: the whole ``fit()`` divided by ``n x n_iter_`` (it includes the
moments pass and the final labelling pass), ours' median iteration (``history_[i]["seconds"]``),
scikit-learn's ``fit()`` likewise, and the GEMM prediction ``2 k d / R`` with R the float32 GEMM rate measured in
this run by bench_fit's ``measure_floor`` (all cores).  ``--plot`` writes a PNG (Agg) of both sweeps.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile

import numpy as np

import bench_helpers as H

D = 32


def ints(s):
    return [int(float(v)) for v in s.split(",") if v.strip()]


def make_data(n, k_gen=64):
    from kmeans_dist.data.datasets import blobs

    X, _ = blobs(n, centers=k_gen, n_features=D, dtype="float32", random_state=0, as_numpy=True)
    return np.ascontiguousarray(X)


def init_rows(n, k):
    return np.sort(np.random.default_rng(0).choice(n, k, replace=False))


def in_memory(X, k, args):
    from sklearn.cluster import KMeans as SKKMeans

    from kmeans_dist.estimators import KMeans

    n = X.shape[0]
    C0 = np.ascontiguousarray(X[init_rows(n, k)])
    kw = dict(init=C0, n_init=1, max_iter=args.iters, tol=0.0)
    runs = {"sk": lambda r: SKKMeans(k, algorithm="lloyd", **kw).fit(X),
            "ours": lambda r: KMeans(k, client=False, **kw).fit(X)}
    res = H.alternate(runs, args.repeats)
    t_sk, sk = H.best(res["sk"])
    t_ours, ours = H.best(res["ours"])
    return {"ours_fit": t_ours / (n * ours.n_iter_), "ours_iter": H.median_iteration(ours) / n,
            "sk_fit": t_sk / (n * sk.n_iter_), "mode": "in memory"}


def streamed(n, k, args):
    import dask.array as da
    from distributed import Client, LocalCluster

    from kmeans_dist.chunked import tune_worker_malloc
    from kmeans_dist.data.datasets import blobs
    from kmeans_dist.estimators import KMeans

    need = int(n * (D * 4 + 8) * 1.15)  # X float32 and the int64 labels, with room to spare
    free = shutil.disk_usage(args.tmp).free
    if free < need:
        print(f"n={n}: skipped, the store needs about {need / 1e9:.1f} GB and {args.tmp} has {free / 1e9:.1f} GB free")
        return None
    tmp = tempfile.mkdtemp(prefix="bench-scaling-", dir=args.tmp)
    try:
        url = os.path.join(tmp, "blobs.zarr")
        t_w, _ = H.timed(lambda: blobs(n, centers=64, n_features=D, dtype="float32", random_state=0, url=url,
                                       overwrite=True))
        print(f"n={n}: wrote {url} ({n * D * 4 / 1e9:.2f} GB of X) in {t_w:.1f} s")
        C0 = np.asarray(da.from_zarr(url, component="X")[init_rows(n, k)].compute(), dtype=np.float32)
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0")
        client = Client(cluster)
        tune_worker_malloc(client)  # decoded chunks reuse memory (docs/guide/cluster.md)
        try:
            def fit(r):
                return KMeans(k, init=C0, n_init=1, max_iter=args.iters, tol=0.0, client=client,
                              persist=False).fit(url)

            res = H.alternate({"ours": fit}, args.repeats, warmup=not args.no_stream_warmup)
            t, est = H.best(res["ours"])
        finally:
            client.close()
            cluster.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"ours_fit": t / (n * est.n_iter_), "ours_iter": H.median_iteration(est) / n, "sk_fit": None,
            "mode": "streamed, 2 workers"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ns", default="100000,1000000,10000000,100000000", help="rows of the n sweep (k=64)")
    ap.add_argument("--max-n", type=int, default=10_000_000, help="largest n run (10^8 needs --max-n 100000000)")
    ap.add_argument("--max-in-memory", type=int, default=10_000_000, help="largest n run in memory")
    ap.add_argument("--stream-ns", default="100000000", help="n values streamed from a Zarr store on disk")
    ap.add_argument("--ks", default="8,16,32,64,128,256,512,1024", help="clusters of the k sweep")
    ap.add_argument("--k-rows", type=int, default=1_000_000, help="rows of the k sweep")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tmp", default=tempfile.gettempdir(), help="folder of the temporary Zarr stores")
    ap.add_argument("--no-stream-warmup", action="store_true", help="no untimed warm-up fit of the streamed cases")
    ap.add_argument("--plot", default=None, help="write a PNG of ns/row vs n and vs k here")
    ap.add_argument("--quick", action="store_true", help="n in {10^4, 2x10^4} (2x10^4 also streamed), k in {8, 64}")
    args = ap.parse_args(argv)
    if args.quick:
        args.ns, args.max_n, args.stream_ns, args.ks = "10000,20000", 20_000, "20000", "8,64"
        args.k_rows, args.iters, args.repeats = 20_000, 3, 1
    ns = [n for n in ints(args.ns) if n <= args.max_n]
    stream_ns = [n for n in ints(args.stream_ns) if n <= args.max_n]
    ks = ints(args.ks)

    bw, gemm = H.measure_floor()
    print(f"floor, measured in this run: read {bw / 1e9:.1f} GB/s, float32 GEMM {gemm / 1e9:.0f} GFLOP/s; "
          f"{args.iters} iterations per fit, best of {args.repeats}\n")

    cache, data = {}, {}

    def case(n, k, stream):
        key = (n, k, stream)
        if key not in cache:
            if stream:
                cache[key] = streamed(n, k, args)
            else:
                if n not in data:  # one array in memory at a time
                    data.clear()
                    data[n] = make_data(n)
                cache[key] = in_memory(data[n], k, args)
        return cache[key]

    def row(n, k, r):
        pred = 2 * k * D / gemm
        sk = "—" if r["sk_fit"] is None else f"{r['sk_fit'] * 1e9:.1f}"
        ratio = "—" if r["sk_fit"] is None else f"{r['ours_fit'] / r['sk_fit']:.2f}x"
        return (f"{n:,}", k, r["mode"], f"{r['ours_fit'] * 1e9:.1f}", f"{r['ours_iter'] * 1e9:.1f}", sk, ratio,
                f"{pred * 1e9:.2f}", f"{r['ours_iter'] / pred:.1f}x")

    headers = ["n", "k", "data", "ours fit() ns/row/iter", "ours median iteration ns/row",
               "scikit-learn fit() ns/row/iter", "ours / scikit-learn (fit)", "GEMM prediction ns/row",
               "ours iteration / GEMM"]
    n_rows, n_pts = [], []
    mem_ns = [n for n in ns if n <= args.max_in_memory]
    for n in sorted(set(mem_ns) | set(stream_ns)):
        for stream in [s for s, on in ((False, n in mem_ns), (True, n in stream_ns)) if on]:
            r = case(n, 64, stream)
            if r is not None:
                n_rows.append(row(n, 64, r))
                n_pts.append((n, stream, r))
    print(f"n sweep (d={D}, k=64):\n")
    H.table(headers, n_rows, right=set(range(3, len(headers))) | {0, 1})
    if len(n_pts) > 1:
        it = [r["ours_iter"] for _, _, r in n_pts]
        print(f"flatness in n: ours median iteration per row, max / min over the rows above = "
              f"{max(it) / min(it):.2f}\n")
    k_rows, k_pts = [], []
    for k in ks:
        r = case(args.k_rows, k, False)
        k_rows.append(row(args.k_rows, k, r))
        k_pts.append((k, r))
    print(f"k sweep (n={args.k_rows:,}, d={D}, in memory):\n")
    H.table(headers, k_rows, right=set(range(3, len(headers))) | {0, 1})
    if len(k_pts) > 1:  # the slope of log(ns/row) against log(k): 1 where the GEMM dominates
        lk = np.log([k for k, _ in k_pts])
        li = np.log([r["ours_iter"] for _, r in k_pts])
        print(f"in k: ours median iteration per row grows as k^{np.polyfit(lk, li, 1)[0]:.2f} (the GEMM: k^1)\n")
    if args.plot:
        plot(args.plot, n_pts, k_pts, gemm)
        print(f"plot written to {args.plot}")


def plot(path, n_pts, k_pts, gemm):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    mem = [(n, r) for n, s, r in n_pts if not s]
    st = [(n, r) for n, s, r in n_pts if s]
    for pts, style, what in ((mem, "-o", "in memory"), (st, "s", "streamed")):
        if pts:
            a.plot([n for n, _ in pts], [r["ours_iter"] * 1e9 for _, r in pts], style, label=f"ours iteration, {what}")
            a.plot([n for n, _ in pts], [r["ours_fit"] * 1e9 for _, r in pts], style, alpha=0.5,
                   label=f"ours fit() / iterations, {what}")
    if mem:
        a.plot([n for n, _ in mem], [r["sk_fit"] * 1e9 for _, r in mem], "--^", label="scikit-learn fit() / iterations")
    a.axhline(2 * 64 * D / gemm * 1e9, color="gray", lw=1, label="GEMM prediction")
    a.set(xscale="log", xlabel="rows n (d=32, k=64)", ylabel="ns per row per iteration", ylim=(0, None))
    a.legend(fontsize=7)
    ks = [k for k, _ in k_pts]
    b.plot(ks, [r["ours_iter"] * 1e9 for _, r in k_pts], "-o", label="ours iteration")
    b.plot(ks, [r["ours_fit"] * 1e9 for _, r in k_pts], "-o", alpha=0.5, label="ours fit() / iterations")
    b.plot(ks, [r["sk_fit"] * 1e9 for _, r in k_pts], "--^", label="scikit-learn fit() / iterations")
    b.plot(ks, [2 * k * D / gemm * 1e9 for k in ks], color="gray", lw=1, label="GEMM prediction 2kd / rate")
    b.set(xscale="log", yscale="log", xlabel="clusters k (d=32)", ylabel="ns per row per iteration")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
