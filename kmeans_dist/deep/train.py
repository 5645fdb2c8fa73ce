"""Plain-PyTorch training of the deep k-means methods: one path for one process and for Ray Train.

- :func:`train_epoch`: one pass of mini-batch Adam on reconstruction (+ lambda x the method's clustering loss);
- :func:`pretrain_epoch` and :func:`finetune_epoch`: one epoch of each phase, with its record; a finetuning
  epoch ends with the method's epoch-end update (:meth:`Method.end_epoch`: the k-means re-initialisation of
  CT and DKM+reinit) on the embeddings of the whole data set;
- :func:`start_finetune`: the initial k-means on the pretrained embeddings;
- :func:`pretrain` and :func:`fit_method`: the loops of one process.  The Ray Train loop in
  ``pipelines/deep.py`` calls the same epoch functions on its shard of the batches, and both save the one
  checkpoint format of :mod:`kmeans_dist.deep.checkpoint`.

Epoch numbering, the same everywhere (records and checkpoints): pretraining epochs ``1..P``
(``phase="pretrain"``), then the initial k-means (``phase="init"``, ``epoch=0``), then finetuning epochs
``1..F`` (``phase="finetune"``).
"""
from __future__ import annotations

import math
import time
from typing import Callable, Iterable

import numpy as np
import torch

from .checkpoint import restore_training_state, training_state
from .evaluate import clustering_scores
from .latent import embed, max_membership
from .losses import reconstruction_loss
from .methods import Method
from .model import Autoencoder

__all__ = ["BatchLoader", "ShardLoader", "epochs_for_steps", "PAPER_PRETRAIN_STEPS", "PAPER_FINETUNE_STEPS",
           "train_epoch", "pretrain_epoch", "pretrain", "start_finetune", "finetune_epoch",
           "fit_method"]


class BatchLoader:
    """Mini-batches of rows of an in-memory tensor, reshuffled each epoch from ``(seed, epoch)``.

    Much cheaper than a ``DataLoader`` over a ``TensorDataset`` (one gather per batch).  With ``world_size``
    processes, rank ``r`` takes batches ``r, r + world_size, ...`` of the same permutation, wrapping around so
    that every rank runs the same number of steps (DDP needs equal step counts); with one process it is every
    batch once.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        The data.
    batch_size : int, default=256
        Rows per batch.
    shuffle : bool, default=True
        Draw a new permutation every epoch.
    seed : int, default=0
        Seed of the permutations.
    rank : int, default=0
        This process's rank.
    world_size : int, default=1
        Number of processes sharing the batches.

    Examples
    --------
    >>> import torch
    >>> X = torch.arange(10.0)[:, None]
    >>> shards = [BatchLoader(X, 3, seed=0, rank=r, world_size=2) for r in (0, 1)]
    >>> [len(s) for s in shards], sorted(torch.cat([torch.cat(list(s)) for s in shards])[:, 0].int().tolist())
    ([2, 2], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    """

    def __init__(self, X: torch.Tensor, batch_size: int = 256, *, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.X = X
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0
        self.rank, self.world_size = int(rank), int(world_size)

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(math.ceil(self.X.shape[0] / self.batch_size) / self.world_size)

    def __iter__(self):
        n = self.X.shape[0]
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            idx = torch.randperm(n, generator=g)
        else:
            idx = torch.arange(n)
        starts = list(range(0, n, self.batch_size))
        for j in range(len(self)):
            s = starts[(self.rank + j * self.world_size) % len(starts)]
            yield self.X[idx[s:s + self.batch_size]]


#: Optimizer steps of the paper's MNIST protocol at batch 256: 50 and 100 epochs of ceil(70,000 / 256) = 274.
PAPER_PRETRAIN_STEPS = 50 * 274
PAPER_FINETUNE_STEPS = 100 * 274


def epochs_for_steps(n_samples: int, batch_size: int, epochs: int, min_steps: int = 0) -> int:
    """The training budget rule: ``max(epochs, ceil(min_steps / steps_per_epoch))`` epochs.

    ``steps_per_epoch = ceil(n_samples / batch_size)`` (``batch_size`` is the global batch).  With the paper's
    epochs (50 pretraining, 100 finetuning) and ``min_steps`` = :data:`PAPER_PRETRAIN_STEPS` /
    :data:`PAPER_FINETUNE_STEPS` (the optimizer steps of the paper's MNIST protocol), a data set of MNIST's
    size or larger runs the paper's epochs, and a smaller one runs more epochs until it gets as many
    optimizer steps as MNIST does.

    Parameters
    ----------
    n_samples : int
        Rows of the data set.
    batch_size : int
        The global batch.
    epochs : int
        The least number of epochs.
    min_steps : int, default=0
        The least number of optimizer steps.

    Returns
    -------
    int

    Examples
    --------
    >>> epochs_for_steps(70_000, 256, 50, PAPER_PRETRAIN_STEPS), epochs_for_steps(2_000, 256, 50, PAPER_PRETRAIN_STEPS)
    (50, 1713)
    """
    if int(epochs) <= 0:
        return 0
    steps = max(math.ceil(int(n_samples) / int(batch_size)), 1)
    return max(int(epochs), math.ceil(int(min_steps) / steps))


def adam(params, lr: float = 1e-3) -> torch.optim.Adam:
    """The methods' optimizer: Adam (the paper's, learning rate 1e-3), in PyTorch's fused implementation.

    The fused step is the same update as the default one in one kernel over all tensors: about 7 times faster
    on a CPU thread for the 3.3 million parameters of the MNIST autoencoder (``benchmarks/bench_adam.py``),
    where the default step took a third of a Ray worker's training step.

    Parameters
    ----------
    params : iterable of torch.Tensor
        The trainable tensors (the network's, and DKM's centroids).
    lr : float, default=1e-3
        Learning rate.

    Returns
    -------
    torch.optim.Adam
    """
    return torch.optim.Adam(list(params), lr=lr, fused=True)


class ShardLoader:
    """Global mini-batches over ``n_total`` rows, of which this process holds the contiguous shard ``X_shard``
    (rows ``offset .. offset + len(X_shard)``).

    Every epoch draws the same permutation of all ``n_total`` rows as :class:`BatchLoader` (from
    ``(seed, epoch)``); batch ``j`` is rows ``j * batch_size .. (j + 1) * batch_size`` of it (``batch_size`` is
    the *global* batch), and this process yields ``(x, scale)``: the rows of the batch that lie in its shard,
    and ``scale = len(x) * world_size / len(batch)``.  :func:`train_epoch` multiplies the (per-process mean)
    loss by ``scale``, so that DDP's average of the processes' gradients is the gradient of the global batch's
    mean, whatever the shares: one epoch on N processes takes the same optimizer steps as on one, up to
    floating-point reduction order.  Every process yields ``ceil(n_total / batch_size)`` batches, some possibly
    empty.

    Parameters
    ----------
    X_shard : torch.Tensor of shape (n_shard, n_features)
        This process's rows.
    n_total : int
        Rows of the whole data set.
    offset : int
        Index of the shard's first row in the data set.
    batch_size : int, default=256
        The global batch.
    shuffle : bool, default=True
        Draw a new permutation every epoch.
    seed : int, default=0
        Seed of the permutations.
    world_size : int, default=1
        Number of processes.

    Examples
    --------
    >>> import torch
    >>> X = torch.arange(10.0)[:, None]
    >>> shards = [ShardLoader(X[:5], 10, 0, 4, world_size=2), ShardLoader(X[5:], 10, 5, 4, world_size=2)]
    >>> [len(s) for s in shards], sorted(torch.cat([b for s in shards for b, _ in s])[:, 0].int().tolist())
    ([3, 3], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    """

    def __init__(self, X_shard: torch.Tensor, n_total: int, offset: int, batch_size: int = 256, *,
                 shuffle: bool = True, seed: int = 0, world_size: int = 1):
        self.X = X_shard
        self.n_total, self.offset = int(n_total), int(offset)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0
        self.world_size = int(world_size)

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(self.n_total / self.batch_size)

    def __iter__(self):
        n = self.n_total
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            idx = torch.randperm(n, generator=g)
        else:
            idx = torch.arange(n)
        lo, hi = self.offset, self.offset + self.X.shape[0]
        for s in range(0, n, self.batch_size):
            sel = idx[s:s + self.batch_size]
            mine = sel[(sel >= lo) & (sel < hi)] - lo
            yield self.X[mine], float(mine.shape[0] * self.world_size) / float(sel.shape[0])


def train_epoch(model, optimizer, loader: Iterable, method: Method | None = None, *, device=None) -> dict:
    """One pass of mini-batch gradient steps over ``loader``.

    Loss = reconstruction + ``method.lam`` x ``method.batch_loss(z)``, or reconstruction alone when
    ``method`` is None (pretraining).

    Parameters
    ----------
    model : Autoencoder (or a DDP wrapper of one)
        Returns ``(z, x_hat)`` when called.
    optimizer : torch.optim.Optimizer
        Over the model's (and the method's) parameters.
    loader : iterable of tensors
        Batches of inputs, or tuples whose first item is the input; a ``(x, scale)`` pair with a float
        ``scale`` (:class:`ShardLoader`) multiplies the batch's loss by ``scale``, and an empty ``x`` takes a
        zero-gradient step (so that every process makes the same collective calls).
    method : Method or None
        The clustering method being finetuned.
    device : torch.device or None
        Where to move each batch.

    Returns
    -------
    dict
        ``rec_loss`` and ``clu_loss`` (sample-weighted means over the epoch) and ``n_samples``.
    """
    model.train()
    tot_rec = tot_clu = 0.0
    n_seen = 0
    for batch in loader:
        scale = None
        if isinstance(batch, tuple) and len(batch) == 2 and isinstance(batch[1], float):
            x, scale = batch
        else:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
        if device is not None:
            x = x.to(device, non_blocking=True)
        z, x_hat = model(x)
        if x.shape[0] == 0:  # an empty share of a global batch: zero gradients, the same collective calls
            rec = clu = None
            loss = 0.0 * (z.sum() + x_hat.sum())
        else:
            rec = reconstruction_loss(x_hat, x)
            clu = None if method is None else method.batch_loss(z)
            loss = rec if clu is None else rec + method.lam * clu
            if scale is not None:
                loss = loss * scale
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if method is not None:
            method.before_step()
        optimizer.step()
        if method is not None:
            method.after_step(z.detach())
        b = x.shape[0]
        if b == 0:
            continue
        n_seen += b
        tot_rec += float(rec.detach()) * b
        tot_clu += (0.0 if clu is None else float(clu.detach())) * b
    n_seen = max(n_seen, 1)
    return {"rec_loss": tot_rec / n_seen, "clu_loss": tot_clu / n_seen, "n_samples": n_seen}


def pretrain_epoch(model, optimizer, loader, epoch: int, *, device=None) -> dict:
    """Pretraining epoch ``epoch`` (from 1): reconstruction only.

    Parameters
    ----------
    model, optimizer, loader, device :
        As :func:`train_epoch`; the loader gets the permutation of ``epoch - 1``.
    epoch : int
        The pretraining epoch, from 1.

    Returns
    -------
    dict
        The record: ``phase="pretrain"``, ``epoch``, ``rec_loss``, ``clu_loss`` (0), ``n_samples``, ``seconds``.
    """
    t0 = time.perf_counter()
    loader.set_epoch(int(epoch) - 1)
    m = train_epoch(model, optimizer, loader, None, device=device)
    return {"phase": "pretrain", "epoch": int(epoch), **m, "seconds": time.perf_counter() - t0}


def pretrain(model, X: torch.Tensor, *, epochs: int = 50, batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
             callback: Callable[[dict], None] | None = None, device=None,
             checkpoint: Callable[[dict], None] | None = None, resume: dict | None = None) -> list[dict]:
    """Train the autoencoder on reconstruction alone (the paper: 50 epochs, Adam 1e-3, batch 256).

    Parameters
    ----------
    model : Autoencoder
        The network to train (in place).
    X : torch.Tensor of shape (n_samples, n_features)
        The data.
    epochs : int, default=50
        Pretraining epochs.
    batch_size : int, default=256
        Rows per batch.
    lr : float, default=1e-3
        Adam's learning rate.
    seed : int, default=0
        Seed of the batch permutations.
    callback : callable or None
        Called with each epoch's record.
    device : torch.device or None
        Where batches go.
    checkpoint : callable or None
        Called after every epoch with a :func:`~kmeans_dist.deep.training_state` (``phase="pretrain"``).
    resume : dict or None
        Such a state: the run continues after its epoch with the same batches as an uninterrupted run.

    Returns
    -------
    list of dict
        The records of the epochs run (and those of ``resume`` before them).

    Examples
    --------
    >>> import torch
    >>> from kmeans_dist.deep import Autoencoder
    >>> hist = pretrain(Autoencoder(8, 2, hidden=(4,)), torch.rand(64, 8), epochs=2, batch_size=32)
    >>> [(h["phase"], h["epoch"]) for h in hist]
    [('pretrain', 1), ('pretrain', 2)]
    """
    opt = adam(model.parameters(), lr=lr)
    hist, start = [], 0
    if resume is not None:
        if resume["phase"] != "pretrain":
            raise ValueError(f"resume is a {resume['phase']!r} state, not a pretraining one")
        restore_training_state(resume, model)
        opt.load_state_dict(resume["optimizer"])
        hist, start = list(resume["history"]), int(resume["epoch"])
    loader = BatchLoader(X, batch_size, seed=seed)
    for ep in range(start + 1, int(epochs) + 1):
        rec = pretrain_epoch(model, opt, loader, ep, device=device)
        hist.append(rec)
        if callback is not None:
            callback(rec)
        if checkpoint is not None:
            checkpoint(training_state(model, opt, None, phase="pretrain", epoch=ep, history=hist))
    return hist


def _scores(labels, y, shard=None) -> dict:
    """ACC/NMI/ARI of the labels (this shard's, gathered first: one integer a row) against ``y``."""
    if y is None:
        return {}
    if shard is not None:
        labels = shard.gather_rows(labels)
    return clustering_scores(y, labels.cpu().numpy())


def start_finetune(model, X: torch.Tensor, method: Method, *, y=None, embed_fn=None):
    """The initial k-means on the pretrained embeddings: the method's centroids, and the ``init`` record.

    Parameters
    ----------
    model : Autoencoder (or a DDP wrapper of one)
        The pretrained network.
    X : torch.Tensor of shape (n_samples, n_features)
        The whole data set.
    method : Method
        Its centroids are set (:meth:`Method.initialize`).
    y : array-like or None
        Labels, for ACC/NMI/ARI in the record (never used for training).
    embed_fn : callable or None
        ``embed_fn(model) -> Z``, the embeddings, instead of ``embed(model, X)``.  In the Ray stage each worker
        embeds only its shard and ``method.shard`` is set: the k-means runs over the workers' shards, and the
        labels (one integer a row) are gathered for the scores.

    Returns
    -------
    record : dict
        ``phase="init"``, ``epoch=0``, ``method``, ``kmeans_inertia``, ``seconds`` and the scores.
    Z : torch.Tensor
        The embeddings (this shard's when ``method.shard`` is set).
    labels : torch.Tensor
        The k-means labels of those rows.
    """
    t0 = time.perf_counter()
    Z = embed(model, X) if embed_fn is None else embed_fn(model)
    labels = method.initialize(Z)
    rec = {"phase": "init", "epoch": 0, "method": method.name, "kmeans_inertia": method.kmeans_inertia,
           "seconds": time.perf_counter() - t0, **_scores(labels, y, method.shard)}
    return rec, Z, labels


def finetune_epoch(model, optimizer, loader, method: Method, X: torch.Tensor, epoch: int, *, y=None,
                   device=None, embed_fn=None):
    """Finetuning epoch ``epoch`` (from 1): gradient steps on reconstruction + clustering loss, the embeddings
    of the whole data set, then the method's epoch-end update (:meth:`Method.end_epoch`: the k-means
    re-initialisation of CT and DKM+reinit).

    Parameters
    ----------
    model, optimizer, loader, device :
        As :func:`train_epoch`; the loader gets the permutation of ``epoch``.
    method : Method
        The method being finetuned (not AEKM, which does not finetune).
    X : torch.Tensor of shape (n_samples, n_features)
        The whole data set, embedded after the epoch.
    epoch : int
        The finetuning epoch, from 1.
    y : array-like or None
        Labels, for ACC/NMI/ARI in the record.
    embed_fn : callable or None
        As :func:`start_finetune`.

    Returns
    -------
    record : dict
        ``phase="finetune"``, ``epoch``, ``method``, ``rec_loss``, ``clu_loss``, ``n_samples``,
        ``train_seconds``, ``end_epoch_seconds``, the scores, and ``kmeans_inertia`` after a re-initialisation.
    Z : torch.Tensor
        The embeddings after the epoch (this shard's when ``method.shard`` is set).
    labels : torch.Tensor
        Their partition after the epoch (the re-initialisation's k-means labels, else the nearest centroid).
    """
    if not method.finetunes:
        raise ValueError(f"{method.name} does not finetune")
    t0 = time.perf_counter()
    loader.set_epoch(int(epoch))
    m = train_epoch(model, optimizer, loader, method, device=device)
    t1 = time.perf_counter()
    Z = embed(model, X) if embed_fn is None else embed_fn(model)
    labels = method.end_epoch(Z, int(epoch))
    if labels is None:
        labels = method.predict(Z)
    rec = {"phase": "finetune", "epoch": int(epoch), "method": method.name, **m, "train_seconds": t1 - t0,
           "end_epoch_seconds": time.perf_counter() - t1, **_scores(labels, y, method.shard)}
    inertia = method.kmeans_inertia_at(int(epoch))
    if inertia is not None:
        rec["kmeans_inertia"] = inertia
    return rec, Z, labels


def fit_method(model: Autoencoder, X: torch.Tensor, method: Method, *, y=None, epochs: int = 100,
               batch_size: int = 256, lr: float = 1e-3, seed: int = 0, snapshot_epochs=(),
               snapshot_size: int = 2000, callback: Callable[[dict], None] | None = None, device=None,
               checkpoint: Callable[[dict], None] | None = None, resume: dict | None = None) -> dict:
    """Finetune a pretrained ``model`` with ``method`` for ``epochs`` epochs in this process (0 for AEKM).

    Parameters
    ----------
    model : Autoencoder
        Pretrained (see :func:`pretrain`).
    X : torch.Tensor of shape (n_samples, n_features)
        The data.
    method : Method
        From :func:`make_method`.
    y : array-like or None
        Labels, for the ACC/NMI/ARI of every record (never used for training).
    epochs : int, default=100
        Finetuning epochs (the paper's 100).
    batch_size : int, default=256
        Rows per batch.
    lr : float, default=1e-3
        Adam's learning rate.
    seed : int, default=0
        Seed of the batch permutations and the snapshot sample.
    snapshot_epochs : iterable of int
        Finetuning epochs whose embeddings of a seeded sample are kept (epoch 0 always).
    snapshot_size : int, default=2000
        Rows of that sample.
    callback : callable or None
        Called with every record (the ``init`` record, then each finetuning epoch's).
    device : torch.device or None
        Where batches go.
    checkpoint : callable or None
        Called after the initial k-means and after every finetuning epoch with a
        :func:`~kmeans_dist.deep.training_state`; passing one back as ``resume`` continues with the same
        batches as an uninterrupted run.
    resume : dict or None
        A state from ``checkpoint`` (phase ``"init"`` or ``"finetune"``).

    Returns
    -------
    dict
        ``history`` (records: ``phase="init"`` epoch 0, then ``phase="finetune"`` epochs 1..``epochs``),
        ``labels`` (NumPy), ``centroids``, ``max_membership_before``, ``max_membership_after``, ``snapshots``
        ({epoch: (Z_sample, labels_sample)}) and ``sample_index``.

    Examples
    --------
    >>> import torch
    >>> from kmeans_dist.deep import Autoencoder, make_method
    >>> X = torch.rand(200, 8)
    >>> model = Autoencoder(8, 3, hidden=(6,))
    >>> res = fit_method(model, X, make_method("CT", 3, n_init=2), epochs=2, snapshot_size=50)
    >>> [(h["phase"], h["epoch"]) for h in res["history"]], res["labels"].shape
    ([('init', 0), ('finetune', 1), ('finetune', 2)], (200,))
    """
    rs = np.random.default_rng(seed)
    sample = np.sort(rs.choice(X.shape[0], size=min(snapshot_size, X.shape[0]), replace=False))
    n_ep = int(epochs) if method.finetunes else 0
    opt = adam(list(model.parameters()) + method.parameters(), lr=lr) if n_ep else None
    if resume is None:
        rec, Z, labels = start_finetune(model, X, method, y=y)
        hist, start = [rec], 0
        extras = {"snapshots": {0: (Z[sample].cpu().numpy(), labels.cpu().numpy()[sample])},
                  "membership_before": max_membership(Z, method.centroids, method.membership())}
        if callback:
            callback(rec)
        if checkpoint:
            checkpoint(training_state(model, None, method, phase="init", epoch=0, history=hist, extras=extras))
    else:
        if resume["phase"] not in ("init", "finetune"):
            raise ValueError(f"resume is a {resume['phase']!r} state; fit_method continues 'init' or 'finetune' ones")
        restore_training_state(resume, model, method)
        if opt is not None and resume.get("optimizer") is not None:
            opt.load_state_dict(resume["optimizer"])
        hist, extras, start = list(resume["history"]), dict(resume["extras"]), int(resume["epoch"])
        Z = labels = None
    loader = BatchLoader(X, batch_size, seed=seed + 1)
    for ep in range(start + 1, n_ep + 1):
        rec, Z, labels = finetune_epoch(model, opt, loader, method, X, ep, y=y, device=device)
        hist.append(rec)
        if ep in snapshot_epochs:
            extras["snapshots"][ep] = (Z[sample].cpu().numpy(), labels.cpu().numpy()[sample])
        if callback:
            callback(rec)
        if checkpoint:
            checkpoint(training_state(model, opt, method, phase="finetune", epoch=ep, history=hist, extras=extras))
    if Z is None:
        Z = embed(model, X)
        labels = method.predict(Z)
    after = max_membership(Z, method.centroids, method.membership())
    return {"history": hist, "labels": labels.cpu().numpy(), "centroids": method.centroids.detach().cpu().numpy(),
            "max_membership_before": extras["membership_before"], "max_membership_after": after,
            "snapshots": extras["snapshots"], "sample_index": sample}
