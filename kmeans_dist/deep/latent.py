"""The latent space: embeddings of a whole data set, and k-means on them with the project's kernels.

The torch tensors are handed to :mod:`kmeans_dist.kernels` through DLPack (``numpy.from_dlpack`` on CPU,
``cupy.from_dlpack`` on a GPU): no host copy.
"""
from __future__ import annotations

import numpy as np
import torch

from ..kernels import assign_labels, kmeans_inmemory
from .losses import pairwise_sq_dist, softmax_membership
from .model import unwrap

__all__ = ["embed", "to_kernel_array", "from_kernel_array", "reinit_centroids", "nearest_centroid",
           "max_membership"]


@torch.no_grad()
def embed(model, X: torch.Tensor, batch_size: int = 4096, device=None) -> torch.Tensor:
    """Embeddings of all rows of ``X`` (eval mode, no gradient).

    Parameters
    ----------
    model : Autoencoder (or a DDP wrapper of one)
        The encoder to apply.
    X : torch.Tensor of shape (n_samples, n_features)
        The data.
    batch_size : int, default=4096
        Rows per forward pass.
    device : torch.device or None
        Where each batch goes (default: where it is).

    Returns
    -------
    torch.Tensor of shape (n_samples, embedding_dim)
        Contiguous, on the model's device.
    """
    net = unwrap(model)
    was_training = net.training
    net.eval()
    out = []
    for s in range(0, X.shape[0], batch_size):
        xb = X[s:s + batch_size]
        if device is not None:
            xb = xb.to(device)
        out.append(net.encode(xb))
    net.train(was_training)
    return torch.cat(out).contiguous()


def to_kernel_array(t: torch.Tensor):
    """A torch tensor as an array the kernels take, sharing its memory through DLPack.

    Parameters
    ----------
    t : torch.Tensor
        CPU or CUDA tensor (detached and made contiguous first).

    Returns
    -------
    numpy.ndarray or cupy.ndarray
        NumPy on CPU, CuPy on CUDA; no copy.
    """
    t = t.detach().contiguous()
    if t.is_cuda:
        import cupy

        return cupy.from_dlpack(t)
    return np.from_dlpack(t)


def from_kernel_array(a, like: torch.Tensor) -> torch.Tensor:
    """A kernel result (NumPy or CuPy) back as a torch tensor.

    Parameters
    ----------
    a : numpy.ndarray or cupy.ndarray
        The array.
    like : torch.Tensor
        The result gets its device and dtype.

    Returns
    -------
    torch.Tensor
    """
    t = torch.from_dlpack(a) if not isinstance(a, np.ndarray) else torch.from_numpy(np.ascontiguousarray(a))
    return t.to(device=like.device, dtype=like.dtype)


def reinit_centroids(Z: torch.Tensor, n_clusters: int, *, n_init: int = 10, max_iter: int = 300, tol: float = 1e-4,
                     random_state=None):
    """Classical k-means (k-means++, ``n_init`` restarts, Lloyd, the lowest inertia kept) on embeddings ``Z``.

    Parameters
    ----------
    Z : torch.Tensor of shape (n_samples, n_latent)
        Embeddings (CPU or CUDA; the kernels run on a DLPack view, no copy).
    n_clusters : int
        Number of clusters.
    n_init, max_iter, tol : int, int, float
        As :func:`kmeans_dist.kernels.kmeans_inmemory`.
    random_state : int or None
        Seed of the k-means++ draws.

    Returns
    -------
    centers : torch.Tensor of shape (n_clusters, n_latent)
        In ``Z``'s dtype, on its device.
    labels : torch.Tensor of shape (n_samples,)
        int64.
    inertia : float

    Examples
    --------
    >>> import torch
    >>> Z = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    >>> c, labels, inertia = reinit_centroids(Z, 2, n_init=2, random_state=0)
    >>> sorted(round(v, 2) for v in c.flatten().tolist()), labels.tolist() in ([0, 0, 1, 1], [1, 1, 0, 0])
    ([0.05, 5.05], True)
    """
    res = kmeans_inmemory(to_kernel_array(Z), int(n_clusters), n_init=n_init, max_iter=max_iter, tol=tol,
                          random_state=random_state)
    centers = from_kernel_array(res.centers, Z)
    labels = from_kernel_array(res.labels, torch.empty(0, dtype=torch.int64, device=Z.device))
    return centers, labels, float(res.inertia)


def nearest_centroid(Z: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid of each embedding (the kernels' ``assign_labels`` on DLPack views).

    Parameters
    ----------
    Z : torch.Tensor of shape (n_samples, n_latent)
    mu : torch.Tensor of shape (n_clusters, n_latent)

    Returns
    -------
    torch.Tensor of shape (n_samples,)
        int64 labels on ``Z``'s device.
    """
    lab, _ = assign_labels(to_kernel_array(Z), to_kernel_array(mu.to(Z.dtype)))
    return from_kernel_array(lab, torch.empty(0, dtype=torch.int64, device=Z.device))


@torch.no_grad()
def max_membership(Z: torch.Tensor, mu: torch.Tensor, membership=None) -> np.ndarray:
    """Each point's highest soft membership ``max_k G_ik`` (the paper's Figure 3).

    Parameters
    ----------
    Z : torch.Tensor of shape (n_samples, n_latent)
    mu : torch.Tensor of shape (n_clusters, n_latent)
    membership : callable or None
        ``d (n, k) -> G (n, k)`` on squared distances; default the softmax with alpha = 3.

    Returns
    -------
    numpy.ndarray of shape (n_samples,)
    """
    if membership is None:
        def membership(d):
            return softmax_membership(d, 3.0)
    out = []
    for s in range(0, Z.shape[0], 8192):
        out.append(membership(pairwise_sq_dist(Z[s:s + 8192], mu.to(Z.dtype))).max(dim=1).values)
    return torch.cat(out).cpu().numpy()
