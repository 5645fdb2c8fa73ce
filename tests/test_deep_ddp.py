"""The distributed hooks of the deep methods without Ray: 2 gloo processes under DDP, as the Ray stage runs
them.  After training, DCN's count-based center updates (all-reduced), DKM's jointly trained centroids
(all-reduced gradients) and CT's per-epoch k-means re-initialisation (broadcast) must leave identical
centroids on both ranks."""
from __future__ import annotations

import os
import socket

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, X_np, out_dir):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from kmeans_dist.deep import Autoencoder, BatchLoader, finetune_epoch, make_method, start_finetune

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        X = torch.from_numpy(X_np)
        for name in ("DCN", "DKM", "CT"):
            torch.manual_seed(0)
            net = Autoencoder(784, 10, hidden=(64, 64, 128))
            model = DDP(net)
            method = make_method(name, 10, seed=0, n_init=2)
            method.allreduce = lambda t: dist.all_reduce(t)
            method.broadcast = lambda t: dist.broadcast(t, 0)
            start_finetune(model, X, method)
            dist.broadcast(method.centroids.data, 0)
            opt = torch.optim.Adam(list(model.parameters()) + method.parameters(), lr=1e-3)
            loader = BatchLoader(X, 64, seed=0, rank=rank, world_size=world)
            for ep in (1, 2):  # the epoch function of both runners
                finetune_epoch(model, opt, loader, method, X, ep)
            np.save(os.path.join(out_dir, f"{name}_{rank}.npy"), method.centroids.detach().numpy())
            np.save(os.path.join(out_dir, f"{name}_w{rank}.npy"), net.encoder[0].weight.detach().numpy())
    finally:
        dist.destroy_process_group()


def test_ddp_hooks_keep_centroids_identical(mnist_dir, tmp_path):
    import torch.multiprocessing as mp

    from kmeans_dist.data import load_mnist

    X, _ = load_mnist(mnist_dir, limit=512, scale=1 / 255)
    mp.spawn(_worker, args=(2, _free_port(), X, str(tmp_path)), nprocs=2, join=True)
    for name in ("DCN", "DKM", "CT"):
        c0, c1 = (np.load(tmp_path / f"{name}_{r}.npy") for r in (0, 1))
        np.testing.assert_array_equal(c0, c1)
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}_w0.npy"), np.load(tmp_path / f"{name}_w1.npy"))
