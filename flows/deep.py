"""``deep_clustering_flow``: deep k-means (AEKM, DCN, DKM, CT) trained on Ray, orchestrated by Prefect.

Two tasks: ``prepare_store`` (use a Zarr store as is, or ingest an MNIST folder / any source the project
ingests into ``<output_dir>/data.zarr`` with pixels scaled to [0, 1]), then ``ray_deep_stage``, which runs
the Ray Train stage of :mod:`pipelines.deep` as a Ray job from inside the task (connecting to
``ray_address``/``$RAY_ADDRESS`` when given, else starting a local Ray whose servers all listen on 127.0.0.1,
:func:`pipelines.ray_local.init_local_ray`).  The task returns the stage's
summary (final ACC/NMI/ARI, checkpoint and figure paths); a markdown artifact shows the scores.

A killed run resumes from its last checkpoint when the flow is run again with the same ``run_name`` and
``output_dir``.  Run it: ``python -m flows.deep --source ../shared/data/mnist --method CT``.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Optional

from prefect import flow, get_run_logger, task

__all__ = ["deep_clustering_flow", "prepare_store", "ray_deep_stage"]


def _inits() -> tuple[str, ...]:
    """The autoencoder's ``init`` choices (imported here: torch loads with it)."""
    from kmeans_dist.deep.model import INITS

    return INITS


def _methods() -> tuple[str, ...]:
    """The method names :func:`kmeans_dist.deep.make_method` knows (imported here: torch loads with it)."""
    from kmeans_dist.deep import METHODS

    return tuple(METHODS)


def _is_store(path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "zarr.json").exists()


@task(name="prepare-store")
def prepare_store(source: str, output_dir: str, limit: Optional[int] = None) -> str:
    """The Zarr store to train on: ``source`` itself when it is a store, else an ingested copy."""
    from kmeans_dist.data import ingest

    if _is_store(source):
        return os.fspath(source)
    url = os.fspath(Path(output_dir) / ("data.zarr" if not limit else f"data-{limit}.zarr"))
    if _is_store(url):
        return url
    kw = {"limit": limit, "scale": 1 / 255} if Path(source).is_dir() else {}
    return ingest(source, url, **kw)


@task(name="ray-deep-stage")
def ray_deep_stage(store_url: str, output_dir: str, params: dict) -> dict:
    """Run the Ray Train stage (a Ray job launched from this task) and return its summary."""
    from pipelines.deep import run_deep_stage

    logger = get_run_logger()
    logger.info("Ray deep stage: %s on %s", params.get("method"), store_url)
    summary = run_deep_stage(store_url, output_dir, **params)
    logger.info("done: %s", summary.get("final_scores"))
    return summary


def _publish(summary: dict) -> None:
    try:
        from prefect.artifacts import create_markdown_artifact

        sc = summary.get("final_scores") or {}
        lines = [f"# Deep clustering: {summary.get('method')}", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k.upper()} | {v:.4f} |" for k, v in sc.items()]
        lines += ["", f"Finetuning epochs: {summary.get('epoch')}; checkpoint: `{summary.get('checkpoint')}`", ""]
        lines += [f"- {k}: `{v}`" for k, v in (summary.get("figures") or {}).items()]
        create_markdown_artifact("\n".join(lines), key="deep-clustering-report",
                                 description="Deep k-means scores and figures")
    except Exception:  # an artifact never fails the flow
        pass


@flow(name="deep-clustering")
def deep_clustering_flow(source: str, output_dir: str = "runs/deep", method: str = "CT", n_clusters: int = 10,
                         pretrain_epochs: int = 50, finetune_epochs: int = 100, batch_size: int = 256,
                         lr: float = 1e-3, seed: int = 0, num_workers: int = 2, use_gpu: Optional[bool] = None,
                         limit: Optional[int] = None, run_name: Optional[str] = None,
                         method_kwargs: Optional[dict] = None, ray_address: Optional[str] = None,
                         ray_num_cpus: Optional[int] = None, max_failures: int = 1, ae_init: str = "torch",
                         pretrain_min_steps: Optional[int] = None, finetune_min_steps: Optional[int] = None) -> dict:
    """Ingest (if needed) and train ``method`` with Ray Train; returns the stage summary.

    ``source``: a Zarr store, an MNIST folder, or anything :func:`kmeans_dist.data.ingest` takes.
    ``ae_init``: the autoencoder's initial weights, ``"torch"`` (PyTorch's default) or ``"glorot"``.
    ``batch_size`` is the global batch; each phase runs ``max(epochs, ceil(min_steps / steps_per_epoch))``
    epochs, ``*_min_steps`` defaulting to the paper's MNIST step counts (13,700 and 27,400; 0: the epochs as
    given), see :func:`pipelines.deep.run_deep_stage`.
    """
    if method not in _methods():
        raise ValueError(f"method must be one of {_methods()}, got {method!r}")
    if num_workers < 1 or pretrain_epochs < 0 or finetune_epochs < 0 or batch_size < 1:
        raise ValueError("num_workers and batch_size must be >= 1, epochs >= 0")
    if ae_init not in _inits():
        raise ValueError(f"ae_init must be one of {_inits()}, got {ae_init!r}")
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    store = prepare_store(source, os.fspath(out), limit)
    ray_kw = {}
    if ray_address:
        ray_kw["address"] = ray_address
    if ray_num_cpus:
        ray_kw["num_cpus"] = ray_num_cpus
    params = dict(method=method, n_clusters=n_clusters, pretrain_epochs=pretrain_epochs,
                  finetune_epochs=finetune_epochs, batch_size=batch_size, lr=lr, seed=seed,
                  num_workers=num_workers, use_gpu=use_gpu, method_kwargs=method_kwargs, name=run_name,
                  ray_init_kwargs=ray_kw or None, max_failures=max_failures, ae_init=ae_init,
                  pretrain_min_steps=pretrain_min_steps, finetune_min_steps=finetune_min_steps)
    summary = ray_deep_stage(store, os.fspath(out), params)
    _publish(summary)
    return summary


def main(argv=None):
    ap = argparse.ArgumentParser(description="Deep k-means on Ray, as a Prefect flow")
    ap.add_argument("--source", required=True)
    ap.add_argument("--output-dir", default="runs/deep")
    ap.add_argument("--method", default="CT", choices=_methods())
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--pretrain-epochs", type=int, default=50)
    ap.add_argument("--finetune-epochs", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-name", default=None)
    ap.add_argument("--ae-init", default="torch", choices=_inits())
    a = ap.parse_args(argv)
    s = deep_clustering_flow(source=a.source, output_dir=a.output_dir, method=a.method, n_clusters=a.k,
                             pretrain_epochs=a.pretrain_epochs, finetune_epochs=a.finetune_epochs,
                             num_workers=a.workers, limit=a.limit, seed=a.seed, run_name=a.run_name,
                             ae_init=a.ae_init)
    print(s.get("final_scores"), s.get("figures"))


if __name__ == "__main__":
    main()
