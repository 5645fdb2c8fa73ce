"""Every server the project starts listens on the loopback interface only.

The listening TCP sockets of this process and all its descendants are sampled while a local Ray instance
(:func:`pipelines.ray_local.init_local_ray`) starts and runs a task, an actor and a ``torch.distributed``
process group (its rendezvous store opened by :func:`pipelines.ray_local.open_loopback_store`), while a Ray
Train ``TorchTrainer`` runs (slow), and while the flows' Dask ``LocalCluster`` runs a computation; any bind to
``0.0.0.0``, ``::`` or a non-loopback address fails the test.  (tests/test_flows.py checks a whole flow run
for wildcard binds.)
"""
from __future__ import annotations

import threading
import time

import pytest

from pipelines.ray_local import ListeningSocket, is_loopback, listening_sockets, non_loopback

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")


class SocketSampler:
    """Samples the listening sockets of this process tree every 0.2 s until stopped."""

    def __init__(self):
        self.seen: set[ListeningSocket] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.seen.update(listening_sockets())
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.seen.update(listening_sockets())


@pytest.fixture(scope="module")
def local_ray():
    from pipelines.ray_local import init_local_ray

    if ray.is_initialized():
        ray.shutdown()
    with SocketSampler() as sampler:
        init_local_ray(num_cpus=2, object_store_memory=256 * 2**20, log_to_driver=False)
        yield sampler
    ray.shutdown()


@pytest.mark.parametrize("address, expected", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("::ffff:127.0.0.1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("192.0.2.2", False), ("::ffff:10.0.0.1", False),
    ("fe80::1%eth0", False),
])
def test_is_loopback(address, expected):
    assert is_loopback(address) is expected


def test_listening_sockets_sees_a_wildcard_bind():
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        s.listen(1)
        port = s.getsockname()[1]
        mine = [x for x in listening_sockets() if x.port == port]
    assert mine == [ListeningSocket(psutil.Process().pid, psutil.Process().name(), "0.0.0.0", port)]
    assert non_loopback(mine) == mine


def test_local_ray_task_actor_and_process_group_bind_only_loopback(local_ray):
    """GCS server, raylet, dashboard agent, runtime-env agent, core workers, metrics exporter and a Gloo
    process group with its TCPStore: all on 127.0.0.1."""
    from pipelines.ray_local import join_loopback_group, open_loopback_store, ray_is_loopback

    assert ray_is_loopback()

    @ray.remote
    def square(x):
        return x * x

    @ray.remote(num_cpus=1)
    class Member:
        def open_store(self, world_size):
            return open_loopback_store(world_size, timeout_s=60)

        def all_reduce(self, rank, world_size, port):
            import torch
            import torch.distributed as dist

            join_loopback_group("gloo", rank, world_size, port, timeout_s=60)
            t = torch.tensor([float(rank + 1)])
            dist.all_reduce(t)
            dist.destroy_process_group()
            return float(t)

    assert ray.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]
    members = [Member.remote() for _ in range(2)]
    port = ray.get(members[0].open_store.remote(2))
    assert ray.get([m.all_reduce.remote(r, 2, port) for r, m in enumerate(members)]) == [3.0, 3.0]
    time.sleep(1.0)  # let late starters (metrics exporter, agents) show up in the samples
    local_ray.seen.update(listening_sockets())
    names = {s.name for s in local_ray.seen}
    assert {"gcs_server", "raylet"} <= names, local_ray.seen
    assert any(s.port == port for s in local_ray.seen), "the rendezvous store was never seen listening"
    assert len(local_ray.seen) >= 6
    assert non_loopback(local_ray.seen) == []
    for m in members:
        ray.kill(m)


@pytest.mark.slow
def test_ray_train_run_binds_only_loopback(local_ray, tmp_path):
    """A 2-worker ``TorchTrainer`` with :func:`pipelines.ray_local.loopback_torch_config` (the deep stage's
    setup): controller, workers, their Gloo pairs and the rendezvous store all listen on 127.0.0.1."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipelines.ray_local import loopback_torch_config

    out = tmp_path / "allreduce"

    def loop(config):
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(dist.get_rank() + 1)])
        dist.all_reduce(t)
        if dist.get_rank() == 0:
            (config["out"]).write_text(str(float(t)))

    with SocketSampler() as sampler:
        TorchTrainer(loop, train_loop_config={"out": out},
                     scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 1}),
                     torch_config=loopback_torch_config(),
                     run_config=RunConfig(storage_path=str(tmp_path / "ray_results"))).fit()
    assert out.read_text() == "3.0"
    assert len(sampler.seen) >= 6
    assert non_loopback(sampler.seen) == []


def test_flow_dask_cluster_binds_only_loopback():
    """The LocalCluster of the flows' task runner (scheduler, dashboard, nanny, worker) on 127.0.0.1."""
    pytest.importorskip("prefect_dask")
    from distributed import Client, LocalCluster

    from flows.clustering import make_task_runner

    kwargs = dict(make_task_runner(None, n_workers=1).cluster_kwargs)
    with SocketSampler() as sampler:
        with LocalCluster(**kwargs) as cluster, Client(cluster) as client:
            assert client.submit(sum, [1, 2]).result() == 3
            sampler.seen.update(listening_sockets())
    assert len(sampler.seen) >= 4, sampler.seen  # scheduler, dashboard, nanny, worker
    assert non_loopback(sampler.seen) == []
