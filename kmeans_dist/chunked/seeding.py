"""Seeding on chunked data: random (Forgy), random partition, k-means++ and k-means|| .

All methods run on the blocks of :mod:`kmeans_dist.chunked.driver`; random draws made inside blocks use
a stream derived from ``(seed, step, block index)``, so a seed gives the same centers whatever the
number of workers.  Per-point state (distance to the closest chosen center) stays where the block is.
"""
from __future__ import annotations

import numpy as np

from ..kernels import sparse
from ..kernels.sparse import block_dtype, block_namespace
from ..kernels.xp import to_numpy
from ..kernels import kmeans_plusplus, lloyd_inmemory, nearest_with_norms, row_norms_sq, sq_distances

__all__ = ["init_centers", "kmeans_parallel", "kmeans_plusplus_chunked", "random_init", "random_partition_init",
           "take_rows", "SEEDING_METHODS"]

SEEDING_METHODS = ("k-means||", "k-means++", "random", "random-partition")


def _block_rng(seed: int, step: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=(int(step), int(index))))


# ------------------------------------------------------------------------------------------------
# fetching rows
# ------------------------------------------------------------------------------------------------

def _take_chunk(X, w, offset, rows):
    local = [int(r) - offset for r in rows if offset <= r < offset + X.shape[0]]
    if not local:
        return None
    return _take(X, np.asarray(local, dtype=np.int64))


def _take(X, idx) -> np.ndarray:
    """Rows ``idx`` of a block as a host NumPy array (a sparse block densifies only these rows)."""
    if sparse.is_sparse(X):
        return sparse.take_rows(X, idx)
    xp = block_namespace(X)
    return to_numpy(xp.take(X, xp.asarray(np.asarray(idx, dtype=np.int64)), axis=0))


def take_rows(blocks, rows) -> np.ndarray:
    """Rows of X at global indices ``rows`` (in the order given), one round trip."""
    rows = np.asarray(rows, dtype=np.int64)
    uniq = np.unique(rows)
    needed = {blocks.block_of(r) for r in uniq}
    _, res = blocks.map_state(_take_state_chunk, None, uniq.tolist(), only=needed)
    got = np.concatenate([r for r in res if r is not None])
    pos = {int(r): i for i, r in enumerate(uniq)}
    return got[[pos[int(r)] for r in rows]]


def _take_state_chunk(X, w, offset, state, rows):
    return state, _take_chunk(X, w, offset, rows)


# ------------------------------------------------------------------------------------------------
# random / random partition
# ------------------------------------------------------------------------------------------------

def random_init(blocks, n_clusters, rng, block_weights=None):
    """Forgy: k distinct rows drawn uniformly (or by sample weight)."""
    n = blocks.n_samples
    if block_weights is None:
        idx = rng.choice(n, size=n_clusters, replace=False)
    else:
        idx = _weighted_distinct(blocks, n_clusters, rng, block_weights)
    return take_rows(blocks, idx)


def _weighted_distinct(blocks, k, rng, block_weights):
    # draw block by its total weight, then a row inside it by weight; reject duplicates
    chosen: list[int] = []
    tries = 0
    while len(chosen) < k and tries < 100 * k:
        need = k - len(chosen)
        u = rng.uniform(size=need) * block_weights.sum()
        rows = _locate(blocks, None, u, block_weights)
        for r in rows:
            if r not in chosen:
                chosen.append(int(r))
        tries += need
    return np.asarray(chosen[:k])


def _partition_chunk(X, w, offset, k, seed, index_of):
    xp = block_namespace(X)
    rng = _block_rng(seed, 0, index_of(offset))
    lab = rng.integers(0, k, size=X.shape[0])
    if sparse.is_sparse(X):  # sums from the CSR structure; weights per cluster
        wh = None if w is None else np.asarray(to_numpy(w), dtype=np.float64)
        weight = np.bincount(lab, weights=wh, minlength=k).astype(np.float64)
        return {"sum": sparse.cluster_sums(X, lab, k, wh), "weight": weight}
    onehot = xp.asarray((lab[:, None] == np.arange(k)[None, :]).astype(np.float64))
    X64 = xp.astype(X, xp.float64)
    if w is not None:
        onehot = onehot * xp.astype(w, xp.float64)[:, None]
    return {"sum": to_numpy(onehot.T @ X64), "weight": to_numpy(xp.sum(onehot, axis=0))}


def _combine_sums(parts):
    out = {"sum": parts[0]["sum"].copy(), "weight": parts[0]["weight"].copy()}
    for p in parts[1:]:
        out["sum"] += p["sum"]
        out["weight"] += p["weight"]
    return out


class _IndexOf:
    def __init__(self, rows):
        self.rows = rows

    def __call__(self, offset):
        return offset // self.rows


def random_partition_init(blocks, n_clusters, seed):
    """Random partition: every row gets a uniformly random cluster; centers are the partition means."""
    part = blocks.map_reduce(_partition_chunk, _combine_sums, n_clusters, seed, _IndexOf(blocks.block_rows))
    w = np.where(part["weight"] > 0, part["weight"], 1.0)
    return part["sum"] / w[:, None]


# ------------------------------------------------------------------------------------------------
# per-block state: distance to the closest chosen center (and which one)
# ------------------------------------------------------------------------------------------------

def _weighted(w, d, xp):
    return d if w is None else d * xp.astype(w, d.dtype)


def _local_rows(X, w, state, targets):
    """Block-local rows whose cumulative (w * closest) reaches each of ``targets`` (w alone without state)."""
    if state is None:
        p = np.ones(X.shape[0]) if w is None else np.asarray(to_numpy(w), dtype=np.float64)
    else:
        p = np.asarray(to_numpy(_weighted(w, state["closest"], block_namespace(X))), dtype=np.float64)
    cum = np.cumsum(p)
    return np.minimum(np.searchsorted(cum, np.asarray(targets), side="right"), X.shape[0] - 1)


def _cumsum_locate_chunk(X, w, offset, state, want, rows_per_block):
    """Rows whose cumulative (w * closest) reaches each of this block's targets in ``want``."""
    idx = _local_rows(X, w, state, want[offset // rows_per_block])
    return state, (idx + offset).tolist()


def _targets(u, block_pots):
    """Block of each value of ``u`` in [0, sum(block_pots)), and the offsets within each block."""
    cum = np.cumsum(block_pots)
    b_of = np.minimum(np.searchsorted(cum, u, side="right"), len(cum) - 1)
    starts = cum - block_pots
    want: dict[int, list[float]] = {}
    for ui, b in zip(u, b_of):
        want.setdefault(int(b), []).append(float(ui - starts[b]))
    return b_of, want


def _in_order(b_of, per_block):
    """``per_block[b]`` lists the answers for block b's targets in order; returns them in the order of u."""
    out, counters = [], {}
    for b in b_of:
        j = counters.get(int(b), 0)
        out.append(per_block[int(b)][j])
        counters[int(b)] = j + 1
    return out


def _locate(blocks, states, u, block_pots):
    """Global rows for values ``u`` in [0, sum(block_pots)) of the distribution w * closest (one round trip)."""
    b_of, want = _targets(u, block_pots)
    _, res = blocks.map_state(_cumsum_locate_chunk, states, want, blocks.block_rows, only=set(want))
    return _in_order(b_of, res)


def _update_closest_chunk(X, w, offset, state, centers, base_index):
    """state <- min(state, d(x, centers)); returns the block potential sum(w * closest)."""
    xp = block_namespace(X)
    if state is not None and len(centers) == 0:
        return state, float(to_numpy(xp.sum(_weighted(w, state["closest"], xp))))
    C = xp.asarray(np.asarray(centers, dtype=block_dtype(X)))
    x_sq = row_norms_sq(X) if state is None else state["x_sq"]
    amin, dmin = nearest_with_norms(X, C, x_sq)
    dmin = xp.astype(dmin, xp.float64)
    amin = xp.astype(amin, xp.int64) + base_index
    if state is None:
        closest, owner = dmin, amin
    else:
        better = dmin < state["closest"]
        closest = xp.where(better, dmin, state["closest"])
        owner = xp.where(better, amin, state["owner"])
    new = {"closest": closest, "owner": owner, "x_sq": x_sq}
    return new, float(to_numpy(xp.sum(_weighted(w, closest, xp))))


# ------------------------------------------------------------------------------------------------
# k-means++ on chunks (greedy, local trials)
# ------------------------------------------------------------------------------------------------

def _trials_chunk(X, w, offset, state, cands):
    """Potential of each candidate (min(closest, d(x, cand)) summed); keeps per-candidate closests."""
    xp = block_namespace(X)
    C = xp.asarray(np.asarray(cands, dtype=block_dtype(X)))
    D = xp.astype(sq_distances(X, C, x_sq=state["x_sq"]), xp.float64)
    D = xp.minimum(D, state["closest"][:, None])
    if w is not None:
        D_w = D * xp.astype(w, xp.float64)[:, None]
    else:
        D_w = D
    pots = to_numpy(xp.sum(D_w, axis=0))
    return {**state, "trials": D}, np.asarray(pots, dtype=np.float64)


def _chosen(state, j):
    """The block's state once trial ``j`` is kept: its distances become the closest ones."""
    return {"closest": state["trials"][:, j], "owner": state.get("owner"), "x_sq": state["x_sq"]}


def _choose_trial_chunk(X, w, offset, state, j):
    xp = block_namespace(X)
    new = _chosen(state, j)
    return new, float(to_numpy(xp.sum(_weighted(w, new["closest"], xp))))


def _choose_locate_chunk(X, w, offset, state, best, want, rows_per_block):
    """Keep trial ``best`` (as :func:`_choose_trial_chunk`), then locate this block's targets in ``want``
    in the new distribution w * closest (as :func:`_cumsum_locate_chunk`) and return those rows."""
    xp = block_namespace(X)
    new = _chosen(state, best)
    targets = want.get(offset // rows_per_block)
    if not targets:
        return new, None
    idx = _local_rows(X, w, new, targets)
    return new, list(_take(X, idx.astype(np.int64)))


def kmeans_plusplus_chunked(blocks, n_clusters, rng, block_weights, n_local_trials=None):
    """Greedy k-means++ over blocks: two round trips per center.

    One scores the candidates (each block's potential for each of them); the client picks the best,
    which also gives every block's potential after choosing it.  The next one keeps the chosen
    candidate's distances in every block and, in the same call, draws the next candidates there.
    """
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    first = _locate(blocks, None, rng.uniform(size=1) * block_weights.sum(), block_weights)[0]
    centers = [take_rows(blocks, [first])[0]]
    states, pots = blocks.map_state(_update_closest_chunk, None, np.asarray(centers), 0)
    pots = np.asarray(pots)
    total = pots.sum()
    if total <= 0:
        rows = rng.integers(0, blocks.n_samples, size=n_local_trials)
    else:
        rows = _locate(blocks, states, rng.uniform(size=n_local_trials) * total, pots)
    cands = take_rows(blocks, rows)
    for c in range(1, n_clusters):
        states, res = blocks.map_state(_trials_chunk, states, cands)
        per_block = np.stack(res)  # (blocks, candidates)
        best = int(np.argmin(np.sum(per_block, axis=0)))
        centers.append(cands[best])
        if c == n_clusters - 1:
            break
        pots = per_block[:, best]
        total = pots.sum()
        if total <= 0:
            states, _ = blocks.map_state(_choose_trial_chunk, states, best)
            cands = take_rows(blocks, rng.integers(0, blocks.n_samples, size=n_local_trials))
        else:
            b_of, want = _targets(rng.uniform(size=n_local_trials) * total, pots)
            states, res = blocks.map_state(_choose_locate_chunk, states, best, want, blocks.block_rows)
            cands = np.asarray(_in_order(b_of, res))
    return np.asarray(centers)


# ------------------------------------------------------------------------------------------------
# k-means|| (Bahmani et al. 2012)
# ------------------------------------------------------------------------------------------------

def _parallel_round_chunk(X, w, offset, state, new_centers, base_index, l, seed, rnd, block_index_of):
    """One k-means|| round on a block: update closest with the new centers, then oversample.

    Point i is kept with probability ``min(1, l * w_i * d_i / phi)`` where ``phi`` is the global
    potential, known only after the round.  Since ``phi >= phi_block``, every point that can be kept
    satisfies ``u_i < l * w_i * d_i / phi_block``; the block returns that superset (about ``l`` rows in
    expectation) with its ``u_i``, and the client applies the exact test with the global ``phi``.
    """
    xp = block_namespace(X)
    state, phi_b = _update_closest_chunk(X, w, offset, state, new_centers, base_index)
    if l is None:  # final weighting pass: no sampling
        return state, {"phi": phi_b, "rows": None}
    rng = _block_rng(seed, rnd, block_index_of(offset))
    u = rng.uniform(size=X.shape[0])
    wd = np.asarray(to_numpy(_weighted(w, state["closest"], xp)), dtype=np.float64)
    if phi_b <= 0:
        keep = np.zeros(0, dtype=np.int64)
    else:
        keep = np.flatnonzero(u < l * wd / phi_b)
    rows = _take(X, keep) if keep.size else np.zeros((0, X.shape[1]), dtype=block_dtype(X))
    return state, {"phi": phi_b, "rows": rows, "u": u[keep], "wd": wd[keep], "index": keep + offset}


def _owner_weights_chunk(X, w, offset, state, n_cands):
    owner = np.asarray(to_numpy(state["owner"]), dtype=np.int64)
    ww = None if w is None else np.asarray(to_numpy(w), dtype=np.float64)
    return state, np.bincount(owner, weights=ww, minlength=n_cands)


def kmeans_parallel(blocks, n_clusters, rng, seed, block_weights, *, oversampling_factor=None, init_rounds=5,
                    n_trials: int = 3):
    """k-means|| : ``init_rounds`` oversampling rounds (one pass each), weights, then reduce to k.

    The candidates are weighted by the (sample-weighted) number of points closest to them and reduced
    to ``n_clusters`` by weighted k-means++ followed by weighted Lloyd on the candidates (in memory;
    ``n_trials`` reductions, the one with the lowest weighted inertia is kept).
    """
    l = float(oversampling_factor if oversampling_factor is not None else 2 * n_clusters)
    first = _locate(blocks, None, rng.uniform(size=1) * block_weights.sum(), block_weights)[0]
    cands = [take_rows(blocks, [first])]
    n_cands = 1
    states = None
    new = cands[0]
    base = 0
    idx_of = _IndexOf(blocks.block_rows)
    for rnd in range(1, init_rounds + 1):
        states, res = blocks.map_state(_parallel_round_chunk, states, new, base, l, seed, rnd, idx_of)
        phi = sum(r["phi"] for r in res)
        base = n_cands
        if phi <= 0:
            new = None
            break
        picked = []
        for r in res:
            if r["rows"].shape[0]:
                ok = r["u"] < l * r["wd"] / phi
                if ok.any():
                    picked.append(r["rows"][ok])
        if not picked:
            new = np.zeros((0, blocks.n_features))
            continue
        new = np.concatenate(picked)
        cands.append(new)
        n_cands += new.shape[0]
    if new is not None and len(new):
        states, _ = blocks.map_state(_parallel_round_chunk, states, new, base, None, seed, init_rounds + 1, idx_of)
    _, counts = blocks.map_state(_owner_weights_chunk, states, n_cands)
    weights = np.sum(np.stack(counts), axis=0)
    C = np.concatenate(cands).astype(np.float64)
    if C.shape[0] < n_clusters:  # not enough candidates (tiny data): top up with random rows
        extra = take_rows(blocks, rng.choice(blocks.n_samples, size=n_clusters - C.shape[0], replace=False))
        C = np.concatenate([C, extra.astype(np.float64)])
        weights = np.concatenate([weights, np.ones(extra.shape[0])])
    if C.shape[0] == n_clusters:
        return C
    keep = weights > 0
    if keep.sum() >= n_clusters:
        C, weights = C[keep], weights[keep]
    else:
        weights = weights + 1e-12
    best, best_inertia = None, np.inf
    for _ in range(n_trials):
        C0, _ = kmeans_plusplus(C, n_clusters, rng, sample_weight=weights)
        res = lloyd_inmemory(C, C0, weights, max_iter=100, tol=1e-4)
        if res.inertia < best_inertia:
            best, best_inertia = res.centers, res.inertia
    return np.asarray(best)


# ------------------------------------------------------------------------------------------------
# public entry
# ------------------------------------------------------------------------------------------------

def _block_weight_chunk(X, w, offset):
    return np.array([float(X.shape[0]) if w is None else float(np.sum(np.asarray(to_numpy(w), dtype=np.float64)))])


def init_centers(X, n_clusters: int, method="k-means||", random_state=None, sample_weight=None, client=None,
                 *, blocks=None, oversampling_factor=None, init_rounds: int = 5, n_local_trials=None,
                 block_rows="auto", split_every: int = 8, dtype=None, engine: str = "auto") -> np.ndarray:
    """Initial centers for k-means on chunked X.

    Parameters
    ----------
    X : array-like, dask array, xarray.DataArray or str of shape (n_samples, n_features)
        Anything :func:`kmeans_dist.data.as_dask_array` accepts (ignored when ``blocks`` is given).
    n_clusters : int
        Number of centers.
    method : {"k-means||", "k-means++", "random", "random-partition"} or array, default="k-means||"
        Seeding method, or the centers themselves of shape (n_clusters, n_features).
    random_state : int, RandomState, Generator or None, default=None
        Seed of every draw; the centers do not depend on the chunking or the workers.
    sample_weight : array-like of shape (n_samples,) or None, default=None
        Weight of every row.
    client : distributed.Client, None or False, default=None
        None: the active client if any; False: in process.
    blocks : LocalBlocks, DaskBlocks, StreamBlocks or None, default=None
        Blocks already made.
    oversampling_factor : float or None, default=None
        k-means|| candidates per round (None: ``2 * n_clusters``).
    init_rounds : int, default=5
        k-means|| rounds.
    n_local_trials : int or None, default=None
        k-means++ candidates per center.
    block_rows : "auto" or int, default="auto"
        Rows per canonical block.
    split_every : int, default=8
        Fan-in of the reduction tree.
    dtype : dtype or None, default=None
        Dtype of the result (None: X's).
    engine : {"auto", "dask", "ray", "local"}, default="auto"
        Where the passes run, as :func:`~kmeans_dist.chunked.driver.make_blocks` (ignored when ``blocks`` is
        given; the centers are the same).

    Returns
    -------
    ndarray of shape (n_clusters, n_features)

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.chunked import init_centers
    >>> X = np.array([[0.0, 0.0], [0.0, 0.1], [9.0, 9.0], [9.0, 9.1]])
    >>> C = init_centers(X, 2, "k-means++", random_state=0, client=False)
    >>> sorted(C[:, 0].round().tolist())
    [0.0, 9.0]
    """
    from .driver import make_blocks
    from ..data import as_dask_array

    if blocks is None:
        Xd = as_dask_array(X)
        w = None if sample_weight is None else sample_weight
        blocks = make_blocks(Xd, w, block_rows=block_rows, split_every=split_every, client=client, engine=engine)
    dtype = dtype or blocks.dtype
    seed = seed_from(random_state)
    rng = np.random.default_rng(seed)
    if not isinstance(method, str):
        return np.asarray(to_numpy(method), dtype=dtype)
    if method == "random-partition":
        return random_partition_init(blocks, n_clusters, seed).astype(dtype)
    bw = np.concatenate(blocks.map(_block_weight_chunk))
    if method == "random":
        weighted = sample_weight is not None
        return random_init(blocks, n_clusters, rng, block_weights=bw if weighted else None).astype(dtype)
    if method == "k-means++":
        return kmeans_plusplus_chunked(blocks, n_clusters, rng, bw, n_local_trials).astype(dtype)
    if method == "k-means||":
        return kmeans_parallel(blocks, n_clusters, rng, seed, bw, oversampling_factor=oversampling_factor,
                               init_rounds=init_rounds).astype(dtype)
    raise ValueError(f"Unknown init method {method!r}; expected one of {SEEDING_METHODS} or an array")


def seed_from(random_state) -> int:
    """An int seed from None / int / RandomState / Generator (as scikit-learn's ``check_random_state``).

    Parameters
    ----------
    random_state : None, int, numpy.random.RandomState or numpy.random.Generator
        None draws a fresh seed.

    Returns
    -------
    int
    """
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(random_state, (int, np.integer)):
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(np.iinfo(np.int32).max))
    raise ValueError(f"{random_state!r} cannot be used to seed a random number generator")
