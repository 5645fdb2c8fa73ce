"""Bisecting k-means over the blocks of :mod:`kmeans_dist.chunked.driver` (the private computation).

The tree is grown as scikit-learn's ``BisectingKMeans`` grows it: start from one cluster, then
``n_clusters - 1`` times pick a leaf (the largest inertia, or the most rows) and split it in two with
2-means, ``n_init`` tries, the lowest inertia kept.  The rows never leave their blocks:

- every row's leaf (a node id, int32) is per-block state kept next to the block (``map_state``);
- the seeding of the ``n_init`` tries of a bisection draws one uniform sample of the leaf's rows (all of
  them when the leaf has at most ``sample_size`` rows), fetched in one round trip: ranks among the leaf's
  rows are drawn on the client from the per-block row counts of the leaf, so the sample does not depend on
  the chunking;
- one pass over the blocks is one Lloyd iteration of **every** try of the bisection at once: each block
  returns the 2-means partials (sums, weights, counts, inertia) of all tries for its rows of that leaf,
  combined in block order by the fixed tree of :func:`kmeans_dist.kernels.tree_combine`;
- one more pass scores the tries (when there are several) and one relabels the leaf's rows to the two
  children.

Nodes are numbered in creation order (the root is 0, the children of a split are consecutive), so a
parent always has a lower id than its children; the final labels are the leaves in depth-first order,
left child first, as scikit-learn's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..kernels import assign_labels, kmeans_plusplus, lloyd_partial, tree_combine
from ..kernels.distances import exact_sq_dist_to
from ..kernels.xp import get_namespace, to_numpy

__all__ = ["BisectResult", "bisecting_on_blocks", "descend_tree", "SAMPLE_ROWS"]

SAMPLE_ROWS = 100_000  # rows of a leaf the seeding of a bisection sees (all of them in smaller leaves)


@dataclass
class BisectResult:
    """The result of :func:`bisecting_on_blocks`.

    Attributes
    ----------
    centers : ndarray of shape (n_clusters, n_features)
        Leaf centers, in label order (depth-first).
    inertia : float
        Exact inertia of the training rows on their leaves.
    counts, weights : ndarray of shape (n_clusters,)
        Rows and total weight per leaf.
    tree_centers : ndarray of shape (2 * n_clusters - 1, n_features)
        Center of every node (the root's: the mean of X).
    tree_children : ndarray of shape (2 * n_clusters - 1, 2)
        Children of every node (-1 for leaves).
    tree_labels : ndarray of shape (2 * n_clusters - 1,)
        Label of every leaf (-1 for inner nodes).
    n_iter : int
        Lloyd iterations run, over all bisections.
    history : list of dict
        One record per bisection.
    labels : ndarray of shape (n_samples,) or None
        Label of every row, when asked.
    """
    centers: np.ndarray
    inertia: float
    counts: np.ndarray
    weights: np.ndarray
    tree_centers: np.ndarray
    tree_children: np.ndarray
    tree_labels: np.ndarray
    n_iter: int = 0
    history: list = field(default_factory=list)
    labels: np.ndarray | None = None


# ------------------------------------------------------------------------------------------------
# per-block kernels (run where the block is; ``state`` is the block's int32 node id per row, None = root)
# ------------------------------------------------------------------------------------------------

def _nodes(X, state):
    return np.zeros(X.shape[0], dtype=np.int32) if state is None else state


def _rows_of(X, w, state, node):
    xp = get_namespace(X)
    idx = np.flatnonzero(_nodes(X, state) == node)
    Xm = xp.take(X, xp.asarray(idx), axis=0)
    wm = None if w is None else xp.take(w, xp.asarray(idx), axis=0)
    return idx, Xm, wm


def _fetch_chunk(X, w, offset, state, node, ranks_by_offset):
    """Rows of leaf ``node`` at the given local ranks (0-based among this block's rows of the leaf)."""
    ranks = ranks_by_offset.get(int(offset))
    if ranks is None:
        return state, None
    xp = get_namespace(X)
    idx = np.flatnonzero(_nodes(X, state) == node)[np.asarray(ranks, dtype=np.int64)]
    xs = to_numpy(xp.take(X, xp.asarray(idx), axis=0))
    ws = None if w is None else np.asarray(to_numpy(xp.take(w, xp.asarray(idx), axis=0)), dtype=np.float64)
    return state, (xs, ws)


def _step_chunk(X, w, offset, state, node, C):
    """2-means partials of every try for this block's rows of leaf ``node``; ``C`` is (n_tries, 2, d)."""
    T, _, d = C.shape
    out = {"sum": np.zeros((T, 2, d)), "weight": np.zeros((T, 2)), "count": np.zeros((T, 2), dtype=np.int64),
           "inertia": np.zeros(T)}
    idx, Xm, wm = _rows_of(X, w, state, node)
    if idx.size == 0:
        return state, out
    xp = get_namespace(X)
    for t in range(T):
        p = lloyd_partial(Xm, wm, xp.asarray(np.asarray(C[t], dtype=to_numpy(X[:1, ...]).dtype)), n_far=0)
        out["sum"][t], out["weight"][t], out["count"][t] = p["sum"], p["weight"], p["count"]
        out["inertia"][t] = float(p["inertia"])
    return state, out


def _combine_step(parts):
    out = {k: v.copy() for k, v in parts[0].items()}
    for p in parts[1:]:
        for k in out:
            out[k] += p[k]
    return out


def _split_chunk(X, w, offset, state, node, C2, left, right):
    """Relabel this block's rows of leaf ``node`` to ``left``/``right`` (the nearer of ``C2``)."""
    nodes = _nodes(X, state)
    out = {"count": np.zeros(2, dtype=np.int64), "weight": np.zeros(2), "inertia": np.zeros(2)}
    idx, Xm, wm = _rows_of(X, w, state, node)
    if idx.size == 0:
        return nodes, out
    xp = get_namespace(X)
    C = xp.asarray(np.asarray(C2, dtype=to_numpy(X[:1, ...]).dtype))
    lab, _ = assign_labels(Xm, C)
    d2 = np.asarray(to_numpy(exact_sq_dist_to(Xm, C, lab)), dtype=np.float64)
    lab = np.asarray(to_numpy(lab), dtype=np.int64)
    wv = np.ones(idx.size) if wm is None else np.asarray(to_numpy(wm), dtype=np.float64)
    new = nodes.copy()  # never change a state in place: a worker may still hold it for a recomputation
    new[idx] = np.where(lab == 0, left, right).astype(np.int32)
    out["count"] = np.bincount(lab, minlength=2).astype(np.int64)
    out["weight"] = np.bincount(lab, weights=wv, minlength=2)
    out["inertia"] = np.bincount(lab, weights=wv * d2, minlength=2)
    return new, out


def _final_chunk(X, w, offset, state, node_label, centers, want_labels):
    xp = get_namespace(X)
    lab = np.asarray(node_label)[_nodes(X, state)].astype(np.int64)
    C = xp.asarray(np.asarray(centers, dtype=to_numpy(X[:1, ...]).dtype))
    d2 = np.asarray(to_numpy(exact_sq_dist_to(X, C, xp.asarray(lab))), dtype=np.float64)
    wv = np.ones(lab.size) if w is None else np.asarray(to_numpy(w), dtype=np.float64)
    k = centers.shape[0]
    out = {"inertia": float((wv * d2).sum()), "count": np.bincount(lab, minlength=k).astype(np.int64),
           "weight": np.bincount(lab, weights=wv, minlength=k)}
    if want_labels:
        out["labels"] = lab
    return state, out


def _combine_final(parts):
    out = {"inertia": parts[0]["inertia"], "count": parts[0]["count"].copy(), "weight": parts[0]["weight"].copy()}
    for p in parts[1:]:
        out["inertia"] += p["inertia"]
        out["count"] += p["count"]
        out["weight"] += p["weight"]
    if "labels" in parts[0]:
        out["labels"] = np.concatenate([p["labels"] for p in parts])
    return out


def descend_tree(X, tree_centers, tree_children, tree_labels):
    """Label of every row of an in-memory block by descending the tree (the nearer child at every node).

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
        Rows (NumPy or CuPy).
    tree_centers : ndarray of shape (n_nodes, n_features)
        Center of every node.
    tree_children : ndarray of shape (n_nodes, 2)
        Children of every node (-1 for leaves); parents have lower ids than their children.
    tree_labels : ndarray of shape (n_nodes,)
        Label of every leaf.

    Returns
    -------
    labels : ndarray of shape (n_rows,)
        int64 labels (host NumPy).
    min_sq_dist : ndarray of shape (n_rows,)
        Squared distance to the leaf's center (float64).
    """
    xp = get_namespace(X)
    n = X.shape[0]
    node = np.zeros(n, dtype=np.int64)
    dtype = to_numpy(X[:1, ...]).dtype if n else np.float64
    for p in range(tree_children.shape[0]):
        ch = tree_children[p]
        if ch[0] < 0:
            continue
        idx = np.flatnonzero(node == p)
        if idx.size == 0:
            continue
        C = xp.asarray(np.asarray(tree_centers[ch], dtype=dtype))
        lab, _ = assign_labels(xp.take(X, xp.asarray(idx), axis=0), C)
        node[idx] = ch[np.asarray(to_numpy(lab), dtype=np.int64)]
    labels = np.asarray(tree_labels)[node].astype(np.int64)
    leaves = np.flatnonzero(np.asarray(tree_labels) >= 0)
    centers = np.empty((leaves.size, tree_centers.shape[1]), dtype=dtype)
    centers[np.asarray(tree_labels)[leaves]] = tree_centers[leaves]
    d2 = np.asarray(to_numpy(exact_sq_dist_to(X, xp.asarray(centers), xp.asarray(labels))), dtype=np.float64)
    return labels, d2


# ------------------------------------------------------------------------------------------------
# the driver
# ------------------------------------------------------------------------------------------------

def _sample_leaf(blocks, states, node, counts_by_block, m, rng):
    """``m`` distinct rows of leaf ``node``, drawn uniformly by rank (sorted), with their weights."""
    N = int(counts_by_block.sum())
    ranks = np.sort(rng.choice(N, size=m, replace=False))
    cum = np.concatenate([[0], np.cumsum(counts_by_block)])
    b_of = np.searchsorted(cum, ranks, side="right") - 1
    by_offset = {int(blocks.offsets[b]): ranks[b_of == b] - cum[b] for b in np.unique(b_of)}
    _, res = blocks.map_state(_fetch_chunk, states, node, by_offset, only={int(b) for b in np.unique(b_of)})
    got = [r for r in res if r is not None]
    S = np.concatenate([g[0] for g in got])
    sw = None if got[0][1] is None else np.concatenate([g[1] for g in got])
    return S, sw


def _seed_tries(S, sw, init, n_init, rng):
    m = S.shape[0]
    tries = []
    for _ in range(n_init):
        if init == "k-means++" and m >= 2:
            C, _ = kmeans_plusplus(S, 2, rng, sample_weight=sw)
            C = np.asarray(to_numpy(C))
        else:
            p = None if sw is None or sw.sum() <= 0 else sw / sw.sum()
            if p is not None and np.count_nonzero(p) < 2:
                p = None
            idx = rng.choice(m, size=2, replace=m < 2, p=p)
            C = S[idx]
        tries.append(np.asarray(C, dtype=S.dtype))
    return np.stack(tries)


def _bisect(blocks, states, node, counts_by_block, *, init, n_init, max_iter, tol_abs, rng, sample_size):
    N = int(counts_by_block.sum())
    S, sw = _sample_leaf(blocks, states, node, counts_by_block, min(N, sample_size), rng)
    C = _seed_tries(S, sw, init, n_init, rng)
    only = {i for i, c in enumerate(counts_by_block) if c > 0}
    done = np.zeros(n_init, dtype=bool)
    n_iter = 0

    def one_pass(C):
        _, res = blocks.map_state(_step_chunk, states, node, C, only=only)
        return tree_combine([res[i] for i in sorted(only)], _combine_step, blocks.split_every)

    for _ in range(max_iter):
        part = one_pass(C)
        n_iter += 1
        W = part["weight"][..., None]
        new = np.where(W > 0, part["sum"] / np.where(W > 0, W, 1.0), C).astype(C.dtype)
        new[done] = C[done]  # a converged try keeps its centers (scikit-learn runs every try on its own)
        shift = ((new.astype(np.float64) - C.astype(np.float64)) ** 2).sum(axis=(1, 2))
        C = new
        done |= shift <= tol_abs
        if done.all():
            break
    best = 0 if n_init == 1 else int(np.argmin(one_pass(C)["inertia"]))
    return C[best], n_iter


def bisecting_on_blocks(blocks, n_clusters, *, init="random", n_init=1, strategy="biggest_inertia",
                        max_iter=300, tol_abs=0.0, random_state=0, root_center=None, final_labels=False,
                        sample_size=SAMPLE_ROWS, callback=None) -> BisectResult:
    """Bisecting k-means on the blocks (scikit-learn's ``BisectingKMeans``), one pass per Lloyd iteration.

    Parameters
    ----------
    blocks : LocalBlocks, DaskBlocks or StreamBlocks
        The data (validated, finite).
    n_clusters : int
        Number of leaves.
    init : {"random", "k-means++"}, default="random"
        Seeding of every 2-means try, on the sample of the leaf.
    n_init : int, default=1
        Tries per bisection; the lowest inertia is kept.
    strategy : {"biggest_inertia", "largest_cluster"}, default="biggest_inertia"
        Which leaf to split next: the largest weighted sum of squared distances, or the most rows.
    max_iter : int, default=300
        Lloyd iterations per bisection.
    tol_abs : float, default=0.0
        A try stops when its squared center shift is at most this.
    random_state : int, default=0
        Seed of every draw.
    root_center : ndarray of shape (n_features,) or None, default=None
        Center of the root (the mean of X; None: zeros).  It is the only center when ``n_clusters == 1``.
    final_labels : bool, default=False
        Also return every row's label (host NumPy).
    sample_size : int, default=SAMPLE_ROWS
        Rows of a leaf the seeding sees.
    callback : callable or None, default=None
        Called after every bisection with its record (``iteration``, ``node``, ``n_iter``, ``inertia``,
        ``seconds``).

    Returns
    -------
    BisectResult
    """
    k, d = int(n_clusters), blocks.n_features
    n_nodes = 2 * k - 1
    rng = np.random.default_rng(random_state)
    tree_centers = np.zeros((n_nodes, d), dtype=blocks.dtype)
    if root_center is not None:
        tree_centers[0] = root_center
    children = np.full((n_nodes, 2), -1, dtype=np.int64)
    score = np.zeros(n_nodes)
    leaf_inertia = np.zeros(n_nodes)
    counts = {0: np.asarray(blocks.sizes, dtype=np.int64)}
    leaves = [0]  # depth-first order
    states = None
    n_iter, next_id, history = 0, 1, []
    for split in range(k - 1):
        t0 = time.perf_counter()
        target = leaves[int(np.argmax([score[j] for j in leaves]))]  # the first maximum, as scikit-learn
        C2, it = _bisect(blocks, states, target, counts[target], init=init, n_init=n_init, max_iter=max_iter,
                         tol_abs=tol_abs, rng=rng, sample_size=sample_size)
        n_iter += it
        left, right = next_id, next_id + 1
        next_id += 2
        states, res = blocks.map_state(_split_chunk, states, target, C2, left, right)
        part = tree_combine(res, _combine_final_split, blocks.split_every)
        counts[left] = np.asarray([r["count"][0] for r in res], dtype=np.int64)
        counts[right] = np.asarray([r["count"][1] for r in res], dtype=np.int64)
        children[target] = (left, right)
        tree_centers[left], tree_centers[right] = C2[0], C2[1]
        leaf_inertia[left], leaf_inertia[right] = part["inertia"]
        if strategy == "biggest_inertia":
            score[left], score[right] = part["inertia"]
        else:
            score[left], score[right] = part["count"]
        pos = leaves.index(target)
        leaves[pos:pos + 1] = [left, right]
        rec = {"iteration": split + 1, "node": int(target), "n_iter": int(it),
               "inertia": float(sum(leaf_inertia[j] for j in leaves)), "seconds": time.perf_counter() - t0}
        history.append(rec)
        if callback is not None:
            callback(dict(rec))
    n_used = next_id
    tree_labels = np.full(n_used, -1, dtype=np.int64)
    tree_labels[leaves] = np.arange(len(leaves))
    centers = tree_centers[leaves]
    _, res = blocks.map_state(_final_chunk, states, tree_labels, centers, final_labels)
    f = tree_combine(res, _combine_final, blocks.split_every)
    return BisectResult(centers=centers, inertia=float(f["inertia"]), counts=f["count"], weights=f["weight"],
                        tree_centers=tree_centers[:n_used], tree_children=children[:n_used], tree_labels=tree_labels,
                        n_iter=n_iter, history=history, labels=f.get("labels"))


def _combine_final_split(parts):
    out = {k: v.copy() for k, v in parts[0].items()}
    for p in parts[1:]:
        for key in out:
            out[key] += p[key]
    return out
