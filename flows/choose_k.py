"""``choose_k_flow``: fit a range of k in parallel (one seed + Lloyd task chain per k and init) on
Dask (or with ``engine`` "ray" / "local", as ``clustering_flow``), evaluate each (inertia, silhouette, Calinski-Harabasz, Davies-Bouldin, and ARI/NMI when the
data has labels) and recommend a k per criterion, with elbow and silhouette curves.

Same validation, caching, checkpoints, engines and Dask set-up as ``clustering_flow``.
Run it: ``python -m flows.choose_k --source sklearn-digits --k-min 2 --k-max 12`` (``--engine ray`` for Ray).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from prefect import flow, get_run_logger, task

from flows.artifacts import publish_report
from flows.clustering import (EngineParams, check_ray, engine_kwargs, flow_engine, ingest_and_standardize,
                              make_task_runner, quiet_dask_logs, stage_tasks, tune_own_cluster, write_status)
from flows.params import (ChooseKParams, check_dask_address, check_source, default_output_dir, run_cli,
                          validate_params)
from pipelines import stages

__all__ = ["choose_k_flow", "choose_k_run", "ChooseKFlowParams"]


class ChooseKFlowParams(EngineParams, ChooseKParams):
    """Parameters of ``choose_k_flow``: :class:`flows.params.ChooseKParams` with the engine fields
    (:class:`flows.clustering.EngineParams`: ``engine`` and ``ray_address``, in no run folder's name).

    Examples
    --------
    >>> p = ChooseKFlowParams(k_min=2, k_max=4, engine="ray")
    >>> p.k_values(), p.engine
    ([2, 3, 4], 'ray')
    """


@task(name="choose_k_report")
def choose_k_report_task(out_dir: str, results: list, params: dict, timings: dict) -> dict:
    """Prefect task of :func:`pipelines.stages.choose_k_report` (not cached).

    Parameters
    ----------
    out_dir : str
        The run folder.
    results : list of dict
        One dict of metrics per k.
    params : dict
        The run's parameters.
    timings : dict
        Seconds per stage.

    Returns
    -------
    dict
        ``markdown``, ``report_path``, ``summary_path``, ``plots`` and ``best``.
    """
    return stages.choose_k_report(out_dir, results=results, params=params, timings=timings, logger=get_run_logger())


@flow(name="choose-k-run", validate_parameters=False)
def choose_k_run(params: dict, source: str, out_dir: str) -> dict:
    """Run the stages of one choose-k run, on the flow's task runner (Dask, or threads for Ray and local).

    One seed + Lloyd task chain per k and seed, all submitted at once; the lowest inertia per k is
    evaluated, the report written, and published with a table of metrics per k as artifacts.
    ``run.json`` in ``out_dir`` says 'running', then 'completed' once everything is written, or
    'failed'.

    Parameters
    ----------
    params : dict
        Validated parameters (a dumped :class:`ChooseKFlowParams`).
    source : str
        The resolved source.
    out_dir : str
        The run folder.

    Returns
    -------
    dict
        ``output_dir``, ``report``, ``best`` (suggested k by criterion), ``results`` (metrics per k),
        ``plots`` and ``timings``.

    Raises
    ------
    kmeans_dist.data.DataError
        If the largest k is larger than the number of samples.
    """
    from kmeans_dist.data import DataError

    logger = get_run_logger()
    p = ChooseKFlowParams(**params)
    ek = engine_kwargs(p)
    ks = p.k_values()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_status(out_dir, "running", flow="choose_k_flow", params=p.model_dump())
    try:
        if ek["engine"] == "ray":  # once, before tasks run in threads of this process
            stages.connect_ray(ek["ray_address"])
        tune_own_cluster(p)
        T = stage_tasks(out_dir)
        timings: dict[str, float] = {}
        store = ingest_and_standardize(T, p, source, out_dir, timings)
        n = store["shape"][0]
        if max(ks) > n:
            raise DataError(f"k_max={max(ks)} is larger than the number of samples ({n}); lower k_max")
        logger.info("Fitting k in %s (%d x %d), n_init=%d, engine=%s", ks, *store["shape"], p.n_init, ek["engine"])
        t0 = time.perf_counter()
        fits = {}
        for k in ks:
            for i in range(p.n_init):
                s = T.seed.submit(store, out_dir, k, p.init, p.seed + i, f"k{k}-seed-{i}", **ek)
                fits.setdefault(k, []).append(T.fit_lloyd.submit(store, s, out_dir, p.max_iter, p.tol, f"k{k}-fit-{i}",
                                                                 **ek))
        best = {k: min((f.result() for f in fs), key=lambda r: r["inertia"]) for k, fs in fits.items()}
        timings["seed + fit (all k)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        evals = {k: T.evaluate.submit(store, best[k], out_dir, p.silhouette_sample, p.seed, **ek) for k in ks}
        results = []
        for k in ks:
            m = evals[k].result()
            results.append({"k": k, "inertia": m["inertia"], "fit_inertia": best[k]["inertia"],
                            "n_iter": best[k]["n_iter"], "seconds": best[k].get("seconds"),
                            **{c: m.get(c) for c in ("silhouette", "silhouette_se", "calinski_harabasz",
                                                     "davies_bouldin", "ari", "nmi", "accuracy")},
                            "centers": best[k]["path"]})
        timings["evaluate (all k)"] = time.perf_counter() - t0
        rep = choose_k_report_task.submit(out_dir, results, p.model_dump(), timings).result()
        publish_report(rep["markdown"], "choose-k-report", f"choose k on {Path(str(p.source)).name}: {ks}")
        from prefect.artifacts import create_table_artifact

        create_table_artifact([{c: r.get(c) for c in ("k", "inertia", "silhouette", "calinski_harabasz",
                                                      "davies_bouldin", "ari", "nmi", "n_iter")} for r in results],
                              key="choose-k-metrics", description="Metrics per k")
        write_status(out_dir, "completed", flow="choose_k_flow", report=rep["report_path"])
        logger.info("Recommended k: %s; report: %s", rep["best"], rep["report_path"])
        return {"output_dir": out_dir, "report": rep["report_path"], "best": rep["best"], "results": results,
                "plots": rep["plots"], "timings": timings}
    except BaseException as exc:
        write_status(out_dir, "failed", flow="choose_k_flow", error=f"{type(exc).__name__}: {exc}")
        raise


@flow(name="choose_k_flow", validate_parameters=True)
def choose_k_flow(
    source: str = "sklearn-digits",
    k_min: int = 2,
    k_max: int = 10,
    k_step: int = 1,
    ks: Optional[list[int]] = None,
    init: str = "k-means++",
    standardize: bool = False,
    n_init: int = 1,
    seed: int = 0,
    output_dir: Optional[str] = None,
    dask_address: Optional[str] = None,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    max_iter: int = 100,
    tol: float = 1e-4,
    limit: Optional[int] = None,
    chunk_rows: Optional[int] = None,
    silhouette_sample: int = 2000,
    engine: str = "auto",
    ray_address: Optional[str] = None,
) -> dict:
    """Fit every k of ``k_min..k_max`` (or ``ks``) in parallel and recommend one.

    Same validation, caching, checkpoints and Dask set-up as ``clustering_flow``: parameters are
    validated before any work starts, the source and the Dask scheduler are checked before anything
    is written, and the run folder is ``<output_dir>/<run_name>`` (default
    ``runs/choose_k/<run_name>``).  ``dask_address`` empty: a LocalCluster of ``n_workers`` processes.

    Parameters
    ----------
    source : str, default: "sklearn-digits"
        Input data: a Zarr store, a .npy/.csv/.parquet file, an MNIST folder, 'mnist' (found through
        MNIST_DIR) or 'sklearn-digits'.
    k_min : int, default: 2
        Smallest k.
    k_max : int, default: 10
        Largest k.
    k_step : int, default: 1
        Step between two k.
    ks : list of int, optional
        The values of k, instead of ``k_min..k_max``.
    init : str, default: "k-means++"
        Seeding: 'k-means++', 'k-means||', 'random' or 'random-partition'.
    standardize : bool, default: False
        Cluster a standardized copy of the data.
    n_init : int, default: 1
        Number of seeds per k; the fit with the lowest inertia is kept.
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
    max_iter : int, default: 100
        Maximum number of Lloyd iterations per fit.
    tol : float, default: 1e-4
        Convergence tolerance.
    limit : int, optional
        Keep only the first rows of an MNIST source.
    chunk_rows : int, optional
        Rows per chunk of the ingested store.
    silhouette_sample : int, default: 2000
        Size of the sample the silhouette is estimated on (0: none).
    engine : {"auto", "dask", "ray", "local"}, default: "auto"
        Where the k-means passes run: "auto" (Dask; Ray when ``ray_address`` is given), "dask", "ray"
        (Ray actors) or "local" (the flow's process).  Every engine gives the same results, bit for bit.
    ray_address : str, optional
        Ray cluster for ``engine="ray"``; empty: ``RAY_ADDRESS``, else a local Ray bound to 127.0.0.1.

    Returns
    -------
    dict
        The result of :func:`choose_k_run` (``output_dir``, ``report``, ``best``, ``results``, ...).

    Raises
    ------
    flows.params.ParameterError
        If a parameter is invalid, the source does not exist, the Dask scheduler cannot be reached or Ray
        cannot be connected to.
    kmeans_dist.data.DataError
        If the largest k is larger than the number of samples.
    """
    quiet_dask_logs()
    values = dict(source=source, k_min=k_min, k_max=k_max, k_step=k_step, ks=ks, init=init, standardize=standardize,
                  n_init=n_init, seed=seed, output_dir=output_dir, dask_address=dask_address, n_workers=n_workers,
                  threads_per_worker=threads_per_worker, max_iter=max_iter, tol=tol, limit=limit,
                  chunk_rows=chunk_rows, silhouette_sample=silhouette_sample, engine=engine, ray_address=ray_address)
    p = validate_params(ChooseKFlowParams, values, "choose_k_flow")
    src = check_source(p.source)
    engine = flow_engine(p)
    if p.dask_address:
        check_dask_address(p.dask_address)
    if engine == "ray":
        check_ray(p.ray_address)
    # the run folder is named by the parameters that change results: not the engine
    out = default_output_dir("choose_k", ChooseKParams(**p.model_dump(exclude={"engine", "ray_address"})))
    runner = make_task_runner(p.dask_address, p.n_workers, p.threads_per_worker, engine=engine)
    where = {"ray": f"Ray ({p.ray_address or 'local, 127.0.0.1'})", "local": "this process"}.get(
        engine, f"Dask ({p.dask_address or f'LocalCluster({p.n_workers} workers)'})")
    get_run_logger().info("Output folder: %s; engine: %s", out, where)
    return choose_k_run.with_options(task_runner=runner)(params=p.model_dump(), source=src, out_dir=out)


def _cli(argv=None):
    return run_cli(ChooseKFlowParams, choose_k_flow, "python -m flows.choose_k", ("output_dir", "report", "best"), argv)


if __name__ == "__main__":
    _cli()
