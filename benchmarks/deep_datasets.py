"""AEKM and CT against k-means on the raw input, on data sets other than MNIST, with the deep stage's defaults.

Data sets (labels are used only for the scores):

- ``digits``: scikit-learn's ``load_digits``, 1,797 x 64, 10 classes, pixels 0..16 scaled to [0, 1] (the
  stage's ``scale="auto"``: divided by the maximum);
- ``nonlinear-blobs``: 2,000 points of 5 Gaussian blobs in 10 dimensions (``make_blobs``, ``cluster_std=2``)
  pushed through a fixed random two-layer map ``sigmoid(tanh(Z A) B)`` into [0, 1]^100, so the clusters are
  not convex in the input space.

Each data set gets the stage's defaults: autoencoder ``d-500-500-2000-k`` (k = the number of classes), Adam
1e-3, global batch 256, the authors' method defaults (AEKM: k-means, k-means++ with 10 restarts, on the
pretrained embeddings; CT: lambda 10, alpha 3, re-initialisation every epoch) and the budget rule
``max(epochs, ceil(min_steps / steps_per_epoch))`` (50 + 100 epochs, 13,700 + 27,400 steps).  KM is
:class:`kmeans_dist.KMeans` (k-means++, 10 restarts) on the raw input.  One process
(:func:`kmeans_dist.deep.pretrain` and :func:`kmeans_dist.deep.fit_method`, the protocol of the Ray stage
with one worker).

    python benchmarks/deep_datasets.py                      # the stage's full budget (hours on a CPU)
    python benchmarks/deep_datasets.py --pretrain-epochs 20 --finetune-epochs 10 --pretrain-min-steps 0 \\
        --finetune-min-steps 0                              # a reduced budget: minutes

The reduced budget is not the stage's protocol: it is reported as such (the ``budget`` column).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    X = d.data.astype(np.float32)
    return X / X.max(), d.target.astype(np.int64)


def nonlinear_blobs(n: int = 2000, seed: int = 0):
    from sklearn.datasets import make_blobs

    Z, y = make_blobs(n_samples=n, n_features=10, centers=5, cluster_std=2.0, random_state=seed)
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(10, 50)) / np.sqrt(10)
    B = rng.normal(size=(50, 100)) / np.sqrt(50)
    X = 1.0 / (1.0 + np.exp(-np.tanh(Z / Z.std() @ A * 2.0) @ B * 2.0))
    return X.astype(np.float32), y.astype(np.int64)


DATASETS = {"digits": digits, "nonlinear-blobs": nonlinear_blobs}


def scores(y, labels) -> dict:
    from kmeans_dist.metrics import clustering_accuracy, normalized_mutual_info_score

    return {"acc": float(clustering_accuracy(y, labels)), "nmi": float(normalized_mutual_info_score(y, labels))}


def run(name: str, args) -> list[dict]:
    import torch

    from kmeans_dist import KMeans
    from kmeans_dist.deep import Autoencoder, epochs_for_steps, fit_method, make_method, pretrain

    X, y = DATASETS[name]()
    n, d = X.shape
    k = int(len(np.unique(y)))
    P = epochs_for_steps(n, args.batch_size, args.pretrain_epochs, args.pretrain_min_steps)
    F = epochs_for_steps(n, args.batch_size, args.finetune_epochs, args.finetune_min_steps)
    steps = -(-n // args.batch_size)
    full = (args.pretrain_epochs, args.finetune_epochs, args.pretrain_min_steps, args.finetune_min_steps) == \
        (50, 100, 13_700, 27_400)
    budget = f"{'stage default' if full else 'reduced'}: {P}+{F} epochs = {P * steps}+{F * steps} steps"
    rows = []
    t0 = time.perf_counter()
    km = KMeans(n_clusters=k, n_init=10, random_state=args.seed).fit(X)
    rows.append({"data": name, "shape": f"{n} x {d}", "k": k, "method": "KM (raw input)",
                 **scores(y, km.labels_), "budget": "-", "seconds": time.perf_counter() - t0})
    Xt = torch.from_numpy(X)
    torch.manual_seed(args.seed)
    net = Autoencoder(d, k)
    t0 = time.perf_counter()
    pretrain(net, Xt, epochs=P, batch_size=args.batch_size, seed=args.seed)
    t_pre = time.perf_counter() - t0
    for method in ("AEKM", "CT"):
        model = copy.deepcopy(net)
        t0 = time.perf_counter()
        res = fit_method(model, Xt, make_method(method, k, seed=args.seed), epochs=F, batch_size=args.batch_size,
                         seed=args.seed)
        rows.append({"data": name, "shape": f"{n} x {d}", "k": k, "method": method, **scores(y, res["labels"]),
                     "budget": budget, "seconds": t_pre + time.perf_counter() - t0})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| data | n x d | k | method | ACC | NMI | budget | seconds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['data']} | {r['shape']} | {r['k']} | {r['method']} | {100 * r['acc']:.1f} | "
                     f"{100 * r['nmi']:.1f} | {r['budget']} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--pretrain-epochs", type=int, default=50)
    ap.add_argument("--finetune-epochs", type=int, default=100)
    ap.add_argument("--pretrain-min-steps", type=int, default=13_700)
    ap.add_argument("--finetune-min-steps", type=int, default=27_400)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = [r for name in args.datasets for r in run(name, args)]
    out = table(rows)
    print(out)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return out


if __name__ == "__main__":
    main()
