"""The paper's MNIST protocol for the methods of ``kmeans_dist.deep`` (Roy, ICPR 2024, arXiv 2411.19496).

All 70,000 images in [0, 1]; autoencoder 784-500-500-2000-10 pretrained on reconstruction for 50 epochs
(Adam 1e-3, batch 256), shared by every method of a seed; AEKM = k-means (k-means++, 10 restarts) on its
embeddings; DCN, DKM, CT and the ablations finetune it for 100 epochs; KM = k-means on the pixels.  Plain
PyTorch in one process (no Ray).  Every step checkpoints into the work directory, so a killed run resumes
where it stopped; each finished (seed, method) is a ``run_<method>_seed<seed>.json`` there, and the table
of all of them is rewritten to ``<workdir>/RESULTS.md`` (the numbers of ``benchmarks/RESULTS-deep.md``):

    python benchmarks/deep_mnist.py --seeds 0 1 2 3 4 --methods KM AEKM DCN DKM CT CT-noreinit DKM+reinit

40-80 minutes per seed on 2 CPU cores (``--threads 2``), minutes on a GPU (``--device cuda``).  Never run
in CI; ``--limit N`` (the first N images) and fewer ``--pretrain-epochs``/``--finetune-epochs`` give a
smoke test that is not the protocol.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PAPER = {"KM": "53.5 / 49.8", "AEKM": "80.8 / 75.2", "DCN": "81.1 / 75.7", "DKM": "84.0 / 79.6",
         "CT": "90.01 +- 5.83 / 87.64 +- 1.55"}  # the paper's Table 2: ACC / NMI in percent


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def _save_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, default=float))
    tmp.replace(path)


def _mean_std(a) -> str:
    return f"{a.mean():.2f} +- {a.std():.2f}" if len(a) > 1 else f"{a[0]:.2f}"


def write_table(workdir: Path) -> str:
    """Markdown table (mean +- population std over seeds, in percent) of the run files in ``workdir``."""
    runs: dict[str, list[dict]] = {}
    for p in sorted(workdir.glob("run_*.json")):
        r = json.loads(p.read_text())
        runs.setdefault(r["method"], []).append(r)
    lines = ["| method | paper ACC / NMI | measured ACC | measured NMI | measured ARI | seeds | protocol |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in ["KM", "AEKM", "DCN", "DKM", "CT", "CT-noreinit", "DKM+reinit"]:
        rs = runs.get(name)
        if not rs:
            continue
        cell = [_mean_std(100 * np.array([r[k] for r in rs])) for k in ("acc", "nmi", "ari")]
        full = "paper's" if all(r["full_protocol"] for r in rs) else "reduced"
        lines.append(f"| {name} | {PAPER.get(name, '-')} | {' | '.join(cell)} | "
                     f"{', '.join(str(r['seed']) for r in rs)} | {full} |")
    text = "\n".join(lines) + "\n"
    (workdir / "RESULTS.md").write_text(text)
    return text


def main(argv=None):
    from kmeans_dist.deep import METHODS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--methods", nargs="+", default=["KM", "AEKM", "DCN", "DKM", "CT"],
                    choices=["KM", *METHODS])
    ap.add_argument("--pretrain-epochs", type=int, default=50)
    ap.add_argument("--finetune-epochs", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="torch device: cpu, cuda or auto")
    ap.add_argument("--limit", type=int, default=None, help="first N images only (not the protocol)")
    ap.add_argument("--workdir", default=str(REPO / "benchmarks" / "out" / "deep"))
    args = ap.parse_args(argv)

    import torch

    from kmeans_dist.data import load_mnist
    from kmeans_dist.deep import Autoencoder, clustering_scores, fit_method, make_method, pretrain
    from kmeans_dist.kernels import kmeans_inmemory

    torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    full = args.limit is None and args.pretrain_epochs == 50 and args.finetune_epochs == 100
    X_np, y = load_mnist(limit=args.limit, scale=1 / 255)
    X = torch.from_numpy(X_np).to(dev)
    log(f"MNIST {tuple(X.shape)} on {dev}, seeds {args.seeds}, methods {args.methods}")

    def record(name, seed, scores, t0, history=()):
        _save_json(workdir / f"run_{name}_seed{seed}.json",
                   {"method": name, "seed": seed, **scores, "full_protocol": full, "device": str(dev),
                    "seconds": time.perf_counter() - t0, "history": list(history)})
        log(f"seed {seed} {name}: ACC {scores['acc']:.4f} NMI {scores['nmi']:.4f} ARI {scores['ari']:.4f}")
        write_table(workdir)

    for seed in args.seeds:
        todo = [m for m in args.methods if not (workdir / f"run_{m}_seed{seed}.json").exists()]
        if "KM" in todo:
            t0 = time.perf_counter()
            record("KM", seed, clustering_scores(y, kmeans_inmemory(X_np, 10, n_init=10, random_state=seed).labels),
                   t0)
            todo.remove("KM")
        if not todo:
            continue
        # the seed's pretrained autoencoder, shared by its methods (checkpointed every epoch)
        torch.manual_seed(seed)
        model = Autoencoder(X.shape[1], 10).to(dev)
        ae_path, part = workdir / f"ae_seed{seed}.pt", workdir / f"ae_seed{seed}.partial.pt"
        if ae_path.exists():
            model.load_state_dict(torch.load(ae_path, map_location=dev))
        else:
            resume = torch.load(part, map_location=dev, weights_only=False) if part.exists() else None
            pretrain(model, X, epochs=args.pretrain_epochs, batch_size=args.batch_size, seed=seed, resume=resume,
                     callback=lambda r, s=seed: log(f"seed {s} pretrain {r['epoch']}: rec {r['rec_loss']:.3f}"),
                     checkpoint=lambda st, p=part: torch.save(st, p))
            torch.save(model.state_dict(), ae_path)
            part.unlink(missing_ok=True)
        pretrained = {k: v.clone() for k, v in model.state_dict().items()}
        for name in todo:
            t0 = time.perf_counter()
            model.load_state_dict(pretrained)
            ck = workdir / f"finetune_{name}_seed{seed}.partial.pt"
            resume = torch.load(ck, map_location=dev, weights_only=False) if ck.exists() else None
            res = fit_method(model, X, make_method(name, 10, seed=seed), y=y, epochs=args.finetune_epochs,
                             batch_size=args.batch_size, seed=seed, resume=resume,
                             callback=lambda r, s=seed, m=name: log(f"seed {s} {m} {r['phase']} {r['epoch']}: "
                                                                  f"ACC {r['acc']:.4f}"),
                             checkpoint=lambda st, p=ck: torch.save(st, p))
            last = res["history"][-1]
            record(name, seed, {k: last[k] for k in ("acc", "nmi", "ari")}, t0, res["history"])
            ck.unlink(missing_ok=True)
    print(write_table(workdir))


if __name__ == "__main__":
    main()
