"""Membership functions and the clustering losses of DCN, DKM and CT (plain PyTorch).

All losses take embeddings ``z`` (n, K') and centroids ``mu`` (k, K') and return a scalar that is a
*mean over the points* of the batch, so that ``lambda`` does not depend on the batch size.

The CT loss ("centering" loss of D. Roy, *An Approach Towards Learning K-means-friendly Deep Latent
Representation*, ICPR 2024, arXiv 2411.19496):  the paper's equations 10-11 were lost from our copy,
so this is a **reconstruction** of them, not a transcription::

    d_ik = ||h(x_i) - mu_k||^2
    G_ik = softmax_k(-alpha * d_ik)           (pluggable: fuzzy c-means memberships, Student-t, ...)
    CT   = mean_i sum_k d_ik * G_ik

with alpha = 3 and lambda = 10 for MNIST (the paper's Table 4).  The centroids are frozen during an
epoch of SGD and re-initialised by classical k-means on the embeddings of the whole data set after it
(see :class:`kmeans_dist.deep.train.CT`).
"""
from __future__ import annotations

from typing import Callable

import torch

__all__ = [
    "pairwise_sq_dist",
    "softmax_membership",
    "student_membership",
    "fuzzy_cmeans_membership",
    "MEMBERSHIPS",
    "get_membership",
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


def student_membership(d: torch.Tensor, nu: float = 1.0) -> torch.Tensor:
    """DEC's Student-t kernel ``q_ik ~ (1 + d_ik / nu)^(-(nu + 1) / 2)``, normalised over k."""
    q = (1.0 + d / float(nu)).pow(-(float(nu) + 1.0) / 2.0)
    return q / q.sum(dim=1, keepdim=True)


def fuzzy_cmeans_membership(d: torch.Tensor, m: float = 2.0, eps: float = 1e-12) -> torch.Tensor:
    """Fuzzy c-means memberships ``u_ik = 1 / sum_j (d_ik / d_ij)^(1 / (m - 1))`` (d squared distances).

    Written as a softmax of ``-log(d) / (m - 1)`` so it is stable when a point sits on a centroid.
    """
    if m <= 1:
        raise ValueError(f"the fuzzifier m must be > 1, got {m}")
    return torch.softmax(-torch.log(d + eps) / (float(m) - 1.0), dim=1)


MEMBERSHIPS: dict[str, Callable[..., torch.Tensor]] = {
    "softmax": softmax_membership,
    "student": student_membership,
    "fcm": fuzzy_cmeans_membership,
}


def get_membership(name="softmax", **params) -> Callable[[torch.Tensor], torch.Tensor]:
    """A membership function ``d (n, k) -> G (n, k)`` by name ("softmax", "student", "fcm") or callable."""
    fn = name if callable(name) else MEMBERSHIPS.get(name)
    if fn is None:
        raise ValueError(f"unknown membership {name!r}; choose one of {sorted(MEMBERSHIPS)} or pass a callable")
    return lambda d: fn(d, **params)


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Squared reconstruction error: ``"sum"`` = mean over the batch of the per-sample sum of squared errors
    (DKM's convention, the default); ``"mean"`` = mean over every element (PyTorch's ``MSELoss``), which is
    the ``"sum"`` value divided by the number of features and so weighs a clustering term d times more."""
    if reduction == "mean":
        return ((x_hat - x) ** 2).mean()
    if reduction != "sum":
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    return ((x_hat - x) ** 2).sum(dim=1).mean()


def ct_loss(z: torch.Tensor, mu: torch.Tensor, membership=None, *, detach_membership: bool = False) -> torch.Tensor:
    """``CT = mean_i sum_k d_ik G_ik`` with ``G = membership(d)`` (default softmax, alpha = 3)."""
    if membership is None:
        membership = get_membership("softmax", alpha=3.0)
    d = pairwise_sq_dist(z, mu)
    G = membership(d)
    if detach_membership:
        G = G.detach()
    return (d * G).sum(dim=1).mean()


def dkm_loss(z: torch.Tensor, mu: torch.Tensor, alpha: float) -> torch.Tensor:
    """DKM (Moradi Fard et al. 2020): ``mean_i sum_k ||z_i - r_k||^2 softmax_k(-alpha ||z_i - r_k||^2)``."""
    d = pairwise_sq_dist(z, mu)
    return (d * softmax_membership(d, alpha)).sum(dim=1).mean()


def dcn_loss(z: torch.Tensor, mu: torch.Tensor, assignments: torch.Tensor) -> torch.Tensor:
    """DCN (Yang et al. 2017): ``mean_i ||z_i - mu_{s_i}||^2`` for hard assignments ``s``."""
    diff = z - mu[assignments]
    return (diff * diff).sum(dim=1).mean()
