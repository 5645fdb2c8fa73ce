"""The Ray stage of deep k-means through its Prefect flow: Ray Train ``TorchTrainer`` with 2 workers on a
2,000-image MNIST Zarr store, CT for 2 + 2 epochs, one injected worker failure resumed from the last
checkpoint, identical centroids on both workers, and the figures written.  Uses the session
``prefect_harness`` of conftest.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
ray = pytest.importorskip("ray")
pytest.importorskip("prefect")

N_IMAGES = 2000


@pytest.fixture(scope="module")
def ray_local(local_ray):
    yield from local_ray(extra_env={"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "180"})


@pytest.fixture(scope="module")
def mnist_store(mnist_dir, tmp_path_factory):
    from kmeans_dist.data import ingest_mnist

    url = tmp_path_factory.mktemp("deep-store") / "mnist2k.zarr"
    ingest_mnist(mnist_dir, url, limit=N_IMAGES, chunk_rows=500, scale=1 / 255)
    return str(url)


def test_load_store_tensor_by_chunks(mnist_store):
    from kmeans_dist.data import load_mnist
    from pipelines.deep import load_store_tensor

    X, y = load_store_tensor(mnist_store)
    Xr, yr = load_mnist(limit=N_IMAGES, scale=1 / 255)
    assert X.shape == (N_IMAGES, 784) and str(X.dtype) == "torch.float32"
    np.testing.assert_array_equal(X.numpy(), Xr)
    np.testing.assert_array_equal(y, yr)


@pytest.mark.parametrize("raw, scale", [(True, "auto"), (False, "auto"), (False, None), (False, 2.0)])
def test_predict_store_streams_the_chunks_as_the_whole_tensor(mnist_dir, mnist_store, tmp_path, raw, scale):
    """The driver's final labels and memberships, read a stored chunk at a time (uneven chunks), equal those of
    the whole store loaded and scaled as the workers scale it."""
    import torch

    from kmeans_dist.data import ingest_mnist
    from kmeans_dist.deep import Autoencoder, embed, make_method, max_membership
    from pipelines.deep import load_store_tensor, predict_store, store_max

    url = mnist_store
    if raw:
        url = str(tmp_path / "raw.zarr")
        ingest_mnist(mnist_dir, url, limit=700, chunk_rows=300)
        assert store_max(url) > 1.0
    torch.manual_seed(0)
    net = Autoencoder(784, 5, hidden=(32,))
    X, _ = load_store_tensor(url, scale)
    Z = embed(net, X)
    method = make_method("CT", 5, n_init=2, seed=0)
    method.initialize(Z)
    labels, memb = predict_store(net, method, url, scale)
    np.testing.assert_array_equal(labels, method.predict(Z).numpy())
    np.testing.assert_allclose(memb, max_membership(Z, method.centroids, method.membership()), rtol=1e-6)
    assert labels.shape == (X.shape[0],) and labels.dtype == np.int64


@pytest.mark.slow
def test_flow_runs_ray_train_with_resume(ray_local, prefect_harness, mnist_store, tmp_path, monkeypatch):
    """One injected worker failure at finetuning epoch 2 (raised once by the epoch callback, before that
    epoch's checkpoint is reported), the worker group resumed from the last checkpoint, and the history has the
    epoch numbering and record keys of the single-process runner."""
    import functools

    import torch

    import pipelines.deep
    from flows.deep import deep_clustering_flow
    from kmeans_dist.deep import Autoencoder, fit_method, make_method, pretrain
    from pipelines.deep import load_store_tensor

    marker = tmp_path / "failed-once"

    def fail_once(rec):  # runs on the Ray workers (pickled by value with the config)
        if (rec["phase"], rec["epoch"]) == ("finetune", 2) and not marker.exists():
            marker.touch()
            raise RuntimeError("injected failure (testing resume)")

    monkeypatch.setattr(pipelines.deep, "run_deep_stage",
                        functools.partial(pipelines.deep.run_deep_stage, on_epoch_end=fail_once))
    out = tmp_path / "run"
    summary = deep_clustering_flow(source=mnist_store, output_dir=str(out), method="CT", pretrain_epochs=2,
                                   finetune_epochs=2, num_workers=2, use_gpu=False, seed=0, max_failures=1,
                                   run_name="deep-test-ct", ae_init="glorot", pretrain_min_steps=0,
                                   finetune_min_steps=0)
    assert marker.exists()
    hist = json.loads((out / "history.json").read_text())
    steps = [("pretrain", 1), ("pretrain", 2), ("init", 0), ("finetune", 1), ("finetune", 2)]
    assert [(h["phase"], h["epoch"]) for h in hist] == steps
    # resumed from the last checkpoint the Ray Train controller had registered: finetuning epoch 1's, or the
    # initial k-means's when a rank failed before the controller polled epoch 1's report (a loaded machine)
    assert hist[-1]["resumed_from"] in ("finetune 1", "init 0")
    assert all("resumed_from" not in h for h in hist[:3])
    assert (summary["phase"], summary["epoch"]) == ("finetune", 2)
    assert summary["num_workers"] == 2 and summary["use_gpu"] is False and summary["model"]["init"] == "glorot"
    for key in ("rec_loss", "clu_loss", "acc", "nmi", "ari", "kmeans_inertia"):
        assert np.isfinite(summary["metrics"][key])
    for h in hist[3:]:
        assert h["centroid_divergence"] == 0.0  # the re-initialised centroids are identical on both workers
        assert h["kmeans_inertia"] > 0  # CT re-initialises after every epoch
    assert 0.0 <= summary["final_scores"]["acc"] <= 1.0
    assert np.load(out / "labels.npy").shape == (N_IMAGES,)
    for name in ("losses", "membership", "embeddings", "confusion"):
        assert Path(summary["figures"][name]).stat().st_size > 1000
    assert Path(summary["storage_path"]).is_dir()

    # the single-process runner on the same data: the same steps, numbered the same, with the same record keys
    X, y = load_store_tensor(mnist_store)
    torch.manual_seed(0)
    model = Autoencoder(784, 10, init="glorot")
    local = pretrain(model, X, epochs=2, seed=0)
    local += fit_method(model, X, make_method("CT", 10, seed=0), y=y, epochs=2, seed=0)["history"]
    assert [(h["phase"], h["epoch"]) for h in local] == steps
    ray_only = {"centroid_divergence", "resumed_from"}
    for mine, theirs in zip(local, hist):
        assert set(mine) == set(theirs) - ray_only


# --- the distributed stage: shards, the global batch, the budget rule --------------------------------------

N_SMALL = 512


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """512 x 20 float32 blobs (4 clusters) in 6 chunks of 100 rows (the last one short)."""
    from kmeans_dist.data import write_store

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, N_SMALL)
    X = (3 * rng.normal(size=(4, 20))[y] + rng.normal(size=(N_SMALL, 20))).astype(np.float32)
    url = tmp_path_factory.mktemp("small-store") / "blobs.zarr"
    write_store(url, X, labels=y, chunk_rows=100)
    return str(url), X, y


def test_read_shard_reads_only_its_chunks(small_store):
    from pipelines.deep import read_shard, shard_bounds

    url, X, _ = small_store
    parts = [read_shard(url, r, 2) for r in range(2)]
    assert [p[1] for p in parts] == [0, 256] and [p[2] for p in parts] == [N_SMALL, N_SMALL]
    assert [p[3] for p in parts] == [(0, 3), (2, 6)]  # rows 0-255: chunks 0-2; rows 256-511: chunks 2-5
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), X)


def test_budget_rule_gives_small_stores_the_papers_steps():
    from kmeans_dist.deep import PAPER_FINETUNE_STEPS, PAPER_PRETRAIN_STEPS
    from pipelines.deep import resolve_budget

    assert (PAPER_PRETRAIN_STEPS, PAPER_FINETUNE_STEPS) == (13_700, 27_400)
    for n in (2_000, 5_000, 70_000, 2_000_000):
        steps = -(-n // 256)
        P, F = resolve_budget(n, 256, 50, 100, PAPER_PRETRAIN_STEPS, PAPER_FINETUNE_STEPS)
        assert P >= 50 and F >= 100
        assert P * steps >= PAPER_PRETRAIN_STEPS and F * steps >= PAPER_FINETUNE_STEPS
        assert (P - 1) * steps < PAPER_PRETRAIN_STEPS or P == 50
    assert resolve_budget(2_000, 256, 50, 100, PAPER_PRETRAIN_STEPS, PAPER_FINETUNE_STEPS) == (1713, 3425)
    assert resolve_budget(70_000, 256, 50, 100, PAPER_PRETRAIN_STEPS, PAPER_FINETUNE_STEPS) == (50, 100)
    assert resolve_budget(2_000, 256, 3, 0, 0, 0) == (3, 0)


def test_shards_are_whole_blocks_of_the_latent_kmeans():
    from kmeans_dist.deep import latent_block_rows
    from pipelines.deep import shard_bounds

    assert [shard_bounds(10, r, 3) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]  # gathered: any rows
    for n, world, rows in [(512, 2, 64), (70_000, 2, None), (70_000, 3, None), (2_000_000, 7, None), (100, 3, 64)]:
        b = [shard_bounds(n, r, world, rows or latent_block_rows(n)) for r in range(world)]
        assert b[0][0] == 0 and b[-1][1] == n and all(x[1] == y[0] for x, y in zip(b, b[1:]))
        assert all(lo % (rows or latent_block_rows(n)) == 0 for lo, _ in b)
    assert [shard_bounds(70_000, r, 2, 4096) for r in range(2)] == [(0, 36_864), (36_864, 70_000)]
    assert [shard_bounds(100, r, 3, 64) for r in range(3)] == [(0, 0), (0, 64), (64, 100)]  # 2 blocks of 64 rows


def test_one_epoch_on_two_workers_equals_one_process(ray_local, small_store, tmp_path):
    """The global batch: one pretraining and one CT finetuning epoch (batch 64 = 8 steps an epoch) through the
    Ray stage on 2 workers, each reading only its shard, give the network and centroids of the single-process
    library run (:func:`pretrain` + :func:`fit_method`, the protocol of 1 worker) up to floating-point
    reduction order.  (Adam divides by the gradients' scale, so rounding differences in near-zero gradients grow:
    after these 16 steps, about 1e-5 relative on an Intel Xeon and up to 2.8e-4, in a decoder bias, on an AMD
    EPYC of the Zen 5 generation; one process run with 2 threads instead of 1 already differs by 7e-4 after the
    8 pretraining steps.)"""
    import torch

    from kmeans_dist.deep import Autoencoder, fit_method, make_method, pretrain
    from pipelines.deep import STATE_FILE, run_deep_stage

    url, X, y = small_store
    s2 = run_deep_stage(url, tmp_path / "w2", method="CT", n_clusters=4, pretrain_epochs=1, finetune_epochs=1,
                        batch_size=64, seed=0, num_workers=2, use_gpu=False, method_kwargs={"n_init": 2},
                        scale=None, make_plots=False, ae_init="glorot", pretrain_min_steps=0,
                        finetune_min_steps=0, max_failures=0, gather_below_bytes=0, latent_block_rows=64)
    assert s2["latent_kmeans"] == "sharded"  # the k-means ran on the workers' own embeddings, blocks of 64 rows
    st2 = torch.load(Path(s2["checkpoint"]) / STATE_FILE, map_location="cpu", weights_only=False)
    assert (s2["pretrain_epochs"], s2["finetune_epochs"]) == (1, 1)
    assert [h["n_samples"] for h in st2["history"] if "n_samples" in h] == [N_SMALL, N_SMALL]
    assert [sh["rows"] for sh in s2["shards"]] == [[0, 256], [256, N_SMALL]]
    assert [sh["chunks"] for sh in s2["shards"]] == [[0, 3], [2, 6]]
    assert all(h["centroid_divergence"] == 0.0 for h in st2["history"][1:])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the stage's workers: the thread count alone changes the reduction order
    try:
        torch.manual_seed(0)
        net = Autoencoder(20, 4, init="glorot")
        Xt = torch.from_numpy(X)
        h1 = pretrain(net, Xt, epochs=1, batch_size=64, seed=0)
        method = make_method("CT", 4, seed=0, n_init=2)
        method.block_rows = 64  # the stage's blocks of the per-epoch k-means
        h1 += fit_method(net, Xt, method, y=y, epochs=1, batch_size=64, seed=0)["history"]
    finally:
        torch.set_num_threads(threads)
    rel = {key: float((a - st2["model"][key]).norm() / a.norm().clamp_min(1e-12)) for key, a in net.state_dict().items()}
    assert max(rel.values()) < 1e-3, rel
    h2 = st2["history"]
    assert [(h["phase"], h["epoch"]) for h in h1] == [(h["phase"], h["epoch"]) for h in h2]
    for a, b in zip(h1, h2):
        if "rec_loss" in a:
            assert a["rec_loss"] == pytest.approx(b["rec_loss"], rel=1e-4)
            assert a["n_samples"] == b["n_samples"] == N_SMALL
    np.testing.assert_allclose(method.centroids.numpy(), st2["method"]["centroids"].numpy(), rtol=1e-3, atol=1e-4)
    assert h1[-1]["acc"] == pytest.approx(h2[-1]["acc"])


def test_shard_loader_splits_the_global_batches_and_scales_the_shares():
    import torch

    from kmeans_dist.deep import Autoencoder, BatchLoader, ShardLoader, make_method, train_epoch

    X = torch.arange(1000, dtype=torch.float32)[:, None]
    bounds = [(0, 333), (333, 666), (666, 1000)]
    shards = [ShardLoader(X[lo:hi], 1000, lo, 128, seed=3, world_size=3) for lo, hi in bounds]
    one = list(BatchLoader(X, 128, seed=3))
    parts = [list(s) for s in shards]
    assert [len(p) for p in parts] == [8, 8, 8] == [len(one)] * 3
    for j, batch in enumerate(one):  # batch j is split among the shards, and the scales average to 1
        got = torch.cat([parts[r][j][0] for r in range(3)])
        assert sorted(got[:, 0].tolist()) == sorted(batch[:, 0].tolist())
        assert sum(parts[r][j][1] for r in range(3)) == pytest.approx(3.0)
    assert [b for b, _ in ShardLoader(X[:500], 1000, 0, 1000, shuffle=False, world_size=2)][0].shape == (500, 1)

    # an empty share still takes a (zero-gradient) step and DKM's centroid gradient still gets all-reduced
    net = Autoencoder(4, 2, hidden=(3,))
    dkm = make_method("DKM", 2, n_init=1)
    dkm.initialize(torch.rand(10, 2))
    calls = []
    dkm.allreduce = lambda t: calls.append(t.shape)
    opt = torch.optim.Adam(list(net.parameters()) + dkm.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in net.parameters()]
    m = train_epoch(net, opt, [(torch.zeros(0, 4), 0.0)], dkm)
    assert m["n_samples"] == 1 and calls == [torch.Size([2, 2])]  # n_samples floors at 1 (no rows seen)
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, net.parameters()))
