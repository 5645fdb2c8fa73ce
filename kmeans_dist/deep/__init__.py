"""Deep k-means in plain PyTorch: autoencoder, AEKM, DCN, DKM and CT (Roy, ICPR 2024).

Never imports Ray or Prefect: the Ray Train stage lives in ``pipelines/deep.py``.
"""
from . import plots
from .evaluate import cluster_accuracy, clustering_scores
from .losses import (ct_loss, dcn_loss, dkm_loss, fuzzy_cmeans_membership, get_membership, pairwise_sq_dist,
                     reconstruction_loss, softmax_membership, student_membership)
from .model import Autoencoder, unwrap
from .train import (AEKM, CT, DCN, DKM, METHODS, BatchLoader, Method, embed, fit_method, make_method,
                    max_membership, nearest_centroid, pretrain, reinit_centroids, train_epoch)

__all__ = [
    "Autoencoder", "unwrap", "AEKM", "CT", "DCN", "DKM", "METHODS", "Method", "BatchLoader", "make_method",
    "embed", "fit_method", "max_membership", "nearest_centroid", "pretrain", "reinit_centroids", "train_epoch",
    "ct_loss", "dcn_loss", "dkm_loss", "fuzzy_cmeans_membership", "get_membership", "pairwise_sq_dist",
    "reconstruction_loss", "softmax_membership", "student_membership", "cluster_accuracy", "clustering_scores",
]
