"""Where a training step of the deep stage's 2-worker run goes: one process against 2 DDP processes over gloo.

The MNIST autoencoder (784-500-500-2000-10), a pretraining step (reconstruction MSE), the stage's optimizer
(:func:`kmeans_dist.deep.adam`), one CPU thread per process, as the Ray stage's workers.  A global batch of 256
rows: 256 rows in one process, 128 rows in each of 2 DDP processes (``torch.distributed`` over gloo on
127.0.0.1; Ray Train runs the same DDP).  Per step, median milliseconds over ``--steps`` steps:

- forward (with the loss), backward, optimizer step;
- for DDP also the backward without the gradients' all-reduce (``no_sync``), and one bare ``all_reduce`` of a
  flat tensor as large as all gradients: what the all-reduce adds to a step, and what it costs alone;
- two plain processes of 128 rows side by side, without DDP: what sharing the machine costs by itself.

    .venv/bin/python benchmarks/bench_ddp_step.py --steps 30
"""
from __future__ import annotations

import argparse
import os
import socket
import time

import numpy as np


def _net_and_data(rows: int, seed: int = 0):
    import torch

    from kmeans_dist.deep import Autoencoder, adam

    torch.manual_seed(seed)
    net = Autoencoder(784, 10)
    return net, adam(net.parameters()), torch.rand(rows, 784)


def _time_steps(model, opt, x, steps: int, sync=None) -> dict:
    """Median ms of the forward, backward and step phases over ``steps`` steps (two untimed first)."""
    import contextlib

    t = {"forward": [], "backward": [], "step": []}
    for i in range(steps + 2):
        t0 = time.perf_counter()
        loss = ((model(x)[1] - x) ** 2).mean()
        t1 = time.perf_counter()
        with (sync() if sync is not None else contextlib.nullcontext()):
            opt.zero_grad(set_to_none=True)
            loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if i >= 2:
            t["forward"].append(t1 - t0)
            t["backward"].append(t2 - t1)
            t["step"].append(t3 - t2)
    return {k: float(np.median(v)) * 1e3 for k, v in t.items()}


def _ddp_worker(rank, world, port, steps, out):
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        net, _, x = _net_and_data(256 // world, seed=rank)
        model = DDP(net)
        from kmeans_dist.deep import adam

        opt = adam(model.parameters())
        synced = _time_steps(model, opt, x, steps)
        local = _time_steps(model, opt, x, steps, sync=model.no_sync)
        flat = torch.zeros(sum(p.numel() for p in net.parameters()))
        ar = []
        for i in range(steps + 2):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(flat)
            if i >= 2:
                ar.append(time.perf_counter() - t0)
        if rank == 0:
            out.put({"synced": synced, "local": local, "allreduce": float(np.median(ar)) * 1e3,
                     "params": flat.numel()})
    finally:
        dist.destroy_process_group()


def _plain_worker(rank, world, port, steps, out):
    """The same 128-row step as a DDP worker, without DDP, beside another such process: what sharing the
    machine's cores and memory costs, apart from the all-reduce."""
    import torch

    torch.set_num_threads(1)
    net, opt, x = _net_and_data(256 // world, seed=rank)
    t = _time_steps(net, opt, x, steps)
    if rank == 0:
        out.put(t)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="3 steps (a smoke run)")
    a = ap.parse_args(argv)
    import torch
    import torch.multiprocessing as mp

    steps = 3 if a.quick else a.steps
    torch.set_num_threads(1)
    one = {}
    for rows in (256, 128):
        net, opt, x = _net_and_data(rows)
        one[rows] = _time_steps(net, opt, x, steps)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.start_processes(_ddp_worker, args=(2, _free_port(), steps, q), nprocs=2, join=True, start_method="spawn")
    ddp = q.get()
    mp.start_processes(_plain_worker, args=(2, 0, steps, q), nprocs=2, join=True, start_method="spawn")
    pair = q.get()
    print(f"| run (one thread per process, {ddp['params']:,} parameters) | forward ms | backward ms | "
          f"optimizer step ms | step total ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    rows = [("1 process, 256 rows", one[256]), ("1 process, 128 rows", one[128]),
            ("2 processes side by side, 128 rows each, no DDP", pair),
            ("2 DDP processes, 128 rows each", ddp["synced"]),
            ("2 DDP processes, 128 rows each, backward without all-reduce (no_sync)", ddp["local"])]
    for name, t in rows:
        print(f"| {name} | {t['forward']:.1f} | {t['backward']:.1f} | {t['step']:.1f} | {sum(t.values()):.1f} |")
    added = ddp["synced"]["backward"] - ddp["local"]["backward"]
    print()
    print(f"all-reduce added to the backward pass: {added:.1f} ms a step; one bare all_reduce of "
          f"{ddp['params'] * 4 / 2**20:.1f} MiB: {ddp['allreduce']:.1f} ms")


if __name__ == "__main__":
    main()
