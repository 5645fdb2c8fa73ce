"""What each per-epoch k-means of a deep k-means run chose among, and what other rules would have kept.

Reads the run files of ``benchmarks/deep_mnist.py`` (``run_<method>_seed<N>.json``) whose history records
``kmeans_candidates`` (every restart of each epoch's k-means on the embeddings, plus the warm start of
CT-bal-warm, with its inertia, cluster-size entropy and ACC/NMI against the labels) and prints, per run, a
markdown table: for each epoch the ACC of the kept partition, of the warm start, of the best candidate, and of
the candidate each selection rule would keep *at that epoch* (the run's trajectory is the one the run's own
rule produced: a different rule would also have changed the embeddings of the later epochs, which this cannot
show).

    .venv/bin/python benchmarks/deep_candidates.py benchmarks/out/deep-s1/run_CT-bal-warm_seed1.json

Rules: ``inertia`` (classical k-means), ``balanced`` (the most even sizes, ties to the lower inertia: CT-bal),
``bal~eps`` (the lowest inertia among the candidates whose size entropy is within ``eps`` of the largest).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

EPS = (0.001, 0.003, 0.01)


def rules(eps=EPS) -> dict:
    out = {"inertia": lambda cs: min(cs, key=lambda c: c["inertia"]),
           "balanced": lambda cs: min(cs, key=lambda c: (-c["size_entropy"], c["inertia"]))}
    for e in eps:
        def near_balanced(cs, e=e):
            top = max(c["size_entropy"] for c in cs)
            return min((c for c in cs if c["size_entropy"] >= top - e), key=lambda c: c["inertia"])
        out[f"bal~{e:g}"] = near_balanced
    return out


def table(run: dict, every: int = 1) -> str:
    hist = [h for h in run["history"] if h.get("kmeans_candidates")]
    if not hist:
        return f"{run['method']} seed {run['seed']}: no kmeans_candidates in the history (an older run file)\n"
    R = rules()
    head = ["epoch", "kept", "warm", "best", *R, "candidates with ACC >= kept + 2"]
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
        row = [h["epoch"], h["acc"], warm[0]["acc"] if warm else None, max(c["acc"] for c in cs),
               *(picks[name][-1] for name in R), f"{better} of {len(cs)}"]
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    lines += ["", "Mean ACC of each rule's pick over the epochs (each epoch on the run's own trajectory): "
              + ", ".join(f"{name} {100 * np.mean(v):.2f}" for name, v in picks.items()), ""]
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{100 * v:.2f}"
    return str(v)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run_<method>_seed<N>.json files")
    ap.add_argument("--every", type=int, default=1, help="print every N-th epoch (and the last)")
    args = ap.parse_args(argv)
    for p in args.runs:
        print(table(json.loads(Path(p).read_text()), every=args.every))


if __name__ == "__main__":
    main()
