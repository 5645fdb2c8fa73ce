"""The fixed reduction tree shared by every chunked pass, exactly as ``dask.array.reduction`` builds it."""
from __future__ import annotations

import math

__all__ = ["tree_combine", "tree_depth", "tree_subtrees", "tree_root"]


def tree_combine(parts: list, combine, split_every: int = 8):
    """Reduce ``parts`` with ``combine`` as a tree, exactly as ``dask.array.reduction`` does.

    Consecutive groups of ``split_every`` partials are combined level by level, so the same
    partials in the same order always give bit-identical results whether the tree runs on the
    client or inside a Dask graph.
    """
    n = len(parts)
    s = max(int(split_every), 2)
    for _ in range(tree_depth(n, s) - 1):
        parts = [combine(parts[i:i + s]) for i in range(0, len(parts), s)]
    return combine(parts)


def tree_depth(n: int, s: int) -> int:
    depth = 1
    if n > 1:
        depth = int(max(depth, math.ceil(math.log(n, s))))
    return depth


def tree_subtrees(nodes: dict, n: int, combine, split_every: int = 8) -> dict:
    """Evaluate every node of :func:`tree_combine`'s tree whose leaves are all known.

    ``nodes`` maps ``(level, j)`` to a value: ``(0, i)`` is the partial of block ``i`` of ``n``,
    ``(L, j)`` the combine of the ``split_every`` consecutive nodes ``(L-1, j*s) ...`` below it.
    Returns the maximal evaluated nodes (their children dropped).  A Dask worker applies it to the
    blocks it holds, so only a few partials travel; the client applies it to the union of what the
    workers sent and then :func:`tree_root`.  Every node is computed from the same children in the same
    order as in :func:`tree_combine`, so the result is bit-identical to it.
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
    """Finish :func:`tree_combine` from known nodes (see :func:`tree_subtrees`)."""
    s = max(int(split_every), 2)
    nodes = tree_subtrees(nodes, n, combine, s)
    top = tree_depth(n, s) - 1
    return combine([nodes[(top, j)] for j in range(-(-n // s ** top))])
