"""Shared fixtures: a real Dask LocalCluster with worker processes, MNIST path, temp stores."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_HOME", str(Path(__file__).resolve().parent.parent / ".prefect"))

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def dask_client():
    """A LocalCluster with 2 worker processes (1 thread each), bound to 127.0.0.1, ephemeral ports."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="3GiB",
                           host="127.0.0.1", dashboard_address="127.0.0.1:0", scheduler_port=0)
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="session")
def mnist_dir():
    from kmeans_dist.data import find_mnist_dir

    d = find_mnist_dir()
    if d is None:
        pytest.skip("MNIST not available (set MNIST_DIR)")
    return d


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# --- flows work: one Prefect test server for the whole session ----------------------------------

@pytest.fixture(scope="session")
def prefect_harness():
    """One session-scoped ``prefect_test_harness``; yields its API URL (for subprocesses)."""
    os.environ.setdefault("PREFECT_HOME", str(REPO / ".prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture
def threaded_unless_cluster(request):
    """Tests that do not ask for the 2-process cluster run on the threaded scheduler (the session
    cluster would otherwise become every later test's default scheduler)."""
    import dask

    if "dask_client" in request.fixturenames:
        yield
    else:
        with dask.config.set(scheduler="threads"):
            yield


@pytest.fixture(scope="module")
def local_ray():
    """A starter of one local Ray per test module, every process bound to 127.0.0.1 (``yield from`` it)."""
    def start(object_store_mb: int = 512, extra_env=None):
        ray = pytest.importorskip("ray")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        for key, value in (extra_env or {}).items():
            os.environ.setdefault(key, value)
        if ray.is_initialized():
            ray.shutdown()
        from pipelines.ray_local import init_local_ray

        init_local_ray(num_cpus=2, object_store_memory=object_store_mb * 2**20, log_to_driver=False)
        yield
        ray.shutdown()

    return start


@pytest.fixture(scope="module")
def ray_local(local_ray):
    """A local Ray for the module's tests (2 CPUs, 512 MiB of object store), bound to 127.0.0.1."""
    yield from local_ray()

