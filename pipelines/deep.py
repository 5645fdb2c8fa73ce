"""Ray stage of deep k-means: the autoencoder methods of :mod:`kmeans_dist.deep` trained with Ray Train.

:func:`run_deep_stage` launches a ``TorchTrainer`` with ``ScalingConfig(num_workers=N, use_gpu=<detected>)``.
Each worker reads the Zarr store by chunks (:func:`kmeans_dist.data.open_store`), prepares the model
(``ray.train.torch.prepare_model``, DDP) and its shard of the mini-batches, and reports around the plain
:func:`kmeans_dist.deep.train.train_epoch`.  Every epoch ends with a checkpoint (model, optimizer,
centroids, epoch, metrics history) reported with ``ray.train.report``; a restarted worker group (or a
new run given ``resume_from``/the same ``name``) continues from the latest one via
``ray.train.get_checkpoint()``.

With several workers the methods' per-batch center updates (DCN) and centroid gradients (DKM) are
all-reduced, and the per-epoch k-means re-initialisation (CT, DKM+reinit) is computed on the embeddings
of the *full* data set on every worker and then broadcast from rank 0, so all workers hold identical
centroids.

Outputs (under ``out_dir``): ``history.json``, ``summary.json``, ``labels.npy`` and the figures users look
at: loss curves, the highest-membership histogram before/after finetuning (the paper's Figure 3), PCA
of a seeded sample's embeddings at a few epochs, and the confusion matrix against the labels.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

__all__ = ["run_deep_stage", "train_loop_per_worker", "load_store_tensor", "detect_gpu"]

STATE_FILE = "state.pt"


def detect_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover
        return False


def load_store_tensor(url, scale="auto"):
    """The store's ``X`` read chunk by chunk into one float32 torch tensor, and its labels (NumPy or None).

    ``scale="auto"`` divides by the maximum when values exceed 1 (raw MNIST pixels -> [0, 1]); a number
    multiplies; None leaves the values as stored.
    """
    import torch

    from kmeans_dist.data import open_labels, open_store

    X = open_store(url)
    parts = [np.asarray(X.blocks[i, 0].compute(scheduler="synchronous"), dtype=np.float32)
             for i in range(X.numblocks[0])]
    Xn = np.concatenate(parts) if len(parts) > 1 else parts[0]
    if scale == "auto":
        mx = float(Xn.max()) if Xn.size else 1.0
        if mx > 1.0:
            Xn /= np.float32(mx)
    elif scale is not None:
        Xn *= np.float32(scale)
    lab = open_labels(url)
    y = None if lab is None else np.asarray(lab.compute(scheduler="synchronous")).astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(Xn)), y


class _PaddedShard:
    """Rank ``r`` of ``w`` takes batches r, r + w, ... of the epoch's permutation, wrapping around so that
    every rank runs the same number of steps (DDP needs equal step counts)."""

    def __init__(self, X, batch_size, seed, rank, world):
        self.X, self.bs, self.seed, self.rank, self.world = X, batch_size, seed, rank, world
        self.epoch = 0

    def set_epoch(self, e):
        self.epoch = int(e)

    def __iter__(self):
        import torch

        n = self.X.shape[0]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        idx = torch.randperm(n, generator=g)
        starts = list(range(0, n, self.bs))
        per = -(-len(starts) // self.world)
        for j in range(per):
            s = starts[(self.rank + j * self.world) % len(starts)]
            yield self.X[idx[s:s + self.bs]]


def _autoencoder(config: dict, input_dim: int):
    """The stage's autoencoder as ``config`` describes it (the workers build it, the driver rebuilds it)."""
    from kmeans_dist.deep import Autoencoder

    return Autoencoder(input_dim, int(config["n_clusters"]), tuple(config.get("hidden", (500, 500, 2000))),
                       init=config.get("ae_init", "torch"))


def train_loop_per_worker(config: dict) -> None:
    """The Ray Train loop: prepare data and model, then report around ``train_epoch`` every epoch."""
    import ray.train
    import torch
    import torch.distributed as dist
    from ray.train.torch import get_device, prepare_model

    from kmeans_dist.deep import embed, make_method, max_membership, train_epoch
    from kmeans_dist.deep.evaluate import clustering_scores
    from kmeans_dist.deep.train import kmeans_candidate_scores, size_entropy

    torch.set_num_threads(int(config.get("threads", 1)))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = get_device()
    seed = int(config["seed"])
    P, F = int(config["pretrain_epochs"]), int(config["finetune_epochs"])
    k = int(config["n_clusters"])

    # data: the whole store on every worker (the per-epoch k-means needs all embeddings), batches sharded
    X, y = load_store_tensor(config["store_url"], config.get("scale", "auto"))
    X = X.to(device)
    loader = _PaddedShard(X, int(config["batch_size"]), seed, rank, world)

    torch.manual_seed(seed)
    net = _autoencoder(config, X.shape[1]).to(device)
    method = make_method(config["method"], k, seed=seed, **config.get("method_kwargs", {}))
    if not method.finetunes:  # AEKM: one "finetuning" epoch that only runs the k-means on the embeddings
        F = 1
    distributed = world > 1 and dist.is_available() and dist.is_initialized()
    if distributed:
        method.allreduce = lambda t: dist.all_reduce(t)
        method.broadcast = lambda t: dist.broadcast(t, 0)

    state = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)
    elif config.get("resume_from"):
        state = torch.load(Path(config["resume_from"]) / STATE_FILE, map_location="cpu", weights_only=False)
    if state is not None:
        net.load_state_dict(state["model"])
        method.load_state_dict(state["method"], device=device)
    start = 0 if state is None else int(state["epoch"])
    history = [] if state is None else list(state["history"])
    extras = {} if state is None else dict(state.get("extras", {}))
    resumed_from = None if state is None else start

    model = prepare_model(net)
    lr = float(config.get("lr", 1e-3))

    def make_opt(phase):
        params = list(model.parameters()) + (method.parameters() if phase == "finetune" else [])
        return torch.optim.Adam(params, lr=lr)

    phase = "pretrain" if start < P else "finetune"
    opt = make_opt(phase)
    if state is not None and state.get("optimizer") is not None and state.get("phase") == phase:
        opt.load_state_dict(state["optimizer"])

    sample = np.sort(np.random.default_rng(seed).choice(X.shape[0], size=min(2000, X.shape[0]), replace=False))
    snap_epochs = set(config.get("snapshot_epochs") or ())
    fail_at = config.get("fail_at_epoch")
    fail_marker = config.get("fail_marker")

    def scores(Z):
        labels = method.predict(Z)
        sc = {"size_entropy": size_entropy(labels, method.n_clusters)}
        return labels, (sc if y is None else {**sc, **clustering_scores(y, labels.cpu().numpy())})

    def sum_over_workers(vals):
        t = torch.tensor(vals, dtype=torch.float64, device=device)
        if distributed:
            dist.all_reduce(t)
        return t.tolist()

    for ep in range(start + 1, P + F + 1):
        if fail_at is not None and ep == int(fail_at) and fail_marker and not os.path.exists(fail_marker):
            # whichever rank gets here first leaves the marker: Ray may stop the group as soon as one rank
            # raises, before the others reach this line, and the retry must not fail again
            try:
                with open(fail_marker, "x") as fh:
                    fh.write(f"failed at epoch {ep} on rank {rank}\n")
            except FileExistsError:
                pass
            raise RuntimeError(f"injected failure at epoch {ep} (testing resume)")
        t0 = time.perf_counter()
        if ep <= P:
            cur = "pretrain"
        else:
            cur = "finetune"
            if phase == "pretrain" or method.centroids is None:
                # first finetuning epoch: k-means on the pretrained embeddings, identical on all ranks
                Z0 = embed(model, X)
                method.initialize(Z0)
                if distributed:
                    dist.broadcast(method.centroids.data, 0)
                if hasattr(method, "counts") and method.counts is not None and distributed:
                    dist.broadcast(method.counts, 0)
                lab0, sc0 = scores(Z0)
                if rank == 0:
                    extras["membership_before"] = max_membership(Z0, method.centroids, method.membership())
                    extras.setdefault("snapshots", {})[P] = (Z0[sample].cpu().numpy(), lab0.cpu().numpy()[sample])
                cands0 = kmeans_candidate_scores(method, 0, y)
                history.append({"epoch": P, "phase": "init", **sc0,
                                **({} if cands0 is None else {"kmeans_candidates": cands0})})
                opt = make_opt("finetune")
                phase = "finetune"
        loader.set_epoch(ep)
        if cur == "finetune" and not method.finetunes:
            m = {"rec_loss": float("nan"), "clu_loss": 0.0, "n_samples": 1}
        else:
            m = train_epoch(model, opt, loader, method if cur == "finetune" else None, finetune=cur == "finetune")
        t_train = time.perf_counter() - t0
        rec_sum, clu_sum, n = sum_over_workers([m["rec_loss"] * m["n_samples"], m["clu_loss"] * m["n_samples"],
                                                m["n_samples"]])
        metrics = {"epoch": ep, "phase": cur, "rec_loss": rec_sum / n, "clu_loss": clu_sum / n,
                   "train_seconds": t_train}
        if cur == "finetune":
            Z = embed(model, X)
            labels = method.end_epoch(Z, ep - P)
            if ep == P + F and method.finalize() is not None and distributed:
                dist.broadcast(method.centroids.data, 0)  # the last epoch's output partition: rank 0's choice
            lab, sc = scores(Z)
            metrics.update(sc)
            inertia = method.kmeans_inertia_at(ep - P)  # this epoch's re-initialisation (CT, DKM+reinit)
            if inertia is not None:
                metrics["kmeans_inertia"] = inertia
            cands = kmeans_candidate_scores(method, ep - P, y)  # what the re-initialisation chose among
            if cands is not None:
                metrics["kmeans_candidates"] = cands
            if distributed:  # all workers must hold rank 0's centroids exactly
                ref = method.centroids.detach().clone()
                dist.broadcast(ref, 0)
                div = (ref - method.centroids.detach()).abs().max().reshape(1).to(torch.float64)
                dist.all_reduce(div, op=dist.ReduceOp.MAX)
                metrics["centroid_divergence"] = float(div)
            if rank == 0 and (ep - P) in snap_epochs:
                extras.setdefault("snapshots", {})[ep] = (Z[sample].cpu().numpy(), lab.cpu().numpy()[sample])
        metrics["seconds"] = time.perf_counter() - t0
        if resumed_from is not None:
            metrics["resumed_from_epoch"] = resumed_from
        history.append(dict(metrics))
        report = {k2: v for k2, v in metrics.items() if isinstance(v, (int, float))}
        report["phase_is_finetune"] = int(cur == "finetune")
        if rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "method": method.state_dict(),
                            "phase": phase, "epoch": ep, "history": history, "metrics": metrics,
                            "extras": extras, "config": {k2: v for k2, v in config.items() if k2 != "fail_marker"}},
                           Path(tmp) / STATE_FILE)
                ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(report)


def run_deep_stage(store_url, out_dir, *, method: str = "CT", n_clusters: int = 10, pretrain_epochs: int = 50,
                   finetune_epochs: int = 100, batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
                   num_workers: int = 2, use_gpu: bool | None = None, threads_per_worker: int = 1,
                   method_kwargs: dict | None = None, scale="auto", name: str | None = None,
                   resume_from: str | None = None, max_failures: int = 1, snapshot_epochs=None,
                   fail_at_epoch: int | None = None, ray_init_kwargs: dict | None = None, make_plots: bool = True,
                   ae_init: str = "torch") -> dict:
    """Train ``method`` on the store at ``store_url`` with Ray Train; write outputs to ``out_dir``.

    Starts a local Ray instance when none is connected (``ray_init_kwargs`` passed to ``ray.init``).
    ``name`` gives the run a fixed name (default: unique); rerunning with the same ``name`` and ``out_dir``,
    or passing ``resume_from`` (a checkpoint directory), continues a killed run from its last checkpoint.
    ``fail_at_epoch`` injects one worker failure at that epoch (tests of the resume path).
    ``ae_init`` is the autoencoder's initial weights (:class:`kmeans_dist.deep.Autoencoder`'s ``init``).
    Returns a summary dict (final metrics, paths of the checkpoint, history and figures).
    """
    import ray
    import torch
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if not ray.is_initialized():
        kw = {"address": os.environ.get("RAY_ADDRESS") or "local", "include_dashboard": False}
        kw.update(ray_init_kwargs or {})
        ray.init(**kw)
    if use_gpu is None:
        use_gpu = detect_gpu()
    name = name or f"deep-{method}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    if snapshot_epochs is None:
        snapshot_epochs = sorted({1, max(finetune_epochs // 2, 1), finetune_epochs})
    config = {
        "store_url": os.fspath(store_url), "method": method, "n_clusters": n_clusters,
        "pretrain_epochs": pretrain_epochs, "finetune_epochs": finetune_epochs, "batch_size": batch_size,
        "lr": lr, "seed": seed, "threads": threads_per_worker, "method_kwargs": dict(method_kwargs or {}),
        "ae_init": ae_init,
        "scale": scale, "snapshot_epochs": list(snapshot_epochs), "fail_at_epoch": fail_at_epoch,
        "fail_marker": os.fspath(out_dir / f".{name}.failed-once") if fail_at_epoch is not None else None,
        "resume_from": os.fspath(resume_from) if resume_from else None,
    }
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=bool(use_gpu),
                                     resources_per_worker=None if use_gpu else {"CPU": 1}),
        run_config=RunConfig(name=name, storage_path=os.fspath(out_dir / "ray_results"),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=max_failures)),
    )
    t0 = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - t0
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)
    summary = _write_outputs(state, config, out_dir, make_plots=make_plots)
    summary.update(name=name, wall_seconds=wall, checkpoint=result.checkpoint.path,
                   storage_path=os.fspath(out_dir / "ray_results" / name), num_workers=num_workers,
                   use_gpu=bool(use_gpu))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _write_outputs(state: dict, config: dict, out_dir: Path, make_plots: bool = True) -> dict:
    """Final embeddings, labels, scores and figures from the last checkpoint (on the driver)."""
    import torch

    from kmeans_dist.deep import embed, make_method, max_membership
    from kmeans_dist.deep.evaluate import clustering_scores, matched_confusion

    X, y = load_store_tensor(config["store_url"], config.get("scale", "auto"))
    net = _autoencoder(config, X.shape[1])
    net.load_state_dict(state["model"])
    method = make_method(config["method"], config["n_clusters"], seed=config["seed"], **config["method_kwargs"])
    method.load_state_dict(state["method"])
    history = state["history"]
    (out_dir / "history.json").write_text(json.dumps(history, indent=1, default=float))
    summary = {"method": config["method"], "epochs": int(state["epoch"]), "metrics": state["metrics"],
               "model": net.config(), "history": os.fspath(out_dir / "history.json"), "figures": {}}
    if method.centroids is None:  # pretraining only: nothing to cluster with yet
        return summary
    Z = embed(net, X)
    labels = method.predict(Z).numpy()
    np.save(out_dir / "labels.npy", labels)
    if y is not None:
        summary["final_scores"] = clustering_scores(y, labels)
        summary["confusion"] = matched_confusion(y, labels).tolist()
    if make_plots:
        from kmeans_dist.deep import plots

        ex = state.get("extras", {})
        figs = summary["figures"]
        figs["losses"] = os.fspath(plots.plot_losses(history, out_dir / "losses.png", title=config["method"]))
        after = max_membership(Z, method.centroids, method.membership())
        before = ex.get("membership_before")
        if before is not None:
            figs["membership"] = os.fspath(plots.plot_membership_histogram(before, after, out_dir / "membership.png",
                                                                           title=config["method"]))
        if ex.get("snapshots"):
            figs["embeddings"] = os.fspath(plots.plot_embeddings(ex["snapshots"], out_dir / "embeddings.png",
                                                                 title=config["method"]))
        if y is not None:
            figs["confusion"] = os.fspath(plots.plot_confusion(y, labels, out_dir / "confusion.png",
                                                               title=config["method"]))
    return summary
