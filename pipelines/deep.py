"""Ray stage of deep k-means: the autoencoder methods of :mod:`kmeans_dist.deep` trained with Ray Train.

:func:`run_deep_stage` launches a ``TorchTrainer`` with ``ScalingConfig(num_workers=N, use_gpu=<detected>)``.
Worker ``r`` of ``N`` reads only its shard of the Zarr store: rows ``r n / N .. (r + 1) n / N`` rounded to
whole blocks of the per-epoch k-means (:func:`shard_bounds`), i.e. the chunks that overlap them
(:func:`read_shard`); the labels (one integer a row) are read whole.  It prepares the
model (``ray.train.torch.prepare_model``, DDP) and runs the library's epoch functions, the same as the
single-process :func:`kmeans_dist.deep.fit_method`, with the same epoch numbering.

``batch_size`` is the *global* batch: every epoch draws one permutation of all ``n`` rows (the permutation of
the single-process run), and each worker trains on the rows of each global batch that lie in its shard,
its loss scaled by its share (:class:`kmeans_dist.deep.ShardLoader`), so that DDP's average gradient is the
gradient of the global batch's mean.  N workers take the same optimizer steps as one, and one epoch on N
workers equals one epoch on one up to floating-point reduction order.

The training budget is ``max(epochs, ceil(min_steps / steps_per_epoch))`` epochs per phase
(:func:`kmeans_dist.deep.epochs_for_steps`), by default at least the paper's epochs (50 + 100) and at least the
paper's number of MNIST optimizer steps (13,700 + 27,400 at batch 256), so that a small store is not
under-trained.  Every epoch ends with a
checkpoint in the library's one format (:func:`kmeans_dist.deep.training_state`) reported with
``ray.train.report``; a restarted worker group (or a new run given ``resume_from``/the same ``name``)
continues from the latest one via ``ray.train.get_checkpoint()``.

With several workers the methods' per-batch center updates (DCN) and centroid gradients (DKM) are
all-reduced.  The embeddings are computed shard by shard, in parallel, after every epoch.  The per-epoch
k-means (the initial one, and CT's and DKM+reinit's re-initialisation) runs through the project's chunked
engine on blocks of :func:`kmeans_dist.deep.latent_block_rows` rows, in one of two ways with the same result bit
for bit: on the workers' own embeddings (:func:`kmeans_dist.deep.reinit_centroids` with the worker's
:class:`kmeans_dist.deep.Shard`, i.e. :class:`kmeans_dist.chunked.CollectiveBlocks`: each Lloyd and seeding
pass all-gathers only the blocks' partials, per-cluster sums and counts and a few candidate rows), or, when the
embeddings take at most ``gather_below_bytes`` (:data:`GATHER_BELOW_BYTES`, 16 MiB), on all of them gathered to
every worker, which is faster at that size.  Every worker combines the same partials in the same tree, so all
hold identical centroids (checked after every epoch: ``centroid_divergence``), the ones one process gets.  With
the shards, only one value a row is gathered: the labels for the scores and the highest memberships for the
histogram; and the embeddings of a 2,000-row sample for the PCA figures.

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

__all__ = ["run_deep_stage", "train_loop_per_worker", "load_store_tensor", "read_shard", "shard_bounds",
           "resolve_budget", "detect_gpu", "autoencoder_from_config", "store_max", "predict_store", "scale_rows", "read_labels",
           "GATHER_BELOW_BYTES"]

STATE_FILE = "state.pt"

#: Embeddings (n_samples x n_clusters float32) up to this size are all-gathered for the per-epoch k-means, larger
#: ones stay on their workers (:class:`kmeans_dist.deep.Shard`): 16 MiB, between the sizes where either was
#: measured faster on 2 workers (``benchmarks/RESULTS-deep.md``, "The per-epoch k-means").
GATHER_BELOW_BYTES = 16 * 2**20


def shard_bounds(n_samples: int, rank: int, world_size: int, block_rows: int | None = None) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of worker ``rank``'s shard: ``n r / N .. n (r + 1) / N``; with ``block_rows`` (the
    per-epoch k-means on the shards), rounded down to whole blocks (:meth:`kmeans_dist.deep.Shard.bounds`)."""
    if block_rows:
        from kmeans_dist.deep import Shard

        return Shard.bounds(n_samples, rank, world_size, block_rows)
    return n_samples * rank // world_size, n_samples * (rank + 1) // world_size


def read_shard(url, rank: int = 0, world_size: int = 1, block_rows: int | None = None):
    """Rows of worker ``rank``'s shard of the store's ``X`` (:func:`shard_bounds`), read chunk by chunk (only
    the chunks that overlap them), as float32 NumPy.

    Returns
    -------
    X : numpy.ndarray of shape (hi - lo, n_features)
    lo : int
        Index of the shard's first row.
    n_total : int
        Rows of the store.
    chunks : tuple of int
        ``(first, last + 1)``: the row chunks that were read.
    """
    from kmeans_dist.data import open_store

    X = open_store(url)
    n = int(X.shape[0])
    lo, hi = shard_bounds(n, rank, world_size, block_rows)
    edges = np.concatenate([[0], np.cumsum(X.chunks[0])])
    c0 = int(np.searchsorted(edges, lo, side="right") - 1)
    c1 = int(np.searchsorted(edges, hi, side="left")) if hi > lo else c0
    parts = [np.asarray(X.blocks[i, 0].compute(scheduler="synchronous"), dtype=np.float32)
             for i in range(c0, c1)]
    Xn = np.concatenate(parts) if len(parts) > 1 else (parts[0] if parts else np.zeros((0, X.shape[1]), np.float32))
    Xn = np.ascontiguousarray(Xn[lo - int(edges[c0]):hi - int(edges[c0])])
    return Xn, lo, n, (c0, c1)


def resolve_budget(n_samples: int, batch_size: int, pretrain_epochs: int, finetune_epochs: int,
                   pretrain_min_steps: int, finetune_min_steps: int) -> tuple[int, int]:
    """The epochs each phase runs: :func:`kmeans_dist.deep.epochs_for_steps` for both phases."""
    from kmeans_dist.deep import epochs_for_steps

    return (epochs_for_steps(n_samples, batch_size, pretrain_epochs, pretrain_min_steps),
            epochs_for_steps(n_samples, batch_size, finetune_epochs, finetune_min_steps))


def detect_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover
        return False


def scale_rows(Xn: np.ndarray, scale, maximum: float) -> np.ndarray:
    """Scale float32 rows in place as the stage does: ``scale="auto"`` divides by ``maximum`` (the store's
    largest value) when it exceeds 1, a number multiplies, None leaves the values as stored."""
    if scale == "auto":
        if maximum > 1.0:
            Xn /= np.float32(maximum)
    elif scale is not None:
        Xn *= np.float32(scale)
    return Xn


def read_labels(url):
    """The store's labels as int64 NumPy (one value a row), or None when it has none."""
    from kmeans_dist.data import open_labels

    lab = open_labels(url)
    return None if lab is None else np.asarray(lab.compute(scheduler="synchronous")).astype(np.int64)


def load_store_tensor(url, scale="auto"):
    """The store's ``X`` read chunk by chunk into one float32 torch tensor, and its labels (NumPy or None).

    ``scale="auto"`` divides by the maximum when values exceed 1 (raw MNIST pixels -> [0, 1]); a number
    multiplies; None leaves the values as stored.
    """
    import torch

    Xn = read_shard(url)[0]
    scale_rows(Xn, scale, float(Xn.max()) if Xn.size else 0.0)
    return torch.from_numpy(np.ascontiguousarray(Xn)), read_labels(url)


def store_max(url) -> float:
    """The largest value of the store's ``X`` (0 when empty), one stored chunk at a time: what ``scale="auto"``
    divides by when it exceeds 1."""
    from kmeans_dist.data import open_store

    X = open_store(url)
    mx = 0.0
    for i in range(X.numblocks[0]):
        b = np.asarray(X.blocks[i, 0].compute(scheduler="synchronous"), dtype=np.float32)
        if b.size:
            mx = max(mx, float(b.max()))
    return mx


def predict_store(net, method, url, scale="auto", maximum: float | None = None):
    """Labels and highest soft memberships of every row of the store's ``X`` under a trained ``net`` and
    ``method``, read, scaled and embedded one stored chunk at a time, so that the driver never holds ``X``.

    Parameters
    ----------
    net : kmeans_dist.deep.Autoencoder
        The trained autoencoder.
    method : kmeans_dist.deep.Method
        The trained method (its centroids and membership).
    url : str or path
        The store.
    scale : {"auto"}, float or None
        As :func:`load_store_tensor`.
    maximum : float or None
        The store's largest value, which ``scale="auto"`` divides by (the stage's workers record it); None
        reads it (:func:`store_max`, one more pass).

    Returns
    -------
    labels : numpy.ndarray of shape (n_samples,), int64
    membership : numpy.ndarray of shape (n_samples,)
        :func:`kmeans_dist.deep.max_membership` of every row.
    """
    import torch

    from kmeans_dist.data import open_store
    from kmeans_dist.deep import embed, max_membership

    X = open_store(url)
    if scale == "auto" and maximum is None:
        maximum = store_max(url)
    labels, memb = [], []
    for i in range(X.numblocks[0]):
        b = np.array(X.blocks[i, 0].compute(scheduler="synchronous"), dtype=np.float32)
        Z = embed(net, torch.from_numpy(scale_rows(b, scale, float(maximum or 0.0))))
        labels.append(method.predict(Z).cpu().numpy().astype(np.int64))
        memb.append(max_membership(Z, method.centroids, method.membership()))
    if not labels:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(labels), np.concatenate(memb)


def autoencoder_from_config(config: dict, input_dim: int):
    """The stage's autoencoder as ``config`` describes it (the workers build it, the driver rebuilds it).

    Parameters
    ----------
    config : dict
        The stage's config (``n_clusters``, optional ``hidden`` and ``ae_init``).
    input_dim : int
        Number of features.

    Returns
    -------
    kmeans_dist.deep.Autoencoder
    """
    from kmeans_dist.deep import Autoencoder

    return Autoencoder(input_dim, int(config["n_clusters"]), tuple(config.get("hidden", (500, 500, 2000))),
                       init=config.get("ae_init", "torch"))


def train_loop_per_worker(config: dict) -> None:
    """The Ray Train loop: read this worker's shard, prepare DDP, then run the library's epoch functions.

    The same steps as :func:`kmeans_dist.deep.pretrain` and :func:`kmeans_dist.deep.fit_method`
    (:func:`~kmeans_dist.deep.pretrain_epoch`, :func:`~kmeans_dist.deep.start_finetune`,
    :func:`~kmeans_dist.deep.finetune_epoch`, with the same batch permutations), the same epoch numbering and
    the same checkpoint format (:func:`~kmeans_dist.deep.training_state`), reported with ``ray.train.report``
    after every step.  Around them this loop only reads its shard, sets the method's shard and all-reduces.
    ``config["on_epoch_end"]``, when given, is called on every worker with a copy of each record before its
    checkpoint is reported (the tests inject a failure there).

    Parameters
    ----------
    config : dict
        Built by :func:`run_deep_stage`.
    """
    import ray.train
    import torch
    import torch.distributed as dist
    from ray.train.torch import get_device, prepare_model

    from kmeans_dist.deep import (Shard, ShardLoader, adam, embed, finetune_epoch, latent_block_rows, make_method,
                                  max_membership, pretrain_epoch, restore_training_state, start_finetune,
                                  training_state)

    torch.set_num_threads(int(config.get("threads", 1)))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = get_device()
    seed = int(config["seed"])
    P, F = int(config["pretrain_epochs"]), int(config["finetune_epochs"])
    bs, lr = int(config["batch_size"]), float(config.get("lr", 1e-3))
    on_epoch_end = config.get("on_epoch_end")

    distributed = world > 1 and dist.is_available() and dist.is_initialized()

    # only this worker's shard of the store; "auto" scaling by the maximum over all shards
    sharded = config.get("latent_kmeans") == "sharded" and distributed
    Xn, lo, n_total, chunks = read_shard(config["store_url"], rank, world,
                                         config["latent_block_rows"] if sharded else None)
    rows = int(config.get("latent_block_rows") or latent_block_rows(n_total))
    mx = torch.tensor([float(Xn.max()) if Xn.size else 0.0], dtype=torch.float64)
    if distributed:
        dist.all_reduce(mx, op=dist.ReduceOp.MAX)
    scale_rows(Xn, config.get("scale", "auto"), float(mx))
    X = torch.from_numpy(Xn).to(device)
    y = read_labels(config["store_url"])
    torch.manual_seed(seed)
    net = autoencoder_from_config(config, X.shape[1]).to(device)
    method = make_method(config["method"], int(config["n_clusters"]), seed=seed, **config.get("method_kwargs", {}))
    method.block_rows = rows
    shards = [{"rank": rank, "rows": [lo, lo + X.shape[0]], "chunks": list(chunks)}]
    # the per-epoch k-means: on the shards (CollectiveBlocks), or on the gathered embeddings when they are small
    # (faster there, measured: benchmarks/bench_latent_kmeans.py); the same centers bit for bit either way
    shard = None
    if distributed:
        method.allreduce = lambda t: dist.all_reduce(t)
        mine, shards = shards[0], [None] * world
        dist.all_gather_object(shards, mine)
        if sharded:
            method.shard = shard = Shard(lo, X.shape[0], n_total, rows)
    counts = [s["rows"][1] - s["rows"][0] for s in shards]

    def embed_fn(m):
        """This shard's embeddings; all of them (all-gathered, padded to equal sizes) below the gather size."""
        Zl = embed(m, X)
        if not distributed or shard is not None:
            return Zl
        pad = torch.zeros((max(counts), Zl.shape[1]), dtype=Zl.dtype, device=Zl.device)
        pad[:Zl.shape[0]] = Zl
        out = [torch.empty_like(pad) for _ in counts]
        dist.all_gather(out, pad)
        return torch.cat([o[:c] for o, c in zip(out, counts)]).contiguous()

    def gathered(values: torch.Tensor) -> np.ndarray:
        """One value a row of the whole data set (this shard's gathered with the others')."""
        return (values if shard is None else shard.gather_rows(values)).cpu().numpy()

    def snapshot(Z, labels):
        """Embeddings and labels of the seeded sample (its rows in this shard, gathered)."""
        idx = sample if shard is None else shard.local_index(sample)
        t = torch.as_tensor(idx, dtype=torch.int64, device=Z.device)
        return gathered(Z[t]), gathered(labels[t])

    def divergence():
        """Largest difference between rank 0's centroids and this worker's, maximised over the workers."""
        ref = method.centroids.detach().clone()
        dist.broadcast(ref, 0)
        div = (ref - method.centroids.detach()).abs().max().reshape(1).to(torch.float64)
        dist.all_reduce(div, op=dist.ReduceOp.MAX)
        return float(div)

    state = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)
    elif config.get("resume_from"):
        state = torch.load(Path(config["resume_from"]) / STATE_FILE, map_location="cpu", weights_only=False)
    if state is not None:
        restore_training_state(state, net, method, device=device)
    phase, done = ("pretrain", 0) if state is None else (state["phase"], int(state["epoch"]))
    history = [] if state is None else list(state["history"])
    extras = {} if state is None else dict(state["extras"])
    extras["shards"] = shards
    extras["store_max"] = float(mx)  # what scale="auto" divided by: the driver's final pass reuses it
    resumed = None if state is None else f"{phase} {done}"
    model = prepare_model(net)
    sample = np.sort(np.random.default_rng(seed).choice(n_total, size=min(2000, n_total), replace=False))
    snap_epochs = set(config.get("snapshot_epochs") or ())

    def finish(rec, opt, method_state):
        """All-reduce the losses, record, call back, and report the checkpoint (rank 0)."""
        if distributed and "rec_loss" in rec:
            t = torch.tensor([rec["rec_loss"] * rec["n_samples"], rec["clu_loss"] * rec["n_samples"],
                              rec["n_samples"]], dtype=torch.float64, device=device)
            dist.all_reduce(t)
            rec.update(rec_loss=float(t[0] / t[2]), clu_loss=float(t[1] / t[2]), n_samples=int(t[2]))
        if resumed is not None:
            rec["resumed_from"] = resumed
        history.append(rec)
        if on_epoch_end is not None:
            on_epoch_end(dict(rec))
        report = {k: v for k, v in rec.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        report["phase_is_finetune"] = int(rec["phase"] == "finetune")
        if rank == 0:
            st = training_state(net, opt, method_state, phase=rec["phase"], epoch=rec["epoch"], history=history,
                                extras=extras)
            with tempfile.TemporaryDirectory() as tmp:
                torch.save(st, Path(tmp) / STATE_FILE)
                ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(report)

    if phase == "pretrain":
        opt = adam(model.parameters(), lr=lr)
        if state is not None and state.get("optimizer") is not None:
            opt.load_state_dict(state["optimizer"])
        loader = ShardLoader(X, n_total, lo, bs, seed=seed, world_size=world)
        for ep in range(done + 1, P + 1):
            finish(pretrain_epoch(model, opt, loader, ep), opt, None)
        rec, Z, labels = start_finetune(model, X, method, y=y, embed_fn=embed_fn)
        if distributed:  # the same partials in the same tree give the same k-means on every worker
            rec["centroid_divergence"] = divergence()
        extras["membership_before"] = gathered(torch.from_numpy(max_membership(Z, method.centroids,
                                                                                method.membership())))
        extras["snapshots"] = {0: snapshot(Z, labels)}
        finish(rec, None, method)
        phase, done = "init", 0
    if method.finetunes and done < F:
        opt = adam(list(model.parameters()) + method.parameters(), lr=lr)
        if phase == "finetune" and state is not None and state.get("optimizer") is not None:
            opt.load_state_dict(state["optimizer"])
        loader = ShardLoader(X, n_total, lo, bs, seed=seed + 1, world_size=world)
        for ep in range(done + 1, F + 1):
            rec, Z, labels = finetune_epoch(model, opt, loader, method, X, ep, y=y, embed_fn=embed_fn)
            if distributed:  # every worker must hold the same centroids
                rec["centroid_divergence"] = divergence()
            if ep in snap_epochs:
                extras.setdefault("snapshots", {})[ep] = snapshot(Z, labels)
            finish(rec, opt, method)


def run_deep_stage(store_url, out_dir, *, method: str = "CT", n_clusters: int = 10, pretrain_epochs: int = 50,
                   finetune_epochs: int = 100, batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
                   num_workers: int = 2, use_gpu: bool | None = None, threads_per_worker: int = 1,
                   method_kwargs: dict | None = None, scale="auto", name: str | None = None,
                   resume_from: str | None = None, max_failures: int = 1, snapshot_epochs=None,
                   ray_init_kwargs: dict | None = None, make_plots: bool = True, ae_init: str = "torch",
                   on_epoch_end=None, pretrain_min_steps: int | None = None, finetune_min_steps: int | None = None,
                   gather_below_bytes: int = GATHER_BELOW_BYTES, latent_block_rows: int | None = None) -> dict:
    """Train ``method`` on the store at ``store_url`` with Ray Train; write outputs to ``out_dir``.

    Starts a local Ray instance when none is connected and ``$RAY_ADDRESS`` is unset
    (:func:`pipelines.ray_local.init_local_ray`: every server on 127.0.0.1; ``ray_init_kwargs`` passed on).
    ``name`` gives the run a fixed name (default: unique); rerunning with the same ``name`` and ``out_dir``,
    or passing ``resume_from`` (a checkpoint directory), continues a killed run from its last checkpoint.
    ``on_epoch_end(record)``, when given, runs on every worker after every epoch, before its checkpoint is
    reported (the tests inject a failure with it; Ray pickles it with the config).
    ``ae_init`` is the autoencoder's initial weights (:class:`kmeans_dist.deep.Autoencoder`'s ``init``).

    ``batch_size`` is the global batch, shared by the ``num_workers`` workers.  Each phase runs
    ``max(epochs, ceil(min_steps / ceil(n / batch_size)))`` epochs; ``pretrain_min_steps`` and
    ``finetune_min_steps`` default to the paper's MNIST step counts
    (:data:`kmeans_dist.deep.PAPER_PRETRAIN_STEPS` = 13,700, :data:`~kmeans_dist.deep.PAPER_FINETUNE_STEPS` =
    27,400); 0 runs exactly the given epochs.  With several workers, embeddings of at most ``gather_below_bytes``
    (``n x n_clusters`` float32) are all-gathered for the per-epoch k-means and larger ones stay on their workers;
    the centroids are the same bit for bit, only the time differs (0: never gather).  ``latent_block_rows`` is the
    rows per block of that k-means (default :func:`kmeans_dist.deep.latent_block_rows`); on the shards, the
    workers' shards are whole blocks of it.
    Returns a summary dict (final metrics, the epochs run, the workers' shards, paths of the checkpoint,
    history and figures).
    """
    import ray
    import torch
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from kmeans_dist.data import open_store
    from kmeans_dist.deep import PAPER_FINETUNE_STEPS, PAPER_PRETRAIN_STEPS
    from kmeans_dist.deep import latent_block_rows as default_latent_rows
    from pipelines.ray_local import init_local_ray, loopback_torch_config, ray_is_loopback

    n_total = int(open_store(store_url).shape[0])  # metadata only
    pmin = PAPER_PRETRAIN_STEPS if pretrain_min_steps is None else int(pretrain_min_steps)
    fmin = PAPER_FINETUNE_STEPS if finetune_min_steps is None else int(finetune_min_steps)
    P, F = resolve_budget(n_total, batch_size, pretrain_epochs, finetune_epochs, pmin, fmin)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if not ray.is_initialized():
        kw = {"address": os.environ.get("RAY_ADDRESS") or "local", "include_dashboard": False}
        kw.update(ray_init_kwargs or {})
        if kw["address"] == "local":  # every Ray server on 127.0.0.1 (pipelines.ray_local)
            init_local_ray(**kw)
        else:
            ray.init(**kw)
    if use_gpu is None:
        use_gpu = detect_gpu()
    name = name or f"deep-{method}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    if snapshot_epochs is None:
        snapshot_epochs = sorted({1, max(F // 2, 1), F})
    config = {
        "store_url": os.fspath(store_url), "method": method, "n_clusters": n_clusters,
        "pretrain_epochs": P, "finetune_epochs": F, "batch_size": batch_size,
        "pretrain_min_steps": pmin, "finetune_min_steps": fmin,
        "lr": lr, "seed": seed, "threads": threads_per_worker, "method_kwargs": dict(method_kwargs or {}),
        "ae_init": ae_init,
        "scale": scale, "snapshot_epochs": list(snapshot_epochs), "on_epoch_end": on_epoch_end,
        "resume_from": os.fspath(resume_from) if resume_from else None,
        "gather_below_bytes": int(gather_below_bytes),
        "latent_kmeans": ("in process" if num_workers == 1 else
                          "gathered" if n_total * int(n_clusters) * 4 <= int(gather_below_bytes) else "sharded"),
        "latent_block_rows": int(latent_block_rows or default_latent_rows(n_total)),
    }
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=bool(use_gpu),
                                     resources_per_worker=None if use_gpu else {"CPU": 1}),
        # a single-host instance: the torch.distributed rendezvous store on 127.0.0.1 too
        torch_config=loopback_torch_config() if ray_is_loopback() else None,
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
                   use_gpu=bool(use_gpu), pretrain_epochs=P, finetune_epochs=F, batch_size=batch_size,
                   n_samples=n_total, shards=state.get("extras", {}).get("shards"), latent_kmeans=config["latent_kmeans"],
                   latent_block_rows=config["latent_block_rows"])
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _write_outputs(state: dict, config: dict, out_dir: Path, make_plots: bool = True) -> dict:
    """Final labels, scores and figures from the last checkpoint, on the driver, which reads the store one
    chunk at a time (:func:`predict_store`) and holds one value a row."""

    from kmeans_dist.data import open_store
    from kmeans_dist.deep import make_method
    from kmeans_dist.deep.evaluate import clustering_scores, matched_confusion

    net = autoencoder_from_config(config, int(open_store(config["store_url"]).shape[1]))
    net.load_state_dict(state["model"])
    method = make_method(config["method"], config["n_clusters"], seed=config["seed"], **config["method_kwargs"])
    method.load_state_dict(state["method"])
    history = state["history"]
    (out_dir / "history.json").write_text(json.dumps(history, indent=1, default=float))
    last = history[-1] if history else {}
    summary = {"method": config["method"], "phase": state["phase"], "epoch": int(state["epoch"]),
               "metrics": {k: v for k, v in last.items() if isinstance(v, (int, float))},
               "model": net.config(), "history": os.fspath(out_dir / "history.json"), "figures": {}}
    if method.centroids is None:  # pretraining only: nothing to cluster with yet
        return summary
    labels, after = predict_store(net, method, config["store_url"], config.get("scale", "auto"),
                                  state.get("extras", {}).get("store_max"))
    np.save(out_dir / "labels.npy", labels)
    y = read_labels(config["store_url"])
    if y is not None:
        summary["final_scores"] = clustering_scores(y, labels)
        summary["confusion"] = matched_confusion(y, labels).tolist()
    if make_plots:
        from kmeans_dist.deep import plots

        ex = state.get("extras", {})
        figs = summary["figures"]
        figs["losses"] = os.fspath(plots.plot_losses(history, out_dir / "losses.png", title=config["method"]))
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
