"""Which k-means restart on a pretrained autoencoder's embeddings is the best clustering, and can a label-free
rule find it?

For each autoencoder given (``ae_seedN.pt`` from ``benchmarks/deep_mnist.py``, or a finetuning checkpoint),
embeds all MNIST images, runs ``--restarts`` independent k-means++/Lloyd runs (the project's kernels, one
restart each) and scores every partition by label-free criteria (inertia, the CT loss at alpha = 3, the
normalised entropy of the cluster sizes, silhouette on a seeded sample, Davies-Bouldin, the mean relative
margin to the second-nearest center) against its ACC / NMI.  Prints one table per autoencoder and a summary:
the ACC that the lowest-inertia restart and the most balanced restart (``select="balanced"`` in
:mod:`kmeans_dist.deep`) would give, the best ACC among the restarts, and the correlation of each criterion
with ACC.  A reference row, which uses the labels, runs Lloyd from the class means: the summary gives its ACC
and its inertia relative to the lowest-inertia restart (negative: the classes' own partition is the better
k-means solution, and more restarts would find it).  Writes the whole output to ``--out`` as markdown when given.

    .venv/bin/python benchmarks/deep_restarts.py benchmarks/out/deep/ae_seed2.pt --restarts 30
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CRITERIA = ["inertia", "CT", "sizeH", "silhouette", "DB", "margin"]


def score_partition(Z: np.ndarray, centers: np.ndarray, labels: np.ndarray, sample: np.ndarray, alpha: float = 3.0):
    """Label-free scores of one partition of ``Z`` (float64)."""
    from sklearn.metrics import davies_bouldin_score, silhouette_score

    from kmeans_dist.deep.train import size_entropy

    k = centers.shape[0]
    D = ((Z[:, None, :] - centers[None]) ** 2).sum(-1)
    G = np.exp(-alpha * (D - D.min(1, keepdims=True)))
    G /= G.sum(1, keepdims=True)
    Ds = np.sort(D, 1)
    return {"inertia": float(Ds[:, 0].mean()), "CT": float((D * G).sum(1).mean()),
            "sizeH": size_entropy(labels, k), "silhouette": float(silhouette_score(Z[sample], labels[sample])),
            "DB": float(davies_bouldin_score(Z, labels)),
            "margin": float(((Ds[:, 1] - Ds[:, 0]) / np.maximum(Ds[:, 1], 1e-300)).mean())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="autoencoder state dicts (or checkpoints with a 'model' entry)")
    ap.add_argument("--restarts", type=int, default=30)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--sample", type=int, default=6000, help="rows for the silhouette")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="markdown file for the output")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from kmeans_dist.data import load_mnist
    from kmeans_dist.deep import Autoencoder, embed
    from kmeans_dist.deep.evaluate import cluster_accuracy, nmi
    from kmeans_dist.kernels import kmeans_inmemory, lloyd_inmemory

    X, y = load_mnist(scale=1 / 255)
    Xt = torch.from_numpy(X)
    sample = np.random.default_rng(0).choice(len(X), min(args.sample, len(X)), replace=False)
    lines = [f"# k-means restarts on pretrained embeddings ({len(X)} MNIST images, {args.restarts} restarts, k={args.k})", ""]
    summary = ["| model | ACC of lowest inertia | ACC of most balanced | best ACC | class means: ACC | "
               "class means: inertia vs lowest | " + " | ".join(f"corr(ACC, {c})" for c in CRITERIA) + " |",
               "| --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in CRITERIA) + " |"]
    for path in args.models:
        t0 = time.perf_counter()
        st = torch.load(path, weights_only=False, map_location="cpu")
        st = st.get("model", st)
        model = Autoencoder(X.shape[1], args.k)
        model.load_state_dict(st)
        Z = embed(model, Xt).numpy().astype(np.float64)
        rows = []
        for r in range(args.restarts):
            res = kmeans_inmemory(Z, args.k, n_init=1, random_state=1000 + r)
            lab = np.asarray(res.labels)
            rows.append({"ACC": cluster_accuracy(y, lab), "NMI": nmi(y, lab),
                         **score_partition(Z, np.asarray(res.centers), lab, sample)})
        rows.sort(key=lambda d: d["inertia"])
        classes = np.unique(y)
        ref = lloyd_inmemory(Z, np.stack([Z[y == c].mean(0) for c in classes[:args.k]]))
        ref_lab = np.asarray(ref.labels)
        ref_row = {"ACC": cluster_accuracy(y, ref_lab), "NMI": nmi(y, ref_lab),
                   **score_partition(Z, np.asarray(ref.centers), ref_lab, sample)}
        cols = ["ACC", "NMI"] + CRITERIA
        lines += [f"## {path}", "", "| start | " + " | ".join(cols) + " |", "| --- | " + " | ".join("---" for _ in cols) + " |"]
        lines += ["| k-means++ | " + " | ".join(f"{d[c]:.4f}" for c in cols) + " |" for d in rows]
        lines += ["| class means (uses the labels) | " + " | ".join(f"{ref_row[c]:.4f}" for c in cols) + " |"]
        acc = np.array([d["ACC"] for d in rows])
        corr = [np.corrcoef(acc, [d[c] for d in rows])[0, 1] if acc.std() > 0 else float("nan") for c in CRITERIA]
        bal = max(rows, key=lambda d: (d["sizeH"], -d["inertia"]))
        rel = ref_row["inertia"] / rows[0]["inertia"] - 1
        summary.append(f"| {path} | {rows[0]['ACC']:.4f} | {bal['ACC']:.4f} | {acc.max():.4f} | {ref_row['ACC']:.4f} | "
                       f"{rel:+.2%} | " + " | ".join(f"{c:+.2f}" for c in corr) + " |")
        lines += ["", f"({time.perf_counter() - t0:.0f} s)", ""]
        print("\n".join(lines[-len(rows) - 7:]), flush=True)
    text = "\n".join(lines + ["## Summary", ""] + summary) + "\n"
    print("\n".join(summary))
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
