"""The distributed hooks of the deep methods without Ray: gloo processes under DDP, as the Ray stage runs
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


ROWS = 250  # rows per block of the k-means: 3,001 rows in 13 blocks


def _shard_worker(rank, world, port, Z_np, out_dir):
    import torch.distributed as dist

    from kmeans_dist.deep import Shard, make_method, reinit_centroids

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        n = Z_np.shape[0]
        lo, hi = Shard.bounds(n, rank, world, ROWS)
        shard = Shard(lo, hi - lo, n, ROWS)
        Z = torch.from_numpy(Z_np[lo:hi].copy())  # this worker holds only its rows
        c, labels, inertia = reinit_centroids(Z, 6, n_init=3, random_state=11, shard=shard)
        np.save(os.path.join(out_dir, f"c{rank}.npy"), c.numpy())
        np.save(os.path.join(out_dir, f"l{rank}.npy"), labels.numpy())
        np.save(os.path.join(out_dir, f"i{rank}.npy"), np.array([inertia]))
        dcn = make_method("DCN", 6, seed=3, n_init=2)  # its initial counts are those of the whole data set
        dcn.allreduce, dcn.shard = (lambda t: dist.all_reduce(t)), shard
        dcn.initialize(Z)
        np.save(os.path.join(out_dir, f"dcn{rank}.npy"), dcn.counts.numpy())
        np.save(os.path.join(out_dir, f"dcnc{rank}.npy"), dcn.centroids.numpy())
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
def test_kmeans_on_sharded_embeddings_equals_one_process(world, tmp_path):
    """The per-epoch k-means of the Ray stage: every gloo process holds only its shard of the embeddings, the
    passes all-gather the blocks' partials (CollectiveBlocks), and every process gets the centers and inertia
    one process gets on all of them, bit for bit; the labels of each shard are its rows' labels."""
    import torch.multiprocessing as mp

    from kmeans_dist.deep import Shard, make_method, reinit_centroids

    rng = np.random.default_rng(5)
    n = 3001
    Z = (rng.normal(size=(n, 10)) + 5 * rng.normal(size=(6, 10))[rng.integers(0, 6, n)]).astype(np.float32)
    mp.spawn(_shard_worker, args=(world, _free_port(), Z, str(tmp_path)), nprocs=world, join=True)
    c, labels, inertia = reinit_centroids(torch.from_numpy(Z), 6, n_init=3, random_state=11, block_rows=ROWS)
    dcn = make_method("DCN", 6, seed=3, n_init=2)
    dcn.block_rows = ROWS
    dcn.initialize(torch.from_numpy(Z))
    got = []
    for r in range(world):
        lo, hi = Shard.bounds(n, r, world, ROWS)
        got.append((lo, hi))
        np.testing.assert_array_equal(np.load(tmp_path / f"c{r}.npy"), c.numpy())
        np.testing.assert_array_equal(np.load(tmp_path / f"l{r}.npy"), labels.numpy()[lo:hi])
        assert float(np.load(tmp_path / f"i{r}.npy")[0]) == inertia
        np.testing.assert_array_equal(np.load(tmp_path / f"dcn{r}.npy"), dcn.counts.numpy())
        np.testing.assert_array_equal(np.load(tmp_path / f"dcnc{r}.npy"), dcn.centroids.numpy())
    assert got[0][0] == 0 and got[-1][1] == n and all(a[1] == b[0] for a, b in zip(got, got[1:]))
    assert all(lo % ROWS == 0 and hi > lo for lo, hi in got)  # whole blocks, none empty
