"""CollectiveBlocks: the chunked engine over processes that each hold a block-aligned range of the rows, every
pass all-gathering the blocks' partials.  Here the processes are threads meeting at a barrier (the transport's
only collective is ``allgather``); tests/test_deep_ddp.py runs it over torch.distributed (gloo processes).
Every result must equal LocalBlocks over the whole data set bit for bit, whatever the partition."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmeans_dist import KMeans
from kmeans_dist.chunked import CollectiveBlocks, LocalBlocks, kmeans_on_blocks
from kmeans_dist.chunked.seeding import init_centers


class _Job:
    """``world`` threads standing in for the processes of a job: ``allgather(rank)`` is each one's collective."""

    def __init__(self, world):
        self.world = world
        self.box = [None] * world
        self.barrier = threading.Barrier(world)

    def allgather(self, rank):
        def gather(obj):
            self.box[rank] = obj
            self.barrier.wait()
            out = list(self.box)
            self.barrier.wait()
            return out
        return gather

    def run(self, fn, bounds):
        with ThreadPoolExecutor(self.world) as ex:
            return list(ex.map(lambda r: fn(r, *bounds[r]), range(self.world)))


def _blobs(n, d=6, k=5, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) + 5 * rng.normal(size=(k, d))[rng.integers(0, k, n)]).astype(np.float32)


def _bounds(n, rows, cuts):
    """Block-aligned ranges from block indices ``cuts`` (sorted)."""
    nb = -(-n // rows)
    edges = [0] + [min(n, rows * c) for c in cuts if 0 < c < nb] + [n]
    return list(zip(edges, edges[1:]))


@pytest.mark.parametrize("algorithm", ["lloyd", "hamerly", "elkan"])
@pytest.mark.parametrize("init", ["k-means++", "k-means||", "random", "random-partition"])
def test_kmeans_on_three_processes_equals_one(init, algorithm):
    X, rows = _blobs(2000), 128
    ref = kmeans_on_blocks(LocalBlocks(X, None, rows), 5, init=init, n_init=2, random_state=3, algorithm=algorithm)
    bounds = _bounds(2000, rows, [5, 9])  # 3 processes: blocks 0-4, 5-8, 9-15
    job = _Job(len(bounds))

    def one(rank, lo, hi):
        blocks = CollectiveBlocks(X[lo:hi], None, lo, 2000, rows, job.allgather(rank))
        return kmeans_on_blocks(blocks, 5, init=init, n_init=2, random_state=3, algorithm=algorithm)

    for res in job.run(one, bounds):
        assert np.array_equal(res.centers, ref.centers)
        assert res.inertia == ref.inertia and res.n_iter == ref.n_iter
        assert [h["inertia"] for h in res.history] == [h["inertia"] for h in ref.history]


def test_kmeans_on_blocks_is_what_kmeans_fits():
    X = _blobs(1500)
    res = kmeans_on_blocks(LocalBlocks(X, None, 200), 5, n_init=3, random_state=7)
    km = KMeans(5, init="k-means++", n_init=3, random_state=7, block_rows=200).fit(X)
    assert np.array_equal(res.centers, km.cluster_centers_) and res.inertia == km.inertia_


@settings(max_examples=15, deadline=None)
@given(n=st.integers(40, 700), rows=st.integers(8, 100), cuts=st.lists(st.integers(0, 90), max_size=3, unique=True),
       weighted=st.booleans(), seed=st.integers(0, 2**16))
def test_seeding_and_passes_do_not_depend_on_the_partition(n, rows, cuts, weighted, seed):
    """Any block-aligned partition (empty ranges included) gives the k-means|| seeds, and the weighted Lloyd
    result, of one process."""
    X = _blobs(n, seed=seed)
    w = np.random.default_rng(seed).uniform(0.5, 2.0, n).astype(np.float32) if weighted else None
    k = 4
    ref_blocks = LocalBlocks(X, w, rows)
    ref_c = init_centers(None, k, "k-means||", random_state=seed, blocks=ref_blocks)
    ref = kmeans_on_blocks(ref_blocks, k, init="random", n_init=1, random_state=seed)
    bounds = _bounds(n, rows, sorted(cuts))
    job = _Job(len(bounds))

    def one(rank, lo, hi):
        blocks = CollectiveBlocks(X[lo:hi], None if w is None else w[lo:hi], lo, n, rows, job.allgather(rank))
        c = init_centers(None, k, "k-means||", random_state=seed, blocks=blocks)
        return c, kmeans_on_blocks(blocks, k, init="random", n_init=1, random_state=seed)

    for c, res in job.run(one, bounds):
        assert np.array_equal(c, ref_c)
        assert np.array_equal(res.centers, ref.centers) and res.inertia == ref.inertia


def test_a_range_that_is_not_whole_blocks_is_refused():
    X = _blobs(100)
    with pytest.raises(ValueError, match="block-aligned"):
        CollectiveBlocks(X[10:60], None, 10, 100, 25, allgather=lambda obj: [obj])
    with pytest.raises(ValueError, match="block-aligned"):
        CollectiveBlocks(X[0:60], None, 0, 100, 25, allgather=lambda obj: [obj])
    CollectiveBlocks(X[75:], None, 75, 100, 25, allgather=lambda obj: [obj])  # the last range may end short
