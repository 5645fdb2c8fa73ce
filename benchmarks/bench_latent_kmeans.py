"""The deep stage's per-epoch k-means: on the workers' shards (CollectiveBlocks) against gathering the embeddings.

Each of ``--world`` gloo processes (one thread each, as the Ray stage's workers) holds ``n / world`` rows of an
``n x d`` float32 embedding.  Two ways to run the same k-means (k-means++, ``--n-init`` restarts, Lloyd):

- ``sharded``: the stage's way, :func:`kmeans_dist.deep.reinit_centroids` with the worker's
  :class:`~kmeans_dist.deep.Shard`; every pass all-gathers the blocks' partials only;
- ``gathered``: all-gather the embeddings (``torch.distributed.all_gather``), then every worker runs the same
  k-means on all of them in process (``reinit_centroids`` without a shard).

Both give the same centers (checked).  Also timed: one process on all rows (``one process``).  Runs
alternate, the best of ``--repeats`` is kept, wall seconds of the whole call on rank 0.

    python benchmarks/bench_latent_kmeans.py --n 70000 --d 10 --k 10 --world 2 --n-init 10 --repeats 3
"""
from __future__ import annotations

import argparse
import os
import socket
import time

import numpy as np


def _worker(rank, world, port, Z_np, k, n_init, repeats, out):
    import torch
    import torch.distributed as dist

    from kmeans_dist.deep import Shard, reinit_centroids

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    n = Z_np.shape[0]
    lo, hi = Shard.bounds(n, rank, world)
    shard = Shard(lo, hi - lo, n)
    Z = torch.from_numpy(Z_np[lo:hi].copy())
    counts = [Shard.bounds(n, r, world) for r in range(world)]
    best = {"sharded": np.inf, "gathered": np.inf}
    centers = {}
    for _ in range(repeats):
        for mode in best:  # alternating
            dist.barrier()
            t0 = time.perf_counter()
            if mode == "sharded":
                c, _, _ = reinit_centroids(Z, k, n_init=n_init, random_state=0, shard=shard)
            else:
                pad = torch.zeros((max(b - a for a, b in counts), Z.shape[1]))
                pad[:Z.shape[0]] = Z
                parts = [torch.empty_like(pad) for _ in counts]
                dist.all_gather(parts, pad)
                Zall = torch.cat([p[:b - a] for p, (a, b) in zip(parts, counts)])
                c, _, _ = reinit_centroids(Zall, k, n_init=n_init, random_state=0)
            best[mode] = min(best[mode], time.perf_counter() - t0)
            centers[mode] = c.numpy()
    if rank == 0:
        out.update(best)
        out["same"] = bool(np.array_equal(centers["sharded"], centers["gathered"]))
    dist.destroy_process_group()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=70_000)
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--n-init", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="3,000 rows, 2 restarts, once (a smoke run)")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.n_init, a.repeats = 3000, 2, 1
    import torch
    import torch.multiprocessing as mp

    from kmeans_dist.deep import reinit_centroids

    rng = np.random.default_rng(0)
    Z = (rng.normal(size=(a.n, a.d)) + 4 * rng.normal(size=(a.k, a.d))[rng.integers(0, a.k, a.n)]).astype(np.float32)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(a.world, port, Z, a.k, a.n_init, a.repeats, out), nprocs=a.world, join=True)
    torch.set_num_threads(1)
    one = np.inf
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        reinit_centroids(torch.from_numpy(Z), a.k, n_init=a.n_init, random_state=0)
        one = min(one, time.perf_counter() - t0)
    mib = a.n * a.d * 4 / 2**20
    print(f"n={a.n} d={a.d} k={a.k} n_init={a.n_init}, {a.world} processes x 1 thread; the embeddings: {mib:.1f} MiB")
    print("| per-epoch k-means | seconds | vs sharded |")
    print("| --- | ---: | ---: |")
    for name, t in [("sharded (CollectiveBlocks)", out["sharded"]), ("gathered, then in process", out["gathered"]),
                    ("one process, 1 thread, all rows", one)]:
        print(f"| {name} | {t:.3f} | {t / out['sharded']:.2f} |")
    print("same centers:", out["same"])


if __name__ == "__main__":
    main()
