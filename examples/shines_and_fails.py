"""Where k-means shines and where it visibly fails, on the teaching data sets of kmeans_dist.data.datasets.

For each data set: fit kmeans_dist.KMeans with the true number of clusters, score it against the
ground truth with kmeans_dist.metrics (ACC, ARI, NMI) and without it (silhouette), print a table and
save a figure of the clusterings.

    python examples/shines_and_fails.py [--out DIR] [--n 1500]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "kmeans-dist-examples"))
    ap.add_argument("--n", type=int, default=1500)
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kmeans_dist import KMeans
    from kmeans_dist.data import datasets as D
    from kmeans_dist import metrics as M

    cases = [("blobs", 4, "isotropic, equal: k-means' own model"),
             ("anisotropic", 3, "sheared: k-means cuts across"),
             ("unequal_sizes", 3, "a 15-point cluster: swallowed"),
             ("moons", 2, "non-convex: split wrongly"),
             ("rings", 2, "nested: hopeless")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(cases), figsize=(4 * len(cases), 4), constrained_layout=True)
    print(f"{'data set':15s} {'k':>2s} {'ACC':>6s} {'ARI':>6s} {'NMI':>6s} {'silhouette':>10s}")
    for ax, (name, k, note) in zip(axes, cases):
        X, y = D.make_dataset(name, args.n, random_state=0, as_numpy=True)
        lab = KMeans(n_clusters=k, n_init=3, random_state=0).fit_predict(X)
        rep = M.clustering_report(y, lab)
        sil = M.silhouette_score(X, lab)
        print(f"{name:15s} {k:2d} {rep['acc']:6.3f} {rep['ari']:6.3f} {rep['nmi']:6.3f} {sil:10.3f}")
        ax.scatter(X[:, 0], X[:, 1], c=np.asarray(lab), s=6, cmap="tab10")
        ax.set_title(f"{name} (k={k}): ACC {rep['acc']:.2f}\n{note}", fontsize=10)
        ax.set_aspect("equal", adjustable="datalim")
    path = out / "shines_and_fails.png"
    fig.savefig(path, dpi=90)
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
