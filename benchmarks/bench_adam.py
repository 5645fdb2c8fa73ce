"""The deep stage's optimizer step: PyTorch's default Adam against the fused one, on one CPU thread, for the
MNIST autoencoder (784-500-500-2000-10, 3.3 million parameters), after one backward pass of a 128-row batch
(a Ray worker's share of the global batch of 256).  Mean milliseconds per ``step()`` over ``--steps`` steps.

    .venv/bin/python benchmarks/bench_adam.py --steps 20
"""
from __future__ import annotations

import argparse
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="3 steps (a smoke run)")
    a = ap.parse_args(argv)
    import torch

    from kmeans_dist.deep import Autoencoder

    torch.set_num_threads(a.threads)
    steps = 3 if a.quick else a.steps
    net = Autoencoder(784, 10)
    x = torch.rand(128, 784)
    ((net(x)[1] - x) ** 2).mean().backward()
    print(f"| Adam step, {a.threads} thread(s), {sum(p.numel() for p in net.parameters()):,} parameters | ms |")
    print("| --- | ---: |")
    for name, kw in [("default (foreach)", {}), ("fused (kmeans_dist.deep.adam)", {"fused": True})]:
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, **kw)
        opt.step()
        t0 = time.perf_counter()
        for _ in range(steps):
            opt.step()
        print(f"| {name} | {(time.perf_counter() - t0) / steps * 1000:.1f} |")


if __name__ == "__main__":
    main()
