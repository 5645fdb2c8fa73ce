"""The deep k-means methods of Roy (ICPR 2024) as small strategy objects: AEKM, DCN, DKM, CT and the ablations.

Each method holds its centroids and gives the trainer (:mod:`kmeans_dist.deep.train`) a per-batch clustering
loss, per-batch and per-epoch updates, and its state for checkpoints.  :data:`METHODS` registers the paper's
names: the baselines ``AEKM``, ``DCN``, ``DKM``, the paper's ``CT``, and its two ablations ``CT-noreinit`` (CT
without the per-epoch re-initialisation) and ``DKM+reinit`` (DKM with it).  The defaults are the authors'.
"""
from __future__ import annotations

import torch

from .latent import nearest_centroid, reinit_centroids
from .losses import ct_loss, dcn_loss, dkm_loss, pairwise_sq_dist, softmax_membership

__all__ = ["Method", "AEKM", "DCN", "DKM", "CT", "METHODS", "make_method"]


class Method:
    """A deep k-means method: centroids, a per-batch clustering loss and per-batch/per-epoch updates.

    Parameters
    ----------
    n_clusters : int, default=10
        Number of clusters.
    lam : float, default=1.0
        Weight of the clustering loss against the reconstruction loss.
    n_init : int, default=10
        k-means++ restarts of every k-means on the embeddings.
    seed : int, default=0
        Seed of those k-means.

    Attributes
    ----------
    centroids : torch.Tensor or None
        The current centroids.
    kmeans_inertia : float or None
        Inertia of the last k-means on the embeddings, and ``kmeans_epoch`` the finetuning epoch it ran after
        (0: the initial one).
    allreduce, broadcast : callable or None
        Set by the Ray stage with several workers: sum a tensor over the workers in place, copy rank 0's
        tensor to every worker in place.
    shard : Shard or None
        Set by the Ray stage with several workers: this worker's rows.  The embeddings passed to
        :meth:`initialize`, :meth:`end_epoch` and :meth:`predict` are then this shard's, and the k-means runs
        over all the workers' shards (:func:`~kmeans_dist.deep.reinit_centroids`).
    block_rows : int or None
        Rows per block of that k-means without a shard (default :func:`~kmeans_dist.deep.latent_block_rows`).
    """

    name = "method"
    finetunes = True

    def __init__(self, n_clusters: int = 10, *, lam: float = 1.0, n_init: int = 10, seed: int = 0):
        self.n_clusters = int(n_clusters)
        self.lam = float(lam)
        self.n_init = int(n_init)
        self.seed = int(seed)
        self.centroids: torch.Tensor | None = None
        self.kmeans_inertia: float | None = None
        self.kmeans_epoch: int | None = None
        self.allreduce = None
        self.broadcast = None
        self.shard = None
        self.block_rows = None

    def initialize(self, Z: torch.Tensor) -> torch.Tensor:
        """Centroids from k-means on the embeddings of the pretrained autoencoder; returns the labels."""
        c, labels = self._kmeans(Z, 0)
        self._set_centroids(c)
        return labels

    def _kmeans(self, Z: torch.Tensor, epoch: int):
        seed = self.seed if epoch == 0 else self.seed * 10_007 + epoch + 1
        c, labels, self.kmeans_inertia = reinit_centroids(Z, self.n_clusters, n_init=self.n_init, random_state=seed,
                                                         shard=self.shard, block_rows=self.block_rows)
        self.kmeans_epoch = epoch
        return c, labels

    def _reinitialize(self, Z: torch.Tensor, epoch: int):
        """Centroids <- k-means of the embeddings (rank 0's on every worker); the labels, or None when they
        came from another rank's k-means."""
        c, labels = self._kmeans(Z, epoch)
        if self.broadcast is not None:
            self.broadcast(c)
            labels = None
        self._set_centroids(c)
        return labels

    def _set_centroids(self, c: torch.Tensor) -> None:
        self.centroids = c.detach().clone()

    def parameters(self) -> list:
        """Trainable tensors of the method (DKM's centroids), optimised with the model's."""
        return []

    def batch_loss(self, z: torch.Tensor) -> torch.Tensor:
        """The clustering loss of a batch of embeddings."""
        raise NotImplementedError

    def before_step(self) -> None:
        """Between ``backward`` and the optimizer step (gradient all-reduce)."""

    def after_step(self, z: torch.Tensor) -> None:
        """After the optimizer step, with the batch's embeddings (DCN's center updates)."""

    def kmeans_inertia_at(self, epoch: int) -> float | None:
        """Inertia of the k-means on the embeddings that ran after ``epoch`` (0: the initial one), or None."""
        return self.kmeans_inertia if self.kmeans_epoch == epoch else None

    def end_epoch(self, Z: torch.Tensor, epoch: int) -> torch.Tensor | None:
        """Called with the embeddings (of the whole data set, or of this worker's shard) after each finetuning
        epoch; may return the labels it computed (the k-means labels of a re-initialisation)."""
        return None

    def membership(self):
        """The soft membership ``d (n, k) -> G (n, k)`` used for the paper's Figure 3."""
        return lambda d: softmax_membership(d, 3.0)

    def predict(self, Z: torch.Tensor) -> torch.Tensor:
        """Nearest centroid of every embedding."""
        return nearest_centroid(Z, self.centroids)

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the method."""
        return {"centroids": None if self.centroids is None else self.centroids.detach().cpu().clone()}

    def load_state_dict(self, state: dict, device=None) -> None:
        """Restore :meth:`state_dict`."""
        c = state.get("centroids")
        if c is not None:
            self._set_centroids(c.to(device) if device is not None else c)

    def describe(self) -> dict:
        """The method's name and settings."""
        return {"name": self.name, "lam": self.lam, "n_init": self.n_init}


class AEKM(Method):
    """Autoencoder + k-means: no finetuning, k-means (k-means++, ``n_init`` restarts) on the pretrained
    embeddings."""

    name = "AEKM"
    finetunes = False


class DCN(Method):
    """Deep Clustering Network (Yang et al. 2017): ``rec + lam * ||z - c_{s(z)}||^2`` with hard assignments.

    After each mini-batch the assigned centers move by per-center counts
    (``c_k <- c_k - (1 / n_k)(c_k - z_i)``, applied batch-wise as Sculley's update).
    """

    name = "DCN"

    def __init__(self, n_clusters=10, *, lam: float = 1.0, **kw):
        super().__init__(n_clusters, lam=lam, **kw)
        self.counts: torch.Tensor | None = None

    def initialize(self, Z):
        labels = super().initialize(Z)
        self.counts = torch.bincount(labels, minlength=self.n_clusters).to(torch.float64)
        if self.allreduce is not None:  # the labels are this worker's shard's
            self.allreduce(self.counts)
        return labels

    def batch_loss(self, z):
        with torch.no_grad():
            s = torch.argmin(pairwise_sq_dist(z, self.centroids), dim=1)
        return dcn_loss(z, self.centroids, s)

    @torch.no_grad()
    def after_step(self, z):
        mu = self.centroids
        s = torch.argmin(pairwise_sq_dist(z, mu), dim=1)
        onehot = torch.nn.functional.one_hot(s, self.n_clusters).to(torch.float64)
        sums = onehot.T @ z.to(torch.float64)
        cnt = onehot.sum(dim=0)
        if self.allreduce is not None:
            self.allreduce(sums)
            self.allreduce(cnt)
        W = self.counts.to(mu.device)
        hit = cnt > 0
        new = mu.to(torch.float64).clone()
        new[hit] = (new[hit] * W[hit, None] + sums[hit]) / (W[hit] + cnt[hit])[:, None]
        self.centroids = new.to(mu.dtype)
        self.counts = W + cnt

    def state_dict(self):
        d = super().state_dict()
        d["counts"] = None if self.counts is None else self.counts.cpu().clone()
        return d

    def load_state_dict(self, state, device=None):
        super().load_state_dict(state, device)
        if state.get("counts") is not None:
            self.counts = state["counts"].to(device) if device is not None else state["counts"].clone()


class DKM(Method):
    """Deep k-Means (Moradi Fard et al. 2020): ``rec + lam * sum_k ||z - r_k||^2 softmax_k(-alpha ||z - r_k||^2)``
    with the centroids ``r`` trained jointly by the same optimizer.

    ``alpha`` is DKM's constant setting (1000).  ``reinit=True`` is the CT paper's ablation "DKM with
    re-initialisation": after each epoch the centroids are reset to the k-means centers of the embeddings.
    """

    name = "DKM"

    def __init__(self, n_clusters=10, *, lam: float = 1.0, alpha: float = 1000.0, reinit: bool = False,
                 **kw):
        super().__init__(n_clusters, lam=lam, **kw)
        self.alpha = float(alpha)
        self.reinit = bool(reinit)
        self._param: torch.nn.Parameter | None = None
        if reinit:
            self.name = "DKM+reinit"

    def _set_centroids(self, c):
        if self._param is None:
            self._param = torch.nn.Parameter(c.detach().clone())
        else:
            with torch.no_grad():
                self._param.copy_(c)
        self.centroids = self._param

    def parameters(self):
        return [self._param] if self._param is not None else []

    def batch_loss(self, z):
        return dkm_loss(z, self._param, self.alpha)

    def before_step(self):
        if self.allreduce is not None:
            import torch.distributed as dist

            if self._param.grad is None:  # an empty share of the batch: still take part in the all-reduce
                self._param.grad = torch.zeros_like(self._param)
            self.allreduce(self._param.grad)
            self._param.grad /= dist.get_world_size() if dist.is_initialized() else 1

    def end_epoch(self, Z, epoch):
        return self._reinitialize(Z, epoch) if self.reinit else None

    def membership(self):
        alpha = self.alpha
        return lambda d: softmax_membership(d, alpha)

    def state_dict(self):
        return {**super().state_dict(), "alpha": self.alpha}

    def load_state_dict(self, state, device=None):
        super().load_state_dict(state, device)
        self.alpha = float(state.get("alpha", self.alpha))

    def describe(self):
        return {**super().describe(), "alpha": self.alpha, "reinit": self.reinit}


class CT(Method):
    """The paper's method (Roy, ICPR 2024): ``rec + lam * CT`` with the centroids frozen during each epoch, then
    re-initialised by classical k-means on the embeddings of the whole data set.

    CT is our reconstruction of the paper's equations 10-11 (see :mod:`kmeans_dist.deep.losses`):
    ``G_ik = softmax_k(-alpha d_ik)``, ``d_ik = ||h(x_i) - mu_k||^2``, ``CT = mean_i sum_k d_ik G_ik``, with the
    paper's alpha = 3 and lambda = 10 (its Table 4).  ``reinit=False`` is the paper's ablation "CT without
    re-initialisation" (the centroids stay at the initial k-means centers).
    """

    name = "CT"

    def __init__(self, n_clusters=10, *, lam: float = 10.0, alpha: float = 3.0, reinit: bool = True, **kw):
        super().__init__(n_clusters, lam=lam, **kw)
        self.alpha = float(alpha)
        self.reinit = bool(reinit)
        if not reinit:
            self.name = "CT-noreinit"

    def batch_loss(self, z):
        return ct_loss(z, self.centroids, self.membership())

    def end_epoch(self, Z, epoch):
        return self._reinitialize(Z, epoch) if self.reinit else None

    def membership(self):
        alpha = self.alpha
        return lambda d: softmax_membership(d, alpha)

    def describe(self):
        return {**super().describe(), "alpha": self.alpha, "reinit": self.reinit}


METHODS = {
    "AEKM": lambda k, **kw: AEKM(k, **kw),
    "DCN": lambda k, **kw: DCN(k, **kw),
    "DKM": lambda k, **kw: DKM(k, **kw),
    "DKM+reinit": lambda k, **kw: DKM(k, reinit=True, **kw),
    "CT": lambda k, **kw: CT(k, **kw),
    "CT-noreinit": lambda k, **kw: CT(k, reinit=False, **kw),
}


def make_method(name: str, n_clusters: int = 10, **kw) -> Method:
    """A method by name, with the authors' defaults.

    Parameters
    ----------
    name : {"AEKM", "DCN", "DKM", "DKM+reinit", "CT", "CT-noreinit"}
        The baselines, the paper's method, and its two ablations.
    n_clusters : int, default=10
        Number of clusters.
    **kw
        Settings of the method's class (e.g. ``lam``, ``alpha``, ``n_init``, ``seed``).

    Returns
    -------
    Method

    Examples
    --------
    >>> make_method("CT", 10).describe()
    {'name': 'CT', 'lam': 10.0, 'n_init': 10, 'alpha': 3.0, 'reinit': True}
    """
    try:
        factory = METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}") from None
    return factory(n_clusters, **kw)
