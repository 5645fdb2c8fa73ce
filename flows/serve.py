"""Deployments of the clustering flows (the same ones as ``prefect.yaml``).

- ``python -m flows.serve serve``: serve both deployments from this process (no work pool needed):
  ``clustering_flow`` every night at 03:00 UTC, ``choose_k_flow`` on demand.
- ``python -m flows.serve deploy --pool kmeans-process``: register them with a process work pool
  (code taken from this checkout); start a worker with ``prefect worker start --pool kmeans-process``.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CLUSTERING_CRON = "0 3 * * *"
CLUSTERING_PARAMS = {"source": "sklearn-digits", "k": 10, "init": "k-means++", "algorithm": "lloyd", "n_workers": 2}
CHOOSE_K_PARAMS = {"source": "sklearn-digits", "k_min": 2, "k_max": 12, "n_workers": 2}

_log = logging.getLogger("flows.serve")


def _default_source() -> str:
    from kmeans_dist.data import find_mnist_dir

    return "mnist" if find_mnist_dir() is not None else "sklearn-digits"


def runner_deployments(cron: str = CLUSTERING_CRON):
    """Build the ``RunnerDeployment`` objects for :func:`prefect.serve`.

    ``clustering-nightly`` runs ``clustering_flow`` on ``cron``; ``choose-k`` runs ``choose_k_flow``
    on demand.  Both use MNIST when it is found (``MNIST_DIR``), else scikit-learn's digits.

    Parameters
    ----------
    cron : str, default: "0 3 * * *"
        Schedule of ``clustering-nightly`` (03:00 UTC every night).

    Returns
    -------
    list of prefect.deployments.runner.RunnerDeployment
        The two deployments.
    """
    from flows.choose_k import choose_k_flow
    from flows.clustering import clustering_flow

    src = _default_source()
    return [
        clustering_flow.to_deployment(name="clustering-nightly", cron=cron, tags=["kmeans", "scheduled"],
                                      parameters={**CLUSTERING_PARAMS, "source": src}),
        choose_k_flow.to_deployment(name="choose-k", tags=["kmeans", "on-demand"],
                                    parameters={**CHOOSE_K_PARAMS, "source": src}),
    ]


def deploy_to_pool(pool: str = "kmeans-process", cron: str = CLUSTERING_CRON) -> list:
    """Register both deployments with a process work pool; returns their ids.

    The code is taken from this checkout (nothing is built or pushed); a worker started with
    ``prefect worker start --pool <pool>`` runs them.

    Parameters
    ----------
    pool : str, default: "kmeans-process"
        Name of the process work pool.
    cron : str, default: "0 3 * * *"
        Schedule of ``clustering-nightly`` (03:00 UTC every night).

    Returns
    -------
    list
        The ids of the ``clustering-nightly`` and ``choose-k`` deployments.
    """
    from prefect import flow

    src = _default_source()
    ids = []
    for entry, name, kw in [
        ("flows.clustering:clustering_flow", "clustering-nightly",
         {"cron": cron, "parameters": {**CLUSTERING_PARAMS, "source": src}, "tags": ["kmeans", "scheduled"]}),
        ("flows.choose_k:choose_k_flow", "choose-k",
         {"parameters": {**CHOOSE_K_PARAMS, "source": src}, "tags": ["kmeans", "on-demand"]}),
    ]:
        fl = flow.from_source(source=str(REPO), entrypoint=entry)
        ids.append(fl.deploy(name=name, work_pool_name=pool, build=False, push=False, print_next_steps=False, **kw))
    return ids


def main(argv=None):
    """Command line of ``python -m flows.serve``: ``serve`` or ``deploy``.

    ``serve [--cron CRON]`` serves both deployments from this process (see
    :func:`runner_deployments`); ``deploy [--pool POOL] [--cron CRON]`` registers them with a
    process work pool (see :func:`deploy_to_pool`) and logs their ids.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).

    Raises
    ------
    SystemExit
        If the arguments cannot be parsed (from :mod:`argparse`).
    """
    ap = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve both deployments from this process")
    s.add_argument("--cron", default=CLUSTERING_CRON)
    d = sub.add_parser("deploy", help="register both deployments with a process work pool")
    d.add_argument("--pool", default="kmeans-process")
    d.add_argument("--cron", default=CLUSTERING_CRON)
    args = ap.parse_args(argv)
    if args.cmd == "serve":
        from prefect import serve

        serve(*runner_deployments(args.cron))
    else:
        logging.basicConfig(level=logging.INFO)
        for i in deploy_to_pool(args.pool, args.cron):
            _log.info("deployment %s registered with pool %s", i, args.pool)


if __name__ == "__main__":
    main()
