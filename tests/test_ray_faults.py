"""Node loss on a real multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head without CPUs and two
worker nodes of one CPU, so that the engine's two actors run on the worker nodes).  A worker node is
removed in the middle of a fit (from the estimator's per-iteration callback); the fit goes on with the
lost actor's blocks moved to the surviving actor (re-sent from the driver-owned object refs for a NumPy
input, re-read from the store for a Zarr path) and ends with the same centers as an uninterrupted
in-process fit.  Every Ray process listens on 127.0.0.1; the cluster is shut down at the end and the
local Ray of the other test modules starts again after it."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from kmeans_dist import KMeans  # noqa: E402

NODE = dict(node_ip_address="127.0.0.1", include_dashboard=False, object_store_memory=80 * 2**20)


@pytest.fixture
def cluster(monkeypatch):
    """A head (0 CPU) and two worker nodes (1 CPU each), all bound to 127.0.0.1; this process its driver."""
    from ray.cluster_utils import Cluster

    from kmeans_dist.chunked import ray_engine

    # a loopback node address stays loopback (see pipelines.ray_local): for this process and the nodes
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, **NODE))
    try:
        for _ in range(2):
            c.add_node(num_cpus=1, **NODE)
        c.wait_for_nodes()
        ray.init(address=c.address, _node_ip_address="127.0.0.1", log_to_driver=False)
        yield c
    finally:
        ray_engine.shutdown_pool()
        ray.shutdown()
        c.shutdown()


def _remover(cluster, at_iteration=2):
    """A KMeans callback that removes a worker node (not the driver's) at ``at_iteration``."""
    driver_node = ray.get_runtime_context().get_node_id()
    removed = []

    def cb(state):
        if state["iteration"] == at_iteration and not removed:
            node = next(n for n in cluster.worker_nodes if n.node_id != driver_node)
            cluster.remove_node(node)
            removed.append(node.node_id)

    return cb, removed


def test_fit_survives_the_loss_of_a_node(cluster, tmp_path, caplog):
    from pipelines.ray_local import listening_sockets, non_loopback

    from kmeans_dist.data import write_store
    from kmeans_dist.data.datasets import blobs

    X, _ = blobs(12_000, centers=6, n_features=5, random_state=3, as_numpy=True)
    url = write_store(str(tmp_path / "blobs.zarr"), X, chunk_rows=1_777)
    kw = dict(n_clusters=20, init="random", n_init=1, random_state=1, block_rows=1_000, max_iter=25, tol=0.0)
    ref = KMeans(**kw, engine="local").fit(X)
    assert ref.n_iter_ > 4  # the node goes at iteration 2: the fit has passes left
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(alive) == 3 and ray.cluster_resources()["CPU"] == 2
    assert non_loopback(listening_sockets()) == []

    for source, algorithm in ((X, "lloyd"), (url, "lloyd"), (X, "hamerly")):
        # NumPy: the moved blocks are fetched from the driver's object refs; Zarr: read from the store again;
        # Hamerly: the bounds kept in the lost actor are recomputed from their lineage
        cb, removed = _remover(cluster)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="kmeans_dist.chunked.ray_engine"):
            km = KMeans(**{**kw, "algorithm": algorithm}, engine="ray", callback=cb).fit(source)
        assert len(removed) == 1 and removed[0] not in {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert any("actor was lost" in r.getMessage() for r in caplog.records)
        local = ref if algorithm == "lloyd" else KMeans(**{**kw, "algorithm": algorithm}, engine="local").fit(X)
        np.testing.assert_array_equal(km.cluster_centers_, local.cluster_centers_)
        assert km.inertia_ == local.inertia_ and km.n_iter_ == local.n_iter_
        if not isinstance(source, str):
            np.testing.assert_array_equal(km.labels_, local.labels_)
        cluster.add_node(num_cpus=1, **NODE)  # back to two worker nodes for the next fit
        cluster.wait_for_nodes()


def test_local_ray_starts_again_after_the_cluster():
    """The multi-node cluster is gone: a local Ray (as the other modules' fixture starts it) comes up."""
    from pipelines.ray_local import init_local_ray

    assert not ray.is_initialized() and "RAY_ADDRESS" not in os.environ
    init_local_ray(num_cpus=1, object_store_memory=100 * 2**20, log_to_driver=False)
    try:
        assert len([n for n in ray.nodes() if n["Alive"]]) == 1
        km = KMeans(2, random_state=0, engine="ray").fit(np.arange(40.0).reshape(20, 2))
        assert km.cluster_centers_.shape == (2, 2)
    finally:
        ray.shutdown()
