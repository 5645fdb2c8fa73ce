"""Prefect flows on Dask: parameters, caching, checkpoints, artifacts, failures, SIGKILL and resume.

Flow runs use one session-scoped ``prefect_test_harness``; the SIGKILL test runs the flow in a real
subprocess (its own process group, killed by PID) against the harness's API.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flows.params import ChooseKParams, ClusteringParams, ParameterError, check_dask_address, validate_params
from pipelines import stages

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _blobs_store(path, n=3000, d=8, k=5, seed=0, chunk_rows=1000):
    from kmeans_dist.data import write_store

    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=6.0, size=(k, d))
    y = rng.integers(0, k, size=n)
    X = centers[y] + rng.normal(size=(n, d))
    write_store(str(path), X, labels=y, chunk_rows=chunk_rows, overwrite=True)
    return str(path)


# ------------------------------------------------------------------------------------------------
# no Prefect server needed
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, needle", [
    ({"k": 0}, "k: Input should be greater than or equal to 1"),
    ({"init": "kmeans"}, "init"),
    ({"algorithm": "kmeans-magic"}, "algorithm"),
    ({"dask_address": "localhost"}, "dask_address 'tcp://localhost' is not of the form tcp://HOST:PORT"),
    ({"n_workers": 0}, "n_workers"),
    ({"tol": -1.0}, "tol"),
    ({"bogus": 1}, "unknown parameter 'bogus'"),
])
def test_params_reject_bad_values_with_a_clear_message(bad, needle):
    with pytest.raises(ParameterError) as ei:
        validate_params(ClusteringParams, {"source": "sklearn-digits", **bad}, "clustering_flow")
    msg = str(ei.value)
    assert msg.startswith("Invalid parameters for clustering_flow; fix these and run again")
    assert needle in msg


def test_choose_k_params_range():
    assert ChooseKParams(k_min=2, k_max=5).k_values() == [2, 3, 4, 5]
    assert ChooseKParams(ks=[4, 2, 4]).k_values() == [2, 4]
    with pytest.raises(ParameterError, match="k_max .* smaller than k_min"):
        validate_params(ChooseKParams, {"k_min": 5, "k_max": 2}, "choose_k_flow")


def test_flow_clis_have_a_flag_per_parameter():
    from flows.params import cli_parser

    ap = cli_parser(ClusteringParams, "python -m flows.clustering")
    args = vars(ap.parse_args(["--k", "5", "--algorithm", "hamerly", "--standardize", "--source", "mnist"]))
    assert set(args) == set(ClusteringParams.model_fields)
    # strings until the flow validates them: the CLI gives the same messages as the UI form
    p = validate_params(ClusteringParams, args, "clustering_flow")
    assert (p.k, p.algorithm, p.standardize, p.source) == (5, "hamerly", True, "mnist")
    assert vars(ap.parse_args([]))["standardize"] is False
    ks = vars(cli_parser(ChooseKParams, "python -m flows.choose_k").parse_args(["--ks", "3", "5", "8"]))
    assert ks["ks"] == [3, 5, 8] and validate_params(ChooseKParams, ks, "choose_k_flow").ks == [3, 5, 8]
    with pytest.raises(ParameterError, match="k"):
        validate_params(ClusteringParams, vars(ap.parse_args(["--k", "0"])), "clustering_flow")


def test_unreachable_dask_address_is_reported():
    with pytest.raises(ParameterError, match="Cannot reach the Dask scheduler at tcp://127.0.0.1:"):
        check_dask_address(f"tcp://127.0.0.1:{_free_port()}", timeout=2)


def test_fingerprint_tracks_store_content(tmp_path):
    url = _blobs_store(tmp_path / "a.zarr")
    f1 = stages.fingerprint(url)
    assert stages.fingerprint({"url": url}) == f1
    k1 = stages.stage_key("seed", {"store": {"url": url}}, {"k": 3})
    assert stages.stage_key("seed", {"store": {"url": url}}, {"k": 3}) == k1
    assert stages.stage_key("seed", {"store": {"url": url}}, {"k": 4}) != k1
    time.sleep(0.01)
    _blobs_store(tmp_path / "a.zarr", seed=1)
    assert stages.fingerprint(url) != f1
    assert stages.stage_key("seed", {"store": {"url": url}}, {"k": 3}) != k1


def test_checkpoint_roundtrip_is_atomic(tmp_path):
    C = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    hist = [{"iteration": 1, "inertia": 2.5, "center_shift": 0.1}]
    stages.write_checkpoint(tmp_path, key="abc", centers=C, iteration=1, history=hist)
    ck = stages.read_checkpoint(tmp_path, "abc")
    assert ck["iteration"] == 1 and ck["history"] == hist
    np.testing.assert_array_equal(ck["centers"], C)
    assert stages.read_checkpoint(tmp_path, "other-key") is None
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.npz"]  # no temporary left behind


def test_stages_compose_on_references(tmp_path):
    url = _blobs_store(tmp_path / "blobs.zarr")
    out = tmp_path / "run"
    store = stages.ingest(url, out)
    assert store["url"] == url and not (out / "data").exists()  # a Zarr source is used in place
    s = stages.seed(store, out, k=5, init="k-means++", random_state=0)
    fit = stages.fit_lloyd(store, s, out, max_iter=50, tol=1e-4)
    m = stages.evaluate(store, fit, out, silhouette_sample=500)
    assert 0.5 < m["ari"] <= 1 and 0.5 < m["nmi"] <= 1 and sum(m["cluster_sizes"]) == 3000
    rep = stages.report(out, store=store, fit=fit, metrics=m, params={"init": "k-means++"}, timings={"fit": 1.0})
    assert Path(rep["report_path"]).exists() and Path(rep["plots"]["inertia"]).exists()
    # a finished fit is returned as is
    again = stages.fit_lloyd(store, s, out, max_iter=50, tol=1e-4)
    assert again["n_iter"] == fit["n_iter"] and again["path"] == fit["path"]
    # the same iterations with bounds: its own key, the same centers
    ham = stages.fit_lloyd(store, s, out, max_iter=50, tol=1e-4, name="ham", algorithm="hamerly")
    assert ham["key"] != fit["key"] and ham["algorithm"] == "hamerly" and ham["n_iter"] == fit["n_iter"]
    np.testing.assert_array_equal(np.load(ham["path"])["centers"], np.load(fit["path"])["centers"])


# ------------------------------------------------------------------------------------------------
# flow runs (one Prefect test server for the session)
# ------------------------------------------------------------------------------------------------

def _task_states(flow_run_id) -> dict[str, list[str]]:
    """Task run name prefix -> state names, over a flow run and its subflows."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId, TaskRunFilter

    async def go():
        async with get_client() as c:
            subs = await c.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
            ids = [flow_run_id] + [s.id for s in subs]
            trs = await c.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": ids}))
            out: dict[str, list[str]] = {}
            for tr in trs:
                out.setdefault(tr.name.rsplit("-", 1)[0], []).append(tr.state.name if tr.state else None)
            return out

    from prefect.utilities.asyncutils import run_coro_as_sync

    return run_coro_as_sync(go())


def test_clustering_flow_caches_and_reports(prefect_harness, dask_client, tmp_path):
    from prefect.artifacts import Artifact

    from flows.clustering import clustering_flow

    src = tmp_path / "blobs.npy"
    rng = np.random.default_rng(0)
    np.save(src, (rng.normal(size=(5, 8)) * 6)[rng.integers(0, 5, 2000)] + rng.normal(size=(2000, 8)))
    out = tmp_path / "run"
    kw = dict(source=str(src), k=5, n_init=2, output_dir=str(out), dask_address=dask_client.scheduler.address,
              max_iter=100, silhouette_sample=300)
    st = clustering_flow(**kw, return_state=True)
    assert st.is_completed(), st.message
    res = st.result()
    out = Path(res["output_dir"])
    assert out.parent == tmp_path / "run"  # the run's own folder, named by its parameters
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    for name in ("inertia", "cluster_sizes"):
        assert Path(res["plots"][name]).exists()
    assert (out / "data" / "input.zarr").exists() and (out / "fits" / "fit-0" / "checkpoint.npz").exists()
    assert "| k | 5 |" in Path(res["report"]).read_text()
    assert res["ms_per_iteration"] > 0 and "| time per Lloyd iteration (median) |" in Path(res["report"]).read_text()
    rep = Artifact.get("clustering-report")
    assert rep is not None and "Time per stage" in rep.data
    assert Artifact.get("clustering-history") is not None
    assert Artifact.get("lloyd-progress-fit-0") is not None
    centers = stages.load_centers({"path": res["centers"]})

    # same inputs: every cached stage is skipped
    st2 = clustering_flow(**kw, return_state=True)
    assert st2.is_completed()
    states = _task_states(st2.state_details.flow_run_id)
    for stage in ("ingest", "seed", "fit_lloyd", "evaluate"):
        assert set(states[stage]) == {"Cached"}, states
    np.testing.assert_array_equal(stages.load_centers({"path": st2.result()["centers"]}), centers)

    # a changed input recomputes
    time.sleep(0.01)
    np.save(src, np.load(src) + 1.0)
    st3 = clustering_flow(**kw, return_state=True)
    assert st3.is_completed()
    states = _task_states(st3.state_details.flow_run_id)
    for stage in ("ingest", "seed", "fit_lloyd", "evaluate"):
        assert "Cached" not in states[stage], states
    np.testing.assert_allclose(stages.load_centers({"path": st3.result()["centers"]}), centers + 1.0, rtol=0,
                               atol=1e-9)


@pytest.mark.parametrize("kw, needle", [
    ({"k": 0}, "Invalid parameters for clustering_flow"),
    ({"source": "/nonexistent/data.npy"}, "does not exist"),
    ({"dask_address": "tcp://127.0.0.1:{port}"}, "Cannot reach the Dask scheduler"),
])
def test_bad_runs_fail_clearly_and_write_nothing(prefect_harness, tmp_path, kw, needle):
    from flows.clustering import clustering_flow

    kw = {k: (v.format(port=_free_port()) if isinstance(v, str) else v) for k, v in kw.items()}
    out = tmp_path / "run"
    st = clustering_flow(**{"source": "sklearn-digits", "k": 3, "output_dir": str(out), **kw}, return_state=True)
    assert st.is_failed()
    assert needle in st.message
    assert not out.exists()


def _uniform_store(path, n=20000, d=16):
    from kmeans_dist.data import write_store

    X = np.random.default_rng(3).uniform(size=(n, d))
    write_store(str(path), X, chunk_rows=5000, overwrite=True)
    return str(path)


def test_sigkill_mid_fit_then_resume(prefect_harness, tmp_path):
    """Kill the flow process (SIGKILL, whole process group) mid-Lloyd; the next run resumes from the
    checkpoint and ends with the centers of an uninterrupted fit."""
    from flows.clustering import clustering_flow

    src = _uniform_store(tmp_path / "u.zarr")
    out = tmp_path / "run"
    args = dict(source=src, k=32, init="random", max_iter=60, tol=0.0, output_dir=str(out), n_workers=1,
                silhouette_sample=0)
    env = {**os.environ, "PREFECT_API_URL": prefect_harness, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "flows.clustering"] + [f"--{k.replace('_', '-')}={v}" for k, v in args.items()]
    log = open(tmp_path / "flow.log", "wb")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    from flows.params import ClusteringParams, default_output_dir, validate_params

    out = Path(default_output_dir("clustering", validate_params(ClusteringParams, args, "clustering_flow")))
    fdir = out / "fits" / "fit-0"
    killed_at = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            ck = stages.read_checkpoint(fdir)
            if ck is not None and ck["iteration"] >= 4:
                os.killpg(proc.pid, signal.SIGKILL)
                killed_at = ck["iteration"]
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
    assert killed_at is not None, (tmp_path / "flow.log").read_text()[-3000:]
    assert not (fdir / "fit.npz").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "running"  # never mistaken for finished

    res = clustering_flow(**args)
    import platform

    assert res["workers_tuned"] is (platform.libc_ver()[0] == "glibc")  # the flow's own LocalCluster
    meta = json.loads(str(np.load(fdir / "fit.npz")["meta"]))
    assert meta["resumed_from"] >= killed_at
    assert res["n_iter"] > meta["resumed_from"]

    # uninterrupted reference from the same initial centers, in process, no Prefect
    store = stages.ingest(src, tmp_path / "ref")
    ref = stages.fit_lloyd(store, {"path": str(out / "seeds" / "seed-0.npy")}, tmp_path / "ref", max_iter=60, tol=0.0)
    assert ref["n_iter"] == res["n_iter"]
    np.testing.assert_allclose(stages.load_centers({"path": res["centers"]}), stages.load_centers(ref),
                               rtol=1e-12, atol=0)


def test_choose_k_flow_fits_k_in_parallel(prefect_harness, dask_client, tmp_path):
    from prefect.artifacts import Artifact

    from flows.choose_k import choose_k_flow

    url = _blobs_store(tmp_path / "blobs.zarr", n=2000, k=4)
    out = tmp_path / "ck"
    res = choose_k_flow(source=url, k_min=2, k_max=6, output_dir=str(out), dask_address=dask_client.scheduler.address,
                        max_iter=50, silhouette_sample=400)
    ks = [r["k"] for r in res["results"]]
    assert ks == [2, 3, 4, 5, 6]
    inertia = [r["inertia"] for r in res["results"]]
    assert all(a >= b for a, b in zip(inertia, inertia[1:]))
    assert res["best"]["silhouette"] == 4 and "elbow" in res["best"]
    assert all(r["ari"] is not None and r["calinski_harabasz"] > 0 for r in res["results"])
    assert Path(res["plots"]["elbow"]).exists() and Path(res["plots"]["silhouette"]).exists()
    assert Artifact.get("choose-k-report") is not None
    assert json.loads((Path(res["output_dir"]) / "run.json").read_text())["status"] == "completed"


def test_dask_stages_retry_only_a_cancelled_future(prefect_harness):
    """The Dask stages retry when the scheduler cancelled a future (dask/distributed#4612), never on
    another error."""
    from distributed.client import FutureCancelledError
    from prefect import flow, task

    from flows import clustering as C
    from flows.clustering import _DASK_RETRY

    # every stage that computes on Dask carries the retry; ingest and report do not compute there
    for t in (C.standardize_task, C.seed_task, C.fit_lloyd_task, C.fit_minibatch_task, C.evaluate_task):
        assert t.retries == 2 and t.retry_condition_fn is C._dask_cancelled, t.name

    calls = {"cancelled": 0, "bad": 0}

    @task(**_DASK_RETRY)
    def cancelled_once():
        calls["cancelled"] += 1
        if calls["cancelled"] == 1:
            raise FutureCancelledError("finalize-hlgfinalizecompute-0", reason="scheduler-race")
        return "ok"

    @task(**_DASK_RETRY)
    def bad_input():
        calls["bad"] += 1
        raise ValueError("Input contains NaN")

    @flow
    def run():
        return cancelled_once(), bad_input(return_state=True)

    ok, bad = run()
    assert ok == "ok" and calls["cancelled"] == 2
    assert bad.is_failed() and calls["bad"] == 1


def test_evaluate_matches_sklearn_when_chunks_miss_classes(tmp_path):
    """Labels sorted by class: the first chunks hold only the small labels, so each chunk's table is narrower
    than the whole; the padded sum must give scikit-learn's scores on the same labels."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from kmeans_dist.data import write_store
    from kmeans_dist.kernels import assign_labels

    rng = np.random.default_rng(3)
    y = np.sort(rng.integers(0, 6, size=1200))
    centers = rng.normal(scale=2.0, size=(6, 4))
    X = centers[y] + rng.normal(size=(1200, 4))
    url = write_store(str(tmp_path / "sorted.zarr"), X, labels=y, chunk_rows=150, overwrite=True)
    out = tmp_path / "run"
    store = stages.ingest(url, out)
    s = stages.seed(store, out, k=4, init="k-means++", random_state=0)
    fit = stages.fit_lloyd(store, s, out, max_iter=20, tol=1e-4)
    m = stages.evaluate(store, fit, out, silhouette_sample=0, split_every=3)  # 8 chunks: a tree of depth 2
    lab = np.asarray(assign_labels(X, stages.load_centers(fit).astype(X.dtype))[0])
    assert m["ari"] == pytest.approx(adjusted_rand_score(y, lab), abs=1e-12)
    assert m["nmi"] == pytest.approx(normalized_mutual_info_score(y, lab), abs=1e-12)
    assert m["cluster_sizes"] == np.bincount(lab, minlength=4).tolist()


def test_minibatch_stage(tmp_path):
    url = _blobs_store(tmp_path / "blobs.zarr", n=4000, k=4)
    out = tmp_path / "run"
    store = stages.ingest(url, out)
    s = stages.seed(store, out, k=4, init="k-means++", random_state=0)
    fit = stages.fit_minibatch(store, s, out, batch_size=256, max_iter=5, random_state=0)
    assert fit["algorithm"] == "minibatch" and stages.load_centers(fit).shape == (4, 8)
    m = stages.evaluate(store, fit, out, silhouette_sample=0)
    assert m["ari"] > 0.5


def test_standardize_stage_and_image_report(tmp_path):
    out = tmp_path / "run"
    store = stages.ingest("sklearn-digits", out)
    assert store["image_shape"] == [8, 8] and store["has_labels"]
    z = stages.standardize(store, out)
    assert z["url"].endswith("standardized.zarr") and z["standardized_from"] == store["url"]
    from kmeans_dist.data import open_store

    X = open_store(z["url"]).compute()
    np.testing.assert_allclose(X.mean(0), 0, atol=1e-5)
    s = stages.seed(z, out, k=10, init="random", random_state=0)
    fit = stages.fit_lloyd(z, s, out, max_iter=20, tol=1e-4)
    m = stages.evaluate(z, fit, out, silhouette_sample=200)
    rep = stages.report(out, store=z, fit=fit, metrics=m, params={"init": "random"}, timings={})
    assert Path(rep["plots"]["centroids"]).exists()
    assert "| standardized | True |" in Path(rep["report_path"]).read_text()
    with pytest.raises(Exception, match="larger than the number of samples"):
        stages.seed(z, out, k=5000, init="random", random_state=0)


def test_two_concurrent_runs_into_one_output_folder_stay_apart(prefect_harness, dask_client, tmp_path):
    """A k=3 and a k=5 run started together with the same output_dir: both complete, each in its own run
    folder, and each summary and model holds its own result."""
    src = _blobs_store(tmp_path / "blobs.zarr", n=2000, k=4)
    out = tmp_path / "shared"
    env = {**os.environ, "PREFECT_API_URL": prefect_harness, "PYTHONPATH": str(REPO)}
    procs = []
    for k in (3, 5):
        args = dict(source=src, k=k, max_iter=30, output_dir=str(out), dask_address=dask_client.scheduler.address,
                    silhouette_sample=0)
        cmd = [sys.executable, "-m", "flows.clustering"] + [f"--{a.replace('_', '-')}={v}" for a, v in args.items()]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    results = [json.loads(o.strip().splitlines()[-1]) for o in outs]
    dirs = [Path(r["output_dir"]) for r in results]
    assert dirs[0] != dirs[1] and all(d.parent == out for d in dirs)
    for r, k in zip(results, (3, 5)):
        assert stages.load_centers({"path": r["centers"]}).shape[0] == k
        summary = json.loads((Path(r["output_dir"]) / "summary.json").read_text())
        assert summary["metrics"]["inertia"] == pytest.approx(r["inertia"]) and summary["params"]["k"] == k
    assert results[0]["inertia"] > results[1]["inertia"]


def _wildcard_listeners(root_pid):
    """Listening sockets of a process tree that are bound to every interface."""
    import psutil

    try:
        procs = [psutil.Process(root_pid)] + psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return set(), 0
    found, n = set(), 0
    for p in procs:
        try:
            conns = p.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN:
                n += 1
                if c.laddr.ip in ("0.0.0.0", "::", ""):
                    found.add((p.name(), c.laddr.ip, c.laddr.port))
    return found, n


def test_a_flow_run_binds_only_to_localhost(prefect_harness, tmp_path):
    """Every server a flow run starts (Dask scheduler, workers, nannies, dashboard) listens on 127.0.0.1."""
    src = _uniform_store(tmp_path / "u.zarr")
    env = {**os.environ, "PREFECT_API_URL": prefect_harness, "PYTHONPATH": str(REPO)}
    args = dict(source=src, k=8, max_iter=200, tol=0.0, output_dir=str(tmp_path / "run"), n_workers=2,
                silhouette_sample=0)
    cmd = [sys.executable, "-m", "flows.clustering"] + [f"--{a.replace('_', '-')}={v}" for a, v in args.items()]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wild, most = set(), 0
    try:
        while proc.poll() is None:
            w, n = _wildcard_listeners(proc.pid)
            wild |= w
            most = max(most, n)
            time.sleep(0.2)
    finally:
        out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, out[-3000:]
    assert most >= 3, "the cluster's servers were never seen listening"
    assert wild == set()


def test_clustering_flow_runs_the_family(prefect_harness, dask_client, tmp_path):
    """The flow's ``algorithm`` takes every member of the family: here k-medians through ``fit_family``."""
    from flows.clustering import clustering_flow

    from kmeans_dist import KMedians, load_model

    src = tmp_path / "blobs.npy"
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(4, 3)) * 6)[rng.integers(0, 4, 900)] + rng.normal(size=(900, 3))
    np.save(src, X)
    st = clustering_flow(source=str(src), k=4, algorithm="kmedians", output_dir=str(tmp_path / "run"),
                         dask_address=dask_client.scheduler.address, silhouette_sample=200, return_state=True)
    assert st.is_completed(), st.message
    res = st.result()
    model = load_model(Path(res["output_dir"]) / "fits" / "fit-0" / "model")
    assert isinstance(model, KMedians)
    np.testing.assert_array_equal(stages.load_centers({"path": res["centers"]}), model.cluster_centers_)
    assert "| k | 4 |" in Path(res["report"]).read_text()
