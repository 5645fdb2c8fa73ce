"""The Ray stage of deep k-means through its Prefect flow: Ray Train ``TorchTrainer`` with 2 workers on a
2,000-image MNIST Zarr store, CT for 2 + 2 epochs, one injected worker failure resumed from the last
checkpoint, identical centroids on both workers, and the figures written.  Uses the session
``prefect_harness`` of conftest.py."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
ray = pytest.importorskip("ray")
pytest.importorskip("prefect")

N_IMAGES = 2000


@pytest.fixture(scope="module")
def ray_local():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "180")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=512 * 2**20,
             log_to_driver=False)
    yield
    ray.shutdown()


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
                                   run_name="deep-test-ct", ae_init="glorot")
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
