"""``clustering_flow``: ingest, standardize, seed, fit, evaluate and report, as Prefect tasks on Dask or Ray.

The outer flow validates every parameter and checks the source and the Dask scheduler (or connects to
Ray) before anything is written, then runs the stages in a subflow.  With ``engine`` "auto" or "dask" the
subflow runs on a ``DaskTaskRunner`` (a ``LocalCluster`` of ``n_workers`` processes by default, or the
scheduler at ``dask_address``); with "ray" its tasks run in threads of the flow's process, a Ray driver
whose passes over the data run in Ray actors (the cluster at ``ray_address``, else a local Ray bound to
127.0.0.1), and no Dask cluster is started; with "local" they run in the flow's process.

Every task's cache key is the stage name and version, the content fingerprint of its input store(s)
and its parameters (never the engine: every engine gives the same results, bit for bit); results
persist in ``<output_dir>/.prefect-results``, so a re-run with the same inputs skips finished stages
(whichever engine computed them), and a changed input recomputes from the first stage it affects.
Lloyd checkpoints every iteration into ``<output_dir>/fits/<name>/``: a run killed mid-fit resumes there.

Run it: ``python -m flows.clustering --source sklearn-digits --k 10`` (see ``--help``); on Ray:
``python -m flows.clustering --source store.zarr --k 10 --engine ray --ray-address ray://head:10001``.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Optional

os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")

from prefect import flow, get_run_logger, task  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator  # noqa: E402

from flows.artifacts import LloydProgress, publish_history, publish_report  # noqa: E402
from flows.params import (ClusteringParams, ParameterError, check_dask_address, check_source,  # noqa: E402
                          default_output_dir, run_cli, validate_params)
from pipelines import stages  # noqa: E402

__all__ = ["clustering_flow", "clustering_run", "make_task_runner", "stage_tasks", "dask_client",
           "ParameterError", "ClusteringFlowParams", "EngineParams", "ENGINES", "check_ray", "flow_engine", "engine_kwargs"]

RESULTS_DIR = ".prefect-results"
# task parameters that never change a stage's output (the engines give bit-identical results)
_NOT_IN_KEY = {"out_dir", "engine", "ray_address"}
#: the values of ``engine`` (those of :data:`kmeans_dist.chunked.driver.ENGINES`)
ENGINES = ("auto", "dask", "ray", "local")


class EngineParams(BaseModel):
    """The engine fields of the flows' parameters (a mixin of :class:`ClusteringFlowParams` and
    :class:`flows.choose_k.ChooseKFlowParams`).

    ``engine`` is one of :data:`ENGINES` (``"auto"``: Dask, or Ray when ``ray_address`` is given);
    ``ray_address`` (stripped, empty means none) goes only with "ray" or "auto", and ``dask_address``
    only with "dask" or "auto".  Neither is part of the run folder's name (:func:`flows.params.run_name`):
    the engines give the same results, so runs on Dask and on Ray share their folder and cache.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: Literal["auto", "dask", "ray", "local"] = Field(
        "auto", description="Where the k-means passes run: auto (Dask; Ray when --ray-address is given), "
                            "dask, ray (Ray actors; no Dask cluster is started) or local (this process)")
    ray_address: Optional[str] = Field(
        None, description="Ray cluster for --engine ray (ray://host:10001, host:6379 or auto); "
                          "empty: RAY_ADDRESS, else a local Ray bound to 127.0.0.1")

    @field_validator("ray_address")
    @classmethod
    def _ray_address(cls, v):
        if v is None or not str(v).strip():
            return None
        return str(v).strip()

    @model_validator(mode="after")
    def _engine_addresses(self):
        if self.ray_address and self.engine in ("dask", "local"):
            raise ValueError(f"ray_address is for engine 'ray' (or 'auto'), not {self.engine!r}")
        if getattr(self, "dask_address", None) and flow_engine(self) in ("ray", "local"):
            raise ValueError(f"dask_address is for engine 'dask' (or 'auto'), not {flow_engine(self)!r}")
        return self


class ClusteringFlowParams(EngineParams, ClusteringParams):
    """Parameters of ``clustering_flow``: :class:`flows.params.ClusteringParams` with the engine fields
    (:class:`EngineParams`).

    Raises
    ------
    pydantic.ValidationError
        If a field is invalid (an ``engine`` outside :data:`ENGINES` among them) or unknown.

    Examples
    --------
    >>> p = ClusteringFlowParams(k=3, engine="ray")
    >>> p.engine, p.ray_address, flow_engine(p)
    ('ray', None, 'ray')
    >>> flow_engine(ClusteringFlowParams(ray_address="ray://head:10001"))
    'ray'
    """


def flow_engine(p) -> str:
    """The engine a run's tasks use: ``p.engine``, with "auto" and a ``ray_address`` meaning "ray".

    Parameters
    ----------
    p : ClusteringFlowParams or pydantic.BaseModel
        Validated parameters; a model without ``engine`` (:class:`flows.params.ChooseKParams`) is "auto".

    Returns
    -------
    str
        One of :data:`ENGINES`.
    """
    engine = getattr(p, "engine", "auto")
    return "ray" if engine == "auto" and getattr(p, "ray_address", None) else engine


def engine_kwargs(p) -> dict:
    """The ``engine`` and ``ray_address`` keyword arguments of the stage tasks, from a run's parameters.

    Parameters
    ----------
    p : ClusteringFlowParams or pydantic.BaseModel
        Validated parameters (see :func:`flow_engine`).

    Returns
    -------
    dict
        ``{"engine": ..., "ray_address": ...}``.
    """
    return {"engine": flow_engine(p), "ray_address": getattr(p, "ray_address", None)}


@contextmanager
def _compute_client(engine: str):
    """The Dask client for engines that may use one ("auto", "dask"); None for "ray" and "local"."""
    if engine in ("ray", "local"):
        yield None
        return
    with dask_client() as client:
        yield client


def _cache_key(stage: str, inputs: tuple[str, ...]):
    """Prefect ``cache_key_fn``: stage name/version + input fingerprints + the other parameters."""

    def key_fn(context, parameters: dict) -> str:
        ins = {n: parameters.get(n) for n in inputs}
        rest = {k: v for k, v in parameters.items() if k not in inputs and k not in _NOT_IN_KEY}
        return f"{stage}-{stages.stage_key(stage, ins, rest)}"

    key_fn.__name__ = f"cache_key_{stage}"
    return key_fn


def _dask_cancelled(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry a stage only when Dask cancelled one of its futures.

    Stages that run at the same time on one worker share that worker's client, and their graphs share
    keys (the store's chunks; the same seeded sample in every evaluation).  When one stage releases a
    key just as another asks for it, the scheduler can cancel the newer future: the known race of
    dask/distributed#4612 and dask/dask#6027.  The stage's inputs are unchanged and its outputs are
    written atomically, so running it again gives the same result.  Every other failure fails at once.
    """
    from concurrent.futures import CancelledError

    try:
        state.result()
    except CancelledError:
        return True
    except BaseException:
        pass
    return False


# the stages that compute on the Dask cluster: up to two retries for the race above
_DASK_RETRY = dict(retries=2, retry_condition_fn=_dask_cancelled)


@contextmanager
def dask_client():
    """Give the cluster's client inside a task on a Dask worker (``prefect_dask.get_dask_client``), else None.

    On a worker the task secedes from the worker's thread pool while it waits on the cluster, so the
    tasks it submits can use that worker's thread too; it rejoins the pool when the context exits.

    Yields
    ------
    distributed.Client or None
        The client on a Dask worker; None elsewhere (or without ``distributed``), so the stages use
        the current scheduler.
    """
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        yield None
        return
    from distributed import rejoin, secede
    from prefect_dask import get_dask_client

    with get_dask_client() as client:
        secede()
        try:
            yield client
        finally:
            rejoin()


# ------------------------------------------------------------------------------------------------
# tasks (thin wrappers over pipelines.stages)
# ------------------------------------------------------------------------------------------------

@task(name="ingest", cache_key_fn=_cache_key("ingest", ("source",)), persist_result=True)
def ingest_task(source: str, out_dir: str, limit: Optional[int] = None, chunk_rows: Optional[int] = None) -> dict:
    """Prefect task of :func:`pipelines.stages.ingest`: make ``source`` a Zarr store.

    Cached on the fingerprint of ``source`` and the other parameters (not ``out_dir``); the result
    persists in ``<out_dir>/.prefect-results`` when built by :func:`stage_tasks`.

    Parameters
    ----------
    source : str
        The (resolved) source: a Zarr store, a ``.npy``/CSV/Parquet file, an MNIST folder or
        ``'sklearn-digits'``.
    out_dir : str
        The run folder.
    limit : int, optional
        Keep only the first rows of an MNIST folder.
    chunk_rows : int, optional
        Rows per chunk of the written store.

    Returns
    -------
    dict
        The store reference.
    """
    return stages.ingest(source, out_dir, limit=limit, chunk_rows=chunk_rows, logger=get_run_logger())


@task(name="standardize", **_DASK_RETRY, cache_key_fn=_cache_key("standardize", ("store",)), persist_result=True)
def standardize_task(store: dict, out_dir: str, engine: str = "auto", ray_address: Optional[str] = None) -> dict:
    """Prefect task of :func:`pipelines.stages.standardize`: the standardized copy of ``store``.

    Cached on the fingerprint of ``store``; retried (twice at most) only when Dask cancelled one of
    its futures.

    Parameters
    ----------
    store : dict
        Reference of the input store.
    out_dir : str
        The run folder.
    engine : {"auto", "dask", "ray", "local"}, default: "auto"
        Where the passes over the data run (:func:`pipelines.stages.use_engine`); not part of the cache key.
    ray_address : str, optional
        Ray cluster for ``engine="ray"``.

    Returns
    -------
    dict
        Reference of the standardized store.
    """
    with _compute_client(engine) as client:
        return stages.standardize(store, out_dir, client=client, engine=engine, ray_address=ray_address,
                                  logger=get_run_logger())


@task(name="seed", **_DASK_RETRY, cache_key_fn=_cache_key("seed", ("store",)), persist_result=True)
def seed_task(store: dict, out_dir: str, k: int, init: str, random_state: int, name: str, engine: str = "auto",
              ray_address: Optional[str] = None) -> dict:
    """Prefect task of :func:`pipelines.stages.seed`: initial centers saved to ``seeds/<name>.npy``.

    Cached on the fingerprint of ``store`` and the other parameters; retried (twice at most) only
    when Dask cancelled one of its futures.

    Parameters
    ----------
    store : dict
        Reference of the data store.
    out_dir : str
        The run folder.
    k : int
        Number of clusters.
    init : str
        Seeding method.
    random_state : int
        Seed of the seeding.
    name : str
        File name of the centers.
    engine : {"auto", "dask", "ray", "local"}, default: "auto"
        Where the passes over the data run (:func:`pipelines.stages.use_engine`); not part of the cache key.
    ray_address : str, optional
        Ray cluster for ``engine="ray"``.

    Returns
    -------
    dict
        The seed reference.

    Raises
    ------
    kmeans_dist.data.DataError
        If ``k`` is larger than the number of samples.
    """
    with _compute_client(engine) as client:
        return stages.seed(store, out_dir, k=k, init=init, random_state=random_state, name=name, client=client,
                           engine=engine, ray_address=ray_address, logger=get_run_logger())


@task(name="fit_lloyd", **_DASK_RETRY, cache_key_fn=_cache_key("fit_lloyd", ("store", "init")),
      persist_result=True)
def fit_lloyd_task(store: dict, init: dict, out_dir: str, max_iter: int, tol: float, name: str,
                   algorithm: str = "lloyd", engine: str = "auto", ray_address: Optional[str] = None) -> dict:
    """Prefect task of :func:`pipelines.stages.fit_lloyd`, with a progress artifact.

    Cached on the fingerprints of ``store`` and ``init`` and the other parameters; retried (twice at
    most) only when Dask cancelled one of its futures.  Lloyd checkpoints every iteration into
    ``<out_dir>/fits/<name>/``, so a run killed mid-fit resumes there.  Progress is published as a
    :class:`flows.artifacts.LloydProgress` artifact.

    Parameters
    ----------
    store : dict
        Reference of the data store.
    init : dict
        Reference of the initial centers.
    out_dir : str
        The run folder.
    max_iter : int
        Maximum number of iterations.
    tol : float
        Convergence tolerance.
    name : str
        Name of the fit.
    algorithm : {"lloyd", "hamerly"}, default: "lloyd"
        The iterations (Hamerly's bounds skip most distances).
    engine : {"auto", "dask", "ray", "local"}, default: "auto"
        Where the passes over the data run (:func:`pipelines.stages.use_engine`); not part of the cache key.
    ray_address : str, optional
        Ray cluster for ``engine="ray"``.

    Returns
    -------
    dict
        The fit reference.
    """
    progress = LloydProgress(name)
    with _compute_client(engine) as client:
        res = stages.fit_lloyd(store, init, out_dir, max_iter=max_iter, tol=tol, name=name, client=client,
                               progress=progress, logger=get_run_logger(), algorithm=algorithm, engine=engine,
                               ray_address=ray_address)
    progress.done(res["n_iter"])
    return res


@task(name="fit_minibatch", **_DASK_RETRY, cache_key_fn=_cache_key("fit_minibatch", ("store", "init")),
      persist_result=True)
def fit_minibatch_task(store: dict, init: dict, out_dir: str, batch_size: int, max_iter: int, tol: float,
                       random_state: int, name: str, engine: str = "auto", ray_address: Optional[str] = None) -> dict:
    """Prefect task of :func:`pipelines.stages.fit_minibatch`.

    Cached on the fingerprints of ``store`` and ``init`` and the other parameters; retried (twice at
    most) only when Dask cancelled one of its futures.

    Parameters
    ----------
    store : dict
        Reference of the data store.
    init : dict
        Reference of the initial centers.
    out_dir : str
        The run folder.
    batch_size : int
        Samples per mini-batch.
    max_iter : int
        Maximum number of steps.
    tol : float
        Convergence tolerance.
    random_state : int
        Seed of the batch sampling.
    name : str
        Name of the fit.
    engine : {"auto", "dask", "ray", "local"}, default: "auto"
        Where the passes over the data run (:func:`pipelines.stages.use_engine`); not part of the cache key.
    ray_address : str, optional
        Ray cluster for ``engine="ray"``.

    Returns
    -------
    dict
        The fit reference.
    """
    with _compute_client(engine) as client:
        return stages.fit_minibatch(store, init, out_dir, batch_size=batch_size, max_iter=max_iter, tol=tol,
                                    random_state=random_state, name=name, client=client, engine=engine,
                                    ray_address=ray_address, logger=get_run_logger())


@task(name="fit_family", **_DASK_RETRY, cache_key_fn=_cache_key("fit_family", ("store", "init")),
      persist_result=True)
def fit_family_task(store: dict, init: dict, out_dir: str, algorithm: str, max_iter: int, tol: float,
                    random_state: int, name: str, engine: str = "auto", ray_address: Optional[str] = None) -> dict:
    """Prefect task of :func:`pipelines.stages.fit_family` (bisecting, spherical, k-medians, k-medoids, Elkan).

    Cached on the fingerprints of ``store`` and ``init`` and the other parameters; retried (twice at
    most) only when Dask cancelled one of its futures.

    Parameters
    ----------
    store : dict
        Reference of the data store.
    init : dict
        Reference of the initial centers.
    out_dir : str
        The run folder.
    algorithm : str
        The member of the family.
    max_iter : int
        Maximum number of iterations.
    tol : float
        Convergence tolerance.
    random_state : int
        Seed of the estimator's own random choices.
    name : str
        Name of the fit.
    engine : {"auto", "dask", "ray", "local"}, default: "auto"
        Where the passes over the data run (:func:`pipelines.stages.use_engine`); not part of the cache key.
    ray_address : str, optional
        Ray cluster for ``engine="ray"``.

    Returns
    -------
    dict
        The fit reference.
    """
    with _compute_client(engine) as client:
        return stages.fit_family(store, init, out_dir, algorithm=algorithm, max_iter=max_iter, tol=tol,
                                 random_state=random_state, name=name, client=client, engine=engine,
                                 ray_address=ray_address, logger=get_run_logger())


@task(name="evaluate", **_DASK_RETRY, cache_key_fn=_cache_key("evaluate", ("store", "fit")), persist_result=True)
def evaluate_task(store: dict, fit: dict, out_dir: str, silhouette_sample: int, random_state: int,
                  engine: str = "auto", ray_address: Optional[str] = None) -> dict:
    """Prefect task of :func:`pipelines.stages.evaluate`.

    Cached on the fingerprints of ``store`` and ``fit`` and the other parameters; retried (twice at
    most) only when Dask cancelled one of its futures.

    Parameters
    ----------
    store : dict
        Reference of the data store.
    fit : dict
        The fit reference.
    out_dir : str
        The run folder.
    silhouette_sample : int
        Size of the silhouette sample.
    random_state : int
        Seed of the silhouette sample.
    engine : {"auto", "dask", "ray", "local"}, default: "auto"
        Where the passes over the data run (:func:`pipelines.stages.use_engine`); not part of the cache key.
    ray_address : str, optional
        Ray cluster for ``engine="ray"``.

    Returns
    -------
    dict
        The metrics.
    """
    with _compute_client(engine) as client:
        return stages.evaluate(store, fit, out_dir, silhouette_sample=silhouette_sample,
                               random_state=random_state, client=client, engine=engine, ray_address=ray_address,
                               logger=get_run_logger())


@task(name="report")
def report_task(out_dir: str, store: dict, fit: dict, metrics: dict, params: dict, timings: dict) -> dict:
    """Prefect task of :func:`pipelines.stages.report` (not cached).

    Parameters
    ----------
    out_dir : str
        The run folder.
    store : dict
        Reference of the data store.
    fit : dict
        The fit reference.
    metrics : dict
        The fit's evaluation.
    params : dict
        The run's parameters.
    timings : dict
        Seconds per stage.

    Returns
    -------
    dict
        ``markdown``, ``report_path``, ``summary_path`` and ``plots``.
    """
    return stages.report(out_dir, store=store, fit=fit, metrics=metrics, params=params, timings=timings,
                         logger=get_run_logger())


def _result_storage(out_dir: str):
    """A LocalFileSystem block for ``out_dir/.prefect-results`` (Prefect needs it saved server-side)."""
    import hashlib

    from prefect.filesystems import LocalFileSystem

    base = Path(out_dir) / RESULTS_DIR
    base.mkdir(parents=True, exist_ok=True)
    block = LocalFileSystem(basepath=str(base))
    block.save(f"kmeans-results-{hashlib.sha256(str(base).encode()).hexdigest()[:16]}", overwrite=True)
    return block


class _Tasks:
    pass


def stage_tasks(out_dir: str) -> _Tasks:
    """Return the stage tasks with their results persisted under ``out_dir``.

    The cached tasks (``ingest``, ``standardize``, ``seed``, ``fit_lloyd``, ``fit_minibatch``,
    ``evaluate``) store their results in ``<out_dir>/.prefect-results`` (a ``LocalFileSystem``
    block saved on the Prefect server); ``report`` is not cached.

    Parameters
    ----------
    out_dir : str
        The run folder (``.prefect-results`` is created in it).

    Returns
    -------
    object
        A namespace with one task per stage as attributes (``ingest``, ``standardize``, ``seed``,
        ``fit_lloyd``, ``fit_minibatch``, ``fit_family``, ``evaluate``, ``report``).
    """
    storage = _result_storage(out_dir)
    t = _Tasks()
    for name, tk in {"ingest": ingest_task, "standardize": standardize_task, "seed": seed_task,
                     "fit_lloyd": fit_lloyd_task, "fit_minibatch": fit_minibatch_task, "fit_family": fit_family_task,
                     "evaluate": evaluate_task}.items():
        setattr(t, name, tk.with_options(result_storage=storage))
    t.report = report_task
    return t


def make_task_runner(dask_address: str | None, n_workers: int = 2, threads_per_worker: int = 1,
                     engine: str = "auto"):
    """Build the task runner of a run: a ``DaskTaskRunner``, or threads for the Ray and local engines.

    With ``dask_address``: the scheduler there.  Without: a ``LocalCluster`` of ``n_workers``
    processes whose scheduler and dashboard bind to 127.0.0.1 on free ports.  With ``engine`` "ray" or
    "local" no Dask cluster is used: a ``ThreadPoolTaskRunner`` runs the tasks in this process (a Ray
    driver for "ray").

    Parameters
    ----------
    dask_address : str or None
        ``tcp://host:port`` of a Dask scheduler; None or empty for a local cluster.
    n_workers : int, default: 2
        Worker processes of the local cluster.
    threads_per_worker : int, default: 1
        Threads per worker of the local cluster.
    engine : {"auto", "dask", "ray", "local"}, default: "auto"
        The run's engine (as resolved by :func:`flow_engine`).

    Returns
    -------
    prefect_dask.DaskTaskRunner or prefect.task_runners.ThreadPoolTaskRunner
        The task runner.
    """
    if engine in ("ray", "local"):
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner()
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs={"n_workers": n_workers, "threads_per_worker": threads_per_worker,
                                          "processes": True, "host": "127.0.0.1", "scheduler_port": 0,
                                          "dashboard_address": "127.0.0.1:0"})


def tune_own_cluster(p) -> bool:
    """Raise the worker allocator's thresholds on the flow's own LocalCluster
    (:func:`kmeans_dist.chunked.tune_worker_malloc`: decoded chunks reuse memory instead of being mapped anew).

    Only for a run on the ``LocalCluster`` that :func:`make_task_runner` starts (no ``dask_address``, a Dask
    engine); a cluster at ``dask_address`` belongs to its operator and is left as it is.

    Parameters
    ----------
    p : ClusteringFlowParams or pydantic.BaseModel
        Validated parameters with ``dask_address`` and the engine fields.

    Returns
    -------
    bool
        Whether the thresholds were set on the workers.
    """
    if getattr(p, "dask_address", None) or flow_engine(p) in ("ray", "local"):
        return False
    from prefect.context import FlowRunContext
    from prefect_dask import DaskTaskRunner

    from kmeans_dist.chunked import tune_worker_malloc

    runner = getattr(FlowRunContext.get(), "task_runner", None)
    if not isinstance(runner, DaskTaskRunner):
        return False
    return all(tune_worker_malloc(runner.client).values())


def write_status(out_dir: str, status: str, **extra) -> None:
    """Write ``run.json``: 'running' while the run goes, 'completed' only once everything is written.

    The file is written atomically (``'failed'`` with the error when the run fails) and holds the
    status, the UTC time and ``extra``.

    Parameters
    ----------
    out_dir : str
        The run folder.
    status : str
        ``'running'``, ``'completed'`` or ``'failed'``.
    **extra : object
        More JSON entries (flow name, parameters, report path, error).
    """
    stages.atomic_write_json(Path(out_dir) / "run.json",
                             {"status": status, "time": datetime.now(timezone.utc).isoformat(), **extra})


def quiet_dask_logs():
    """Set the ``distributed`` loggers (scheduler, worker, nanny, core, http proxy) to WARNING."""
    for name in ("distributed", "distributed.scheduler", "distributed.worker", "distributed.nanny",
                 "distributed.core", "distributed.http.proxy"):
        logging.getLogger(name).setLevel(logging.WARNING)


# ------------------------------------------------------------------------------------------------
# flows
# ------------------------------------------------------------------------------------------------

def ingest_and_standardize(T, p, source: str, out_dir: str, timings: dict) -> dict:
    """Run the first stages shared by the clustering and choose-k runs; stage times go into ``timings``.

    Ingests the source, then standardizes it when ``p.standardize`` is set.

    Parameters
    ----------
    T : object
        The stage tasks (from :func:`stage_tasks`).
    p : ClusteringFlowParams or flows.params.ChooseKParams
        The validated parameters (``limit``, ``chunk_rows``, ``standardize``; ``engine`` and
        ``ray_address`` when it has them, see :func:`engine_kwargs`).
    source : str
        The resolved source.
    out_dir : str
        The run folder.
    timings : dict
        Seconds per stage, updated in place (``ingest``, ``standardize``).

    Returns
    -------
    dict
        Reference of the store to cluster (the standardized one when asked for).
    """
    t0 = time.perf_counter()
    store = T.ingest.submit(source, out_dir, p.limit, p.chunk_rows).result()
    timings["ingest"] = time.perf_counter() - t0
    if p.standardize:
        t0 = time.perf_counter()
        store = T.standardize.submit(store, out_dir, **engine_kwargs(p)).result()
        timings["standardize"] = time.perf_counter() - t0
    return store


@flow(name="clustering-run", validate_parameters=False)
def clustering_run(params: dict, source: str, out_dir: str) -> dict:
    """Run the stages of one clustering run, on the flow's task runner (Dask, or threads for Ray and local).

    Seeds and fits ``n_init`` times, keeps the lowest inertia, evaluates it, writes the report and
    publishes it (and the fit's history) as artifacts.  ``run.json`` in ``out_dir`` says 'running',
    then 'completed' once everything is written, or 'failed'.

    Parameters
    ----------
    params : dict
        Validated parameters (a dumped :class:`ClusteringFlowParams`).
    source : str
        The resolved source.
    out_dir : str
        The run folder.

    Returns
    -------
    dict
        ``output_dir``, ``report``, ``summary``, ``plots``, ``centers`` (path of the best fit),
        ``n_iter``, ``ms_per_iteration``, ``inertia``, ``metrics``, ``timings``, ``store``, ``shape`` and
        ``workers_tuned`` (whether the run raised its own LocalCluster's allocator thresholds,
        :func:`tune_own_cluster`).
    """
    logger = get_run_logger()
    p = ClusteringFlowParams(**params)
    ek = engine_kwargs(p)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_status(out_dir, "running", flow="clustering_flow", params=p.model_dump())
    try:
        if ek["engine"] == "ray":  # once, before tasks run in threads of this process
            stages.connect_ray(ek["ray_address"])
        tuned = tune_own_cluster(p)
        T = stage_tasks(out_dir)
        timings: dict[str, float] = {}
        store = ingest_and_standardize(T, p, source, out_dir, timings)
        n, d = store["shape"]
        logger.info("Data: %d samples x %d features; k=%d, init=%s, algorithm=%s, n_init=%d, engine=%s",
                    n, d, p.k, p.init, p.algorithm, p.n_init, ek["engine"])
        t0 = time.perf_counter()
        seeds = [T.seed.submit(store, out_dir, p.k, p.init, p.seed + i, f"seed-{i}", **ek) for i in range(p.n_init)]
        if p.algorithm in ("lloyd", "hamerly"):
            fits = [T.fit_lloyd.submit(store, s, out_dir, p.max_iter, p.tol, f"fit-{i}", p.algorithm, **ek)
                    for i, s in enumerate(seeds)]
        elif p.algorithm == "minibatch":
            fits = [T.fit_minibatch.submit(store, s, out_dir, p.batch_size, p.max_iter, p.tol, p.seed + i, f"fit-{i}",
                                           **ek)
                    for i, s in enumerate(seeds)]
        else:
            fits = [T.fit_family.submit(store, s, out_dir, p.algorithm, p.max_iter, p.tol, p.seed + i, f"fit-{i}",
                                        **ek)
                    for i, s in enumerate(seeds)]
        results = [f.result() for f in fits]
        timings["seed + fit"] = time.perf_counter() - t0
        best = min(results, key=lambda r: r["inertia"])
        t0 = time.perf_counter()
        metrics = T.evaluate.submit(store, best, out_dir, p.silhouette_sample, p.seed, **ek).result()
        timings["evaluate"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        rep = T.report.submit(out_dir, store, best, metrics, p.model_dump(), timings).result()
        timings["report"] = time.perf_counter() - t0
        publish_report(rep["markdown"], "clustering-report", f"k-means on {Path(str(p.source)).name}, k={p.k}")
        if best.get("history"):
            publish_history(best["history"], "clustering-history", f"Lloyd history of {best['name']}")
        result = {"output_dir": out_dir, "report": rep["report_path"], "summary": rep["summary_path"],
                  "plots": rep["plots"], "centers": best["path"], "n_iter": best["n_iter"],
                  "ms_per_iteration": stages.ms_per_iteration(best),
                  "inertia": metrics["inertia"], "metrics": {k: v for k, v in metrics.items()
                                                              if k in ("ari", "nmi", "accuracy", "silhouette",
                                                                       "inertia")},
                  "timings": timings, "store": store["url"], "shape": store["shape"], "workers_tuned": tuned}
        write_status(out_dir, "completed", flow="clustering_flow", report=rep["report_path"])
        logger.info("Report: %s", rep["report_path"])
        return result
    except BaseException as exc:
        write_status(out_dir, "failed", flow="clustering_flow", error=f"{type(exc).__name__}: {exc}")
        raise


@flow(name="clustering_flow", validate_parameters=True)
def clustering_flow(
    source: str = "sklearn-digits",
    k: int = 8,
    init: str = "k-means++",
    algorithm: str = "lloyd",
    standardize: bool = False,
    n_init: int = 1,
    seed: int = 0,
    output_dir: Optional[str] = None,
    dask_address: Optional[str] = None,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    max_iter: int = 300,
    tol: float = 1e-4,
    batch_size: int = 1024,
    limit: Optional[int] = None,
    chunk_rows: Optional[int] = None,
    silhouette_sample: int = 2000,
    engine: str = "auto",
    ray_address: Optional[str] = None,
) -> dict:
    """Run k-means on Dask or Ray: ingest, standardize, seed, fit, evaluate and report.

    Ingest ``source``, optionally standardize, seed ``n_init`` times, fit (Lloyd or mini-batch), keep
    the lowest inertia, evaluate and report into ``output_dir``.

    Parameters are validated before any work starts; the source and the Dask scheduler are checked
    (or Ray connected to) before anything is written.  ``dask_address`` empty: a LocalCluster of
    ``n_workers`` processes.  ``engine="ray"``: the passes over the data run in Ray actors (the cluster
    at ``ray_address``, else a local Ray bound to 127.0.0.1), the tasks in threads of the flow's process,
    and no Dask cluster is started (``--engine ray --ray-address ray://head:10001`` on the command line).
    The centers, metrics and cache keys are the same whatever the engine.
    The run folder is ``<output_dir>/<run_name>`` (default ``runs/clustering/<run_name>``, see
    :func:`flows.params.default_output_dir`); finished stages are cached and Lloyd fits resume from
    their checkpoints.

    Parameters
    ----------
    source : str, default: "sklearn-digits"
        Input data: a Zarr store, a .npy/.csv/.parquet file, an MNIST folder, 'mnist' (found through
        MNIST_DIR) or 'sklearn-digits'.
    k : int, default: 8
        Number of clusters.
    init : str, default: "k-means++"
        Seeding: 'k-means++', 'k-means||', 'random' or 'random-partition'.
    algorithm : str, default: "lloyd"
        'lloyd', 'hamerly' (the same iterations, bounds skip most distances) or 'minibatch'.
    standardize : bool, default: False
        Cluster a standardized copy of the data.
    n_init : int, default: 1
        Number of seeds; the fit with the lowest inertia is kept.
    seed : int, default: 0
        Random seed (seed ``i`` uses ``seed + i``).
    output_dir : str, optional
        Base folder of the run folders.
    dask_address : str, optional
        ``tcp://host:port`` of a Dask scheduler; empty: start a LocalCluster.
    n_workers : int, default: 2
        LocalCluster worker processes.
    threads_per_worker : int, default: 1
        Threads per LocalCluster worker.
    max_iter : int, default: 300
        Maximum number of iterations (steps for mini-batch).
    tol : float, default: 1e-4
        Convergence tolerance.
    batch_size : int, default: 1024
        Samples per mini-batch.
    limit : int, optional
        Keep only the first rows of an MNIST source.
    chunk_rows : int, optional
        Rows per chunk of the ingested store.
    silhouette_sample : int, default: 2000
        Size of the sample the silhouette is estimated on (0: none).
    engine : {"auto", "dask", "ray", "local"}, default: "auto"
        Where the k-means passes run: "auto" (Dask; Ray when ``ray_address`` is given), "dask", "ray"
        (Ray actors) or "local" (the flow's process).
    ray_address : str, optional
        Ray cluster for ``engine="ray"`` (``ray://host:10001``, ``host:6379`` or ``"auto"``); empty:
        ``RAY_ADDRESS``, else a local Ray bound to 127.0.0.1.

    Returns
    -------
    dict
        The result of :func:`clustering_run` (``output_dir``, ``report``, ``centers``, ``n_iter``,
        ``inertia``, ``metrics``, ...).

    Raises
    ------
    flows.params.ParameterError
        If a parameter is invalid (an ``engine`` other than "auto", "dask", "ray" or "local" among
        them), the source does not exist, the Dask scheduler cannot be reached or Ray cannot be
        connected to.
    """
    quiet_dask_logs()
    values = dict(source=source, k=k, init=init, algorithm=algorithm, standardize=standardize, n_init=n_init,
                  seed=seed, output_dir=output_dir, dask_address=dask_address, n_workers=n_workers,
                  threads_per_worker=threads_per_worker, max_iter=max_iter, tol=tol, batch_size=batch_size,
                  limit=limit, chunk_rows=chunk_rows, silhouette_sample=silhouette_sample, engine=engine,
                  ray_address=ray_address)
    p = validate_params(ClusteringFlowParams, values, "clustering_flow")
    src = check_source(p.source)
    engine = flow_engine(p)
    if p.dask_address:
        check_dask_address(p.dask_address)
    if engine == "ray":
        check_ray(p.ray_address)
    # the run folder is named by the parameters that change results: not the engine (see ClusteringFlowParams)
    out = default_output_dir("clustering", ClusteringParams(**p.model_dump(exclude={"engine", "ray_address"})))
    runner = make_task_runner(p.dask_address, p.n_workers, p.threads_per_worker, engine=engine)
    where = {"ray": f"Ray ({p.ray_address or 'local, 127.0.0.1'})", "local": "this process"}.get(
        engine, f"Dask ({p.dask_address or f'LocalCluster({p.n_workers} workers)'})")
    get_run_logger().info("Output folder: %s; engine: %s", out, where)
    return clustering_run.with_options(task_runner=runner)(params=p.model_dump(), source=src, out_dir=out)


def check_ray(address: str | None) -> None:
    """Connect to Ray (:func:`pipelines.stages.connect_ray`) before anything is written; fail clearly."""
    try:
        stages.connect_ray(address)
    except Exception as exc:  # ray.init raises ConnectionError, RuntimeError, ValueError...
        raise ParameterError(
            f"Cannot connect to Ray at {address or 'a local instance'} ({type(exc).__name__}: {exc}). Start one "
            "with `ray start --head` (then --ray-address HOST:6379 or ray://HOST:10001), fix ray_address, or "
            "leave it empty for a local Ray.") from None


def _cli(argv=None):
    return run_cli(ClusteringFlowParams, clustering_flow, "python -m flows.clustering",
                   ("output_dir", "report", "centers", "n_iter", "inertia"), argv)


if __name__ == "__main__":
    _cli()
