"""The flow against an external Dask cluster: ``dask scheduler`` and two ``dask worker`` processes on
127.0.0.1 (free ports), started here and stopped by their PIDs.  The worker running the Lloyd task is
SIGKILLed mid-fit (its nanny restarts it): the flow still finishes, with the centers of a run without
the fault."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines import stages

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(procs):
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 20
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


@pytest.fixture(scope="module")
def external_dask(tmp_path_factory):
    """``dask scheduler`` + 2 ``dask worker`` processes (1 thread each); yields the scheduler address."""
    from distributed import Client

    tmp = tmp_path_factory.mktemp("dask-cluster")
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "DASK_LOGGING__DISTRIBUTED": "warning"}
    procs = []

    def start(args, name):
        log = open(tmp / f"{name}.log", "wb")
        procs.append(subprocess.Popen([sys.executable, "-m", "dask", *args], cwd=REPO, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))

    try:
        start(["scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", "127.0.0.1:0"],
              "scheduler")
        for i in range(2):
            start(["worker", addr, "--nworkers", "1", "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard",
                   "--memory-limit", "2GiB", "--local-directory", str(tmp / f"w{i}"), "--name", f"w{i}"], f"worker{i}")
        with Client(addr, timeout=90) as c:
            c.wait_for_workers(2, timeout=120)
        yield addr
    finally:
        _stop(procs)


def _uniform_store(path, n=20000, d=16):
    from kmeans_dist.data import write_store

    X = np.random.default_rng(3).uniform(size=(n, d))
    write_store(str(path), X, chunk_rows=5000, overwrite=True)
    return str(path)


def test_worker_killed_mid_fit(prefect_harness, external_dask, tmp_path):
    from distributed import Client

    from flows.clustering import clustering_flow

    src = _uniform_store(tmp_path / "u.zarr")
    out = tmp_path / "run"
    args = dict(source=src, k=32, init="random", max_iter=60, tol=0.0, output_dir=str(out),
                dask_address=external_dask, silhouette_sample=0)
    from flows.params import ClusteringParams, default_output_dir, validate_params

    out = Path(default_output_dir("clustering", validate_params(ClusteringParams, args, "clustering_flow")))
    box = {}
    th = threading.Thread(target=lambda: box.setdefault("state", clustering_flow(**args, return_state=True)))
    th.start()
    fdir = out / "fits" / "fit-0"
    killed = None
    with Client(external_dask, timeout=30) as c:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and th.is_alive():
            ck = stages.read_checkpoint(fdir)
            if ck is not None and ck["iteration"] >= 3:
                # the worker process running the Prefect fit task (it wrote the checkpoint): the hardest
                # case, the task itself is lost with the worker's data and Dask re-runs it elsewhere
                assert ck["pid"] in c.run(os.getpid).values()
                os.kill(ck["pid"], signal.SIGKILL)
                killed = {"iteration": ck["iteration"], "pid": ck["pid"]}
                break
            time.sleep(0.05)
    th.join(timeout=300)
    assert killed is not None, "the fit ended before a worker could be killed"
    st = box["state"]
    assert st.is_completed(), st.message
    res = st.result()
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    assert Path(res["report"]).exists() and Path(res["plots"]["inertia"]).exists()
    meta = json.loads(str(np.load(out / "fits" / "fit-0" / "fit.npz")["meta"]))
    # Dask re-ran the Prefect task on a live worker, which resumed from the last checkpoint
    assert meta["resumed_from"] >= killed["iteration"], (killed, meta["resumed_from"])
    store = stages.ingest(src, tmp_path / "ref")
    ref = stages.fit_lloyd(store, {"path": str(out / "seeds" / "seed-0.npy")}, tmp_path / "ref", max_iter=60, tol=0.0)
    assert res["n_iter"] == ref["n_iter"]
    np.testing.assert_allclose(stages.load_centers({"path": res["centers"]}), stages.load_centers(ref),
                               rtol=1e-12, atol=0)
