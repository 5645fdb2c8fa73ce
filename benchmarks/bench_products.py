"""The distance products of a Lloyd block: BLAS GEMM against the compiled direct loop, by shape.

    .venv/bin/python benchmarks/bench_products.py [--features 64,128,256,784] [--ks 2,5,8,10,12,16,24]
    .venv/bin/python benchmarks/bench_products.py --quick     # smoke test: two small shapes

For every (features, k): a float32 block of about 110 MB of normal rows (out of cache), k of its rows as the
centers, one thread; :func:`kmeans_dist.kernels.fused.lloyd_block` (products, argmin, sums, inertia, farthest
rows) timed with the products by the GEMM and by the direct loop, alternating, median of ``--repeats`` after one
warm-up each.  The table sets :func:`kmeans_dist.kernels.fused.direct_layout`'s rule.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", default="64,128,256,784")
    ap.add_argument("--ks", default="2,5,8,10,12,16,24")
    ap.add_argument("--block-mb", type=float, default=110.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="two small shapes, 2 MB blocks, one repeat")
    args = ap.parse_args(argv)
    if args.quick:
        args.features, args.ks, args.block_mb, args.repeats = "64,300", "3,10", 2.0, 1
    import threadpoolctl

    from kmeans_dist.kernels import fused

    threadpoolctl.threadpool_limits(1)
    rng = np.random.default_rng(0)
    saved = fused.DIRECT_MAX_K, fused.DIRECT_MIN_FEATURES
    print("| features | k | GEMM path ms | direct loop ms | direct / GEMM | rule picks |")
    print("| ---: | ---: | ---: | ---: | ---: | --- |")
    try:
        for d in [int(v) for v in args.features.split(",") if v]:
            n = max(4, int(args.block_mb * 1e6) // (4 * d))
            Z = rng.normal(size=(n, d)).astype(np.float32)
            x_sq = fused.row_norms_sq(Z)
            for k in [int(v) for v in args.ks.split(",") if v]:
                C = Z[rng.choice(n, k, replace=False)].copy()
                sub = int(min(16384, max(512, 2**20 // ((d + k) * 4))))
                t = {False: [], True: []}
                for rep in range(args.repeats + 1):
                    for direct in (False, True):
                        fused.DIRECT_MAX_K, fused.DIRECT_MIN_FEATURES = (10**9, 0) if direct else (-1, 10**9)
                        t0 = time.perf_counter()
                        fused.lloyd_block(Z, None, C, x_sq, sub, False, k, False)
                        if rep:
                            t[direct].append(time.perf_counter() - t0)
                g, dd = float(np.median(t[False])), float(np.median(t[True]))
                fused.DIRECT_MAX_K, fused.DIRECT_MIN_FEATURES = saved
                pick = "direct" if fused.direct_layout(d, k) else "GEMM"
                print(f"| {d} | {k} | {g * 1e3:.1f} | {dd * 1e3:.1f} | {dd / g:.2f} | {pick} |", flush=True)
    finally:
        fused.DIRECT_MAX_K, fused.DIRECT_MIN_FEATURES = saved


if __name__ == "__main__":
    main()
