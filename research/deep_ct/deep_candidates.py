"""What each per-epoch k-means of a deep k-means run chose among, and what other rules would have kept.

Reads the run files of ``benchmarks/deep_mnist.py`` (``run_<method>_seed<N>.json``) whose history records
``kmeans_candidates`` (every restart of each epoch's k-means on the embeddings, plus the warm start of
CT-bal-warm, with its inertia, cluster-size entropy and ACC/NMI against the labels) and prints, per run, a
markdown table: for each epoch the ACC of the kept partition, of the warm start, of the best candidate, and of
the candidate each selection rule would keep *at that epoch* (the run's trajectory is the one the run's own
rule produced: a different rule would also have changed the embeddings of the later epochs, which this cannot
show).

    .venv/bin/python benchmarks/deep_candidates.py benchmarks/runs/run_CT-bal-warm_seed1.json.gz

(``benchmarks/runs/`` keeps the run files of record, gzipped; ``benchmarks/out/`` is scratch.)

Rules: ``inertia`` (classical k-means), ``balanced`` (the most even sizes, ties to the lower inertia: CT-bal),
``bal~eps`` (the lowest inertia among the candidates whose size entropy is within ``eps`` of the largest), and,
for runs that record each candidate's ``agreement`` (CT-bal-warm-cons), ``consensus`` (the highest mean ARI with
the partitions kept over the previous 50 epochs: what that method outputs at its last epoch), and for runs that
record each candidate's ``graph_cut`` (CT-graph-warm, CT-graph-split), ``graph`` (the lowest normalised cut of a
k-nearest-neighbour graph among the candidates within 0.005 of the largest size entropy; the ``split`` column is
the ACC of the graph-split candidate of CT-graph-split; CT-graph-msplit's merge-and-split candidates count as
candidates for every rule).  For such a run the
``kept`` column of the last epoch is the consensus pick and ``balanced`` is what CT-bal-warm would have output.
"""
from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np

EPS = (0.001, 0.003, 0.01)


GRAPH_TOLERANCE = 0.005  # kmeans_dist.deep.train.GRAPH_TOLERANCE (not imported: this script reads run files only)


def rules(eps=EPS, consensus: bool = False, graph: bool = False) -> dict:
    out = {"inertia": lambda cs: min(cs, key=lambda c: c["inertia"]),
           "balanced": lambda cs: min(cs, key=lambda c: (-c["size_entropy"], c["inertia"]))}
    for e in eps:
        def near_balanced(cs, e=e):
            top = max(c["size_entropy"] for c in cs)
            return min((c for c in cs if c["size_entropy"] >= top - e), key=lambda c: c["inertia"])
        out[f"bal~{e:g}"] = near_balanced
    if consensus:
        out["consensus"] = lambda cs: max(cs, key=lambda c: (_agreement(c), -cs.index(c)))
    if graph:
        def by_graph(cs):
            top = max(c["size_entropy"] for c in cs)
            return min((c for c in cs if c["size_entropy"] >= top - GRAPH_TOLERANCE),
                       key=lambda c: (c["graph_cut"], c["inertia"]))
        out["graph"] = by_graph
    return out


def run_rules(hist: list) -> dict:
    """:func:`rules`, with ``consensus`` when the run's candidates record their ``agreement`` and ``graph`` when
    they record their ``graph_cut`` (CT-graph-warm, CT-graph-split)."""
    cands = [c for h in hist for c in h["kmeans_candidates"]]
    return rules(consensus=any("agreement" in c for c in cands), graph=any("graph_cut" in c for c in cands))


def _agreement(c) -> float:
    a = c.get("agreement")
    return -np.inf if a is None or np.isnan(a) else a


def table(run: dict, every: int = 1) -> str:
    hist = [h for h in run["history"] if h.get("kmeans_candidates")]
    if not hist:
        return f"{run['method']} seed {run['seed']}: no kmeans_candidates in the history (an older run file)\n"
    R = run_rules(hist)
    split = any("split" in c for h in hist for c in h["kmeans_candidates"])
    head = ["epoch", "kept", "warm", *(["split"] if split else []), "best", *R, "candidates with ACC >= kept + 2"]
    lines = [f"### {run['method']} seed {run['seed']}: ACC (%) per epoch", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    picks = {name: [] for name in R}
    for h in hist:
        cs = h["kmeans_candidates"]
        warm = [c for c in cs if c["warm"]]
        for name, rule in R.items():
            picks[name].append(rule(cs)["acc"])
        if h["epoch"] % every and h is not hist[-1]:
            continue
        better = sum(c["acc"] >= h["acc"] + 0.02 for c in cs)
        sp = [c["acc"] for c in cs if c.get("split")]
        row = [h["epoch"], h["acc"], warm[0]["acc"] if warm else None, *([sp[0] if sp else None] if split else []),
               max(c["acc"] for c in cs),
               *(picks[name][-1] for name in R), f"{better} of {len(cs)}"]
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    lines += ["", "Mean ACC of each rule's pick over the epochs (each epoch on the run's own trajectory): "
              + ", ".join(f"{name} {100 * np.mean(v):.2f}" for name, v in picks.items()), ""]
    return "\n".join(lines) + "\n"


def plot(run: dict, path: Path) -> None:
    """ACC per epoch of the kept partition, the warm start, the best candidate and the lowest-inertia one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = [h for h in run["history"] if h.get("kmeans_candidates")]
    ep = [h["epoch"] for h in hist]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax.plot(ep, [100 * max(c["acc"] for c in h["kmeans_candidates"]) for h in hist], color="0.75", lw=4,
            label="best candidate (uses the labels)")
    warm = [(h["epoch"], 100 * c["acc"]) for h in hist for c in h["kmeans_candidates"] if c["warm"]]
    if warm:
        ax.plot(*zip(*warm), "o", ms=3, color="tab:orange", label="warm start (previous centroids)")
    R = run_rules(hist)
    ax.plot(ep, [100 * R["inertia"](h["kmeans_candidates"])["acc"] for h in hist], lw=1, color="tab:blue",
            label="lowest inertia")
    split = [(h["epoch"], 100 * c["acc"]) for h in hist for c in h["kmeans_candidates"] if c.get("split")]
    if split:
        ax.plot(*zip(*split), "x", ms=4, color="tab:red", label="graph split of the rule's choice")
    if "consensus" in R:
        ax.plot(ep[1:], [100 * R["consensus"](h["kmeans_candidates"])["acc"] for h in hist[1:]], lw=1,
                color="tab:purple", ls="--", label="highest agreement with the previous 50 kept partitions")
    ax.plot(ep, [100 * h["acc"] for h in hist], lw=1.5, color="tab:green", label=f"kept ({run['method']})")
    ax.set_xlabel("finetuning epoch (0: k-means on the pretrained embeddings)")
    ax.set_ylabel("ACC (%)")
    ax.set_title(f"{run['method']} seed {run['seed']}: what each epoch's k-means chose among")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{100 * v:.2f}"
    return str(v)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run_<method>_seed<N>.json files (or .json.gz)")
    ap.add_argument("--every", type=int, default=1, help="print every N-th epoch (and the last)")
    ap.add_argument("--plot", default=None, help="a PNG of the (first) run's ACC per epoch")
    args = ap.parse_args(argv)
    for p in args.runs:
        raw = gzip.decompress(Path(p).read_bytes()) if p.endswith(".gz") else Path(p).read_bytes()
        run = json.loads(raw)
        print(table(run, every=args.every))
        if args.plot and p == args.runs[0]:
            plot(run, Path(args.plot))


if __name__ == "__main__":
    main()
