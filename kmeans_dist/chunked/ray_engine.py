"""Ray as a second engine of the chunked driver: canonical blocks held by Ray actors.

:class:`RayBlocks` has the interface of the Dask transport (``map``, ``map_reduce(fn, combine, *args)``,
``map_state``, ``release`` and the block layout attributes) and the same contract: X is cut into the same
canonical blocks of ``block_rows`` rows aligned at row 0, and every pass combines the blocks' partials by
the one fixed ``split_every``-ary tree of :mod:`kmeans_dist.kernels.tree`.  Each actor holds a contiguous
range of blocks; a pass is one call per actor, which maps the kernel over its blocks and combines the
complete subtrees there (:func:`~kmeans_dist.kernels.tree_subtrees`); the driver finishes the tree
(:func:`~kmeans_dist.kernels.tree_root`).  Results are therefore bit-identical to the Dask engine and to
an in-process run.

Where the blocks come from (an actor may hold several *slots*, contiguous ranges of blocks, each loaded on
its own):

- NumPy input: every block is put in the object store once (``ray.put``, owned by the driver); each actor
  fetches its own blocks.
- A dask array whose graph is small (a Zarr store opened by :func:`kmeans_dist.data.open_store`, a path or
  URL): each actor receives the lazy slice of its rows and reads its chunks itself; X never passes
  through the driver.  Other dask arrays (e.g. one wrapping a large in-memory array) are computed one
  block at a time on the driver and put in the object store.
- A ``ray.data.Dataset`` of numeric columns (:func:`dataset_input`, :class:`RayDatasetInput`): it is
  materialized on the cluster and each actor fetches the dataset blocks (and slices of them) that hold its
  rows, in the dataset's order; the driver reads one row (for the dtypes) and the blocks' metadata.

Faults: when a node dies mid-fit, a call to one of its actors raises one of Ray's actor errors, or, while
it is pending, the driver sees the actor's node dead (``ray.nodes()``, checked every ``POLL_SECONDS``: a
call to an actor of a dead node may otherwise never answer).  The lost actor's slots move to the surviving
actor that holds the fewest slots (a new actor only when none survives: the cluster may have no CPU left
for one, and an actor that cannot be placed within ``PLACE_TIMEOUT`` is given up), they are loaded there
again (re-read from the store, or fetched again from the driver-owned object refs) and the pass is sent
again for them.  The blocks, their order and the reduction tree do not change, so the results are those
of an uninterrupted fit: tested on a ``ray.cluster_utils.Cluster`` of a head and two worker nodes, one
removed in the middle of a fit, for NumPy and Zarr inputs and Hamerly's bounds (tests/test_ray_faults.py).
States of :meth:`RayBlocks.map_state` live in the actors; a state lost with an actor is recomputed from
its lineage (the driver keeps the calls that made it), so seeding resumes where it was.

The actors are pooled per Ray job and keep their CPUs between fits (:func:`shutdown_pool` ends them); a
Dataset still to be executed ends them first, since Ray Data's tasks need CPUs.

This is the only module of the library that imports Ray (lazily, inside functions).
"""
from __future__ import annotations

import itertools
import logging
import pickle
import time
import uuid
from collections import OrderedDict

import numpy as np

from ..kernels import tree_root, tree_subtrees

__all__ = ["RayBlocks", "RayDatasetInput", "dataset_input", "ray_connected", "connect", "shutdown_pool"]

logger = logging.getLogger(__name__)

# graphs (pickled) up to this size are sent to the actors, which compute their own rows from them
GRAPH_BYTES = 1 * 2**20
# states kept per block in an actor (older ones are recomputed from their lineage when asked for)
STATES_PER_BLOCK = 4
# passes sent again after an actor or an object was lost
PASS_RETRIES = 5
# seconds a new actor may take to start (be placed on a node) before its blocks go to another actor
PLACE_TIMEOUT = 20.0
# seconds between two checks, while a pass runs, that the nodes of its actors are alive
POLL_SECONDS = 1.0


def _lost_errors():
    """Ray's errors that mean an actor (or its node) is gone."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, ObjectLostError, RayActorError

    return (RayActorError, ActorDiedError, ActorUnavailableError, ObjectLostError)


def _dead_nodes() -> set:
    """Ids (hex) of the nodes of the cluster that are known dead."""
    import ray

    try:
        return {n["NodeID"] for n in ray.nodes() if not n.get("Alive", True)}
    except Exception:  # the GCS busy: nothing known dead
        return set()


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
    elif source[0] == "dataset":  # the Ray Dataset's blocks (and slices) that hold this actor's rows
        _, pieces, columns, dtype, wa, start = source
        Xa = _dataset_rows(pieces, columns, dtype)
        xs = [Xa[o - start:o - start + s] for o, s in zip(offsets, sizes)]
        ws = [None if wa is None else wa[o - start:o - start + s] for o, s in zip(offsets, sizes)]
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
        """Load (again) the blocks of one slot (``token`` names the data set and the slot); returns the id
        of the node this actor runs on."""
        blocks = {b.index: b for b in _load_blocks(source, indices, offsets, sizes)}
        self.data[token] = (blocks, {i: OrderedDict() for i in blocks})
        return self.node_id()

    def unload(self, token):
        """Drop a data set: the slot ``token``, or every slot ``token:*`` of the data set ``token``."""
        for key in [k for k in self.data if k == token or k.startswith(token + ":")]:
            del self.data[key]
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

    ctx = ray.get_runtime_context()
    # job ids restart with every new cluster: the driver's node names the cluster
    job = (ctx.get_job_id(), ctx.get_node_id())
    if _POOL["job"] != job:
        _POOL.update(job=job, actors={})
    key = repr(sorted(opts.items(), key=lambda kv: kv[0]))
    pool = _POOL["actors"].setdefault(key, [])
    cls = ray.remote(BlockActor).options(**opts)
    while len(pool) < n:
        pool.append(cls.remote())
    return pool


def _new_actor(opts: dict):
    """A new actor added to the pool of ``opts`` (Ray places it on a node with the resources it asks for)."""
    import ray

    key = repr(sorted(opts.items(), key=lambda kv: kv[0]))
    new = ray.remote(BlockActor).options(**opts).remote()
    _POOL["actors"].setdefault(key, []).append(new)
    return new


def _forget_actor(opts: dict, old):
    """Kill ``old`` (lost with its node, or never placed) and take it out of the pool."""
    import ray

    key = repr(sorted(opts.items(), key=lambda kv: kv[0]))
    pool = _POOL["actors"].get(key, [])
    pool[:] = [a for a in pool if a is not old]
    try:
        ray.kill(old, no_restart=True)
    except Exception:  # already gone
        pass


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
        # one slot (a contiguous range of blocks) per actor; a slot moves to another actor when its own is lost
        self.actors = list(_actor_pool(A, self._opts)[:A])
        self._node_of, self._dropped = {}, {}  # id(actor) -> its node (hex); ids of actors given up
        self._load_slots(range(A))  # loaded (errors in reading raise here)

    def _load(self, s):
        g = self.groups[s]
        return self.actors[s].load.remote(self._key(s), self._src[s], g, [self.offsets[i] for i in g],
                                          [self.sizes[i] for i in g])

    def _sources(self, X, w):
        import dask.array as da
        import ray

        w_dask = isinstance(w, da.Array)
        if isinstance(X, RayDatasetInput):
            lo = [self.offsets[g[0]] for g in self.groups]
            hi = [self.offsets[g[-1]] + self.sizes[g[-1]] for g in self.groups]
            wn = None if w is None else np.ascontiguousarray(w.compute() if w_dask else w)
            return [("dataset", X.rows(a, b), X.columns, X.dtype, None if wn is None else wn[a:b], a)
                    for a, b in zip(lo, hi)]
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
            if isinstance(cause, BaseException) and not isinstance(cause, _lost_errors()):
                raise cause from None
            raise

    def _key(self, s):
        """The name of slot ``s``'s blocks in its actor (an actor may hold several slots of a data set)."""
        return f"{self.token}:{s}"

    def _wait(self, refs: dict):
        """Wait for ``{slot: ref}``; return ``(results, lost)``: the results by slot, and the slots whose
        actor is lost.  An actor is lost when a call raises one of Ray's actor errors, or when its node is
        dead while its call is pending (the call is not waited for: nothing answers it)."""
        import ray

        pending, done, lost = dict(refs), {}, set()
        while pending:
            ready, _ = ray.wait(list(pending.values()), num_returns=len(pending), timeout=POLL_SECONDS)
            ready = set(ready)
            for s in [s for s, r in pending.items() if r in ready]:
                ref = pending.pop(s)
                try:
                    done[s] = self._get(ref)
                except _lost_errors():
                    lost.add(s)
            if pending:
                dead = _dead_nodes()
                for s in [s for s in pending if self._node_of.get(id(self.actors[s])) in dead]:
                    del pending[s]
                    lost.add(s)
        return done, lost

    def _drop(self, actor):
        """Forget a lost (or never placed) actor; its slots move to the surviving actor that holds the
        fewest slots, or to a new actor when none survives."""
        if id(actor) in self._dropped:
            return
        self._dropped[id(actor)] = actor  # kept: its id must not name a new actor
        logger.info("RayBlocks: an actor was lost (node %s); its blocks move to another actor",
                    self._node_of.get(id(actor)))
        self._node_of.pop(id(actor), None)
        _forget_actor(self._opts, actor)
        dead = _dead_nodes()
        alive = [a for a in dict.fromkeys(self.actors)
                 if a is not actor and id(a) in self._node_of and self._node_of[id(a)] not in dead]
        for s in [s for s, a in enumerate(self.actors) if a is actor]:
            if alive:
                load = {id(a): 0 for a in alive}
                for a in self.actors:
                    if id(a) in load:
                        load[id(a)] += 1
                self.actors[s] = min(alive, key=lambda a: load[id(a)])
            else:
                self.actors[s] = _new_actor(self._opts)
                alive = [self.actors[s]]
                self._node_of.pop(id(self.actors[s]), None)

    def _place(self, slots):
        """Make sure every slot of ``slots`` has an actor that runs (placed on a live node): an actor not
        answering within ``PLACE_TIMEOUT`` (no node has the resources it asks for) is dropped."""
        import ray

        for _ in range(PASS_RETRIES + 1):
            need = {id(self.actors[s]): self.actors[s] for s in slots if id(self.actors[s]) not in self._node_of}
            if not need:
                return
            probes = {}
            for k, a in need.items():
                try:
                    probes[k] = a.node_id.remote()
                except Exception:  # Ray knows the actor no more (dead, or from a previous cluster)
                    self._drop(a)
            ready = set(ray.wait(list(probes.values()), num_returns=len(probes), timeout=PLACE_TIMEOUT)[0]
                        if probes else [])
            for k, ref in probes.items():
                try:
                    if ref in ready:
                        self._node_of[k] = ray.get(ref)
                        continue
                except _lost_errors():
                    pass
                self._drop(need[k])
        raise RuntimeError("RayBlocks: no Ray actor could be placed (does a live node have the resources "
                           f"{self._opts.get('num_cpus', 1)} CPU the actors ask for?)")

    def _load_slots(self, slots):
        """Load the blocks of ``slots`` in their actors (read from the store, or fetched from the
        driver-owned object refs); a slot whose actor is lost moves to another actor and loads there."""
        slots = list(slots)
        for _ in range(PASS_RETRIES + 1):
            self._place(slots)
            done, lost = self._wait({s: self._load(s) for s in slots})
            for s, node in done.items():
                self._node_of[id(self.actors[s])] = node
            for s in sorted(lost):
                self._drop(self.actors[s])
            slots = sorted(lost)
            if not slots:
                return
        raise RuntimeError("RayBlocks: actors kept being lost while loading their blocks")

    def _reload(self, s):
        """Load slot ``s``'s blocks again (its actor lost them)."""
        self._load_slots([s])

    def _call(self, method: str, make_args):
        """Call ``method`` on every slot's actor (``make_args(s)`` its arguments after the slot's key, or None
        to skip it) and return the unpickled results by slot.  A slot whose actor lost its blocks (or is
        lost with its node) gets them again, in the same actor or in a surviving one, and its call is sent
        again."""
        todo = {s: make_args(s) for s in range(len(self.actors))}
        todo = {s: args for s, args in todo.items() if args is not None}
        out = {}
        for _ in range(PASS_RETRIES + 1):
            refs = {s: getattr(self.actors[s], method).remote(self._key(s), *todo[s]) for s in todo if s not in out}
            done, lost = self._wait(refs)
            again = sorted(lost)
            for s, blob in done.items():
                if blob is None:  # the actor does not hold the slot (restarted, or the slot just moved)
                    again.append(s)
                else:
                    out[s] = pickle.loads(blob)
            if not again:
                return out
            for s in sorted(lost):
                self._drop(self.actors[s])
            self._load_slots(sorted(again))
        raise RuntimeError(f"RayBlocks.{method}: actors kept losing their blocks")  # pragma: no cover

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

        first = {}  # one slot per actor
        for s, a in enumerate(getattr(self, "actors", [])):
            first.setdefault(id(a), s)
        try:  # an actor lost meanwhile is not waited for
            self._wait({s: self.actors[s].unload.remote(self.token) for s in first.values()})
        except Exception:  # pragma: no cover - an actor already gone
            pass
        self.actors, self._refs, self._src = [], [], []


# ------------------------------------------------------------------------------------------------
# a Ray Dataset as input
# ------------------------------------------------------------------------------------------------

def _probe_block(block, start, stop):
    """Column names and, per column, the dtype and row shape of ``stop - start`` rows of a Ray Data block."""
    from ray.data.block import BlockAccessor

    batch = BlockAccessor.for_block(block).slice(start, stop, copy=False)
    batch = BlockAccessor.for_block(batch).to_batch_format("numpy")
    if not isinstance(batch, dict):
        batch = {"data": batch}
    return [(str(c), np.asarray(v).dtype.str, tuple(np.asarray(v).shape[1:])) for c, v in batch.items()]


def _dataset_rows(pieces, columns, dtype):
    """The rows of ``pieces`` ``[(block ref, start, stop), ...]`` as one ``(rows, d)`` array of ``dtype``."""
    import ray
    from ray.data.block import BlockAccessor

    out = []
    for ref, start, stop in pieces:
        block = ray.get(ref)
        part = BlockAccessor.for_block(block).slice(start, stop, copy=False)
        batch = BlockAccessor.for_block(part).to_batch_format("numpy")
        if not isinstance(batch, dict):
            batch = {"data": batch}
        cols = [np.asarray(batch[c]) for c in columns]
        if len(cols) == 1 and cols[0].ndim == 2:  # one tensor column of shape (d,)
            out.append(np.asarray(cols[0], dtype=dtype))
        else:
            out.append(np.column_stack([c.astype(dtype, copy=False) for c in cols]))
    return np.ascontiguousarray(np.concatenate(out) if len(out) > 1 else out[0], dtype=dtype)


class RayDatasetInput:
    """A ``ray.data.Dataset`` of numeric columns seen as an ``(n_samples, n_features)`` array whose rows
    stay in Ray's object store: :class:`RayBlocks` gives every actor the dataset blocks (and slices) that
    hold its rows, in the dataset's order; the driver never gathers X.

    Made by :func:`dataset_input`.  Features are the columns in the schema's order (each a number per
    row), or the one tensor column of shape ``(d,)`` (as ``ray.data.from_numpy`` makes).
    """

    is_ray_dataset = True
    ndim = 2

    def __init__(self, dataset, pieces, columns, n_features, dtype):
        self.dataset = dataset  # materialized: its blocks stay alive while this input lives
        self.pieces = pieces  # [(block ref, start, stop)] in dataset order
        self.columns = list(columns)
        self.n_samples = int(sum(b - a for _, a, b in pieces))
        self.n_features = int(n_features)
        self.dtype = np.dtype(dtype)

    @property
    def shape(self):
        return (self.n_samples, self.n_features)

    def astype(self, dtype, copy=True):
        """The same rows, read as ``dtype``."""
        return RayDatasetInput(self.dataset, self.pieces, self.columns, self.n_features, dtype)

    def rows(self, lo, hi):
        """``[(block ref, start, stop)]`` of rows ``lo:hi``."""
        out, pos = [], 0
        for ref, a, b in self.pieces:
            m = b - a
            s, e = max(lo, pos), min(hi, pos + m)
            if s < e:
                out.append((ref, a + s - pos, a + e - pos))
            pos += m
        return out

    def _refuse(self, *args, **kwargs):
        raise TypeError("A Ray Dataset is read by Ray actors, never gathered on the driver: fit, predict and "
                        "score take it (engine='ray'); for other uses convert it (ds.to_pandas(), ds.to_numpy_refs()).")

    __array__ = _refuse
    __array_namespace__ = _refuse

    def __repr__(self):
        return f"RayDatasetInput(shape={self.shape}, dtype={self.dtype}, columns={self.columns})"


def dataset_input(ds, name: str = "X") -> RayDatasetInput:
    """Check a ``ray.data.Dataset`` and make it an input of :class:`RayBlocks`.

    The dataset is materialized in the object store (unless it is already), on the cluster: its rows do
    not pass through the driver.  Only metadata and one row are read here.

    Parameters
    ----------
    ds : ray.data.Dataset
        Numeric columns (one feature each), or a single tensor column of shape ``(d,)``.
    name : str, default="X"
        Named in the error messages.

    Returns
    -------
    RayDatasetInput
        With the dtype of the columns' common type (see :func:`numpy.result_type`).

    Raises
    ------
    TypeError
        A column that is not numeric (named), or several columns of which one is not scalar.
    """
    import ray
    from ray.data.dataset import MaterializedDataset

    if not isinstance(ds, MaterializedDataset):
        # Ray Data's tasks need CPUs: the pooled actors (which hold them) end first
        shutdown_pool()
        ds = ds.materialize()
    pieces = []
    for bundle in ds.iter_internal_ref_bundles():
        for entry, sl in zip(bundle.blocks, bundle.slices):
            a, b = (0, entry.metadata.num_rows) if sl is None else (sl.start_offset, sl.end_offset)
            if b is None:  # pragma: no cover - materialized blocks know their rows
                raise ValueError(f"{name}: a block of the Ray Dataset has an unknown number of rows")
            if b > a:
                pieces.append((entry.ref, int(a), int(b)))
    if not pieces:
        names = ds.columns() or []
        return RayDatasetInput(ds, [], names, len(names), np.float64)
    ref, a, _ = pieces[0]
    probe = ray.get(ray.remote(_probe_block).options(num_cpus=0).remote(ref, a, a + 1))
    columns = [c for c, _, _ in probe]
    for c, dt, shape in probe:
        if np.dtype(dt).kind not in "biuf":
            raise TypeError(f"{name}: column {c!r} of the Ray Dataset has dtype {np.dtype(dt)}, not a number; "
                            "every column must be numeric (one feature each), or one tensor column of shape (d,).")
        if len(shape) > 1 or (shape and len(probe) > 1):
            raise TypeError(f"{name}: column {c!r} of the Ray Dataset holds arrays of shape {shape}; expected "
                            "numeric columns (one feature each), or a single tensor column of shape (d,).")
    d = probe[0][2][0] if probe[0][2] else len(probe)
    dtype = np.result_type(*[np.dtype(dt) for _, dt, _ in probe])
    return RayDatasetInput(ds, pieces, columns, d, dtype)
