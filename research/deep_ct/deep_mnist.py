"""Deep k-means on the real MNIST (70,000 images): KM, AEKM, DCN, DKM and CT against the paper's table.

Protocol (Roy, ICPR 2024, arXiv 2411.19496): inputs in [0, 1]; autoencoder 784-500-500-2000-10 trained
on reconstruction for 50 epochs (Adam 1e-3, batch 256); AEKM = k-means (k-means++, n_init 10) on its
embeddings; DCN, DKM and CT finetune the *same* pretrained autoencoder (shared within a seed) for 100
epochs.  Plain PyTorch (no Ray), one thread by default, so it can run in the background:

    nice -n 10 .venv/bin/python benchmarks/deep_mnist.py --seeds 0 1 2 > benchmarks/out/deep/log.txt 2>&1 &

On a GPU, ``--device cuda`` (or ``auto``) keeps the data, the model and the per-epoch k-means on the device
(CuPy views of the embeddings through DLPack): one seed of the whole protocol then takes minutes, and several
seeds or methods can share one GPU as separate processes with their own ``--workdir``.

Every finished method (and every few epochs of the one in progress) rewrites ``benchmarks/RESULTS-deep.md``,
so partial results survive an interrupted run; the pretrained autoencoder of each seed is cached in the
work directory (``benchmarks/out/deep`` by default) and a restarted run skips what is already done.
Never run in CI.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PAPER = {  # ACC / NMI in percent, the paper's MNIST table
    "KM": (53.5, 49.8, None, None),
    "AEKM": (80.8, 75.2, None, None),
    "DCN": (81.1, 75.7, None, None),
    "DKM": (84.0, 79.6, None, None),
    "CT": (90.01, 87.64, 5.83, 1.55),
}
ORDER = ["KM", "AEKM", "DCN", "DKM", "CT", "CT-noreinit", "DKM+reinit", "CT-fcm", "CT-mse", "CT-reinit1", "AEKM-bal", "CT-bal", "DKM-anneal"]


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def load_runs(workdir: Path) -> list[dict]:
    runs = []
    for p in sorted(workdir.glob("run_*.json")):
        try:
            runs.append(json.loads(p.read_text()))
        except Exception:
            pass
    return runs


def _fmt(vals):
    if not vals:
        return "-"
    a = 100 * np.asarray(vals, dtype=float)
    return f"{a.mean():.2f} +- {a.std():.2f}" if len(a) > 1 else f"{a.mean():.2f}"


def _table(runs: list[dict]) -> list[str]:
    lines = ["| method | paper ACC / NMI | measured ACC | measured NMI | measured ARI | seeds | status |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    by, paper = {}, dict(PAPER)
    for r in runs:  # another init of the autoencoder, or other method arguments: rows of their own
        init, kw = r.get("ae_init", "torch"), r.get("method_kwargs") or {}
        extra = ([] if init == "torch" else [f"{init} init"]) + [f"{k} {v}" for k, v in sorted(kw.items())]
        name = r["method"] + (f" ({', '.join(extra)})" if extra else "")
        by.setdefault(name, []).append(r)
        if extra and not kw and r["method"] in PAPER:  # the paper's numbers beside its own settings only
            paper[name] = PAPER[r["method"]]
    for name in ORDER + sorted(set(by) - set(ORDER)):
        rs = by.get(name, [])
        if not rs and name not in PAPER:
            continue
        p = paper.get(name)
        ptxt = "-" if p is None else (f"{p[0]} / {p[1]}" if p[2] is None else f"{p[0]} +- {p[2]} / {p[1]} +- {p[3]}")
        full = [r for r in rs if r.get("complete")]
        use = full if full else rs
        status = ("complete" if rs and len(full) == len(rs) else
                  ("partial protocol" if rs else "not run yet"))
        if rs and not full:
            status += " (" + ", ".join(sorted({r.get("protocol_note", "") for r in rs})) + ")"
        lines.append(f"| {name} | {ptxt} | {_fmt([r['acc'] for r in use])} | {_fmt([r['nmi'] for r in use])} | "
                     f"{_fmt([r['ari'] for r in use])} | {','.join(str(r['seed']) for r in use) or '-'} | {status} |")
    return lines


def build_method(name: str, seed: int, **kw):
    """``make_method(name, **kw)``; a name ending in ``-r<N>`` (``CT-bal-warm-r30``) is that method with ``N``
    k-means++ restarts in each per-epoch re-initialisation (``reinit_n_init``), recorded under the whole name."""
    from kmeans_dist.deep import make_method

    base, sep, r = name.rpartition("-r")
    if sep and base and r.isdigit():
        method = make_method(base, 10, seed=seed, reinit_n_init=int(r), **kw)
        method.name = name
        return method
    return make_method(name, 10, seed=seed, **kw)


def _progress_line(progress: dict) -> list[str]:
    if progress["method"] == "pretraining":
        return [f"**In progress** (not a result): seed {progress['seed']}, pretraining epoch {progress['epoch']}/"
                f"{progress['epochs']}, reconstruction loss {progress['rec_loss']:.3f}, {progress['seconds']:.0f} s for "
                f"the last epoch (at {time.strftime('%H:%M:%S')})."]
    return [f"**In progress** (not a result): {progress['method']} seed {progress['seed']}, finetuning epoch "
            f"{progress['epoch']}/{progress['epochs']}: ACC {100 * progress['acc']:.2f}, NMI {100 * progress['nmi']:.2f} "
            f"({progress['train_seconds']:.0f} + {progress['end_epoch_seconds']:.0f} s for the last epoch, "
            f"at {time.strftime('%H:%M:%S')})."]


def _times(workdir: Path) -> list[str]:
    lines = ["| seed | phase | device | mean seconds per epoch (train) | mean seconds per epoch (embed + k-means) "
             "| epochs |", "| --- | --- | --- | --- | --- | --- |"]
    cpu = "CPU, 1 thread(s)"  # runs written before the device was recorded ran on this machine's CPU
    for p in sorted(workdir.glob("pretrain_*.json")):
        d = json.loads(p.read_text())
        s = [h["seconds"] for h in d["history"]]
        lines.append(f"| {d['seed']} | pretrain | {d.get('device', cpu)} | {np.mean(s):.2f} | - | {len(s)} |")
    for p in sorted(workdir.glob("ae_seed*.partial.pt")):
        lines.append(f"| {p.name[7:].split('.')[0]} | pretrain (in progress) | - | see the log | - | - |")
    for r in load_runs(workdir):
        h = [e for e in r.get("history", []) if e["epoch"] > 0]
        if h:
            lines.append(f"| {r['seed']} | {r['method']} | {r.get('device', cpu)} | "
                         f"{np.mean([e['train_seconds'] for e in h]):.2f} | "
                         f"{np.mean([e['end_epoch_seconds'] for e in h]):.2f} | {len(h)} |")
    return lines


def _rel(p: Path) -> str:
    p = p.resolve()
    return os.path.relpath(p, REPO) if p.is_relative_to(REPO) else str(p)


def write_results(workdir: Path, out: Path, args, progress: dict | None = None) -> None:
    lines = [
        "# Deep k-means on MNIST (70,000 images): measured against Roy, ICPR 2024 (arXiv 2411.19496)",
        "",
        f"Written by `benchmarks/deep_mnist.py` at {time.strftime('%Y-%m-%d %H:%M:%S %Z')}.  Protocol: inputs in [0, 1], "
        f"autoencoder 784-500-500-2000-10, Adam 1e-3, batch {args.batch_size}, {args.pretrain_epochs} pretraining epochs "
        f"(shared by all methods of a seed), {args.finetune_epochs} finetuning epochs"
        + (f", first {args.limit} images only" if args.limit else ", all 70,000 images") +
        "; k-means++ with n_init 10 for KM, AEKM, the initial centroids and CT's per-epoch re-initialisation (the "
        f"project's kernels: NumPy on a CPU, CuPy on a GPU), keeping the restart with the lowest inertia, except in "
        f"the rows ending in -bal, which keep the restart with the most even cluster sizes (`select=\"balanced\"`); "
        f"each run's device is in the timing table below.  CT uses our reconstruction of the paper's "
        "lost equations 10-11 (softmax memberships, alpha 3, lambda 10; see `kmeans_dist/deep/losses.py`).  "
        "DCN lambda 1; DKM lambda 1 with constant alpha 1000 (reconstruction = per-sample sum of squared errors).",
        "",
        "Means and standard deviations (population std) are over the seeds listed; **complete** means the full "
        "protocol above ran for every listed seed.  The paper's numbers are ACC / NMI in percent.",
        "",
    ]
    lines += _table(load_runs(workdir))
    if progress:
        lines += [""] + _progress_line(progress)
    lines += ["", "## Wall time per epoch (CPU rows: this 2-core machine, shared with other work, so they vary a lot; "
              "GPU rows: one GPU shared by several runs at once, see the notes)", ""]
    lines += _times(workdir)
    lines += ["", "Per-epoch histories, plots (loss curves, highest-membership histograms before/after finetuning, "
              "2-D PCA embeddings at a few epochs, confusion matrices) and the log are in the work directory "
              f"`{_rel(workdir)}`."]
    notes = workdir / "NOTES.md"  # free-text observations kept beside the run, shown verbatim
    if notes.exists():
        lines += ["", notes.read_text().rstrip()]
    for extra in getattr(args, "include", None) or []:
        extra = Path(extra)
        proto = extra / "protocol.json"
        if not proto.exists():
            continue
        pr = json.loads(proto.read_text())
        lines += ["", f"## Reduced protocol (NOT the paper's protocol): {pr['n_images']} images, "
                  f"{pr['pretrain_epochs']} + {pr['finetune_epochs']} epochs", "",
                  f"A smaller run kept beside the full one as an early signal (work directory `{_rel(extra)}`); "
                  "not comparable with the paper's table.", ""]
        lines += _table(load_runs(extra))
        lines += [""] + _times(extra)
    lines.append("")
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(out)


def save_run(workdir: Path, rec: dict) -> None:
    p = workdir / f"run_{rec['method']}_seed{rec['seed']}.json"
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec))
    tmp.replace(p)


def make_plots(workdir: Path, name: str, seed: int, res: dict, y) -> None:
    try:
        from kmeans_dist.deep import plots

        d = workdir / "plots"
        d.mkdir(exist_ok=True)
        stem = f"{name}_seed{seed}"
        plots.plot_losses(res["history"], d / f"{stem}_losses.png", title=f"{name} seed {seed}")
        plots.plot_membership_histogram(res["max_membership_before"], res["max_membership_after"],
                                        d / f"{stem}_membership.png", title=f"{name} seed {seed}")
        plots.plot_embeddings(res["snapshots"], d / f"{stem}_embeddings.png", title=f"{name} seed {seed}")
        plots.plot_confusion(y, res["labels"], d / f"{stem}_confusion.png", title=f"{name} seed {seed}")
    except Exception:
        log("plotting failed:\n" + traceback.format_exc())


def main(argv=None):
    from kmeans_dist.deep.model import INITS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["CT", "KM", "DKM", "DCN"],
                    help="finetuning methods and KM, in order (AEKM is always recorded after pretraining)")
    ap.add_argument("--pretrain-epochs", type=int, default=50)
    ap.add_argument("--finetune-epochs", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pretrain-corruption", type=float, default=0.0,
                    help="masking-noise probability for a denoising pretraining (0: plain autoencoder, the protocol)")
    ap.add_argument("--method-kwargs", type=json.loads, default={},
                    help='JSON of keyword arguments for every finetuning method, e.g. \'{"alpha": 1.1, "lam": 3.7}\'; '
                         "their runs get rows of their own")
    ap.add_argument("--ae-init", choices=INITS, default="torch",
                    help="initial weights of the autoencoder: PyTorch's nn.Linear default, or Glorot uniform with zero "
                         "biases (the default of tf.layers.dense, which the DKM reference code uses)")
    ap.add_argument("--device", default="cpu",
                    help="torch device: cpu, cuda or auto (cuda when available); on a GPU the per-epoch k-means "
                         "runs on CuPy views of the embeddings (DLPack, no host copy)")
    ap.add_argument("--limit", type=int, default=None, help="first N images only (smoke tests)")
    ap.add_argument("--workdir", default=str(REPO / "benchmarks" / "out" / "deep"))
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "RESULTS-deep.md"))
    ap.add_argument("--progress-every", type=int, default=5)
    ap.add_argument("--include", nargs="*", default=[],
                    help="work directories of other (reduced-protocol) runs to list in their own section")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from kmeans_dist.data import load_mnist
    from kmeans_dist.deep import Autoencoder, fit_method, pretrain
    from kmeans_dist.deep.evaluate import clustering_scores
    from kmeans_dist.kernels import kmeans_inmemory

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out = Path(args.results)
    full_protocol = (args.limit is None and args.pretrain_epochs >= 50 and args.finetune_epochs >= 100
                     and not args.pretrain_corruption)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    dev_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    X_np, y = load_mnist(limit=args.limit, scale=1 / 255)
    X = torch.from_numpy(X_np).to(dev)
    log(f"MNIST {tuple(X.shape)}, seeds {args.seeds}, methods {args.methods}, device {dev_name}")
    note = ("" if full_protocol else
            f"{X.shape[0]} images, {args.pretrain_epochs}+{args.finetune_epochs} epochs"
            + (f", denoising pretraining (masking {args.pretrain_corruption})" if args.pretrain_corruption else ""))

    def done(name, seed):
        p = workdir / f"run_{name}_seed{seed}.json"
        return p.exists() and json.loads(p.read_text()).get("complete") == full_protocol

    (workdir / "protocol.json").write_text(json.dumps({"n_images": int(X.shape[0]), "pretrain_epochs": args.pretrain_epochs,
                                                        "finetune_epochs": args.finetune_epochs,
                                                        "batch_size": args.batch_size, "threads": args.threads}))
    write_results(workdir, out, args)
    def run_km(seed):
        t0 = time.perf_counter()
        res = kmeans_inmemory(X_np, 10, n_init=10, random_state=seed)
        sc = clustering_scores(y, np.asarray(res.labels))
        rec = {"method": "KM", "seed": seed, **sc, "complete": args.limit is None, "device": "CPU (NumPy)",
               "protocol_note": note, "seconds": time.perf_counter() - t0, "history": []}
        save_run(workdir, rec)
        log(f"seed {seed}: KM ACC {sc['acc']:.4f} NMI {sc['nmi']:.4f} ({rec['seconds']:.0f} s)")
        write_results(workdir, out, args)

    if set(args.methods) == {"KM"}:  # raw-pixel k-means only: no autoencoder needed
        for seed in args.seeds:
            if not done("KM", seed):
                run_km(seed)
        log("all done")
        return
    for seed in args.seeds:
        ae_path = workdir / f"ae_seed{seed}.pt"
        torch.manual_seed(seed)
        model = Autoencoder(X.shape[1], 10, init=args.ae_init).to(dev)
        if ae_path.exists():
            pj = workdir / f"pretrain_{seed}.json"
            was = json.loads(pj.read_text()).get("init", "torch") if pj.exists() else None
            if was is not None and was != args.ae_init:  # rows are keyed by the init: never record the wrong one
                raise SystemExit(f"{ae_path} was pretrained with --ae-init {was}, not {args.ae_init}")
            model.load_state_dict(torch.load(ae_path, map_location=dev))
            log(f"seed {seed}: loaded pretrained autoencoder {ae_path}")
        else:
            # pretraining checkpoints every epoch (ae_seedN.partial.pt): a killed run resumes there
            part_path = workdir / f"ae_seed{seed}.partial.pt"
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            hist, start, secs = [], 0, 0.0
            if part_path.exists():
                st = torch.load(part_path, weights_only=False, map_location=dev)
                model.load_state_dict(st["model"])
                opt.load_state_dict(st["optimizer"])
                hist, start, secs = st["history"], st["epoch"], st["seconds"]
                log(f"seed {seed}: resuming pretraining after epoch {start}")
            t0 = time.perf_counter()

            def pcb(m, seed=seed):
                hist.append(m)
                log(f"seed {seed} pretrain epoch {m['epoch']}: rec {m['rec_loss']:.3f} ({m['seconds']:.1f} s)")
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "history": hist,
                            "epoch": m["epoch"], "seconds": secs + time.perf_counter() - t0}, part_path)
                write_results(workdir, out, args, progress={"method": "pretraining", "seed": seed,
                                                            "epochs": args.pretrain_epochs, **m})

            pretrain(model, X, epochs=args.pretrain_epochs, batch_size=args.batch_size, seed=seed,
                     optimizer=opt, start_epoch=start, callback=pcb, corruption=args.pretrain_corruption)
            torch.save(model.state_dict(), ae_path)
            (workdir / f"pretrain_{seed}.json").write_text(json.dumps({"seed": seed, "history": hist, "device": dev_name,
                                                                       "corruption": args.pretrain_corruption,
                                                                       "init": args.ae_init,
                                                                       "seconds": secs + time.perf_counter() - t0}))
            part_path.unlink(missing_ok=True)
        pretrained = {k: v.clone() for k, v in model.state_dict().items()}

        todo = ["AEKM"] + [m for m in args.methods if m != "AEKM"]
        for name in todo:
            if done(name, seed):
                log(f"seed {seed}: {name} already done")
                continue
            t0 = time.perf_counter()
            if name == "KM":
                run_km(seed)
                continue
            model.load_state_dict(pretrained)
            method_kwargs = args.method_kwargs if not name.startswith("AEKM") else {}  # AEKM has no finetuning
            method = build_method(name, seed, **method_kwargs)
            epochs = args.finetune_epochs

            def cb(m, name=name, seed=seed, epochs=epochs):
                log(f"seed {seed} {name} epoch {m['epoch']}: ACC {m['acc']:.4f} NMI {m['nmi']:.4f} ARI {m['ari']:.4f} "
                    f"rec {m['rec_loss']} clu {m['clu_loss']} ({m['train_seconds']:.1f} + {m['end_epoch_seconds']:.1f} s)")
                if m["epoch"] and m["epoch"] % args.progress_every == 0 and m["epoch"] < epochs:
                    write_results(workdir, out, args, progress={"method": name, "seed": seed, "epochs": epochs, **m})

            ck_path = workdir / f"finetune_{name}_seed{seed}.partial.pt"
            resume = None
            if ck_path.exists():
                resume = torch.load(ck_path, weights_only=False, map_location=dev)
                log(f"seed {seed}: resuming {name} after finetuning epoch {resume['epoch']}")

            def ckpt(state, ck_path=ck_path):
                torch.save(state, ck_path.with_suffix(".tmp"))
                ck_path.with_suffix(".tmp").replace(ck_path)

            res = fit_method(model, X, method, y=y, epochs=epochs, batch_size=args.batch_size, seed=seed,
                             snapshot_epochs=(1, 10, epochs // 2, epochs) if method.finetunes else (), callback=cb,
                             checkpoint=ckpt, resume=resume)
            last = res["history"][-1]
            rec = {"method": name, "seed": seed, "acc": last["acc"], "nmi": last["nmi"], "ari": last["ari"],
                   "complete": full_protocol, "protocol_note": note, "seconds": time.perf_counter() - t0,
                   "device": dev_name, "ae_init": args.ae_init,
                   "method_kwargs": method_kwargs,
                   "config": method.describe(), "history": res["history"]}
            save_run(workdir, rec)
            np.savez_compressed(workdir / f"result_{name}_seed{seed}.npz", labels=res["labels"],
                                centroids=res["centroids"], before=res["max_membership_before"],
                                after=res["max_membership_after"])
            make_plots(workdir, name, seed, res, y)
            ck_path.unlink(missing_ok=True)
            log(f"seed {seed}: {name} done: ACC {rec['acc']:.4f} NMI {rec['nmi']:.4f} in {rec['seconds']:.0f} s")
            write_results(workdir, out, args)
    log("all done")


if __name__ == "__main__":
    main()
