"""Deep k-means in plain PyTorch: autoencoder, AEKM, DCN, DKM and CT (Roy, ICPR 2024).

Never imports Ray or Prefect: the Ray Train stage lives in ``pipelines/deep.py`` and its Prefect flow in
``flows/deep.py``; ``benchmarks/deep_mnist.py`` runs the paper's MNIST protocol with this package.

    import torch
    from kmeans_dist.data import load_mnist
    from kmeans_dist.deep import Autoencoder, fit_method, make_method, pretrain

    X, y = load_mnist(scale=1 / 255)                  # 70,000 x 784 in [0, 1]
    X = torch.from_numpy(X)
    model = Autoencoder(784, 10)
    pretrain(model, X, epochs=50)                      # reconstruction only
    res = fit_method(model, X, make_method("CT", 10), y=y, epochs=100)
    res["history"][-1]["acc"], res["labels"]

Methods (:func:`make_method`): AEKM, DCN, DKM, DKM-anneal, DKM+reinit (ablation), CT, CT-fcm (fuzzy
c-means memberships), CT-noreinit (ablation), CT-mse (mean-scaled reconstruction), CT-reinit1 (one k-means
run per re-initialisation), and AEKM-bal / CT-bal (``select="balanced"``: each k-means on the embeddings
keeps the restart with the most even cluster sizes instead of the lowest inertia).  The CT loss is our reconstruction of the paper's lost
equations 10-11; see :mod:`kmeans_dist.deep.losses`.
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
