"""The clustering flow and its stages on every engine (``engine`` "local", "ray", "dask"): the same centers,
bit for bit, the same metrics, and the same cache (a run on Ray reuses what a run in process computed).

A local Ray (2 CPUs, every server on 127.0.0.1, :func:`pipelines.ray_local.init_local_ray`) is started once
for the module; flow runs use the session's ``prefect_test_harness`` and the Dask run the session cluster.
"""
from __future__ import annotations


from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from flows.clustering import ENGINES, ClusteringFlowParams, clustering_flow  # noqa: E402
from flows.params import ParameterError, cli_parser, validate_params  # noqa: E402
from pipelines import stages  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Blobs with labels in a Zarr store of uneven chunks: two canonical blocks (131072 + 8928 rows), so the
    Ray runs use two actors."""
    from kmeans_dist.data import write_store

    rng = np.random.default_rng(4)
    centers = rng.normal(scale=6.0, size=(5, 8))
    y = rng.integers(0, 5, size=140_000)
    X = centers[y] + rng.normal(size=(140_000, 8))
    return write_store(str(tmp_path_factory.mktemp("flow-engines") / "blobs.zarr"), X, labels=y,
                       chunk_rows=50_000)


@pytest.fixture
def ray_blocks_made(monkeypatch):
    """Counts the RayBlocks made (every pass on Ray makes one; the tasks run in threads of this process)."""
    from kmeans_dist.chunked.ray_engine import RayBlocks

    made = []
    init = RayBlocks.__init__

    def counting(self, *a, **kw):
        made.append(1)
        init(self, *a, **kw)

    monkeypatch.setattr(RayBlocks, "__init__", counting)
    return made


def _task_states(flow_run_id) -> dict[str, list[str]]:
    """Task run name prefix -> state names, over a flow run and its subflows."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def go():
        async with get_client() as c:
            subs = await c.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
            trs = await c.read_task_runs(flow_run_filter=FlowRunFilter(
                id={"any_": [flow_run_id] + [s.id for s in subs]}))
            out: dict[str, list[str]] = {}
            for tr in trs:
                out.setdefault(tr.name.rsplit("-", 1)[0], []).append(tr.state.name if tr.state else None)
            return out

    return run_coro_as_sync(go())


def _transitions(client) -> int:
    return client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)


def _work_since(client, start: int) -> list:
    """The scheduler's transitions after counter ``start`` that put a task to work (not the releases of keys
    that earlier tests dropped, which the scheduler may carry out at any time)."""
    def work(dask_scheduler, start=start):
        new = dask_scheduler.transition_counter - start
        log = list(dask_scheduler.transition_log)[-new:] if new else []
        return [(str(t[0]), t[1], t[2]) for t in log
                if t[2] in ("waiting", "queued", "processing", "no-worker", "memory", "erred")]

    return client.run_on_scheduler(work)


def test_flow_on_ray_equals_local_and_dask(prefect_harness, dask_client, ray_local, store, tmp_path,
                                           ray_blocks_made):
    kw = dict(source=store, k=5, init="k-means||", standardize=True, n_init=1, max_iter=50,
              silhouette_sample=300)
    runs, made = {}, {}
    before = _transitions(dask_client)
    for engine, extra in [("local", {}), ("ray", {}), ("dask", {"dask_address": dask_client.scheduler.address})]:
        if engine == "dask":  # the local and Ray runs gave the Dask cluster no work (nor started one)
            assert _work_since(dask_client, before) == []
        n0 = len(ray_blocks_made)
        st = clustering_flow(**kw, engine=engine, output_dir=str(tmp_path / engine), **extra, return_state=True)
        assert st.is_completed(), st.message
        runs[engine] = st.result()
        made[engine] = len(ray_blocks_made) - n0
    assert _work_since(dask_client, before)  # the Dask run's tasks are seen (the check above can see work)
    # every pass of the Ray run in Ray actors (moments, seeding, Lloyd, evaluation), none of the others
    assert made["ray"] >= 4 and made["local"] == 0 and made["dask"] == 0, made
    C = {e: stages.load_centers({"path": r["centers"]}) for e, r in runs.items()}
    assert np.array_equal(C["ray"], C["local"]) and np.array_equal(C["ray"], C["dask"])
    for e in ("ray", "dask"):
        assert runs[e]["n_iter"] == runs["local"]["n_iter"]
        assert runs[e]["metrics"] == runs["local"]["metrics"]  # inertia, ARI, NMI, accuracy, silhouette
    assert runs["local"]["metrics"]["ari"] > 0.9

    # the engine is in no cache key nor in the run folder's name: Ray reuses the local run's results
    st = clustering_flow(**kw, engine="ray", output_dir=str(tmp_path / "local"), return_state=True)
    assert st.is_completed(), st.message
    assert st.result()["output_dir"] == runs["local"]["output_dir"]
    states = _task_states(st.state_details.flow_run_id)
    for stage in ("standardize", "seed", "fit_lloyd", "evaluate"):
        assert set(states[stage]) == {"Cached"}, states
    assert np.array_equal(stages.load_centers({"path": st.result()["centers"]}), C["local"])


def test_fit_stages_on_ray_equal_local(ray_local, store, tmp_path, ray_blocks_made):
    """Mini-batch and the family (k-medians) through their stages: Ray gives the in-process centers."""
    ref = stages.ingest(store, tmp_path)
    init = stages.seed(ref, tmp_path, k=5, init="k-means++", random_state=0, engine="local")
    out = {}
    for engine in ("local", "ray"):
        run = tmp_path / engine
        mb = stages.fit_minibatch(ref, init, run, batch_size=2048, max_iter=1, random_state=0, engine=engine)
        km = stages.fit_family(ref, init, run, algorithm="kmedians", max_iter=20, engine=engine, name="kmedians")
        out[engine] = (mb, km)
    assert len(ray_blocks_made) >= 2
    for i in range(2):
        assert out["ray"][i]["key"] == out["local"][i]["key"]  # the same cache key on both engines
        np.testing.assert_array_equal(stages.load_centers(out["ray"][i]), stages.load_centers(out["local"][i]))


@pytest.mark.parametrize("kw, needle", [
    ({"engine": "spark"}, "engine: Input should be 'auto', 'dask', 'ray' or 'local' (got 'spark')"),
    ({"engine": "dask", "ray_address": "127.0.0.1:6379"}, "ray_address is for engine 'ray' (or 'auto')"),
    ({"engine": "ray", "dask_address": "tcp://127.0.0.1:8786"}, "dask_address is for engine 'dask' (or 'auto')"),
])
def test_bad_engine_is_refused_before_anything_is_written(prefect_harness, tmp_path, kw, needle):
    out = tmp_path / "run"
    st = clustering_flow(source="sklearn-digits", k=3, output_dir=str(out), **kw, return_state=True)
    assert st.is_failed()
    assert "Invalid parameters for clustering_flow" in st.message and needle in st.message, st.message
    assert not out.exists()


def test_stages_refuse_a_bad_engine(tmp_path):
    ref = {"url": str(tmp_path / "absent.zarr"), "shape": [10, 2]}
    with pytest.raises(ValueError, match="engine must be one of 'auto', 'dask', 'ray', 'local'; got 'spark'"):
        stages.seed(ref, tmp_path, k=2, engine="spark")
    with pytest.raises(ValueError, match="ray_address is for engine='ray'"):
        stages.evaluate(ref, {"path": "x"}, tmp_path, engine="local", ray_address="ray://head:10001")
    assert not any(tmp_path.iterdir())


def test_cli_flags_and_engines():
    from kmeans_dist.chunked.driver import ENGINES as LIBRARY_ENGINES

    assert ENGINES == LIBRARY_ENGINES
    ap = cli_parser(ClusteringFlowParams, "python -m flows.clustering")
    args = vars(ap.parse_args(["--k", "4", "--engine", "ray", "--ray-address", " ray://head:10001 "]))
    p = validate_params(ClusteringFlowParams, args, "clustering_flow")
    assert (p.engine, p.ray_address) == ("ray", "ray://head:10001")
    assert vars(ap.parse_args([]))["engine"] == "auto"
    with pytest.raises(ParameterError, match="'auto', 'dask', 'ray' or 'local'"):
        validate_params(ClusteringFlowParams, vars(ap.parse_args(["--engine", "spark"])), "clustering_flow")


def test_choose_k_on_ray_equals_local(prefect_harness, ray_local, store, tmp_path, ray_blocks_made):
    """choose_k_flow with engine "ray": every seed, fit and evaluation in Ray actors, the same results as in
    process, in the same run folder (the engine is not in its name)."""
    from flows.choose_k import ChooseKFlowParams, choose_k_flow

    kw = dict(source=store, ks=[3, 5], init="k-means++", max_iter=20, silhouette_sample=300)
    runs = {}
    for engine in ("local", "ray"):
        n0 = len(ray_blocks_made)
        st = choose_k_flow(**kw, engine=engine, output_dir=str(tmp_path / engine), return_state=True)
        assert st.is_completed(), st.message
        runs[engine] = (st.result(), len(ray_blocks_made) - n0)
    (loc, made_local), (ray_run, made_ray) = runs["local"], runs["ray"]
    assert made_local == 0 and made_ray >= 6, (made_local, made_ray)  # seed, fit, evaluate per k
    assert ray_run["best"] == loc["best"]
    for a, b in zip(ray_run["results"], loc["results"]):
        assert a["k"] == b["k"] and a["inertia"] == b["inertia"] and a["n_iter"] == b["n_iter"]
        np.testing.assert_array_equal(stages.load_centers({"path": a["centers"]}),
                                      stages.load_centers({"path": b["centers"]}))
    assert Path(ray_run["output_dir"]).name == Path(loc["output_dir"]).name

    ap = cli_parser(ChooseKFlowParams, "python -m flows.choose_k")
    p = validate_params(ChooseKFlowParams, vars(ap.parse_args(["--ks", "3", "--engine", "ray"])), "choose_k_flow")
    assert (p.engine, p.ks) == ("ray", [3])
    with pytest.raises(ParameterError, match="ray_address is for engine 'ray'"):
        validate_params(ChooseKFlowParams, {"engine": "local", "ray_address": "h:6379"}, "choose_k_flow")
