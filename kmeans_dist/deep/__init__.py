"""Deep k-means in plain PyTorch: the autoencoder, the baselines AEKM, DCN and DKM, and CT (Roy, ICPR 2024).

The methods of "An Approach Towards Learning K-means-friendly Deep Latent Representation" (arXiv
2411.19496), with the authors' defaults: CT (reconstruction + centering loss, the centroids re-initialised by
k-means on the latent space after every epoch), its two ablations (``CT-noreinit``: CT without
re-initialisation; ``DKM+reinit``: DKM with it) and its baselines (AEKM, DCN, DKM).  The CT loss is a
reconstruction of the paper's equations 10-11; see :mod:`kmeans_dist.deep.losses`.

Modules: :mod:`~kmeans_dist.deep.model` (the autoencoder), :mod:`~kmeans_dist.deep.losses`,
:mod:`~kmeans_dist.deep.latent` (embeddings and the k-means on them), :mod:`~kmeans_dist.deep.methods`,
:mod:`~kmeans_dist.deep.train` (the epoch functions and the single-process loops),
:mod:`~kmeans_dist.deep.checkpoint` (the one checkpoint format), :mod:`~kmeans_dist.deep.evaluate` and
:mod:`~kmeans_dist.deep.plots`.  Never imports Ray or Prefect: the Ray Train stage (``pipelines/deep.py``)
calls the same epoch functions as :func:`fit_method`.

Epoch numbering, in every record and checkpoint: pretraining epochs ``1..P`` (``phase="pretrain"``), the
initial k-means (``phase="init"``, epoch 0), finetuning epochs ``1..F`` (``phase="finetune"``).

Examples
--------
>>> import torch
>>> from kmeans_dist.deep import Autoencoder, fit_method, make_method, pretrain
>>> X = torch.rand(300, 20)
>>> model = Autoencoder(20, 3, hidden=(16,))
>>> _ = pretrain(model, X, epochs=2)
>>> res = fit_method(model, X, make_method("CT", 3, n_init=2), epochs=2)
>>> [(r["phase"], r["epoch"]) for r in res["history"]]
[('init', 0), ('finetune', 1), ('finetune', 2)]
"""
from . import plots
from .checkpoint import restore_training_state, training_state
from .evaluate import clustering_scores, confusion, matched_confusion
from .latent import (Shard, embed, from_kernel_array, latent_block_rows, max_membership, nearest_centroid,
                     reinit_centroids, to_kernel_array)
from .losses import ct_loss, dcn_loss, dkm_loss, pairwise_sq_dist, reconstruction_loss, softmax_membership
from .methods import AEKM, CT, DCN, DKM, METHODS, Method, make_method
from .model import INITS, Autoencoder, unwrap
from .train import (PAPER_FINETUNE_STEPS, PAPER_PRETRAIN_STEPS, BatchLoader, ShardLoader, adam, epochs_for_steps,
                    finetune_epoch, fit_method, pretrain, pretrain_epoch, start_finetune, train_epoch)

__all__ = [
    "plots", "Autoencoder", "INITS", "unwrap", "AEKM", "CT", "DCN", "DKM", "METHODS", "Method", "make_method",
    "BatchLoader", "ShardLoader", "epochs_for_steps", "PAPER_PRETRAIN_STEPS", "PAPER_FINETUNE_STEPS",
    "adam", "train_epoch", "pretrain_epoch", "pretrain", "start_finetune", "finetune_epoch", "fit_method",
    "training_state", "restore_training_state", "embed", "reinit_centroids", "nearest_centroid", "max_membership",
    "Shard", "latent_block_rows",
    "to_kernel_array", "from_kernel_array", "ct_loss", "dcn_loss", "dkm_loss", "pairwise_sq_dist",
    "reconstruction_loss", "softmax_membership", "clustering_scores", "confusion", "matched_confusion",
]
