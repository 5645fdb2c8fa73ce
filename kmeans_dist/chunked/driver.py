"""Chunked drivers: map a per-block kernel over the row blocks of X and reduce the partials.

The data is cut into *canonical blocks* of ``block_rows`` rows, aligned at row 0 and independent of
how the input happened to be chunked.  Every pass maps a kernel over the blocks and combines their
partials with :func:`kmeans_dist.kernels.tree_combine` in block order (a ``split_every``-ary tree, the
same tree ``dask.array.reduction`` builds).  Therefore results are bit-identical whatever the input
chunking, the number of workers, or where the data lives.

Three transports share that contract:

- :class:`LocalBlocks`: blocks in this process (NumPy or CuPy); no scheduler at all.
- :class:`DaskBlocks`: blocks persisted in the memory of Dask workers; one pass = one call per worker
  (each runs the kernel over the blocks it holds and combines the complete subtrees) = one round trip:
  a call on a per-worker actor (client -> worker -> client), or one task per worker when actors fail.
- :class:`StreamBlocks`: data too large for worker memory; each pass is a Dask graph that reads the
  blocks from the store, maps the kernel and reduces the partials as a tree inside the graph.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernels import tree_combine, tree_root, tree_subtrees

__all__ = ["make_blocks", "LocalBlocks", "DaskBlocks", "StreamBlocks", "resolve_block_rows", "get_client",
           "canonical_rows", "row_blocks", "delayed_tree", "compute"]

BLOCK_BYTES = 8 * 2**20


def resolve_block_rows(n: int, d: int, itemsize: int, block_rows="auto") -> int:
    """Rows per canonical block of an ``(n, d)`` array.

    Parameters
    ----------
    n, d : int
        Shape of the array.
    itemsize : int
        Bytes per element.
    block_rows : "auto" or int, default="auto"
        ``"auto"``: about 8 MiB per block (at least 1024 rows); an int is used as is.

    Returns
    -------
    int
        Between 1 and ``n``.

    Examples
    --------
    >>> from kmeans_dist.chunked import resolve_block_rows
    >>> resolve_block_rows(1_000_000, 32, 8), resolve_block_rows(100, 32, 8)
    (32768, 100)
    """
    if block_rows in (None, "auto"):
        rows = max(1024, BLOCK_BYTES // max(1, d * itemsize))  # about 8 MiB per block
    else:
        rows = int(block_rows)
    return int(max(1, min(rows, n)))


def canonical_rows(n: int, d: int, itemsize: int) -> int:
    """Rows per canonical block of an ``(n, d)`` array: a function of its shape and dtype alone."""
    return resolve_block_rows(n, d, itemsize, "auto")


def row_blocks(a, rows: int) -> list:
    """The row blocks of dask array ``a`` (1-D or 2-D) cut at multiples of ``rows``, as Delayed objects.

    Re-chunking first makes the blocks, and so every partial and the reduction tree over them, the same
    whatever the input's chunking.
    """
    a = a.rechunk({0: rows}) if a.ndim == 1 else a.rechunk({0: rows, 1: -1})
    d = a.to_delayed()
    return list(d[:, 0]) if a.ndim == 2 else list(d)


def delayed_tree(parts: list, combine, split_every: int = 8):
    """:func:`kmeans_dist.kernels.tree_combine` over Delayed partials: the same tree, inside a Dask graph."""
    from dask import delayed

    return tree_combine(list(parts), delayed(combine, pure=True), split_every)


def compute(*objs, client=None):
    """Compute Dask objects on ``client`` (or the active Dask client, else Dask's default scheduler)."""
    client = get_client(client)
    if client is not None:
        return tuple(client.gather(client.compute(list(objs))))
    import dask

    return dask.compute(*objs)


def get_client(client=None):
    """The given client, else the current default distributed client, else None (``False``: None)."""
    if client is False:
        return None
    if client is not None:
        return client
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------
# per-block helpers (run on workers)
# ------------------------------------------------------------------------------------------------

@dataclass
class Block:
    X: object
    w: object
    offset: int
    index: int


def _make_block(x, w, offset, index):
    return Block(x, w, offset, index)


def _apply(fn, block, args, kwargs):
    return fn(block.X, block.w, block.offset, *args, **kwargs)


def _apply_group(fn, blocks, args, kwargs):
    return [fn(b.X, b.w, b.offset, *args, **kwargs) for b in blocks]


def _apply_group_reduce(fn, combine, blocks, n, split_every, args, kwargs):
    """Map ``fn`` over a worker's blocks and combine the complete subtrees of the reduction tree
    there; returned pickled, one frame (many small arrays cost more to send one by one)."""
    import pickle

    parts = {(0, b.index): fn(b.X, b.w, b.offset, *args, **kwargs) for b in blocks}
    return pickle.dumps(tree_subtrees(parts, n, combine, split_every), protocol=5)


class _BlockHost:
    """A Dask actor on one worker, holding (references to) the blocks that worker keeps in memory.

    A call on it goes from the client straight to the worker and back: no task is created, so the
    scheduler is not involved.  On this project's machines one pass over two workers costs about 7 ms
    of round trip this way, against about 22 ms for ``client.map`` + ``gather``.
    """

    def __init__(self, blocks):
        self.blocks = list(blocks)

    def map_reduce(self, fn, combine, n, split_every, args, kwargs):
        return _apply_group_reduce(fn, combine, self.blocks, n, split_every, args, kwargs)


def _apply_state(fn, block, state, args, kwargs):
    prev = None if state is None else state[0]
    return fn(block.X, block.w, block.offset, prev, *args, **kwargs)


def _second(t):
    return t[1]


def _apply_group_state(fn, blocks, prev, args, kwargs):
    """``fn`` over a worker's blocks with their previous states.  ``prev[j]`` is ``None`` or
    ``(group_result, position)`` of an earlier call (dask resolved the future to its value: on this
    worker when the grouping did not change).  Returns ``(states, results)``, both lists."""
    states, results = [], []
    for b, p in zip(blocks, prev):
        st, res = fn(b.X, b.w, b.offset, None if p is None else p[0][0][p[1]], *args, **kwargs)
        states.append(st)
        results.append(res)
    return states, results


# ------------------------------------------------------------------------------------------------
# transports
# ------------------------------------------------------------------------------------------------

class _Blocks:
    def __init__(self, n: int, d: int, dtype, rows: int, split_every: int):
        self.n_samples = int(n)
        self.n_features = int(d)
        self.dtype = np.dtype(dtype)
        self.block_rows = int(rows)
        self.split_every = int(split_every)
        self.offsets = list(range(0, n, rows))
        self.sizes = [min(rows, n - o) for o in self.offsets]
        self.n_blocks = len(self.offsets)
        self.source_chunks = None  # the input's own row chunks (a store's chunks), for messages that name them

    def map_reduce(self, fn, combine, *args, **kwargs):
        """``combine``-tree over ``fn(X_b, w_b, offset_b, *args)`` of all blocks (block order)."""
        return tree_combine(self.map(fn, *args, **kwargs), combine, self.split_every)

    def block_of(self, row: int) -> int:
        return int(row // self.block_rows)

    def release(self):  # pragma: no cover - overridden
        pass


class LocalBlocks(_Blocks):
    """Blocks held in this process (NumPy or CuPy arrays)."""

    kind = "local"

    def __init__(self, X, w, rows: int, split_every: int = 8):
        super().__init__(X.shape[0], X.shape[1], X.dtype, rows, split_every)
        self.blocks = [Block(X[o:o + s, ...], None if w is None else w[o:o + s], o, i)
                       for i, (o, s) in enumerate(zip(self.offsets, self.sizes))]

    def map(self, fn, *args, **kwargs):
        return [fn(b.X, b.w, b.offset, *args, **kwargs) for b in self.blocks]

    def map_state(self, fn, states, *args, only=None, **kwargs):
        states = states or [None] * self.n_blocks
        out_states, results = list(states), [None] * self.n_blocks
        for i, b in enumerate(self.blocks):
            if only is not None and i not in only:
                continue
            st, res = fn(b.X, b.w, b.offset, states[i], *args, **kwargs)
            out_states[i], results[i] = st, res
        return out_states, results

    def release(self):
        self.blocks = []


class DaskBlocks(_Blocks):
    """Blocks persisted in Dask worker memory; one task (or actor call) per worker per pass.

    ``map_reduce`` (every Lloyd iteration) calls one :class:`_BlockHost` actor per worker, which
    holds that worker's blocks.  If an actor call fails for any reason (a worker lost, an error in
    the kernel), the actors are dropped and that pass, and every later one, runs as tasks
    through the scheduler instead, which recomputes lost blocks; a kernel error is then raised from
    there.  Results are bit-identical either way.  ``use_actors = False`` (class or instance) turns
    the actors off.
    """

    kind = "dask"
    use_actors = True

    def __init__(self, client, Xd, wd, rows: int, split_every: int = 8):
        from dask import delayed

        super().__init__(Xd.shape[0], Xd.shape[1], Xd.dtype, rows, split_every)
        self.client = client
        Xr = Xd.rechunk({0: rows, 1: -1})
        xs = Xr.to_delayed().ravel()
        ws = [None] * len(xs) if wd is None else wd.rechunk({0: rows}).to_delayed().ravel()
        parts = [delayed(_make_block, pure=True)(x, w, o, i)
                 for i, (x, w, o) in enumerate(zip(xs, ws, self.offsets))]
        # contiguous, balanced ranges of blocks per worker (placement is a hint: dask may move them)
        addrs = sorted(_worker_addresses(client))
        if addrs:
            W = len(addrs)
            self.futures = [client.compute(p, workers=[addrs[i * W // len(parts)]], allow_other_workers=True)
                            for i, p in enumerate(parts)]
        else:
            self.futures = client.compute(parts)
        self._groups = None
        self.direct = None  # set with the grouping, see _current_groups
        self._hosts = None  # (grouping, actor futures, actors), see _block_hosts

    def _worker_groups(self):
        """{worker address: [block indices]} from the scheduler; refreshed when workers change."""
        from distributed import wait

        wait(self.futures)
        who = self.client.who_has(self.futures)
        groups: dict[str, list[int]] = {}
        for i, f in enumerate(self.futures):
            addrs = sorted(who.get(f.key, ()))
            addr = addrs[0] if addrs else None
            groups.setdefault(addr, []).append(i)
        return groups

    def _current_groups(self):
        # worker -> blocks grouping; refreshed every 16 passes (a scheduler round trip).  Tasks run where
        # the scheduler puts them (where most of their blocks are): a stale grouping costs speed, never results
        self._n_maps = getattr(self, "_n_maps", 0) + 1
        if self._groups is None or self._n_maps % 16 == 0:
            workers = _worker_addresses(self.client)
            if self._groups is None or any(a is not None and a not in workers for a in self._groups):
                self._groups = self._worker_groups()
            # gather the pass's results straight from the workers when they all run on this host (the client
            # can surely reach them; saves a hop through the scheduler); otherwise dask's setting decides
            self.direct = True if workers and all(_is_local_address(a) for a in workers) else None
        return self._groups

    def _block_hosts(self, groups):
        """One actor per worker, holding the blocks of ``groups``; made again when the grouping changes."""
        if self._hosts is not None and self._hosts[0] is groups:
            return self._hosts[2]
        self._drop_hosts()
        futs = [self.client.submit(_BlockHost, [self.futures[i] for i in idx], actor=True, workers=[addr],
                                   allow_other_workers=False, pure=False)
                for addr, idx in groups.items()]
        self._hosts = (groups, futs, [f.result() for f in futs])
        return self._hosts[2]

    def _drop_hosts(self):
        if self._hosts is not None:
            for f in self._hosts[1]:
                f.release()
            self._hosts = None

    def map_reduce(self, fn, combine, *args, **kwargs):
        """Each worker maps ``fn`` over its blocks and combines the complete subtrees of the tree
        locally; the client finishes the same tree (bit-identical to :func:`tree_combine`)."""
        import pickle

        groups = self._current_groups()
        blobs = None
        if self.use_actors and None not in groups:
            try:
                hosts = self._block_hosts(groups)
                calls = [h.map_reduce(fn, combine, self.n_blocks, self.split_every, args, kwargs) for h in hosts]
                blobs = [c.result() for c in calls]
            except Exception:  # lost worker, kernel error: tasks from now on (see class doc)
                self.use_actors = False
                self._drop_hosts()
                blobs = None
        if blobs is None:
            blobs = self._map_reduce_tasks(list(groups.values()), fn, combine, args, kwargs)
        nodes = {}
        for blob in blobs:
            nodes.update(pickle.loads(blob))
        return tree_root(nodes, self.n_blocks, combine, self.split_every)

    def _map_reduce_tasks(self, groups, fn, combine, args, kwargs):
        # one client.map: a single message to the scheduler for all the tasks (a client sends at most one
        # batch per 10 ms, so one submit per worker could start the last worker's task 10 ms late); the
        # scheduler places each task on the worker that holds its blocks
        G = len(groups)
        futs = self.client.map(_apply_group_reduce, [fn] * G, [combine] * G,
                               [[self.futures[i] for i in idx] for idx in groups], [self.n_blocks] * G,
                               [self.split_every] * G, [args] * G, [kwargs] * G, pure=False)
        return self.client.gather(futs, direct=self.direct)

    def map(self, fn, *args, **kwargs):
        order = list(self._current_groups().values())
        G = len(order)
        futs = self.client.map(_apply_group, [fn] * G, [[self.futures[i] for i in idx] for idx in order],
                               [args] * G, [kwargs] * G, pure=False)
        results = [None] * self.n_blocks
        for idx, res in zip(order, self.client.gather(futs)):
            for i, r in zip(idx, res):
                results[i] = r
        return results

    def map_state(self, fn, states, *args, only=None, **kwargs):
        """Per-block stateful step: ``fn(X, w, offset, state, *args) -> (state, small)``.

        States stay on the workers: one task per worker runs its blocks (of ``only``, default all) and
        keeps their new states; the handle of block i's state is ``(future of that task, position)``.
        Only the small results travel, through one more small task per worker.  A lost worker's states
        are recomputed by dask from the chain of tasks that made them.
        """
        states = states or [None] * self.n_blocks
        idx = set(range(self.n_blocks)) if only is None else set(only)
        groups = [[i for i in g if i in idx] for g in self._current_groups().values()]
        groups = [g for g in groups if g]
        G = len(groups)
        # one message to the scheduler per batch of tasks (see map_reduce); each runs where its blocks are
        futs = self.client.map(_apply_group_state, [fn] * G, [[self.futures[i] for i in g] for g in groups],
                               [[states[i] for i in g] for g in groups], [args] * G, [kwargs] * G, pure=False)
        outs = self.client.map(_second, futs, pure=False)
        new_states = list(states)
        results = [None] * self.n_blocks
        for g, f, res in zip(groups, futs, self.client.gather(outs, direct=self.direct)):
            for pos, (i, r) in enumerate(zip(g, res)):
                new_states[i] = (f, pos)
                results[i] = r
        return new_states, results

    def release(self):
        self._drop_hosts()
        for f in self.futures:
            f.release()
        self.futures = []


class StreamBlocks(_Blocks):
    """Blocks read from the source on every pass (data larger than worker memory)."""

    kind = "stream"

    def __init__(self, Xd, wd, rows: int, split_every: int = 8, client=None):
        super().__init__(Xd.shape[0], Xd.shape[1], Xd.dtype, rows, split_every)
        from dask import delayed

        self.client = client
        xs = row_blocks(Xd, rows)
        ws = [None] * len(xs) if wd is None else row_blocks(wd, rows)
        self.blocks = [delayed(_make_block, pure=True)(x, w, o, i)
                       for i, (x, w, o) in enumerate(zip(xs, ws, self.offsets))]

    def _compute(self, *objs):
        return compute(*objs, client=self.client if self.client is not None else False)

    def map(self, fn, *args, **kwargs):
        from dask import delayed

        tasks = [delayed(_apply, pure=False)(fn, b, args, kwargs) for b in self.blocks]
        return list(self._compute(*tasks))

    def map_reduce(self, fn, combine, *args, **kwargs):
        from dask import delayed

        tasks = [delayed(_apply, pure=False)(fn, b, args, kwargs) for b in self.blocks]
        return self._compute(delayed_tree(tasks, combine, self.split_every))[0]

    def map_state(self, fn, states, *args, only=None, **kwargs):
        from dask import delayed

        states = states or [None] * self.n_blocks
        idx = list(range(self.n_blocks)) if only is None else sorted(only)
        tasks = [delayed(_apply_state, pure=False)(fn, self.blocks[i], (states[i], None), args, kwargs) for i in idx]
        out = self._compute(*tasks)
        new_states, results = list(states), [None] * self.n_blocks
        for i, (st, res) in zip(idx, out):
            new_states[i], results[i] = st, res
        return new_states, results

    def release(self):
        self.blocks = []


def make_blocks(X, sample_weight=None, *, block_rows="auto", split_every: int = 8, client=None,
                persist="auto", worker_memory_fraction: float = 0.5):
    """Choose a transport for X and cut it into canonical blocks.

    Parameters
    ----------
    X : dask array, ndarray or CuPy array of shape (n_samples, n_features)
        Validated 2-D input (see :func:`kmeans_dist.data.as_dask_array`).
    sample_weight : array-like of shape (n_samples,) or None, default=None
        Weight of every row.
    block_rows : "auto" or int, default="auto"
        Rows per canonical block (see :func:`resolve_block_rows`).
    split_every : int, default=8
        Fan-in of the reduction tree.
    client : distributed.Client, None or False, default=None
        None: the active client if any; False: in process.
    persist : "auto" or bool, default="auto"
        ``True`` keeps the blocks in worker memory, ``False`` streams them from the source on every pass,
        ``"auto"`` persists when X takes at most ``worker_memory_fraction`` of the cluster's memory.
    worker_memory_fraction : float, default=0.5
        The threshold of ``"auto"``.

    Returns
    -------
    LocalBlocks, DaskBlocks or StreamBlocks
        The blocks, with ``map``, ``map_reduce(fn, combine, *args)`` and ``map_state``.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.chunked import make_blocks
    >>> from kmeans_dist.kernels import stats_chunk, combine_stats
    >>> blocks = make_blocks(np.arange(8.0).reshape(4, 2), block_rows=3, client=False)
    >>> type(blocks).__name__, blocks.map_reduce(stats_chunk, combine_stats)["n"]
    ('LocalBlocks', 4)
    """
    blocks = _make_blocks(X, sample_weight, block_rows, split_every, client, persist, worker_memory_fraction)
    if hasattr(X, "chunks") and X.chunks and isinstance(X.chunks[0], tuple):
        blocks.source_chunks = tuple(int(c) for c in X.chunks[0])
    return blocks


def _make_blocks(X, sample_weight, block_rows, split_every, client, persist, worker_memory_fraction):
    import dask.array as da

    n, d = X.shape
    rows = resolve_block_rows(n, d, np.dtype(X.dtype).itemsize, block_rows)
    client = get_client(client)
    if not isinstance(X, da.Array):
        if client is None:
            return LocalBlocks(X, sample_weight, rows, split_every)
        X = da.from_array(X, chunks=(rows, d))
        if sample_weight is not None:
            sample_weight = da.from_array(sample_weight, chunks=(rows,))
    elif sample_weight is not None and not isinstance(sample_weight, da.Array):
        sample_weight = da.from_array(np.asarray(sample_weight), chunks=(rows,))
    nbytes = X.nbytes
    if client is None:
        if persist is True or (persist == "auto" and nbytes <= 2 * 2**30):
            import dask

            Xm = X.compute()
            wm = None if sample_weight is None else np.asarray(dask.compute(sample_weight)[0])
            return LocalBlocks(Xm, wm, rows, split_every)
        return StreamBlocks(X, sample_weight, rows, split_every)
    if persist == "auto":
        mem = sum(w.get("memory_limit", 0) or 0 for w in _scheduler_info(client)["workers"].values())
        persist = mem == 0 or nbytes <= worker_memory_fraction * mem
    if persist:
        return DaskBlocks(client, X, sample_weight, rows, split_every)
    return StreamBlocks(X, sample_weight, rows, split_every, client=client)


def _scheduler_info(client):
    import inspect

    try:
        if "n_workers" in inspect.signature(client.scheduler_info).parameters:
            return client.scheduler_info(n_workers=-1)
    except (TypeError, ValueError):  # pragma: no cover
        pass
    return client.scheduler_info()


def _is_local_address(addr: str) -> bool:
    from urllib.parse import urlsplit

    if addr.startswith("inproc://"):
        return True
    host = urlsplit(addr).hostname or ""
    return host in ("127.0.0.1", "localhost", "::1")


def _worker_addresses(client) -> set:
    return set(_scheduler_info(client)["workers"])
