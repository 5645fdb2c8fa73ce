"""Membership functions and the clustering losses of DCN, DKM and CT (plain PyTorch).

All losses take embeddings ``z`` (n, K') and centroids ``mu`` (k, K') and return a scalar that is a
*mean over the points* of the batch, so that ``lambda`` does not depend on the batch size.

The CT loss ("centering" loss of D. Roy, *An Approach Towards Learning K-means-friendly Deep Latent
Representation*, ICPR 2024, arXiv 2411.19496):  the paper's equations 10-11 were lost from our copy,
so this is a **reconstruction** of them, not a transcription::

    d_ik = ||h(x_i) - mu_k||^2
    G_ik = softmax_k(-alpha * d_ik)
    CT   = mean_i sum_k d_ik * G_ik

with alpha = 3 and lambda = 10 for MNIST (the paper's Table 4).  The centroids are frozen during an
epoch of SGD and re-initialised by classical k-means on the embeddings of the whole data set after it
(see :class:`kmeans_dist.deep.train.CT`).
"""
from __future__ import annotations

import torch

__all__ = [
    "pairwise_sq_dist",
    "softmax_membership",
    "reconstruction_loss",
    "ct_loss",
    "dkm_loss",
    "dcn_loss",
]


def pairwise_sq_dist(z: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """``d[i, k] = ||z_i - mu_k||^2`` by direct differences (exact, no cancellation), shape (n, k)."""
    diff = z[:, None, :] - mu[None, :, :]
    return (diff * diff).sum(dim=-1)


def softmax_membership(d: torch.Tensor, alpha: float = 3.0) -> torch.Tensor:
    """``G_ik = softmax_k(-alpha * d_ik)`` (DKM's and CT's soft assignment)."""
    return torch.softmax(-float(alpha) * d, dim=1)


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Squared reconstruction error: the mean over the batch of each sample's sum of squared errors (DKM's
    convention)."""
    return ((x_hat - x) ** 2).sum(dim=1).mean()


def ct_loss(z: torch.Tensor, mu: torch.Tensor, membership=None) -> torch.Tensor:
    """``CT = mean_i sum_k d_ik G_ik`` with ``G = membership(d)`` (default: softmax with alpha = 3)."""
    d = pairwise_sq_dist(z, mu)
    G = softmax_membership(d, 3.0) if membership is None else membership(d)
    return (d * G).sum(dim=1).mean()


def dkm_loss(z: torch.Tensor, mu: torch.Tensor, alpha: float) -> torch.Tensor:
    """DKM (Moradi Fard et al. 2020): ``mean_i sum_k ||z_i - r_k||^2 softmax_k(-alpha ||z_i - r_k||^2)``."""
    d = pairwise_sq_dist(z, mu)
    return (d * softmax_membership(d, alpha)).sum(dim=1).mean()


def dcn_loss(z: torch.Tensor, mu: torch.Tensor, assignments: torch.Tensor) -> torch.Tensor:
    """DCN (Yang et al. 2017): ``mean_i ||z_i - mu_{s_i}||^2`` for hard assignments ``s``."""
    diff = z - mu[assignments]
    return (diff * diff).sum(dim=1).mean()
