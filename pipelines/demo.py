"""`make demo`: MNIST (or scikit-learn's digits) -> Zarr -> k=10 on a local Dask cluster -> summary + PNGs.

Usage: python -m pipelines.demo [--out demo-output] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def _acc_nmi(y, labels):
    try:
        from kmeans_dist.metrics import clustering_accuracy, normalized_mutual_info_score

        return float(clustering_accuracy(y, labels)), float(normalized_mutual_info_score(y, labels))
    except Exception:  # metrics module not available: in-memory fallback
        import numpy as np
        from scipy.optimize import linear_sum_assignment
        from sklearn.metrics import confusion_matrix, normalized_mutual_info_score

        y, labels = np.asarray(y), np.asarray(labels)
        cm = confusion_matrix(y, labels)
        r, c = linear_sum_assignment(-cm)
        return float(cm[r, c].sum() / len(y)), float(normalized_mutual_info_score(y, labels))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="demo-output")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args(argv)

    from distributed import Client, LocalCluster

    from kmeans_dist import KMeans
    from kmeans_dist.data import find_mnist_dir, ingest, open_labels, open_store, store_info
    from kmeans_dist.plots import plot_centroid_grid, plot_cluster_sizes, plot_inertia

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mnist = find_mnist_dir()
    source = str(mnist) if mnist else "sklearn-digits"
    store = out / ("mnist.zarr" if mnist else "digits.zarr")
    t0 = time.perf_counter()
    if not store.exists():
        ingest(source, store)
    info = store_info(store)
    t_ingest = time.perf_counter() - t0
    print(f"data: {source} -> {store} shape {info['shape']} {info['dtype']} chunks {info['chunks']}")

    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as lc, Client(lc) as client:
        print(f"dask dashboard: {client.dashboard_link}")
        X = open_store(store)
        km = KMeans(args.k, init="k-means||", random_state=0, client=client, verbose=1).fit(X)
        labels = km.labels_.compute()
    y = open_labels(store).compute()
    acc, nmi = _acc_nmi(y, labels)
    shape = info["attrs"].get("image_shape") or [28, 28]
    grid = plot_centroid_grid(km.cluster_centers_, shape, out / "centroids.png", sizes=km.cluster_sizes_)
    curve = plot_inertia(km.history_, out / "inertia.png")
    sizes = plot_cluster_sizes(km.cluster_sizes_, out / "cluster_sizes.png")
    km.save(out / "model")
    per_it = sum(h["seconds"] for h in km.history_) / len(km.history_)
    summary = {"data": source, "shape": info["shape"], "k": args.k, "iterations": km.n_iter_,
               "inertia": km.inertia_, "seconds_per_iteration": round(per_it, 4),
               "seeding_seconds": round(km.seeding_seconds_, 3), "fit_seconds": round(km.fit_seconds_, 3),
               "ingest_seconds": round(t_ingest, 3), "ACC": round(acc, 4), "NMI": round(nmi, 4),
               "centroids_png": grid, "inertia_png": curve, "sizes_png": sizes, "model": os.fspath(out / "model")}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    print(json.dumps(summary, indent=1, default=float))
    return summary


if __name__ == "__main__":
    main()
