"""The latent space: embeddings of a data set, and k-means on them with the project's chunked engine.

The torch tensors are handed to :mod:`kmeans_dist.kernels` through DLPack (``numpy.from_dlpack`` on CPU,
``cupy.from_dlpack`` on a GPU): no host copy.  The k-means runs on canonical blocks of
:func:`latent_block_rows` rows: :class:`~kmeans_dist.chunked.LocalBlocks` in one process, and
:class:`~kmeans_dist.chunked.CollectiveBlocks` when the embeddings are spread over the workers of a
``torch.distributed`` job (a :class:`Shard` each), with the same result bit for bit.
"""
from __future__ import annotations

import numpy as np
import torch

from ..chunked import CollectiveBlocks, LocalBlocks, kmeans_on_blocks
from ..kernels import assign_labels
from .losses import pairwise_sq_dist, softmax_membership
from .model import unwrap

__all__ = ["embed", "to_kernel_array", "from_kernel_array", "reinit_centroids", "nearest_centroid",
           "max_membership", "latent_block_rows", "Shard"]

# the fewest rows of one block of the per-epoch k-means, and the most blocks
MIN_LATENT_BLOCK_ROWS = 4096
MAX_LATENT_BLOCKS = 64


def latent_block_rows(n_samples: int) -> int:
    """Rows per canonical block of the k-means on ``n_samples`` embeddings: ``ceil(n / 64)``, at least 4,096.

    A function of ``n`` alone, so that every number of workers cuts the same blocks (sharded, the workers'
    shards are whole blocks, see :meth:`Shard.bounds`).  Blocks are long because every block costs a fixed
    overhead per pass.

    Examples
    --------
    >>> [latent_block_rows(n) for n in (500, 70_000, 2_000_000)]
    [4096, 4096, 31250]
    """
    return int(max(MIN_LATENT_BLOCK_ROWS, -(-int(n_samples) // MAX_LATENT_BLOCKS)))


class Shard:
    """This process's rows of a data set spread over the processes of a ``torch.distributed`` job.

    Process ``rank`` of ``world_size`` holds rows ``offset .. offset + n_local`` of ``n_samples`` (see
    :meth:`bounds`).  The k-means on the embeddings runs on the shards' own rows, exchanging only the blocks'
    partials (:func:`reinit_centroids`); :meth:`gather_rows` collects one small value a row (labels,
    memberships) or a few rows.

    Parameters
    ----------
    offset, n_local, n_samples : int
        First row, rows held, rows of the whole data set.
    block_rows : int or None
        Rows per block of the k-means (default :func:`latent_block_rows`); ``offset`` is a multiple of it.
    group : torch.distributed process group or None
        The default group when None.
    """

    def __init__(self, offset: int, n_local: int, n_samples: int, block_rows: int | None = None, group=None):
        self.offset, self.n_local, self.n_samples = int(offset), int(n_local), int(n_samples)
        self.block_rows = int(block_rows or latent_block_rows(n_samples))
        self.group = group

    @staticmethod
    def bounds(n_samples: int, rank: int, world_size: int, block_rows: int | None = None) -> tuple[int, int]:
        """Rows ``[lo, hi)`` of process ``rank``: whole blocks of ``block_rows`` (default
        :func:`latent_block_rows`), as equal in number as they can be (``n r / N .. n (r + 1) / N`` rounded
        down to a block boundary).

        Examples
        --------
        >>> [Shard.bounds(512, r, 2, block_rows=64) for r in range(2)], Shard.bounds(70_000, 1, 2)
        ([(0, 256), (256, 512)], (36864, 70000))
        """
        n, rows = int(n_samples), int(block_rows or latent_block_rows(n_samples))
        nb = -(-n // rows)
        return min(n, rows * (nb * rank // world_size)), min(n, rows * (nb * (rank + 1) // world_size))

    def allgather(self, obj) -> list:
        """Every process's ``obj``, in rank order (``torch.distributed.all_gather_object``)."""
        import torch.distributed as dist

        out = [None] * dist.get_world_size(self.group)
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """The processes' tensors concatenated in rank order (rows of this shard first gathered to the host);
        returned on ``t``'s device."""
        parts = self.allgather(t.detach().cpu().numpy())
        return torch.from_numpy(np.concatenate(parts)).to(t.device)

    def local_index(self, index) -> np.ndarray:
        """The positions in this shard of those global row indices (sorted) that lie in it."""
        index = np.asarray(index)
        return index[(index >= self.offset) & (index < self.offset + self.n_local)] - self.offset


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
    for s in range(0, max(1, X.shape[0]), batch_size):  # an empty shard gives an empty (0, dim) result
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
                     random_state=None, shard: Shard | None = None, block_rows: int | None = None):
    """Classical k-means (k-means++, ``n_init`` restarts, Lloyd, the lowest inertia kept) on embeddings ``Z``.

    It runs :func:`kmeans_dist.chunked.kmeans_on_blocks` (what :class:`kmeans_dist.KMeans` computes) on blocks
    of :func:`latent_block_rows` rows.  With ``shard``, ``Z`` holds only this process's rows and every process
    of the job calls this function at once: each block's partials are all-gathered
    (:class:`~kmeans_dist.chunked.CollectiveBlocks`), no process holds the other embeddings, and every process
    gets the centers one process would get on the whole ``Z``, bit for bit.

    Parameters
    ----------
    Z : torch.Tensor of shape (n_local, n_latent)
        Embeddings (CPU or CUDA; the kernels run on a DLPack view, no copy): all of them, or this shard's.
    n_clusters : int
        Number of clusters.
    n_init, max_iter, tol : int, int, float
        As :class:`kmeans_dist.KMeans`.
    random_state : int or None
        Seed of the restarts.
    shard : Shard or None
        This process's rows, when the embeddings are spread over a ``torch.distributed`` job.
    block_rows : int or None
        Rows per block without a shard (default :func:`latent_block_rows`; the shard has its own).

    Returns
    -------
    centers : torch.Tensor of shape (n_clusters, n_latent)
        In ``Z``'s dtype, on its device.
    labels : torch.Tensor of shape (n_local,)
        int64, nearest center of each row of ``Z``.
    inertia : float
        Of the whole data set.

    Examples
    --------
    >>> import torch
    >>> Z = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    >>> c, labels, inertia = reinit_centroids(Z, 2, n_init=2, random_state=0)
    >>> sorted(round(v, 2) for v in c.flatten().tolist()), labels.tolist() in ([0, 0, 1, 1], [1, 1, 0, 0])
    ([0.05, 5.05], True)
    """
    X = to_kernel_array(Z)
    if shard is None:
        blocks = LocalBlocks(X, None, int(block_rows or latent_block_rows(X.shape[0])))
    else:
        blocks = CollectiveBlocks(X, None, shard.offset, shard.n_samples, shard.block_rows,
                                  shard.allgather)
    try:
        res = kmeans_on_blocks(blocks, int(n_clusters), n_init=n_init, max_iter=max_iter, tol=tol,
                               random_state=random_state)
    finally:
        blocks.release()
    centers = from_kernel_array(res.centers, Z)
    return centers, nearest_centroid(Z, centers), float(res.inertia)


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
