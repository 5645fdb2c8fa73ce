"""``make demo``: ``clustering_flow`` on MNIST (or scikit-learn's digits when MNIST is absent), k=10, on
a local Dask cluster of 2 worker processes, recorded by Prefect's local server; prints where the
report is.

Without ``PREFECT_API_URL``, a ``prefect server`` is started on 127.0.0.1 (a free port, database in
``PREFECT_HOME``) for the length of the run and stopped afterwards, so the Dask workers report to
the same API instead of each starting a temporary one.  ``prefect server start`` later shows the run.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from flows.server import local_prefect_server

REPO = Path(__file__).resolve().parent.parent


def main(argv=None):
    """Command line of ``python -m flows.demo`` (``make demo``).

    Runs ``clustering_flow`` on ``--source`` (default: MNIST if found through ``MNIST_DIR``, else
    ``sklearn-digits``) with ``--k`` clusters (default 10) on a local Dask cluster of
    ``--n-workers`` processes (default 2), writing under ``--output-dir`` (default:
    ``demo-output/clustering-flow`` in the repository), inside
    :func:`flows.server.local_prefect_server`.  Prints a JSON summary (shape, iterations, time per
    iteration, inertia, metrics, report and plots) and the report's path.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).

    Raises
    ------
    SystemExit
        If the arguments cannot be parsed (from :mod:`argparse`).
    ParameterError
        If the flow's parameter validation fails (see :mod:`flows.params`).
    """
    ap = argparse.ArgumentParser(prog="python -m flows.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--n-workers", type=int, default=2)
    ap.add_argument("--output-dir", default=str(REPO / "demo-output" / "clustering-flow"))
    ap.add_argument("--source", default=None, help="default: MNIST if found (MNIST_DIR), else sklearn-digits")
    args = ap.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    from kmeans_dist.data import find_mnist_dir

    source = args.source or (str(find_mnist_dir()) if find_mnist_dir() is not None else "sklearn-digits")
    with local_prefect_server():
        from flows.clustering import clustering_flow

        res = clustering_flow(source=source, k=args.k, n_workers=args.n_workers, output_dir=args.output_dir)
    summary = {"source": source, "shape": res["shape"], "n_iter": res["n_iter"],
               "ms_per_iteration": None if res.get("ms_per_iteration") is None else round(res["ms_per_iteration"], 1),
               "inertia": res["inertia"],
               **{k: v for k, v in res["metrics"].items() if k != "inertia"}, "report": res["report"],
               "plots": res["plots"]}
    # the one line a user needs (the flow itself logs through Prefect's logger)
    print(json.dumps(summary, indent=2, default=str))
    print(f"\nReport: {res['report']}")


if __name__ == "__main__":
    main()
