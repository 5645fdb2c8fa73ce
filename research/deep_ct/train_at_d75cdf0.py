"""Plain-PyTorch training of the deep k-means methods (no Ray, no Prefect here).

- :func:`pretrain` / :func:`train_epoch`: mini-batch Adam on reconstruction (+ lambda x clustering loss);
- :func:`embed`: embeddings of a whole data set; :func:`reinit_centroids`: classical k-means on them
  with the project's own kernels (:func:`kmeans_dist.kernels.kmeans_inmemory`), the torch tensor being
  handed over through DLPack (``numpy.from_dlpack`` on CPU, ``cupy.from_dlpack`` on a GPU: no host copy);
- the methods as small strategy objects: :class:`AEKM`, :class:`DCN`, :class:`DKM`, :class:`CT`
  (with the ablations ``CT(reinit=False)`` and ``DKM(reinit=True)``);
- :func:`fit_method`: the whole finetuning loop in one process, used by the benchmark and the tests
  (the Ray stage in ``pipelines/deep.py`` runs the same :func:`train_epoch` under DDP).
"""
from __future__ import annotations

import copy
import math
import time
from typing import Callable, Iterable

import numpy as np
import torch

from ..kernels.xp import get_namespace, to_numpy
from ..kernels import assign_labels, kmeans_inmemory
from .losses import ct_loss, dcn_loss, dkm_loss, get_membership, pairwise_sq_dist, reconstruction_loss
from .model import Autoencoder, unwrap

__all__ = [
    "BatchLoader", "train_epoch", "pretrain", "embed", "to_kernel_array", "reinit_centroids",
    "nearest_centroid", "partition_agreement", "knn_graph", "graph_cut", "fiedler_bisection", "graph_split",
    "graph_merge_splits", "Method", "AEKM", "DCN", "DKM", "CT", "make_method", "METHODS", "fit_method",
    "max_membership",
]


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------

class BatchLoader:
    """Mini-batches of rows of an in-memory tensor, reshuffled each epoch from ``(seed, epoch)``.

    Much cheaper than a ``DataLoader`` over a ``TensorDataset`` (one gather per batch).  With
    ``rank``/``world_size`` each process takes every ``world_size``-th batch of the same permutation.
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
        self.epoch = int(epoch)

    def __len__(self) -> int:
        nb = math.ceil(self.X.shape[0] / self.batch_size)
        return len(range(self.rank, nb, self.world_size))

    def __iter__(self):
        n = self.X.shape[0]
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            idx = torch.randperm(n, generator=g)
        else:
            idx = torch.arange(n)
        starts = list(range(0, n, self.batch_size))[self.rank::self.world_size]
        for s in starts:
            yield self.X[idx[s:s + self.batch_size]]


# --------------------------------------------------------------------------------------------------
# one epoch
# --------------------------------------------------------------------------------------------------

def train_epoch(model, optimizer, loader: Iterable, method: "Method | None" = None, *, device=None,
                finetune: bool = True, corruption: float = 0.0, generator: torch.Generator | None = None) -> dict:
    """One pass over ``loader`` (batches of inputs, or tuples whose first item is the input).

    Loss = reconstruction + ``method.lam`` x ``method.batch_loss(z)`` when ``method`` finetunes;
    reconstruction only otherwise (pretraining).  ``corruption`` > 0 (pretraining only) makes it a denoising
    autoencoder: each input value is set to 0 with that probability (masking noise, drawn from
    ``generator``) and the clean input is reconstructed.  Returns the sample-weighted mean losses.
    """
    model.train()
    tot_rec = tot_clu = 0.0
    n_seen = 0
    use_clu = method is not None and finetune and method.finetunes
    for batch in loader:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        if device is not None:
            x = x.to(device, non_blocking=True)
        if corruption > 0 and not use_clu:
            keep = torch.rand(x.shape, generator=generator, device=x.device) >= corruption
            z, x_hat = model(x * keep)
        else:
            z, x_hat = model(x)
        rec = reconstruction_loss(x_hat, x, method.reconstruction if use_clu else "sum")
        if use_clu:
            clu = method.batch_loss(z)
            loss = rec + method.lam * clu
        else:
            clu = None
            loss = rec
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if use_clu:
            method.before_step()
        optimizer.step()
        if use_clu:
            method.after_step(z.detach())
        b = x.shape[0]
        n_seen += b
        tot_rec += float(rec.detach()) * b
        tot_clu += (float(clu.detach()) if clu is not None else 0.0) * b
    n_seen = max(n_seen, 1)
    return {"rec_loss": tot_rec / n_seen, "clu_loss": tot_clu / n_seen, "n_samples": n_seen}


def pretrain(model, X: torch.Tensor, *, epochs: int = 50, batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
             callback: Callable[[dict], None] | None = None, device=None, optimizer=None,
             start_epoch: int = 0, corruption: float = 0.0) -> list[dict]:
    """Train the autoencoder on reconstruction alone; returns the per-epoch history.

    ``corruption`` > 0 trains a denoising autoencoder (masking noise with that probability, a fresh mask per
    epoch seeded by ``seed`` and the epoch, so a resumed run draws the same masks).

    ``optimizer`` (default: a new Adam) and ``start_epoch`` let a caller checkpoint in ``callback`` and
    resume: epochs ``start_epoch + 1 .. epochs`` run, with the same batches as an uninterrupted run.
    """
    opt = optimizer if optimizer is not None else torch.optim.Adam(model.parameters(), lr=lr)
    loader = BatchLoader(X, batch_size, seed=seed)
    hist = []
    for ep in range(int(start_epoch), epochs):
        loader.set_epoch(ep)
        t0 = time.perf_counter()
        gen = None
        if corruption > 0:
            dev = device if device is not None else X.device
            gen = torch.Generator(device=dev).manual_seed(seed * 1_000_003 + ep + 500_009)
        m = train_epoch(model, opt, loader, None, device=device, finetune=False, corruption=corruption,
                        generator=gen)
        m.update(epoch=ep + 1, phase="pretrain", seconds=time.perf_counter() - t0)
        hist.append(m)
        if callback is not None:
            callback(m)
    return hist


# --------------------------------------------------------------------------------------------------
# embeddings and the k-means in latent space
# --------------------------------------------------------------------------------------------------

@torch.no_grad()
def embed(model, X: torch.Tensor, batch_size: int = 4096, device=None) -> torch.Tensor:
    """Embeddings of all rows of ``X`` (eval mode, no grad), on ``X``'s (or ``device``'s) device."""
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
    """A torch tensor as an array the kernels take, sharing memory through DLPack (no host copy):
    NumPy on CPU, CuPy on CUDA."""
    t = t.detach().contiguous()
    if t.is_cuda:
        import cupy

        return cupy.from_dlpack(t)
    return np.from_dlpack(t)


def from_kernel_array(a, like: torch.Tensor) -> torch.Tensor:
    """A kernel result (NumPy/CuPy) back as a torch tensor on ``like``'s device, dtype of ``like``."""
    t = torch.from_dlpack(a) if not isinstance(a, np.ndarray) else torch.from_numpy(np.ascontiguousarray(a))
    return t.to(device=like.device, dtype=like.dtype)


SELECT_RULES = ("inertia", "balanced", "graph")


def knn_graph(Z: torch.Tensor, *, n_neighbors: int = 10, n_anchors: int = 10_000, seed: int = 0,
              block: int = 2048):
    """A k-nearest-neighbour graph among a seeded sample of the rows of ``Z`` (the anchors), on ``Z``'s device.

    Returns ``(anchors, neighbors)`` as kernel arrays (NumPy on CPU, CuPy on CUDA, through DLPack): ``anchors``
    ``(m,)`` row indices of ``Z`` and ``neighbors`` ``(m, n_neighbors)`` row indices of ``Z`` of each anchor's
    nearest other anchors (squared Euclidean distance, one ``block x m`` GEMM at a time).  ``m`` is
    ``min(n_anchors, len(Z))``; the anchors depend only on ``seed`` and ``len(Z)``.
    """
    n = Z.shape[0]
    m = min(int(n_anchors), n)
    kn = min(int(n_neighbors), m - 1)
    g = torch.Generator().manual_seed(int(seed))
    anchors = torch.randperm(n, generator=g)[:m].sort().values.to(Z.device)
    S = Z[anchors].detach().to(torch.float32)
    sq = (S * S).sum(1)
    out = []
    for s in range(0, m, block):
        e = min(s + block, m)
        D = sq[s:e, None] - 2.0 * (S[s:e] @ S.T) + sq[None, :]
        D[torch.arange(e - s, device=D.device), torch.arange(s, e, device=D.device)] = float("inf")  # not itself
        out.append(D.topk(kn, dim=1, largest=False).indices)
    nbrs = anchors[torch.cat(out)]
    return to_kernel_array(anchors), to_kernel_array(nbrs)


def graph_cut(labels, graph) -> float:
    """Normalised cut of the partition ``labels`` on ``graph`` (:func:`knn_graph`): for each cluster, the fraction
    of its anchors' neighbour edges that leave it; their mean over the clusters that hold anchors.  Low when every
    boundary runs through a sparse region of the embeddings; a small cluster cut out of a dense region scores as
    high as a large one, so merging two touching clusters to split another pays less than under the plain count
    of cut edges (it can still pay: :func:`reinit_centroids` ranks by it only among nearly balanced candidates)."""
    xp = get_namespace(labels)
    anchors, nbrs = graph
    lab = xp.reshape(labels, (-1,))
    la = lab[anchors]
    leave = xp.mean(xp.astype(lab[nbrs] != xp.reshape(la, (-1, 1)), xp.float64), axis=1)
    k = int(xp.max(la)) + 1
    tot = to_numpy(xp.bincount(la, weights=leave, minlength=k))
    cnt = to_numpy(xp.bincount(la, minlength=k))
    return float(np.mean(tot[cnt > 0] / cnt[cnt > 0]))


def size_entropy(labels, n_clusters: int) -> float:
    """Entropy of the cluster sizes of ``labels`` (NumPy or CuPy), normalised to [0, 1] by ``log(n_clusters)``:
    1 when every cluster has the same size.  Counts on the labels' device; only the ``n_clusters`` counts move."""
    xp = get_namespace(labels)
    counts = to_numpy(xp.bincount(xp.reshape(labels, (-1,)), minlength=n_clusters)).astype(np.float64)
    p = counts / max(counts.sum(), 1.0)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / math.log(n_clusters)) + 0.0 if n_clusters > 1 else 1.0  # + 0.0: never -0.0


def fiedler_bisection(graph, members, n_rows: int):
    """Bisect the anchors ``members`` (positions in ``graph``'s anchor list, a :func:`knn_graph` over ``n_rows``
    rows) by the sign of the Fiedler vector of the normalised Laplacian of the graph among them (Shi and Malik's
    normalised cut; ``scipy.sparse.linalg.eigsh`` on the host, deterministic start).  Returns a boolean NumPy array,
    one entry per member, or None when one side would be empty or there are fewer than 3 members (the eigensolver
    needs more nodes than the 2 eigenvectors it returns)."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import eigsh

    anchors, nbrs = graph
    sel = np.asarray(members, dtype=np.int64)
    if sel.size < 3:
        return None
    anc = to_numpy(anchors).astype(np.int64)
    pos = np.full(int(n_rows), -1, dtype=np.int64)
    pos[anc[sel]] = np.arange(sel.size)
    nb = to_numpy(nbrs).astype(np.int64)[sel]
    rows = np.repeat(np.arange(sel.size), nb.shape[1])
    cols = pos[nb.ravel()]
    ok = cols >= 0
    adj = sp.csr_matrix((np.ones(int(ok.sum())), (rows[ok], cols[ok])), shape=(sel.size, sel.size))
    adj = ((adj + adj.T) > 0).astype(np.float64)
    deg = np.asarray(adj.sum(axis=1)).ravel()
    deg[deg == 0] = 1.0
    dm = sp.diags(1.0 / np.sqrt(deg))
    u0 = np.sqrt(deg) / np.linalg.norm(np.sqrt(deg))  # the top eigenvector (eigenvalue 1) of D^-1/2 A D^-1/2
    _, vecs = eigsh(dm @ adj @ dm, k=2, which="LA", v0=u0)  # v0: deterministic
    # the Fiedler direction: of the two, the part orthogonal to u0 (when the graph among the members falls apart in
    # components, eigenvalue 1 repeats and eigsh may return any basis of it)
    rest = vecs - u0[:, None] * (u0 @ vecs)[None, :]
    side = rest[:, int(np.argmax(np.linalg.norm(rest, axis=0)))] / np.sqrt(deg) > 0
    return None if side.all() or not side.any() else side


def _densest_pair(labels, graph, n_clusters: int):
    """The labels of ``graph``'s anchors (host int64) and the pair of clusters ``(i, j)`` with the most graph edges
    between them per anchor (``e_ij / sqrt(n_i n_j)``), or None when no edge joins two clusters."""
    xp = get_namespace(labels)
    anchors, nbrs = graph
    lab = xp.reshape(labels, (-1,))
    la, ln = to_numpy(lab[anchors]).astype(np.int64), to_numpy(lab[nbrs]).astype(np.int64)
    k = int(n_clusters)
    cross = np.bincount((la[:, None] * k + ln).ravel(), minlength=k * k).reshape(k, k).astype(np.float64)
    cross = cross + cross.T
    np.fill_diagonal(cross, 0.0)
    cnt = np.bincount(la, minlength=k).astype(np.float64)
    w = cross / np.sqrt(np.maximum(np.outer(cnt, cnt), 1.0))
    i, j = np.unravel_index(int(np.argmax(w)), w.shape)
    return la, (None if w[i, j] <= 0 else (int(i), int(j)))


def _at_centers(Zk, centers):
    """The partition of ``Zk`` by nearest center, as a :class:`~kmeans_dist.kernels.KMeansResult` (``n_iter`` 0:
    the graph moves' centers are not a Lloyd fixed point)."""
    from ..kernels import KMeansResult

    labels, d = assign_labels(Zk, centers)
    return KMeansResult(centers=centers, labels=labels, inertia=float(get_namespace(Zk).sum(d)), n_iter=0, history=[])


def graph_split(Zk, labels, centers, graph, n_clusters: int):
    """Re-split the two clusters of a partition whose shared boundary is densest, along the neighbour graph.

    ``Zk`` (kernel array), ``labels`` and ``centers`` a partition of its rows, ``graph`` a :func:`knn_graph`.
    The pair ``(i, j)`` with the most graph edges between them (per anchor, ``e_ij / sqrt(n_i n_j)``) is the pair
    whose boundary runs through the densest region; their anchors are bisected along the graph among them
    (:func:`fiedler_bisection`: a few thousand nodes, on the host), ``c_i`` and ``c_j`` are replaced by the means
    of the two sides, and every row goes to its nearest center.  Where Euclidean k-means cuts across two touching
    groups (two elongated classes side by side), Lloyd goes back to its cut; this one follows the gap between the
    groups.  Returns a :class:`~kmeans_dist.kernels.KMeansResult` (``n_iter`` 0), or None when the pair cannot be
    split.
    """
    xp = get_namespace(Zk)
    anchors, _ = graph
    la, pair = _densest_pair(labels, graph, n_clusters)
    if pair is None:
        return None
    i, j = pair
    sel = np.flatnonzero((la == i) | (la == j))
    side = fiedler_bisection(graph, sel, int(Zk.shape[0]))
    if side is None:
        return None
    anc = to_numpy(anchors).astype(np.int64)
    Za = Zk[xp.asarray(anc[sel])]
    side_x = xp.asarray(side)
    new = centers.copy()
    new[int(i)] = xp.mean(Za[side_x], axis=0)
    new[int(j)] = xp.mean(Za[~side_x], axis=0)
    return _at_centers(Zk, new)


def graph_merge_splits(Zk, labels, centers, graph, n_clusters: int) -> list:
    """Merge the two clusters with the densest shared boundary and bisect another cluster along the graph.

    The other move that keeps ``n_clusters``: where :func:`graph_split` re-draws the boundary of the densest pair,
    this one treats that pair as one group (center: the mean of its anchors) and spends the freed cluster on a
    cluster that holds two groups, bisected by :func:`fiedler_bisection` of the graph among its anchors (centers:
    the two sides' means); every row then goes to its nearest center.  It is tried for every other cluster, so it
    returns up to ``n_clusters - 2`` :class:`~kmeans_dist.kernels.KMeansResult` (``n_iter`` 0), in cluster order;
    a caller ranks them (:func:`reinit_centroids` with ``merge_split=True``).  Empty when no edge joins two
    clusters.  Where k-means keeps two touching classes in one cluster and cuts a third, elongated class in two, no
    restart and no re-split of one pair reaches the right partition; this move does in one step.
    """
    xp = get_namespace(Zk)
    anchors, _ = graph
    la, pair = _densest_pair(labels, graph, n_clusters)
    if pair is None:
        return []
    i, j = pair
    anc = to_numpy(anchors).astype(np.int64)
    merged = xp.mean(Zk[xp.asarray(anc[(la == i) | (la == j)])], axis=0)
    out = []
    for c in range(int(n_clusters)):
        members = np.flatnonzero(la == c)
        if c in pair:
            continue
        side = fiedler_bisection(graph, members, int(Zk.shape[0]))
        if side is None:
            continue
        Za = Zk[xp.asarray(anc[members])]
        side_x = xp.asarray(side)
        new = centers.copy()
        new[i] = merged
        new[j] = xp.mean(Za[side_x], axis=0)
        new[c] = xp.mean(Za[~side_x], axis=0)
        out.append(_at_centers(Zk, new))
    return out


GRAPH_TOLERANCE = 0.005  # select="graph": size entropies within this of the most balanced candidate count as tied


def reinit_centroids(Z: torch.Tensor, n_clusters: int, *, n_init: int = 10, max_iter: int = 300, tol: float = 1e-4,
                     random_state=None, select: str = "inertia", warm_start: torch.Tensor | None = None,
                     candidates: list | None = None, graph=None, graph_tolerance: float = GRAPH_TOLERANCE,
                     split: bool = False, merge_split: bool = False):
    """Classical k-means (k-means++, ``n_init`` restarts, Lloyd) on embeddings ``Z``.

    Runs the kernels on a DLPack view of ``Z``.  ``select`` chooses among the ``n_init`` restarts:
    ``"inertia"`` keeps the lowest inertia (:func:`kmeans_dist.kernels.kmeans_inmemory`, classical k-means);
    ``"balanced"`` keeps the partition whose cluster sizes have the highest entropy (:func:`size_entropy`,
    ties to the lower inertia), a label-free prior for data sets whose classes have similar sizes (the
    marginal-entropy prior of IIC and SCAN), applied to the same candidate restarts.  ``"graph"`` first keeps the
    candidates whose size entropy is within ``graph_tolerance`` of the most balanced one, then among them the
    partition with the lowest normalised cut of a k-nearest-neighbour graph of the embeddings (:func:`graph_cut`
    on ``graph``, default :func:`knn_graph` of ``Z`` seeded by ``random_state``), ties to the lower inertia: of
    nearly tied balanced partitions it prefers the one whose boundaries run through sparse regions rather than
    through a dense group of points (the neighbour-consistency prior of SCAN).  ``split=True`` (``"graph"`` only)
    adds one more candidate after the runs: :func:`graph_split` of the partition the rule chose among them, ranked
    with them by the same rule (its centers are the two sides' means, not a Lloyd fixed point).  ``merge_split=True``
    (``"graph"`` only) adds :func:`graph_merge_splits` of that same partition (after the split candidate), ranked
    the same way; as they are often more balanced, they can also move the size-entropy bar.  ``warm_start``
    (centers, e.g. the previous epoch's) adds one candidate, Lloyd from those centers, ranked by the same rule; the
    ``n_init`` restarts are unchanged by it.  ``candidates`` (a list) gets one dict per run, in order (the
    restarts, then the warm start): ``inertia``, ``size_entropy``, ``warm``, ``labels`` and ``centers`` (kernel
    arrays), ``graph_cut`` under ``"graph"``, ``split`` (whether it is the graph split, after the runs) with
    ``split=True`` and ``merge_split`` (whether it is one of the merge-and-split candidates, which come last) with
    ``merge_split=True``, so a caller can see what each selection rule chose among.
    Returns ``(centers, labels, inertia)`` with centers/labels as torch tensors on ``Z``'s device.
    """
    if select not in SELECT_RULES:
        raise ValueError(f"select must be one of {SELECT_RULES}, got {select!r}")
    if split and select != "graph":
        raise ValueError(f"split needs select='graph', got select={select!r}")
    if merge_split and select != "graph":
        raise ValueError(f"merge_split needs select='graph', got select={select!r}")
    k = int(n_clusters)
    key = (lambda r: (-size_entropy(r.labels, k), float(r.inertia))) if select == "balanced" else None  # noqa: E731
    if select == "graph" and graph is None:
        graph = knn_graph(Z, seed=random_state if isinstance(random_state, (int, np.integer)) else 0)
    Zk = to_kernel_array(Z)
    extra = () if warm_start is None else (to_kernel_array(warm_start.detach().to(device=Z.device, dtype=Z.dtype)),)
    runs: list = []  # (result, size entropy, graph cut) of every run, for "graph" and the candidates list

    def seen(r, move=None):  # move: None for a Lloyd run, "split" or "merge_split" for the graph moves
        runs.append((r, size_entropy(r.labels, k), None if graph is None else graph_cut(r.labels, graph)))
        if candidates is not None:
            candidates.append({"inertia": float(r.inertia), "size_entropy": runs[-1][1],
                               "warm": move is None and len(runs) > n_init, "labels": r.labels, "centers": r.centers,
                               **({} if graph is None else {"graph_cut": runs[-1][2]}),
                               **({"split": move == "split"} if split else {}),
                               **({"merge_split": move == "merge_split"} if merge_split else {})})

    def by_graph():  # needs every run's entropy before it can rank any, so it chooses after they all ran
        top = max(e for _, e, _ in runs)
        return min((run for run in runs if run[1] >= top - graph_tolerance),
                   key=lambda run: (run[2], float(run[0].inertia)))[0]

    res = kmeans_inmemory(Zk, k, n_init=n_init, max_iter=max_iter, tol=tol, random_state=random_state, key=key,
                          init_candidates=extra, on_result=seen)
    if select == "graph":
        res = by_graph()
        if split or merge_split:
            alt = graph_split(Zk, res.labels, res.centers, graph, k) if split else None
            if alt is not None:
                seen(alt, "split")
            for alt in graph_merge_splits(Zk, res.labels, res.centers, graph, k) if merge_split else ():
                seen(alt, "merge_split")
            res = by_graph()
    centers = from_kernel_array(res.centers, Z)
    labels = from_kernel_array(res.labels, torch.empty(0, dtype=torch.int64, device=Z.device))
    return centers, labels, float(res.inertia)


def partition_agreement(labels, references, n_clusters: int) -> float:
    """Mean adjusted Rand index of ``labels`` against each partition in ``references`` (label arrays of the same
    samples, values in ``[0, n_clusters)``); NaN when ``references`` is empty.  Each ARI comes from one
    ``n_clusters x n_clusters`` contingency table (``np.bincount``), scored by
    :func:`kmeans_dist.metrics.adjusted_rand_score`."""
    from ..metrics import adjusted_rand_score

    if not len(references):
        return float("nan")
    k = int(n_clusters)
    a = to_numpy(labels).astype(np.int64).ravel() * k
    vals = [adjusted_rand_score(contingency=np.bincount(a + np.asarray(r, dtype=np.int64).ravel(),
                                                        minlength=k * k).reshape(k, k)) for r in references]
    return float(np.mean(vals))


def kmeans_candidate_scores(method, epoch: int, y=None) -> list | None:
    """What the k-means on the embeddings after ``epoch`` chose among (``method.kmeans_candidates``): per run its
    inertia, size entropy, whether it is the warm start, its ``agreement`` with the earlier kept partitions and
    whether :meth:`Method.finalize` chose it (``final``) when the method keeps a consensus window, and ACC/NMI/ARI
    against ``y`` when given; None when no k-means ran after that epoch.  The candidates' arrays are dropped from
    the method."""
    from .evaluate import clustering_scores

    cands, method.kmeans_candidates = method.kmeans_candidates, []
    if method.kmeans_epoch != epoch or not cands:
        return None
    return [{"inertia": c["inertia"], "size_entropy": c["size_entropy"], "warm": c["warm"],
             **{key: c[key] for key in ("graph_cut", "split", "merge_split", "agreement", "final") if key in c},
             **({} if y is None else clustering_scores(y, to_numpy(c["labels"])))} for c in cands]


def nearest_centroid(Z: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid of each embedding (the kernels' ``assign_labels`` on DLPack views)."""
    lab, _ = assign_labels(to_kernel_array(Z), to_kernel_array(mu.to(Z.dtype)))
    return from_kernel_array(lab, torch.empty(0, dtype=torch.int64, device=Z.device))


@torch.no_grad()
def max_membership(Z: torch.Tensor, mu: torch.Tensor, membership=None) -> np.ndarray:
    """Each point's highest membership ``max_k G_ik`` (the paper's Figure 3), as NumPy."""
    if membership is None:
        membership = get_membership("softmax", alpha=3.0)
    out = []
    for s in range(0, Z.shape[0], 8192):
        out.append(membership(pairwise_sq_dist(Z[s:s + 8192], mu.to(Z.dtype))).max(dim=1).values)
    return torch.cat(out).cpu().numpy()


# --------------------------------------------------------------------------------------------------
# the methods
# --------------------------------------------------------------------------------------------------

class Method:
    """A deep k-means method: centroids, a per-batch clustering loss and per-batch/per-epoch updates.

    Distributed hooks (set by the Ray stage, None in one process): ``allreduce(t)`` sums a tensor
    over the workers in place; ``broadcast(t)`` copies rank 0's tensor to every worker in place.
    """

    name = "method"
    finetunes = True

    def __init__(self, n_clusters: int = 10, *, lam: float = 1.0, n_init: int = 10, seed: int = 0,
                 reconstruction: str = "sum", select: str = "inertia", consensus_window: int = 0,
                 graph_split: bool = False, merge_split: bool = False):
        if reconstruction not in ("sum", "mean"):
            raise ValueError(f"reconstruction must be 'sum' or 'mean', got {reconstruction!r}")
        if select not in SELECT_RULES:
            raise ValueError(f"select must be one of {SELECT_RULES}, got {select!r}")
        if graph_split and select != "graph":
            raise ValueError(f"graph_split needs select='graph', got select={select!r}")
        if merge_split and select != "graph":
            raise ValueError(f"merge_split needs select='graph', got select={select!r}")
        self.select = select
        # select="graph" with graph_split (merge_split): each k-means on the embeddings also offers graph_split
        # (graph_merge_splits) of its choice
        self.graph_split = bool(graph_split)
        self.merge_split = bool(merge_split)
        self.n_clusters = int(n_clusters)
        self.lam = float(lam)
        self.reconstruction = reconstruction
        self.n_init = int(n_init)
        self.seed = int(seed)
        self.centroids: torch.Tensor | None = None
        # the last k-means on the embeddings: its inertia, the epoch it ran after (0: the initial one) and the
        # runs it chose among (reinit_centroids' candidates; fit_method scores and then drops them)
        self.kmeans_inertia: float | None = None
        self.kmeans_epoch: int | None = None
        self.kmeans_candidates: list = []
        # consensus_window > 0: the partitions kept by the last that many k-means (host int16 label arrays), each
        # candidate's mean ARI against them, and finalize() choosing by it (see finalize)
        if int(consensus_window) < 0:
            raise ValueError(f"consensus_window must be >= 0, got {consensus_window!r}")
        self.consensus_window = int(consensus_window)
        self._kept: list = []
        self.allreduce = None
        self.broadcast = None

    # lifecycle -------------------------------------------------------------------------------
    def initialize(self, Z: torch.Tensor) -> torch.Tensor:
        """Centroids from k-means on the embeddings of the pretrained autoencoder; returns labels."""
        c, labels = self._kmeans(Z, 0, n_init=self.n_init, random_state=self.seed)
        self._set_centroids(c)
        return labels

    def _kmeans(self, Z: torch.Tensor, epoch: int, *, n_init: int, random_state, warm_start=None):
        """k-means on the embeddings after ``epoch`` (:func:`reinit_centroids` with this method's rule); keeps
        its inertia, epoch and candidates; returns ``(centers, labels)``."""
        self.kmeans_candidates = []
        graph = knn_graph(Z, seed=self.seed) if self.select == "graph" else None  # the same anchors every epoch
        c, labels, self.kmeans_inertia = reinit_centroids(Z, self.n_clusters, n_init=n_init, random_state=random_state,
                                                          select=self.select, warm_start=warm_start,
                                                          candidates=self.kmeans_candidates, graph=graph,
                                                          split=self.graph_split, merge_split=self.merge_split)
        self.kmeans_epoch = epoch
        if self.consensus_window:
            for cand in self.kmeans_candidates:
                cand["agreement"] = partition_agreement(cand["labels"], self._kept, self.n_clusters)
            self._kept = (self._kept + [labels.cpu().numpy().astype(np.int16)])[-self.consensus_window:]
        return c, labels

    def finalize(self) -> torch.Tensor | None:
        """The last epoch's consensus choice (``consensus_window > 0``; a no-op returning None otherwise).

        Among the candidates of the last k-means on the embeddings (the same restarts and warm start its rule
        chose from), keep the one that agrees best -- highest mean adjusted Rand index -- with the partitions the
        previous ``consensus_window`` k-means kept, ties to the earlier candidate.  When the per-epoch rule
        alternates between nearly tied partitions, the final partition is then the one the run held most over
        that window, on the final model's embeddings, rather than whichever the last epoch happened to keep.
        Label-free; it changes only the output, not the trajectory.  Sets the centroids to that candidate's
        centers and returns its labels (a torch tensor), or None when there is nothing to choose from."""
        cands = self.kmeans_candidates
        if not self.consensus_window or not cands or math.isnan(cands[0]["agreement"]):
            return None  # no window, or no partition kept before this k-means (all agreements NaN)
        best = max(range(len(cands)), key=lambda i: (cands[i]["agreement"], -i))
        for i, cand in enumerate(cands):
            cand["final"] = i == best
        like = self.centroids if self.centroids is not None else torch.empty(0)
        self._set_centroids(from_kernel_array(cands[best]["centers"], like))
        labels = from_kernel_array(cands[best]["labels"], torch.empty(0, dtype=torch.int64, device=like.device))
        self.kmeans_inertia = cands[best]["inertia"]
        return labels

    def _set_centroids(self, c: torch.Tensor) -> None:
        self.centroids = c.detach().clone()

    def parameters(self) -> list:
        return []

    def batch_loss(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def before_step(self) -> None:
        pass

    def after_step(self, z: torch.Tensor) -> None:
        pass

    def kmeans_inertia_at(self, epoch: int) -> float | None:
        """Inertia of the k-means on the embeddings that ran after ``epoch`` (0: the initial one), or None."""
        return self.kmeans_inertia if self.kmeans_epoch == epoch else None

    def end_epoch(self, Z: torch.Tensor, epoch: int) -> torch.Tensor | None:
        """Called with the embeddings of the whole data set after each finetuning epoch; may return
        the labels it computed (k-means labels after a re-initialisation)."""
        return None

    def membership(self):
        return get_membership("softmax", alpha=3.0)

    def predict(self, Z: torch.Tensor) -> torch.Tensor:
        return nearest_centroid(Z, self.centroids)

    # state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        st = {"centroids": None if self.centroids is None else self.centroids.detach().cpu().clone()}
        if self.consensus_window:
            st["kept"] = list(self._kept)  # the arrays are never written in place
        return st

    def load_state_dict(self, state: dict, device=None) -> None:
        c = state.get("centroids")
        if c is not None:
            self._set_centroids(c.to(device) if device is not None else c)
        if self.consensus_window:
            self._kept = [np.asarray(k, dtype=np.int16) for k in state.get("kept", [])][-self.consensus_window:]

    def describe(self) -> dict:
        return {"name": self.name, "lam": self.lam, "reconstruction": self.reconstruction, "select": self.select,
                "graph_split": self.graph_split, "merge_split": self.merge_split,
                "consensus_window": self.consensus_window}


class AEKM(Method):
    """Autoencoder + k-means: no finetuning, k-means (k-means++, n_init 10) on the pretrained embeddings."""

    name = "AEKM"
    finetunes = False


class DCN(Method):
    """Deep Clustering Network (Yang et al. 2017): ``rec + lam * ||z - c_{s(z)}||^2`` with hard
    assignments; after each mini-batch the assigned centers move by per-center counts
    (``c_k <- c_k - (1 / n_k)(c_k - z_i)``, applied batch-wise as Sculley's update)."""

    name = "DCN"

    def __init__(self, n_clusters=10, *, lam: float = 1.0, **kw):
        super().__init__(n_clusters, lam=lam, **kw)
        self.counts: torch.Tensor | None = None

    def initialize(self, Z):
        labels = super().initialize(Z)
        self.counts = torch.bincount(labels, minlength=self.n_clusters).to(torch.float64)
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

    def describe(self):
        return {**super().describe()}


class DKM(Method):
    """Deep k-Means (Moradi Fard et al. 2020): ``rec + lam * sum_k ||z - r_k||^2 softmax_k(-alpha ||z - r_k||^2)``
    with the centroids ``r`` trained jointly by the same optimizer.

    ``alpha`` is constant after pretraining (default 1000, DKM's constant setting) or, with
    ``anneal=True``, starts at ``alpha0`` = 0.1 and grows each epoch as ``alpha <- 2^(1/log(n)^2) alpha``
    (DKM's schedule).  ``reinit=True`` is the paper's ablation "DKM with re-initialisation": after each
    epoch the centroids are reset to the k-means centers of the embeddings.
    """

    name = "DKM"

    def __init__(self, n_clusters=10, *, lam: float = 1.0, alpha: float = 1000.0, anneal: bool = False,
                 alpha0: float = 0.1, reinit: bool = False, **kw):
        super().__init__(n_clusters, lam=lam, **kw)
        self.alpha = float(alpha0 if anneal else alpha)
        self.anneal = bool(anneal)
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
        if self.allreduce is not None and self._param.grad is not None:
            self.allreduce(self._param.grad)
            self._param.grad /= self._world_size()

    def _world_size(self) -> int:
        import torch.distributed as dist

        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    def end_epoch(self, Z, epoch):
        if self.anneal:
            n = epoch + 2
            self.alpha *= 2.0 ** (1.0 / math.log(n) ** 2)
        if self.reinit:
            c, labels = self._kmeans(Z, epoch, n_init=self.n_init, random_state=self.seed * 10_007 + epoch + 1)
            if self.broadcast is not None:
                self.broadcast(c)
            self._set_centroids(c)
            return labels if self.broadcast is None else None
        return None

    def membership(self):
        return get_membership("softmax", alpha=self.alpha)

    def state_dict(self):
        d = super().state_dict()
        d["alpha"] = self.alpha
        return d

    def load_state_dict(self, state, device=None):
        super().load_state_dict(state, device)
        self.alpha = float(state.get("alpha", self.alpha))

    def describe(self):
        return {**super().describe(), "alpha": self.alpha, "anneal": self.anneal, "reinit": self.reinit}


class CT(Method):
    """The paper's method (Roy, ICPR 2024): ``rec + lam * CT`` with the centroids frozen during each
    epoch, then re-initialised by classical k-means on the embeddings of the whole data set.

    CT is our reconstruction of the paper's lost equations 10-11 (see :mod:`kmeans_dist.deep.losses`):
    ``G_ik = softmax_k(-alpha d_ik)``, ``d_ik = ||h(x_i) - mu_k||^2``, ``CT = mean_i sum_k d_ik G_ik``;
    alpha = 3, lambda = 10 on MNIST (Table 4).  ``membership`` is pluggable: "softmax" (``alpha``),
    "fcm" (fuzzy c-means memberships, fuzzifier ``m``), "student" (``nu``), or a callable on ``d``.
    ``reinit=False`` is the ablation "CT without re-initialisation" (centroids stay at the initial
    k-means centers).  ``reinit_n_init`` (default ``n_init``) is the number of k-means++ restarts of each
    re-initialisation; the paper does not say, and with 1 ("CT-reinit1") each epoch's k-means is one
    k-means++/Lloyd run, which need not be the lowest-inertia partition.  ``select`` (any method) says which
    restart each k-means keeps: ``"inertia"`` (classical k-means, the default) or ``"balanced"`` (the most even
    cluster sizes, ``CT-bal``; see :func:`reinit_centroids`).  ``reinit_warm=True`` adds the current centroids
    as one more candidate of each re-initialisation (Lloyd from them, ranked by the same rule; ``CT-bal-warm``):
    the re-initialisation then never keeps a partition that ranks below where Lloyd takes the previous one,
    which stops the one-epoch flips of ``CT-bal`` to a merged partition.  ``select="graph"`` (``CT-graph-warm``)
    ranks the nearly balanced candidates by their normalised cut of a neighbour graph of the embeddings, and
    ``graph_split=True`` (``CT-graph-split``) also offers the partition with the densest boundary re-split along
    that graph (:func:`graph_split`), whose centers the next epoch's CT loss then pulls towards;
    ``merge_split=True`` (``CT-graph-msplit``) also offers that pair merged and another cluster bisected along the
    graph (:func:`graph_merge_splits`).  Not in the paper.
    """

    name = "CT"

    def __init__(self, n_clusters=10, *, lam: float = 10.0, alpha: float = 3.0, membership="softmax",
                 m: float = 2.0, nu: float = 1.0, reinit: bool = True, detach_membership: bool = False,
                 reinit_n_init: int | None = None, reinit_warm: bool = False, **kw):
        super().__init__(n_clusters, lam=lam, **kw)
        self.alpha = float(alpha)
        self.reinit_warm = bool(reinit_warm)
        self.reinit_n_init = self.n_init if reinit_n_init is None else int(reinit_n_init)
        self.membership_name = membership if isinstance(membership, str) else getattr(membership, "__name__", "custom")
        if callable(membership):
            self._membership = membership
        elif membership == "softmax":
            self._membership = get_membership("softmax", alpha=self.alpha)
        elif membership == "fcm":
            self._membership = get_membership("fcm", m=m)
        elif membership == "student":
            self._membership = get_membership("student", nu=nu)
        else:
            raise ValueError(f"unknown membership {membership!r}")
        self.m, self.nu = float(m), float(nu)
        self.reinit = bool(reinit)
        self.detach_membership = bool(detach_membership)
        if not reinit:
            self.name = "CT-noreinit"
        elif self.membership_name == "fcm":
            self.name = "CT-fcm"
        elif self.reconstruction == "mean":
            self.name = "CT-mse"
        elif self.reinit_n_init != self.n_init:
            self.name = f"CT-reinit{self.reinit_n_init}"

    def batch_loss(self, z):
        return ct_loss(z, self.centroids, self._membership, detach_membership=self.detach_membership)

    def end_epoch(self, Z, epoch):
        if not self.reinit:
            return None
        c, labels = self._kmeans(Z, epoch, n_init=self.reinit_n_init, random_state=self.seed * 10_007 + epoch + 1,
                                 warm_start=self.centroids if self.reinit_warm else None)
        if self.broadcast is not None:
            self.broadcast(c)
            labels = None
        self._set_centroids(c)
        return labels

    def membership(self):
        return self._membership

    def describe(self):
        return {**super().describe(), "alpha": self.alpha, "membership": self.membership_name,
                "m": self.m, "reinit": self.reinit, "reinit_n_init": self.reinit_n_init, "reinit_warm": self.reinit_warm}


METHODS = {
    "AEKM": lambda k, **kw: AEKM(k, **kw),
    "DCN": lambda k, **kw: DCN(k, **kw),
    "DKM": lambda k, **kw: DKM(k, **kw),
    "DKM-anneal": lambda k, **kw: DKM(k, anneal=True, **kw),
    "DKM+reinit": lambda k, **kw: DKM(k, reinit=True, **kw),
    "CT": lambda k, **kw: CT(k, **kw),
    "CT-fcm": lambda k, **kw: CT(k, membership="fcm", **kw),
    "CT-noreinit": lambda k, **kw: CT(k, reinit=False, **kw),
    "CT-mse": lambda k, **kw: CT(k, reconstruction="mean", **kw),
    "CT-reinit1": lambda k, **kw: CT(k, reinit_n_init=1, **kw),
    "AEKM-bal": lambda k, **kw: _named(AEKM(k, select="balanced", **kw), "AEKM-bal"),
    "CT-bal": lambda k, **kw: _named(CT(k, select="balanced", **kw), "CT-bal"),
    "CT-bal-warm": lambda k, **kw: _named(CT(k, select="balanced", reinit_warm=True, **kw), "CT-bal-warm"),
    "CT-bal-warm-cons": lambda k, **kw: _named(CT(k, select="balanced", reinit_warm=True,
                                                  **{"consensus_window": 50, **kw}), "CT-bal-warm-cons"),
    "CT-graph-warm": lambda k, **kw: _named(CT(k, select="graph", reinit_warm=True, **kw), "CT-graph-warm"),
    "CT-graph-split": lambda k, **kw: _named(CT(k, select="graph", graph_split=True, reinit_warm=True, **kw),
                                             "CT-graph-split"),
    "CT-graph-msplit": lambda k, **kw: _named(CT(k, select="graph", graph_split=True, merge_split=True,
                                                 reinit_warm=True, **kw), "CT-graph-msplit"),
}


def _named(method: Method, name: str) -> Method:
    method.name = name
    return method


def make_method(name: str, n_clusters: int = 10, **kw) -> Method:
    """A method by name: AEKM, DCN, DKM, DKM-anneal, DKM+reinit, CT, CT-fcm, CT-mse, CT-noreinit, CT-reinit1,
    AEKM-bal, CT-bal (``select="balanced"``: each k-means on the embeddings keeps its most balanced restart),
    CT-bal-warm (CT-bal with the previous centroids as one more candidate of each re-initialisation),
    CT-bal-warm-cons (CT-bal-warm whose final partition is the last epoch's candidate that agrees best with the
    partitions kept over the previous 50 epochs: :meth:`Method.finalize`), CT-graph-warm (CT-bal-warm with
    ``select="graph"``: of the nearly balanced candidates, the one that cuts the fewest neighbour edges),
    CT-graph-split (CT-graph-warm whose k-means also offers :func:`graph_split` of its choice: the pair of clusters
    with the densest boundary re-split along the neighbour graph), CT-graph-msplit (CT-graph-split whose k-means
    also offers :func:`graph_merge_splits` of its choice: that pair merged and another cluster bisected)."""
    try:
        return METHODS[name](n_clusters, **kw)
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}") from None


# --------------------------------------------------------------------------------------------------
# the whole finetuning loop in one process
# --------------------------------------------------------------------------------------------------

def fit_method(model: Autoencoder, X: torch.Tensor, method: Method, *, y=None, epochs: int = 100,
               batch_size: int = 256, lr: float = 1e-3, seed: int = 0, snapshot_epochs=(),
               snapshot_size: int = 2000, callback: Callable[[dict], None] | None = None, device=None,
               checkpoint: Callable[[dict], None] | None = None, resume: dict | None = None) -> dict:
    """Finetune a pretrained ``model`` with ``method`` for ``epochs`` epochs (0 for AEKM).

    Returns ``{"history": [per-epoch dicts], "labels": final labels (NumPy), "centroids", "max_membership_before",
    "max_membership_after", "snapshots": {epoch: (Z_sample, labels_sample)}, "sample_index"}``.
    Epoch 0 in the history is the state after pretraining and the initial k-means.

    ``checkpoint(state)`` is called after every epoch with everything needed to continue (model, optimizer,
    method state, history, ...); passing that ``state`` back as ``resume`` continues from it, with the same
    batches as an uninterrupted run.
    """
    from .evaluate import clustering_scores

    y_np = None if y is None else np.asarray(y)
    rs = np.random.default_rng(seed)
    sample = np.sort(rs.choice(X.shape[0], size=min(snapshot_size, X.shape[0]), replace=False))

    def record(ep, Z, labels, train_m, t_train, t_end):
        lab = labels.cpu().numpy()
        m = {"epoch": ep, "method": method.name, "phase": "finetune" if ep else "init",
             "rec_loss": train_m.get("rec_loss"), "clu_loss": train_m.get("clu_loss"),
             "train_seconds": t_train, "end_epoch_seconds": t_end, "kmeans_inertia": method.kmeans_inertia_at(ep),
             "size_entropy": size_entropy(labels, method.n_clusters)}
        if y_np is not None:
            m.update(clustering_scores(y_np, lab))
        cands = kmeans_candidate_scores(method, ep, y_np)
        if cands is not None:
            m["kmeans_candidates"] = cands
        if ep in snapshot_epochs or ep == 0:
            snapshots[ep] = (Z[sample].cpu().numpy(), lab[sample])
        return m

    if resume is None:
        Z = embed(model, X)
        labels = method.initialize(Z)
        snapshots = {}
        before = max_membership(Z, method.centroids, method.membership())
        hist = [record(0, Z, labels, {}, 0.0, 0.0)]
        start = 0
        if callback:
            callback(hist[-1])
    else:
        model.load_state_dict(resume["model"])
        method.load_state_dict(resume["method"])
        hist, snapshots, before = list(resume["history"]), dict(resume["snapshots"]), resume["before"]
        start = int(resume["epoch"])
        Z = labels = None
    n_ep = epochs if method.finetunes else 0
    if n_ep and start < n_ep:
        params = list(model.parameters()) + method.parameters()
        opt = torch.optim.Adam(params, lr=lr)
        if resume is not None and resume.get("optimizer") is not None:
            opt.load_state_dict(resume["optimizer"])
        loader = BatchLoader(X, batch_size, seed=seed + 1)
        for ep in range(start + 1, n_ep + 1):
            loader.set_epoch(ep)
            t0 = time.perf_counter()
            tm = train_epoch(model, opt, loader, method, device=device)
            t1 = time.perf_counter()
            Z = embed(model, X)
            labels = method.end_epoch(Z, ep)
            if ep == n_ep:  # the last epoch: a method may choose its output partition differently (finalize)
                final = method.finalize()
                labels = labels if final is None else final
            if labels is None:
                labels = method.predict(Z)
            t2 = time.perf_counter()
            hist.append(record(ep, Z, labels, tm, t1 - t0, t2 - t1))
            if callback:
                callback(hist[-1])
            if checkpoint:
                checkpoint({"epoch": ep, "model": {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()},
                            "optimizer": copy.deepcopy(opt.state_dict()), "method": method.state_dict(), "history": list(hist),
                            "snapshots": dict(snapshots), "before": before})
    if Z is None:
        Z = embed(model, X)
        labels = method.predict(Z)
    after = max_membership(Z, method.centroids, method.membership())
    return {"history": hist, "labels": labels.cpu().numpy(), "centroids": method.centroids.detach().cpu().numpy(),
            "max_membership_before": before, "max_membership_after": after, "snapshots": snapshots,
            "sample_index": sample}
