"""The one checkpoint format of the deep training, shared by :func:`kmeans_dist.deep.fit_method`,
:func:`kmeans_dist.deep.pretrain` and the Ray Train stage (``pipelines/deep.py``).

A state is a plain dict (``torch.save`` writes it)::

    {"format": 1, "phase": "pretrain" | "init" | "finetune", "epoch": int,
     "model": state dict, "optimizer": state dict or None, "method": Method.state_dict() or None,
     "history": [records], "extras": {...}}

``(phase, epoch)`` is the last step done, in the one epoch numbering of the package: pretraining epochs
``1..P`` (``"pretrain"``), the initial k-means on the pretrained embeddings (``"init"``, epoch 0), finetuning
epochs ``1..F`` (``"finetune"``).  ``extras`` holds what the figures need (``membership_before``,
``snapshots``).
"""
from __future__ import annotations

import copy

from .model import unwrap

__all__ = ["CHECKPOINT_FORMAT", "PHASES", "training_state", "restore_training_state"]

CHECKPOINT_FORMAT = 1
PHASES = ("pretrain", "init", "finetune")


def training_state(model, optimizer, method, *, phase: str, epoch: int, history: list,
                   extras: dict | None = None) -> dict:
    """Everything needed to continue a run after ``(phase, epoch)``.

    Parameters
    ----------
    model : Autoencoder (or a DDP wrapper of one)
        Its weights are copied to the CPU.
    optimizer : torch.optim.Optimizer or None
        Its state is copied (None after the initial k-means: finetuning starts a fresh optimizer).
    method : Method or None
        Its :meth:`~kmeans_dist.deep.Method.state_dict` (None while pretraining).
    phase : {"pretrain", "init", "finetune"}
        The phase of the last step done.
    epoch : int
        Its epoch (0 for ``"init"``).
    history : list of dict
        The records so far.
    extras : dict or None
        Anything else to keep (figure data).

    Returns
    -------
    dict
        The state, in the format described in :mod:`kmeans_dist.deep.checkpoint`.

    Examples
    --------
    >>> from kmeans_dist.deep import Autoencoder
    >>> st = training_state(Autoencoder(4, 2, hidden=(3,)), None, None, phase="pretrain", epoch=1, history=[])
    >>> st["format"], st["phase"], st["epoch"], sorted(st["model"])[:2]
    (1, 'pretrain', 1, ['decoder.0.bias', 'decoder.0.weight'])
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    return {"format": CHECKPOINT_FORMAT, "phase": phase, "epoch": int(epoch),
            "model": {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()},
            "optimizer": None if optimizer is None else copy.deepcopy(optimizer.state_dict()),
            "method": None if method is None else method.state_dict(),
            "history": list(history), "extras": dict(extras or {})}


def restore_training_state(state: dict, model, method=None, *, device=None) -> dict:
    """Load a :func:`training_state` into ``model`` (and ``method``).

    Parameters
    ----------
    state : dict
        From :func:`training_state` (or ``torch.load`` of one).
    model : Autoencoder (or a DDP wrapper of one)
        Gets the weights.
    method : Method or None
        Gets the centroids and the method's other state, when the state has them.
    device : torch.device or None
        Where the method's tensors go.

    Returns
    -------
    dict
        ``state`` itself; its ``optimizer`` entry is for the caller's optimizer, built over the same parameters.
    """
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"not a deep training state of format {CHECKPOINT_FORMAT}: {state.get('format')!r}")
    unwrap(model).load_state_dict(state["model"])
    if method is not None and state.get("method") is not None:
        method.load_state_dict(state["method"], device=device)
    return state
