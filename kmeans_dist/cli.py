"""Command line: ``kmeans-dist ingest | fit | predict | info``.

    kmeans-dist ingest ../shared/data/mnist mnist.zarr
    kmeans-dist fit mnist.zarr --k 10 --out model --workers 2
    kmeans-dist predict model mnist.zarr --out labels.zarr
    kmeans-dist info mnist.zarr
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager

from .chunked.workers import tune_worker_malloc


@contextmanager
def _client(args):
    from distributed import Client, LocalCluster

    engine = getattr(args, "engine", "auto")
    if engine in ("ray", "local") or (engine == "auto" and getattr(args, "ray_address", None)):
        if engine != "local":  # the k-means passes run in Ray actors; no Dask cluster is started
            from .chunked.ray_engine import connect

            connect(args.ray_address, log_to_driver=False)
        yield None
        return
    if getattr(args, "scheduler", None):
        c = Client(args.scheduler, timeout="20s")
        try:
            yield c
        finally:
            c.close()
        return
    n = getattr(args, "workers", 0) or 0
    if n <= 0:
        yield None
        return
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as lc, Client(lc) as c:
        tune_worker_malloc(c)  # the workers this command starts decode stored chunks into reused memory
        yield c


def cmd_ingest(args):
    """``kmeans-dist ingest SOURCE DEST``: write a source to a Zarr store and print a summary.

    The destination is checked before any work (:func:`kmeans_dist.data.check_output`: never an
    input, never an existing output unless ``--overwrite``); then
    :func:`kmeans_dist.data.ingest` writes it and one line gives its shape, dtype, chunks,
    whether it has labels, and the time taken.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments: ``source``, ``dest``, ``limit``, ``scale``, ``chunk_rows``,
        ``label_column``, ``overwrite``.

    Raises
    ------
    ValueError
        If the destination is refused or the source cannot be ingested (:func:`main` prints
        it and exits with status 2).
    """
    from .data import check_output, ingest

    check_output(args.dest, [args.source], overwrite=args.overwrite)

    kw = {"overwrite": args.overwrite}
    if args.limit:
        kw["limit"] = args.limit
    if args.scale is not None:
        kw["scale"] = args.scale
    if args.chunk_rows:
        kw["chunk_rows"] = args.chunk_rows
    if args.label_column:
        kw["label_column"] = args.label_column
    t = time.perf_counter()
    url = ingest(args.source, args.dest, **kw)
    from .data import store_info

    info = store_info(url)
    print(f"wrote {url}: shape {info['shape']} {info['dtype']} chunks {info['chunks']} "
          f"labels={info['has_labels']} in {time.perf_counter() - t:.1f}s")


def cmd_fit(args):
    """``kmeans-dist fit STORE --k K``: fit k-means on a store, save the model, print a JSON summary.

    ``--out`` is checked before any compute (never the input, never an existing output unless
    ``--overwrite``).  The store is opened lazily, optionally standardized, and fitted with
    the estimator of the family that ``--algorithm`` names (:func:`kmeans_dist.estimators.make_estimator`) on a
    ``--scheduler``, on
    ``--workers`` local worker processes, or in-process.  The summary holds ``k``, ``n_iter``,
    ``inertia``, ``seconds``, ``model`` and, except for mini-batch, ``seconds_per_iteration``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of the ``fit`` sub-command (``store``, ``k``, ``init``,
        ``algorithm``, ``n_init``, ``max_iter``, ``tol``, ``batch_size``, ``polish_iter``,
        ``seed``, ``standardize``, ``out``, ``overwrite``, ``scheduler``, ``workers``).

    Raises
    ------
    ValueError
        If ``--out`` is refused or a parameter is invalid (:func:`main` prints it and exits
        with status 2).
    """
    from .chunked.preprocessing import standardize
    from .estimators import make_estimator
    from .data import check_output, open_store

    if args.out:  # before any compute: never the input, never an existing output unless --overwrite
        check_output(args.out, [args.store], overwrite=args.overwrite)
    with _client(args) as client:
        X = open_store(args.store)
        if args.standardize:
            X = standardize(X, client=client)
        common = dict(n_clusters=args.k, init=args.init, max_iter=args.max_iter, tol=args.tol,
                      random_state=args.seed, client=client, verbose=1,
                      engine=getattr(args, "engine", "auto"))
        n_init = args.n_init if args.n_init == "auto" else int(args.n_init)
        est = make_estimator(args.algorithm, args.k, batch_size=args.batch_size, polish_iter=args.polish_iter,
                             n_init=n_init, **{k: v for k, v in common.items() if k != "n_clusters"})
        est.fit(X)
        if args.out:
            est.save(args.out, overwrite=args.overwrite)
        summary = {"k": args.k, "n_iter": int(est.n_iter_), "inertia": float(est.inertia_),
                   "seconds": round(est.fit_seconds_, 3), "model": args.out}
        if hasattr(est, "history_") and est.history_ and args.algorithm != "minibatch":
            summary["seconds_per_iteration"] = float(sum(h["seconds"] for h in est.history_) / len(est.history_))
        print(json.dumps(summary))


def cmd_predict(args):
    """``kmeans-dist predict MODEL STORE --out OUT``: label a store with a saved model.

    ``--out`` is checked first (never the store or the model, never an existing output unless
    ``--overwrite``); the labels are written as a Zarr store of one float64 column with
    attributes ``source`` and ``kind="labels"``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments: ``model``, ``store``, ``out``, ``overwrite``, ``scheduler``,
        ``workers``.

    Raises
    ------
    FileNotFoundError
        If there is no model at ``model``.
    ValueError
        If ``--out`` is refused or the model cannot be loaded (:func:`main` prints it and
        exits with status 2).
    """
    from . import load_model
    from .data import check_output, open_store, write_store

    check_output(args.out, [args.store, args.model], overwrite=args.overwrite)
    est = load_model(args.model)
    with _client(args):
        X = open_store(args.store)
        labels = est.predict(X)
        write_store(args.out, labels[:, None].astype("float64"), attrs={"source": args.store, "kind": "labels"},
                    overwrite=args.overwrite)
    print(f"wrote labels to {args.out}")


def cmd_info(args):
    """``kmeans-dist info PATH``: print a saved model's ``model.json`` or a store's description.

    A folder with ``model.json`` is printed as its JSON without the per-iteration history;
    anything else as :func:`kmeans_dist.data.store_info`, in JSON.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments: ``path``.
    """
    from pathlib import Path

    p = Path(args.path)
    if (p / "model.json").exists():
        meta = json.loads((p / "model.json").read_text())
        meta.pop("history", None)
        print(json.dumps(meta, indent=1))
        return
    from .data import store_info

    print(json.dumps(store_info(args.path), indent=1, default=str))


def main(argv=None):
    """Entry point of the ``kmeans-dist`` command: parse the arguments and run the sub-command.

    Sub-commands: ``ingest`` (:func:`cmd_ingest`), ``fit`` (:func:`cmd_fit`), ``predict``
    (:func:`cmd_predict`) and ``info`` (:func:`cmd_info`).  A ``ValueError``, ``TypeError``,
    ``FileNotFoundError`` or ``FileExistsError`` raised by the sub-command is printed as
    ``kmeans-dist: error: ...`` on stderr instead of a traceback.

    Parameters
    ----------
    argv : list of str, optional
        The arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 on success, 2 on an error reported as above.

    Raises
    ------
    SystemExit
        On invalid command-line arguments or ``--help`` (from ``argparse``).
    """
    ap = argparse.ArgumentParser(prog="kmeans-dist", description="Chunked k-means on Dask and Zarr")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("ingest", help="write a source (MNIST folder, .npy, CSV/Parquet, 'sklearn-digits') to Zarr")
    p.add_argument("source")
    p.add_argument("dest")
    p.add_argument("--limit", type=int)
    p.add_argument("--scale", type=float)
    p.add_argument("--chunk-rows", type=int)
    p.add_argument("--label-column")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(fn=cmd_ingest)

    def cluster_args(p):
        p.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://host:port)")
        p.add_argument("--workers", type=int, default=2, help="local worker processes if no --scheduler (0: in-process)")
        p.add_argument("--engine", choices=["auto", "dask", "ray", "local"], default="auto",
                       help="where the blocks live: Dask workers, Ray actors, or this process (auto: Dask, "
                            "else Ray when --ray-address is given)")
        p.add_argument("--ray-address", help="Ray cluster to connect to with --engine ray (ray://host:10001, "
                                             "host:6379 or auto; default: RAY_ADDRESS, else a local Ray)")

    p = sub.add_parser("fit", help="fit k-means on a store and save the model")
    p.add_argument("store")
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--init", default="k-means||")
    p.add_argument("--algorithm", choices=["lloyd", "hamerly", "elkan", "minibatch", "bisecting", "spherical",
                                           "kmedians", "kmedoids"], default="lloyd",
                   help="lloyd, hamerly, elkan: KMeans (the same iterations; bounds skip distances with many "
                        "clusters); minibatch: MiniBatchKMeans; bisecting, spherical (cosine), kmedians (L1), "
                        "kmedoids (centers are rows)")
    p.add_argument("--n-init", default="auto")
    p.add_argument("--max-iter", type=int, default=300)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--polish-iter", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--standardize", action="store_true")
    p.add_argument("--out", help="folder for the saved model (never the input store)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    cluster_args(p)
    p.set_defaults(fn=cmd_fit)

    p = sub.add_parser("predict", help="label a store with a saved model")
    p.add_argument("model")
    p.add_argument("store")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    cluster_args(p)
    p.set_defaults(fn=cmd_predict)

    p = sub.add_parser("info", help="describe a store or a saved model")
    p.add_argument("path")
    p.set_defaults(fn=cmd_info)

    args = ap.parse_args(argv)
    try:
        args.fn(args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as exc:
        print(f"kmeans-dist: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
