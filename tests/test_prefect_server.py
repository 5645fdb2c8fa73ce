"""A real ``prefect server`` on 127.0.0.1 (free port), a process work pool, the deployments of
``prefect.yaml`` and a worker: trigger a deployment run and wait for Completed.  Every process
started here is stopped by its PID (its process group)."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PREFECT = str(Path(sys.executable).parent / "prefect")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


def _stop(proc: subprocess.Popen, grace: float = 15.0):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """``prefect server start`` in its own PREFECT_HOME; yields the environment that points to it."""
    tmp = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(tmp / "home"), "PREFECT_API_URL": api,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "2",
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120", "KMEANS_DIST_ROOT": str(REPO),
                "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg", "DASK_LOGGING__DISTRIBUTED": "warning"})
    log = open(tmp / "server.log", "wb")
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                _get(f"{api}/health")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("prefect server did not start:\n" + (tmp / "server.log").read_text()[-3000:])
                time.sleep(0.5)
        yield {"env": env, "api": api, "tmp": tmp}
    finally:
        _stop(server)
        log.close()


def test_deployment_run_completes_on_a_process_worker(prefect_server, tmp_path):
    env, api = prefect_server["env"], prefect_server["api"]

    def cli(*args, **kw):
        r = subprocess.run([PREFECT, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=180, **kw)
        assert r.returncode == 0, f"prefect {' '.join(args)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        return r.stdout

    cli("work-pool", "create", "kmeans-process", "--type", "process")
    cli("--no-prompt", "deploy", "--all")  # the deployments of prefect.yaml
    dep = _get(f"{api}/deployments/name/clustering_flow/clustering-nightly")
    assert [s["schedule"].get("cron") for s in dep["schedules"]] == ["0 3 * * *"]
    assert dep["work_pool_name"] == "kmeans-process"
    _get(f"{api}/deployments/name/choose_k_flow/choose-k")

    wlog = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", "kmeans-process", "--limit", "1"], env=env,
                              cwd=REPO, stdout=wlog, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out_dir = tmp_path / "run"
        params = {"k": 3, "n_workers": 1, "max_iter": 20, "silhouette_sample": 200, "output_dir": str(out_dir)}
        out = cli("deployment", "run", "clustering_flow/clustering-nightly",
                  *[a for k, v in params.items() for a in ("-p", f"{k}={json.dumps(v)}")])
        run_id = re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", out).group(0)
        deadline = time.monotonic() + 300
        state = None
        while time.monotonic() < deadline:
            state = _get(f"{api}/flow_runs/{run_id}")["state"]
            if state and state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            time.sleep(1)
        assert state is not None and state["type"] == "COMPLETED", \
            f"{state}\n{(tmp_path / 'worker.log').read_text()[-4000:]}"
        (run_dir,) = [d for d in out_dir.iterdir() if not d.name.startswith(".")]  # the run's own folder
        assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
        assert (run_dir / "report.md").exists()
    finally:
        _stop(worker)
        wlog.close()


def test_serve_module_defines_both_deployments():
    from flows.serve import runner_deployments

    deps = {d.name: d for d in runner_deployments()}
    assert set(deps) == {"clustering-nightly", "choose-k"}
    assert deps["clustering-nightly"].schedules and not deps["choose-k"].schedules
