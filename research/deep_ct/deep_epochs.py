"""ACC per finetuning epoch of the deep clustering runs: a table of flips and a figure, one panel per seed.

Reads the ``run_<method>_seed<N>.json`` files that ``benchmarks/deep_mnist.py`` writes (a finished run's
history) and, for a run still in progress, the ``seed N <method> epoch E: ACC a NMI b`` lines of its logs.

A *flip* is an epoch (from epoch 5 on) whose ACC is more than 5 points below the median of the run's
last 20 epochs: the re-initialisation picked a different partition for that one epoch.

    python benchmarks/deep_epochs.py benchmarks/out/deep benchmarks/out/deep-bal-s* \\
        --methods CT CT-bal CT-bal-warm --out benchmarks/deep-plots/ct_bal_acc_per_epoch.png
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
from deep_mnist import PAPER, load_runs

LINE = re.compile(r"seed (\d+) (\S+) epoch (\d+): ACC ([0-9.]+) NMI ([0-9.]+)")


def read_runs(dirs: list[Path], methods: list[str]) -> dict[tuple[str, int], dict[int, tuple[float, float]]]:
    """{(method, seed): {epoch: (ACC %, NMI %)}}; a finished run's JSON wins over log lines."""
    runs: dict[tuple[str, int], dict[int, tuple[float, float]]] = {}
    for r in (r for d in dirs for r in load_runs(d)):
        if r["method"] not in methods or not r.get("complete", True):
            continue
        pts = {int(h["epoch"]): (100 * h["acc"], 100 * h["nmi"]) for h in r.get("history", [])
               if h.get("phase", "finetune") == "finetune" and h.get("acc") is not None}
        if pts:
            runs[(r["method"], int(r["seed"]))] = pts
    finished = set(runs)
    for d in dirs:
        for f in sorted(d.glob("log*.txt")):
            for line in f.read_text().splitlines():
                m = LINE.search(line)
                if not m or m.group(2) not in methods:
                    continue
                key = (m.group(2), int(m.group(1)))
                if key not in finished:
                    runs.setdefault(key, {})[int(m.group(3))] = (100 * float(m.group(4)), 100 * float(m.group(5)))
    return runs


def flips(acc: np.ndarray, epochs: np.ndarray) -> list[int]:
    ref = np.median(acc[-20:])
    return [int(e) for e, a in zip(epochs, acc) if e >= 5 and a < ref - 5]


def table(runs, methods) -> str:
    rows = ["| method | seed | epochs | last ACC | last NMI | last 10 epochs ACC | min of last 10 | flips |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in methods:
        for (name, seed) in sorted(k for k in runs if k[0] == m):
            pts = runs[(name, seed)]
            ep = np.array(sorted(pts))
            acc = np.array([pts[e][0] for e in ep])
            nmi = np.array([pts[e][1] for e in ep])
            fl = flips(acc, ep)
            rows.append(f"| {name} | {seed} | {ep[-1]} | {acc[-1]:.2f} | {nmi[-1]:.2f} | "
                        f"{acc[-10:].mean():.2f} +- {acc[-10:].std():.2f} | {acc[-10:].min():.2f} | "
                        f"{len(fl)}{' (' + ', '.join(map(str, fl)) + ')' if fl else ''} |")
    return "\n".join(rows)


def plot(runs, methods, out: Path, paper_mean: float = PAPER["CT"][0]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = sorted({s for (m, s) in runs if m != methods[0]} or {s for (_, s) in runs})
    fig, axes = plt.subplots(len(seeds), 1, figsize=(8, 1.9 * len(seeds) + 0.8), sharex=True, sharey=True,
                             squeeze=False)
    for ax, s in zip(axes[:, 0], seeds):
        for i, m in enumerate(methods):
            pts = runs.get((m, s))
            if not pts:
                continue
            ep = sorted(pts)
            ls = "--" if i == 0 else "-"
            ax.plot(ep, [pts[e][0] for e in ep], color=f"C{i}", ls=ls, lw=1 if i == 0 else 1.5,
                    label=m if ep[-1] >= 100 else f"{m} (to epoch {ep[-1]})")
        ax.axhline(paper_mean, color="k", lw=0.8, ls=":")
        ax.set_ylabel(f"seed {s}\nACC (%)")
        ax.grid(alpha=0.3)
        ax.set_ylim(70, 100)
        ax.legend(fontsize=7, loc="lower right", ncol=len(methods))
    axes[0, 0].set_title(f"MNIST, 70,000 images: ACC per finetuning epoch (dotted: paper's mean {paper_mean})",
                         fontsize=10)
    axes[-1, 0].set_xlabel("finetuning epoch (0: k-means on the pretrained embeddings)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp" + out.suffix)
    fig.savefig(tmp, dpi=100)
    tmp.replace(out)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path, help="work folders of benchmarks/deep_mnist.py")
    ap.add_argument("--methods", nargs="+", default=["CT", "CT-bal", "CT-bal-warm"])
    ap.add_argument("--out", type=Path, default=None, help="write the figure here (PNG)")
    a = ap.parse_args(argv)
    runs = read_runs(a.dirs, a.methods)
    print(table(runs, a.methods))
    if a.out is not None:
        print(plot(runs, a.methods, a.out))


if __name__ == "__main__":
    main()
