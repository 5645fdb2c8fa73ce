"""The fixed reduction tree shared by every chunked pass, exactly as ``dask.array.reduction`` builds it."""
from __future__ import annotations

import math

__all__ = ["tree_combine", "tree_depth", "tree_subtrees", "tree_root", "auto_block_rows", "BLOCK_BYTES"]

BLOCK_BYTES = 8 * 2**20  # bytes per canonical block (the leaves of the tree) with block_rows="auto"


def auto_block_rows(n_features: int, itemsize: int) -> int:
    """Rows of a canonical block with ``block_rows="auto"`` (before capping at the number of rows).

    About :data:`BLOCK_BYTES` per block, at least 1024 rows.  Stores written by this package use chunks
    of a whole number of such blocks, so that a streamed pass reads each chunk once, in one task.

    Parameters
    ----------
    n_features : int
        Columns.
    itemsize : int
        Bytes per element.

    Returns
    -------
    int

    Examples
    --------
    >>> from kmeans_dist.kernels.tree import auto_block_rows
    >>> auto_block_rows(32, 8), auto_block_rows(784, 4)
    (32768, 2674)
    """
    return int(max(1024, BLOCK_BYTES // max(1, int(n_features) * int(itemsize))))


def tree_combine(parts: list, combine, split_every: int = 8):
    """Reduce ``parts`` with ``combine`` as a tree, exactly as ``dask.array.reduction`` does.

    Consecutive groups of ``split_every`` partials are combined level by level, so the same partials in
    the same order always give bit-identical results whether the tree runs on the client or inside a
    Dask graph.

    Parameters
    ----------
    parts : list
        Partials, in block order.
    combine : callable
        Takes a list of partials, returns one.
    split_every : int, default=8
        Fan-in of every node (at least 2).

    Returns
    -------
    object
        The root of the tree.

    Examples
    --------
    >>> from kmeans_dist.kernels import tree_combine
    >>> tree_combine(list("abcde"), lambda p: "(" + "".join(p) + ")", split_every=3)
    '((abc)(de))'
    """
    n = len(parts)
    s = max(int(split_every), 2)
    for _ in range(tree_depth(n, s) - 1):
        parts = [combine(parts[i:i + s]) for i in range(0, len(parts), s)]
    return combine(parts)


def tree_depth(n: int, s: int) -> int:
    """Number of levels of the reduction tree over ``n`` leaves with fan-in ``s``.

    Parameters
    ----------
    n : int
        Number of leaves (blocks).
    s : int
        Fan-in.

    Returns
    -------
    int
        At least 1.
    """
    depth = 1
    if n > 1:
        depth = int(max(depth, math.ceil(math.log(n, s))))
    return depth


def tree_subtrees(nodes: dict, n: int, combine, split_every: int = 8) -> dict:
    """Evaluate every node of :func:`tree_combine`'s tree whose leaves are all known.

    A Dask worker applies it to the blocks it holds, so only a few partials travel; the client applies it
    to the union of what the workers sent and then :func:`tree_root`.  Every node is computed from the same
    children in the same order as in :func:`tree_combine`, so the result is bit-identical to it.

    Parameters
    ----------
    nodes : dict
        Maps ``(level, j)`` to a value: ``(0, i)`` is the partial of block ``i`` of ``n``, ``(L, j)`` the
        combine of the ``split_every`` consecutive nodes ``(L-1, j*s) ...`` below it.
    n : int
        Number of blocks of the whole pass.
    combine : callable
        Takes a list of partials, returns one.
    split_every : int, default=8
        Fan-in of every node.

    Returns
    -------
    dict
        The maximal evaluated nodes (their children dropped).

    Examples
    --------
    >>> from kmeans_dist.kernels import tree_combine, tree_root, tree_subtrees
    >>> join = lambda p: "(" + "".join(p) + ")"
    >>> worker_a = tree_subtrees({(0, 0): "a", (0, 1): "b"}, 5, join, 2)
    >>> worker_b = tree_subtrees({(0, 2): "c", (0, 3): "d", (0, 4): "e"}, 5, join, 2)
    >>> tree_root({**worker_a, **worker_b}, 5, join, 2) == tree_combine(list("abcde"), join, 2)
    True
    """
    s = max(int(split_every), 2)
    nodes = dict(nodes)
    depth = tree_depth(n, s)
    for level in range(1, depth):
        below = -(-n // s ** (level - 1))
        for j in range(-(-n // s ** level)):
            if (level, j) in nodes:
                continue
            children = [(level - 1, i) for i in range(j * s, min((j + 1) * s, below))]
            if all(c in nodes for c in children):
                nodes[(level, j)] = combine([nodes.pop(c) for c in children])
    return nodes


def tree_root(nodes: dict, n: int, combine, split_every: int = 8):
    """Finish :func:`tree_combine` from known nodes (see :func:`tree_subtrees`).

    Parameters
    ----------
    nodes : dict
        Evaluated nodes covering all ``n`` leaves.
    n : int
        Number of blocks.
    combine : callable
        Takes a list of partials, returns one.
    split_every : int, default=8
        Fan-in of every node.

    Returns
    -------
    object
        The root, bit-identical to :func:`tree_combine` over the same leaves.
    """
    s = max(int(split_every), 2)
    nodes = tree_subtrees(nodes, n, combine, s)
    top = tree_depth(n, s) - 1
    return combine([nodes[(top, j)] for j in range(-(-n // s ** top))])
