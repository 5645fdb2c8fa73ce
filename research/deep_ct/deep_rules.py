"""Replay the first epochs of a CT run and score what other label-free rules would keep at each epoch.

``benchmarks/deep_candidates.py`` re-ranks the candidates a run recorded (inertia, size entropy, graph cut).
This script needs what run files do not keep -- the embeddings -- so it replays the run: it loads a pretrained
autoencoder from a ``benchmarks/deep_mnist.py`` work directory, finetunes it with the same method, seed and
keyword arguments (one thread gives the same trajectory as the run, which this prints for comparison), and after
each epoch's k-means scores every candidate the method chose among (its ``n_init`` restarts, the warm start and
the graph split) and, in addition, the *merge-and-split* candidates of the kept partition: the pair of clusters
with the densest boundary in the neighbour graph merged into one, and each other cluster bisected along the graph
(:func:`kmeans_dist.deep.train.graph_merge_splits`; what ``CT-graph-msplit`` adds to ``CT-graph-split``).  It
prints, per epoch, the ACC of the kept partition and of the candidate each rule would keep *at that epoch* (the
trajectory stays the run's own):

- ``graph``: the run's rule (lowest normalised cut among the nearly balanced candidates);
- ``graph+ms``: the same rule with the merge-and-split candidates added (CT-graph-msplit's rule);
- ``silhouette`` (highest) and ``davies-bouldin`` (lowest), on the graph's anchors (sklearn.metrics);
- ``inertia``: classical k-means;
- ``best``: the highest ACC among the restarts, warm start and split (an oracle, for scale).

    .venv/bin/python benchmarks/deep_rules.py --workdir benchmarks/out/glorot-B-s0 --seed 0 --ae-init glorot \\
        --method-kwargs '{"alpha": 0.4, "lam": 3.7}' --epochs 8

Needs MNIST labels (it scores ACC); never run in CI.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True, help="a deep_mnist.py work directory holding ae_seed<N>.pt")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--method", default="CT-graph-split")
    ap.add_argument("--method-kwargs", type=json.loads, default={})
    ap.add_argument("--ae-init", choices=("torch", "glorot"), default="torch")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from sklearn.metrics import davies_bouldin_score, silhouette_score

    from kmeans_dist.data import load_mnist
    from kmeans_dist.deep import Autoencoder, fit_method, make_method
    from kmeans_dist.deep.evaluate import clustering_scores
    from kmeans_dist.deep.train import (GRAPH_TOLERANCE, graph_cut, graph_merge_splits, knn_graph, size_entropy,
                                        to_numpy)

    X_np, y = load_mnist(scale=1 / 255)
    X, y = torch.from_numpy(X_np), np.asarray(y)
    torch.manual_seed(args.seed)
    model = Autoencoder(X.shape[1], 10, init=args.ae_init)
    model.load_state_dict(torch.load(Path(args.workdir) / f"ae_seed{args.seed}.pt", map_location="cpu"))
    method = make_method(args.method, 10, seed=args.seed, **args.method_kwargs)
    if method.select != "graph":
        raise SystemExit(f"{args.method} does not rank by the neighbour graph (select={method.select!r})")
    k = method.n_clusters
    end_epoch = method.end_epoch
    cols = ["graph", "graph+ms", "silhouette", "davies-bouldin", "inertia", "best"]
    print(f"### {args.method} {args.method_kwargs} seed {args.seed} ({args.ae_init} init): ACC (%) per epoch\n")
    print("| epoch | kept | " + " | ".join(cols) + " | merge-and-split: best ACC (its cut vs kept cut) |")
    print("|" + " --- |" * (len(cols) + 3))

    def scored(Z, epoch):
        t0 = time.perf_counter()
        labels = end_epoch(Z, epoch)
        Zn = Z.numpy()
        graph = knn_graph(Z, seed=args.seed)  # the graph the method ranked by
        anchors = np.asarray(graph[0])
        rows = []  # (acc, size entropy, graph cut, silhouette, davies-bouldin, inertia, is merge-and-split)
        for c in method.kmeans_candidates:
            L = to_numpy(c["labels"])
            rows.append((clustering_scores(y, L)["acc"], c["size_entropy"], c["graph_cut"],
                         silhouette_score(Zn[anchors], L[anchors]), davies_bouldin_score(Zn[anchors], L[anchors]),
                         c["inertia"], False))
        kept = to_numpy(labels) if labels is not None else to_numpy(method.predict(Z))
        for alt in graph_merge_splits(Zn, kept, to_numpy(method.centroids), graph, k):
            rows.append((clustering_scores(y, alt.labels)["acc"], size_entropy(alt.labels, k),
                         graph_cut(alt.labels, graph), np.nan, np.nan, alt.inertia, True))
        r = np.array(rows, dtype=np.float64)
        base, ms = r[r[:, 6] == 0], r

        def graph_rule(a):
            near = a[a[:, 1] >= a[:, 1].max() - GRAPH_TOLERANCE]
            return near[np.lexsort((near[:, 5], near[:, 2]))[0], 0]

        picks = [graph_rule(base), graph_rule(ms), base[np.nanargmax(base[:, 3]), 0],
                 base[np.nanargmin(base[:, 4]), 0], base[np.argmin(base[:, 5]), 0], base[:, 0].max()]
        extra = r[r[:, 6] == 1]
        kept_cut = graph_cut(kept, graph)
        msd = (f"{100 * extra[:, 0].max():.2f} ({extra[np.argmax(extra[:, 0]), 2]:.4f} vs {kept_cut:.4f})"
               if len(extra) else "-")
        print(f"| {epoch} | {100 * clustering_scores(y, kept)['acc']:.2f} | "
              + " | ".join(f"{100 * p:.2f}" for p in picks) + f" | {msd} |", flush=True)
        print(f"<!-- epoch {epoch}: scoring took {time.perf_counter() - t0:.1f} s -->", flush=True)
        return labels

    method.end_epoch = scored
    fit_method(model, X, method, y=y, epochs=args.epochs, seed=args.seed)


if __name__ == "__main__":
    main()
