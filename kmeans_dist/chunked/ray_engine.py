"""Ray as a second engine of the chunked driver: canonical blocks held by Ray actors.

:class:`RayBlocks` has the interface of the Dask transport (``map``, ``map_reduce(fn, combine, *args)``,
``map_state``, ``release`` and the block layout attributes) and the same contract: X is cut into the same
canonical blocks of ``block_rows`` rows aligned at row 0, and every pass combines the blocks' partials by
the one fixed ``split_every``-ary tree of :mod:`kmeans_dist.kernels.tree`.  Each actor holds a contiguous
range of blocks; a pass is one call per actor, which maps the kernel over its blocks and combines the
complete subtrees there (:func:`~kmeans_dist.kernels.tree_subtrees`); the driver finishes the tree
(:func:`~kmeans_dist.kernels.tree_root`).  Results are therefore bit-identical to the Dask engine and to
an in-process run.

Where the blocks come from:

- NumPy input: every block is put in the object store once (``ray.put``, owned by the driver); each actor
  fetches its own blocks.
- A dask array whose graph is small (a Zarr store opened by :func:`kmeans_dist.data.open_store`, a path or
  URL): each actor receives the lazy slice of its rows and reads its chunks itself; X never passes
  through the driver.  Other dask arrays (e.g. one wrapping a large in-memory array) are computed one
  block at a time on the driver and put in the object store.

Faults: an actor lost with its node is replaced by a new one (placed by Ray on a live node), which
reloads its blocks (from the store, or from the driver-owned object refs), and the pass is sent again.
(Tested by dropping an actor's blocks and states in process; the loss of a whole node of a multi-node
cluster is not covered by the tests yet.)
States of :meth:`RayBlocks.map_state` live in the actors; a state lost with an actor is recomputed from
its lineage (the driver keeps the calls that made it), so seeding resumes where it was.

This is the only module of the library that imports Ray (lazily, inside functions).
"""
from __future__ import annotations

import itertools
import pickle
import time
import uuid
from collections import OrderedDict

import numpy as np

from ..kernels import tree_root, tree_subtrees

__all__ = ["RayBlocks", "ray_connected", "connect", "shutdown_pool"]

# graphs (pickled) up to this size are sent to the actors, which compute their own rows from them
GRAPH_BYTES = 1 * 2**20
# states kept per block in an actor (older ones are recomputed from their lineage when asked for)
STATES_PER_BLOCK = 4
# passes sent again after an actor or an object was lost
PASS_RETRIES = 5
# seconds a replacement actor may take to load its blocks before it is replaced again
RELOAD_TIMEOUT = 20.0


def ray_connected() -> bool:
    """Whether this process is a Ray driver connected to a cluster (never true inside a Ray worker).

    Returns
    -------
    bool
        False when Ray is not imported or not initialized, or when called inside a Ray task or actor
        (where "auto" must not start actors of its own).
    """
    import sys

    ray = sys.modules.get("ray")
    if ray is None or not getattr(ray, "is_initialized", lambda: False)():
        return False
    try:
        ctx = ray.get_runtime_context()
        return ctx.get_actor_id() is None and ctx.worker.mode == getattr(ray, "SCRIPT_MODE", 0)
    except Exception:  # pragma: no cover - older/newer Ray without these
        return True


def connect(address: str | None = None, **kwargs):
    """Connect this process to a Ray cluster (``ray.init``) unless it is connected already.

    Parameters
    ----------
    address : str or None, default=None
        ``ray://host:10001``, ``host:6379``, ``"auto"`` or None (``RAY_ADDRESS``, else a local Ray).
    **kwargs
        Passed to ``ray.init``.

    Returns
    -------
    bool
        True when this call connected, False when Ray was already initialized.

    Notes
    -----
    A local Ray (no address and no ``RAY_ADDRESS``) is started with every process bound to 127.0.0.1: on
    Linux, Ray 2.60 replaces ``_node_ip_address="127.0.0.1"`` by the host's outward address unless
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which Ray reads when it is imported; it is set here when Ray has
    not been imported yet (:func:`pipelines.ray_local.init_local_ray` does it in any case).
    """
    import os
    import sys

    local = address in (None, "local") and not os.environ.get("RAY_ADDRESS")
    if local and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return False
    if local:
        kwargs = {"_node_ip_address": "127.0.0.1", "include_dashboard": False, **kwargs}
        address = "local"
    ray.init(address=address, **kwargs)
    return True


# ------------------------------------------------------------------------------------------------
# the actor (runs on Ray workers)
# ------------------------------------------------------------------------------------------------

class _Block:
    __slots__ = ("X", "w", "offset", "index")

    def __init__(self, X, w, offset, index):
        self.X, self.w, self.offset, self.index = X, w, offset, index


def _load_blocks(source, indices, offsets, sizes):
    """An actor's blocks from its source: ``("refs", x_refs, w_refs)`` or ``("dask", X, w, start)``."""
    import ray

    if source[0] == "refs":
        _, xr, wr = source
        xs = ray.get(list(xr))
        ws = [None] * len(xs) if wr is None else ray.get(list(wr))
    else:  # lazy slice of this actor's rows: read here, straight from the store
        import dask

        _, Xs, ws_, start = source
        Xa, wa = dask.compute(Xs, ws_, scheduler="synchronous")
        Xa = np.ascontiguousarray(Xa)
        wa = None if wa is None else np.ascontiguousarray(wa)
        xs = [Xa[o - start:o - start + s] for o, s in zip(offsets, sizes)]
        ws = [None if wa is None else wa[o - start:o - start + s] for o, s in zip(offsets, sizes)]
    return [_Block(x, w, o, i) for x, w, o, i in zip(xs, ws, offsets, indices)]


class BlockActor:
    """A Ray actor holding, per loaded data set (a token), a contiguous range of its canonical blocks and
    the per-block states of :meth:`RayBlocks.map_state` (a few versions per block, keyed by the call that
    made them).  Actors are pooled: one set serves every fit of the driver, data sets come and go.

    Every call names its token; an actor that does not hold it (restarted after its node was lost)
    answers None and the driver loads the blocks again.
    """

    def __init__(self):
        self.data = {}

    def load(self, token, source, indices, offsets, sizes):
        blocks = {b.index: b for b in _load_blocks(source, indices, offsets, sizes)}
        self.data[token] = (blocks, {i: OrderedDict() for i in blocks})
        return len(blocks)

    def unload(self, token):
        self.data.pop(token, None)
        return True

    def node_id(self):
        """The Ray node this actor runs on (hex)."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def map_reduce(self, token, fn, combine, n, split_every, args, kwargs):
        if token not in self.data:
            return None
        blocks = self.data[token][0]
        parts = {(0, i): fn(b.X, b.w, b.offset, *args, **kwargs) for i, b in blocks.items()}
        return pickle.dumps(tree_subtrees(parts, n, combine, split_every), protocol=5)

    def map(self, token, fn, args, kwargs):
        if token not in self.data:
            return None
        return pickle.dumps([fn(b.X, b.w, b.offset, *args, **kwargs) for b in self.data[token][0].values()],
                            protocol=5)

    @staticmethod
    def _keep(st, key, state):
        st[key] = state
        st.move_to_end(key)
        while len(st) > STATES_PER_BLOCK:
            st.popitem(last=False)

    def map_state(self, token, fn, items, call_id, args, kwargs):
        """``items``: ``[(block, key of its previous state or None)]``; returns ``("ok", results)`` or
        ``("lost", blocks)`` (nothing run) when a previous state is not here."""
        if token not in self.data:
            return None
        blocks, states = self.data[token]
        lost = [i for i, key in items if key is not None and key not in states[i]]
        if lost:
            return pickle.dumps(("lost", lost), protocol=5)
        out = []
        for i, key in items:
            b = blocks[i]
            st, res = fn(b.X, b.w, b.offset, None if key is None else states[i][key], *args, **kwargs)
            self._keep(states[i], (call_id, i), st)
            out.append(res)
        return pickle.dumps(("ok", out), protocol=5)

    def replay_many(self, token, todo):
        """:meth:`replay` for every ``(block, lineage)`` of ``todo``."""
        if token not in self.data:
            return None
        for i, calls in todo:
            self.replay(token, i, calls)
        return pickle.dumps(True, protocol=5)

    def replay(self, token, i, calls):
        """Recompute block ``i``'s state from its lineage ``[(call_id, fn, args, kwargs), ...]`` (root first)."""
        if token not in self.data:
            return None
        b, st = self.data[token][0][i], self.data[token][1][i]
        start, state = 0, None
        for j in range(len(calls) - 1, -1, -1):  # from the latest state still kept here
            if (calls[j][0], i) in st:
                start, state = j + 1, st[(calls[j][0], i)]
                break
        for call_id, fn, args, kwargs in calls[start:]:
            state, _ = fn(b.X, b.w, b.offset, state, *args, **kwargs)
            self._keep(st, (call_id, i), state)
        return pickle.dumps(True, protocol=5)


_POOL: dict = {"job": None, "actors": {}}


def _actor_pool(n: int, opts: dict) -> list:
    """``n`` pooled actors made with ``opts`` (started once per Ray job, reused by every fit)."""
    import ray

    job = ray.get_runtime_context().get_job_id()
    if _POOL["job"] != job:
        _POOL.update(job=job, actors={})
    key = repr(sorted(opts.items(), key=lambda kv: kv[0]))
    pool = _POOL["actors"].setdefault(key, [])
    cls = ray.remote(BlockActor).options(**opts)
    while len(pool) < n:
        pool.append(cls.remote())
    return pool


def _replace_actor(opts: dict, old):
    """A new actor in place of ``old`` (dead for good) in the pool."""
    import ray

    key = repr(sorted(opts.items(), key=lambda kv: kv[0]))
    pool = _POOL["actors"].get(key, [])
    new = ray.remote(BlockActor).options(**opts).remote()
    for j, a in enumerate(pool):
        if a is old:
            pool[j] = new
    return new


def shutdown_pool():
    """Kill the pooled actors of this driver (they are also gone when the driver disconnects)."""
    import ray

    for pool in _POOL["actors"].values():
        for a in pool:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # pragma: no cover - already gone
                pass
    _POOL.update(job=None, actors={})


# ------------------------------------------------------------------------------------------------
# driver side
# ------------------------------------------------------------------------------------------------

_CALL_IDS = itertools.count()


class _Call:
    __slots__ = ("id", "fn", "args", "kwargs")

    def __init__(self, fn, args, kwargs):
        self.id, self.fn, self.args, self.kwargs = next(_CALL_IDS), fn, args, kwargs


class _StateRef:
    """The handle of one block's state, kept in an actor: the call that made it and the previous handle."""
    __slots__ = ("call", "block", "parent")

    def __init__(self, call, block, parent):
        self.call, self.block, self.parent = call, block, parent

    @property
    def key(self):
        return (self.call.id, self.block)

    def lineage(self):
        calls, h = [], self
        while h is not None:
            calls.append((h.call.id, h.call.fn, h.call.args, h.call.kwargs))
            h = h.parent
        return calls[::-1]


def _small_graph(a) -> bool:
    import cloudpickle

    try:
        return len(cloudpickle.dumps(a)) <= GRAPH_BYTES
    except Exception:
        return False


class RayBlocks:
    """Canonical blocks held in Ray actors; one actor call per actor per pass.

    Parameters
    ----------
    X : ndarray or dask array of shape (n_samples, n_features)
        Validated input; a dask array over a Zarr store is read by the actors themselves.
    w : ndarray, dask array or None
        Weight of every row.
    rows : int
        Rows per canonical block.
    split_every : int, default=8
        Fan-in of the reduction tree.
    n_actors : int or None, default=None
        Number of actors (None: the cluster's CPUs, at most one per block).
    actor_options : dict or None, default=None
        Passed to ``.options()`` of the actor class (default: ``num_cpus=1``, ``SPREAD`` scheduling,
        no Ray-side restarts: a lost actor is replaced by the driver).

    Notes
    -----
    Use it through ``make_blocks(X, engine="ray")`` or ``KMeans(..., engine="ray")``.  The actors are
    pooled per Ray job (:func:`shutdown_pool` ends them) and each reserves ``num_cpus`` CPUs.
    """

    kind = "ray"

    def __init__(self, X, w, rows: int, split_every: int = 8, *, n_actors=None, actor_options=None):
        import ray

        if not ray.is_initialized():
            connect()
        n, d = X.shape
        # the layout of the driver's blocks (see kmeans_dist.chunked.driver): canonical, aligned at row 0
        self.n_samples, self.n_features = int(n), int(d)
        self.dtype = np.dtype(X.dtype)
        self.block_rows, self.split_every = int(rows), int(split_every)
        self.offsets = list(range(0, self.n_samples, self.block_rows))
        self.sizes = [min(self.block_rows, self.n_samples - o) for o in self.offsets]
        self.n_blocks = len(self.offsets)
        self.source_chunks = None
        self.sparse = False
        if n_actors is None:
            n_actors = max(1, int(ray.cluster_resources().get("CPU", 1)))
        A = max(1, min(int(n_actors), self.n_blocks))
        # contiguous, balanced ranges of blocks per actor
        self.groups = [list(range(a * self.n_blocks // A, (a + 1) * self.n_blocks // A)) for a in range(A)]
        self._opts = {"num_cpus": 1, "scheduling_strategy": "SPREAD", "max_restarts": 0, "max_task_retries": 0}
        self._opts.update(actor_options or {})
        self.token = uuid.uuid4().hex
        self._refs = []  # driver-owned block refs (NumPy input): what a restarted actor reloads from
        self._src = self._sources(X, w)
        self.actors = list(_actor_pool(A, self._opts)[:A])
        self._get([self._load(a) for a in range(A)])  # loaded (errors in reading raise here)

    def _load(self, a):
        g = self.groups[a]
        return self.actors[a].load.remote(self.token, self._src[a], g, [self.offsets[i] for i in g],
                                          [self.sizes[i] for i in g])

    def _sources(self, X, w):
        import dask.array as da
        import ray

        w_dask = isinstance(w, da.Array)
        if isinstance(X, da.Array):
            Xr = X.rechunk({0: self.block_rows, 1: -1})
            lo = [self.offsets[g[0]] for g in self.groups]
            hi = [self.offsets[g[-1]] + self.sizes[g[-1]] for g in self.groups]
            if _small_graph(Xr[lo[0]:hi[0]]) and (w is None or not w_dask or _small_graph(w[lo[0]:hi[0]])):
                ws = [None if w is None else w[a:b] for a, b in zip(lo, hi)]
                return [("dask", Xr[a:b], wi, a) for a, b, wi in zip(lo, hi, ws)]
            # a large graph (an in-memory array inside): one block at a time through the driver
            xs = [ray.put(np.ascontiguousarray(Xr.blocks[i].compute())) for i in range(self.n_blocks)]
        else:
            X = np.asarray(X)
            xs = [ray.put(np.ascontiguousarray(X[o:o + s])) for o, s in zip(self.offsets, self.sizes)]
        if w is None:
            ws = None
        else:
            wn = np.asarray(w.compute() if w_dask else w)
            ws = [ray.put(np.ascontiguousarray(wn[o:o + s])) for o, s in zip(self.offsets, self.sizes)]
        self._refs = [xs, ws]
        return [("refs", [xs[i] for i in g], None if ws is None else [ws[i] for i in g]) for g in self.groups]

    # ------------------------------------------------------------------ calls
    def _get(self, refs):
        """``ray.get`` with the kernel's own exception re-raised (not Ray's wrapper)."""
        import ray
        from ray.exceptions import RayTaskError

        try:
            return ray.get(refs)
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise

    def _call(self, method: str, make_args):
        """Call ``method`` on every actor (``make_args(a)`` its arguments after the token, or None to skip
        it) and return the unpickled results by actor.  An actor that lost its blocks (restarted after
        its node was lost) gets them again; one dead for good is replaced; then its call is sent again."""
        from ray.exceptions import ActorDiedError, ActorUnavailableError, ObjectLostError, RayActorError

        lost_errors = (RayActorError, ActorDiedError, ActorUnavailableError, ObjectLostError)
        todo = {a: make_args(a) for a in range(len(self.actors))}
        todo = {a: args for a, args in todo.items() if args is not None}
        out = {}
        for attempt in range(PASS_RETRIES + 1):
            refs = {a: getattr(self.actors[a], method).remote(self.token, *todo[a]) for a in todo if a not in out}
            failed = []
            for a, ref in refs.items():
                try:
                    blob = self._get(ref)
                except lost_errors:
                    if attempt == PASS_RETRIES:
                        raise
                    failed.append((a, True))
                    continue
                if blob is None:  # restarted, empty: load its blocks again
                    failed.append((a, False))
                else:
                    out[a] = pickle.loads(blob)
            if not failed:
                return out
            for a, dead in failed:
                if dead:  # restarts exhausted, or its node gone for good: a new actor
                    self.actors[a] = _replace_actor(self._opts, self.actors[a])
                self._reload(a)
        raise RuntimeError(f"RayBlocks.{method}: actors kept losing their blocks")  # pragma: no cover

    def _reload(self, a):
        """Load actor ``a``'s blocks again; an actor that does not answer within ``RELOAD_TIMEOUT`` (placed
        on a node that was dying) is killed and replaced."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        for attempt in range(PASS_RETRIES + 1):
            try:
                return self._get_timeout(self._load(a), RELOAD_TIMEOUT)
            except (RayActorError, GetTimeoutError):
                if attempt == PASS_RETRIES:
                    raise
                try:
                    ray.kill(self.actors[a], no_restart=True)
                except Exception:  # pragma: no cover - already gone
                    pass
                time.sleep(0.5 * (attempt + 1))
                self.actors[a] = _replace_actor(self._opts, self.actors[a])

    def _get_timeout(self, ref, timeout):
        import ray

        return ray.get(ref, timeout=timeout)

    def map_reduce(self, fn, combine, *args, **kwargs):
        """Each actor maps ``fn`` over its blocks and combines the complete subtrees; the driver finishes
        the same tree (bit-identical to :func:`kmeans_dist.kernels.tree_combine` over all blocks)."""
        res = self._call("map_reduce", lambda a: (fn, combine, self.n_blocks, self.split_every, args, kwargs))
        nodes = {}
        for a in sorted(res):
            nodes.update(res[a])
        return tree_root(nodes, self.n_blocks, combine, self.split_every)

    def map(self, fn, *args, **kwargs):
        """``[fn(X_b, w_b, offset_b, *args) for every block b]``, in block order."""
        res = self._call("map", lambda a: (fn, args, kwargs))
        return [r for a in sorted(res) for r in res[a]]

    def map_state(self, fn, states, *args, only=None, **kwargs):
        """Per-block stateful step ``fn(X, w, offset, state, *args) -> (state, small)``.

        States stay in the actors; the driver gets handles (and the small results).  A handle whose state
        an actor no longer holds (evicted, or the actor was restarted) is recomputed there from its
        lineage, then the call runs.
        """
        states = list(states) if states else [None] * self.n_blocks
        idx = set(range(self.n_blocks)) if only is None else {int(i) for i in only}
        call = _Call(fn, args, kwargs)
        items = {a: [(i, None if states[i] is None else states[i].key) for i in g if i in idx]
                 for a, g in enumerate(self.groups)}
        results = [None] * self.n_blocks
        for _ in range(PASS_RETRIES + 1):
            res = self._call("map_state", lambda a: (fn, items[a], call.id, args, kwargs) if items[a] else None)
            lost = {a: r[1] for a, r in res.items() if r[0] == "lost"}
            for a, bl in lost.items():  # recompute the missing states from their lineage, then call again
                self._call("replay_many", lambda b, a=a, bl=bl: ([(i, states[i].lineage()) for i in bl],)
                           if b == a else None)
            for a, r in res.items():
                if r[0] == "ok":
                    for (i, _), v in zip(items[a], r[1]):
                        results[i] = v
                        states[i] = _StateRef(call, i, states[i])
                    items[a] = []
            if not lost:
                break
        else:  # pragma: no cover - states lost again and again
            raise RuntimeError("map_state: block states kept being lost")
        return states, results

    def block_of(self, row: int) -> int:
        return int(row // self.block_rows)

    def release(self):
        """Drop the blocks from the (pooled) actors and their object refs."""
        import ray

        try:
            ray.get([a.unload.remote(self.token) for a in getattr(self, "actors", [])])
        except Exception:  # pragma: no cover - an actor already gone
            pass
        self.actors, self._refs, self._src = [], [], []
