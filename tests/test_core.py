"""Core engine against scikit-learn, invariants, and the transports (local, Dask workers, streaming)."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans as SKKMeans
from sklearn.cluster import MiniBatchKMeans as SKMiniBatch
from sklearn.datasets import make_blobs

import dask.array as da

from kmeans_dist import KMeans, MiniBatchKMeans, kernels
from kmeans_dist.chunked.seeding import init_centers


def _data(seed, n=3000, d=6, k=5, std=1.5):
    X, _ = make_blobs(n, d, centers=k, cluster_std=std, random_state=seed)
    return X


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lloyd_equals_sklearn_float64(seed):
    X = _data(seed)
    C0 = X[np.random.default_rng(seed).choice(len(X), 5, replace=False)]
    sk = SKKMeans(5, init=C0, n_init=1, algorithm="lloyd", max_iter=100).fit(X)
    km = KMeans(5, init=C0, max_iter=100).fit(X)
    np.testing.assert_allclose(km.cluster_centers_, sk.cluster_centers_, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(km.labels_, sk.labels_)
    np.testing.assert_allclose(km.inertia_, sk.inertia_, rtol=1e-6)
    assert km.n_iter_ == sk.n_iter_


def test_lloyd_equals_sklearn_float32_and_keeps_dtype():
    X = _data(3).astype(np.float32)
    C0 = X[:5].copy()
    sk = SKKMeans(5, init=C0, n_init=1, algorithm="lloyd").fit(X)
    km = KMeans(5, init=C0).fit(X)
    assert km.cluster_centers_.dtype == np.float32
    np.testing.assert_allclose(km.cluster_centers_, sk.cluster_centers_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(km.inertia_, sk.inertia_, rtol=1e-4)
    assert (km.labels_ == sk.labels_).mean() > 0.999


def test_sample_weight_equals_sklearn():
    X = _data(4)
    w = np.random.default_rng(0).uniform(0.1, 3, len(X))
    C0 = X[:5].copy()
    sk = SKKMeans(5, init=C0, n_init=1, algorithm="lloyd").fit(X, sample_weight=w)
    km = KMeans(5, init=C0).fit(X, sample_weight=w)
    np.testing.assert_allclose(km.cluster_centers_, sk.cluster_centers_, rtol=1e-6)
    np.testing.assert_allclose(km.inertia_, sk.inertia_, rtol=1e-6)


def test_integer_input_becomes_float64():
    X = (np.random.default_rng(0).random((200, 3)) * 100).astype(np.int32)
    km = KMeans(3, random_state=0).fit(X)
    assert km.cluster_centers_.dtype == np.float64


def test_distributed_equals_sklearn_and_local(dask_client):
    X = _data(5, n=4000)
    C0 = X[:5].copy()
    sk = SKKMeans(5, init=C0, n_init=1, algorithm="lloyd").fit(X)
    Xd = da.from_array(X, chunks=(700, -1))
    km = KMeans(5, init=C0, block_rows=500, client=dask_client).fit(Xd)
    loc = KMeans(5, init=C0, block_rows=500).fit(X)
    np.testing.assert_allclose(km.cluster_centers_, sk.cluster_centers_, rtol=1e-6)
    assert isinstance(km.labels_, da.Array)
    np.testing.assert_array_equal(km.labels_.compute(), sk.labels_)
    # same blocks -> bit-identical, whatever the transport
    np.testing.assert_array_equal(km.cluster_centers_, loc.cluster_centers_)
    assert km.inertia_ == loc.inertia_


def test_same_result_any_chunking_workers_and_transport(dask_client):
    X = _data(6, n=3500).astype(np.float32)
    ref = KMeans(5, init="k-means||", random_state=7, block_rows=400).fit(X)
    for chunks in (3500, 1167, 500):  # 1, 3, 7 chunks
        Xd = da.from_array(X, chunks=(chunks, -1))
        for persist in (True, False):
            km = KMeans(5, init="k-means||", random_state=7, block_rows=400, persist=persist,
                        client=dask_client).fit(Xd)
            np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
            assert km.inertia_ == ref.inertia_
            assert km.n_iter_ == ref.n_iter_


@pytest.mark.parametrize("chunks", [(230,), (100, 0, 130), (7,) * 32 + (6,), (64, 64, 64, 38), (1,) * 230])
def test_block_cuts_give_the_canonical_blocks_of_any_chunking(chunks):
    """Each canonical block cut straight from the source's chunks holds its rows, C-contiguous and starting on
    a cache line (a view only when the chunk's rows already do); the 1-D weights the same way."""
    import dask

    from kmeans_dist.chunked.driver import ALIGN, block_cuts

    X = np.arange(230 * 3, dtype=np.float32).reshape(230, 3)
    w = np.arange(230, dtype=np.float64)
    offsets = list(range(0, 230, 64))
    sizes = [min(64, 230 - o) for o in offsets]
    for src, chunk_spec in ((X, (chunks, 3)), (w, (chunks,))):
        a = da.from_array(src, chunks=chunk_spec)
        for o, s, b in zip(offsets, sizes, dask.compute(*block_cuts(a, offsets, sizes), scheduler="sync")):
            np.testing.assert_array_equal(b, src[o:o + s])
            assert b.flags.c_contiguous and b.ctypes.data % ALIGN == 0


def test_blocks_of_a_persisted_input_start_on_a_cache_line(dask_client):
    """Arrays received from another process can start at any byte of their frame (not even aligned to their
    dtype); the blocks cut from a persisted input are not views of such data."""
    from distributed import wait

    from kmeans_dist.chunked.driver import ALIGN, make_blocks

    X = _data(9, n=3000).astype(np.float32)
    Xp = dask_client.persist(da.from_array(X, chunks=(700, -1)))
    wait(Xp)
    b = make_blocks(Xp, block_rows=256, client=dask_client, persist=True)
    try:
        starts = dask_client.gather([dask_client.submit(lambda blk: blk.X.ctypes.data % ALIGN, f)
                                     for f in b.futures])
        assert starts == [0] * b.n_blocks
        got = np.concatenate(dask_client.gather([dask_client.submit(lambda blk: blk.X, f) for f in b.futures]))
        np.testing.assert_array_equal(got, X)
    finally:
        b.release()


def test_blocks_of_an_input_persisted_on_one_worker_are_spread_evenly(dask_client):
    """A pass lasts as long as its busiest worker: blocks are cut where their chunk is, except those moved to
    keep every worker within one block of its share; the results do not depend on it."""
    from distributed import wait

    from kmeans_dist.chunked.driver import make_blocks

    X = _data(10, n=3000).astype(np.float32)
    one = sorted(dask_client.scheduler_info()["workers"])[0]
    Xp = dask_client.persist(da.from_array(X, chunks=(1000, -1)), workers=[one])
    wait(Xp)
    assert {w for ws in dask_client.who_has(Xp).values() for w in ws} == {one}  # the premise: one holder
    b = make_blocks(Xp, block_rows=256, client=dask_client, persist=True)
    try:
        sizes = sorted(len(v) for v in b._worker_groups().values())
        assert len(sizes) == 2 and sizes[1] - sizes[0] <= 1, sizes
    finally:
        b.release()
    km = KMeans(4, init=X[:4].copy(), block_rows=256, client=dask_client).fit(Xp)
    ref = KMeans(4, init=X[:4].copy(), block_rows=256).fit(X)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)


@pytest.mark.parametrize("chunk_rows", [512, 700])
def test_streamed_passes_over_a_store_read_their_own_rows(dask_client, tmp_path, chunk_rows):
    """A store opened as is is streamed by one task per group that reads its rows itself (no read task per
    chunk); any array derived from it goes through its chunks' tasks.  Both equal the in-memory fit bit for bit,
    with chunks that are whole multiples of the block rows (512) and chunks that are not (700)."""
    from kmeans_dist.chunked.driver import StreamBlocks, make_blocks
    from kmeans_dist.data import open_store, write_store

    X = _data(11, n=3000).astype(np.float32)
    url = write_store(str(tmp_path / "s.zarr"), X, chunk_rows=chunk_rows)
    ref = KMeans(4, init=X[:4].copy(), block_rows=256, max_iter=5, tol=0.0).fit(X)
    for src, reads_itself in ((open_store(url), True), (open_store(url) * 1, False)):
        b = make_blocks(src, block_rows=256, client=dask_client, persist=False)
        assert isinstance(b, StreamBlocks) and isinstance(b._xs[0], list) is not reads_itself
        km = KMeans(4, init=X[:4].copy(), block_rows=256, max_iter=5, tol=0.0, client=dask_client,
                    persist=False).fit(src)
        np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
        assert km.inertia_ == ref.inertia_


def test_tuned_worker_malloc_holds_on_every_worker_and_changes_no_result(tmp_path):
    """tune_worker_malloc sets glibc's thresholds on every worker, again on a worker that restarts (a plugin),
    and a streamed fit on the tuned workers equals the in-memory fit bit for bit."""
    import platform

    from distributed import Client, LocalCluster

    from kmeans_dist.chunked import MALLOC_ENV, tune_worker_malloc
    from kmeans_dist.data import write_store

    glibc = platform.libc_ver()[0] == "glibc"
    X = _data(13, n=2000).astype(np.float32)
    url = write_store(str(tmp_path / "s.zarr"), X, chunk_rows=512)
    ref = KMeans(3, init=X[:3].copy(), block_rows=256, max_iter=4, tol=0.0).fit(X)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as lc, Client(lc) as c:
        assert tune_worker_malloc(c) == {w: glibc for w in c.scheduler_info()["workers"]}
        c.restart()
        assert c.run(lambda dask_worker: dask_worker.kmeans_dist_malloc) == {
            w: glibc for w in c.scheduler_info()["workers"]}
        km = KMeans(3, init=X[:3].copy(), block_rows=256, max_iter=4, tol=0.0, client=c, persist=False).fit(url)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert km.inertia_ == ref.inertia_
    assert set(MALLOC_ENV) == {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"}


def test_one_worker_equals_two_workers():
    from distributed import Client, LocalCluster

    X = _data(7, n=3000)
    results = []
    for nw in (1, 2):
        with LocalCluster(n_workers=nw, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0") as lc, Client(lc) as c:
            km = KMeans(5, init="k-means++", random_state=3, block_rows=300, client=c).fit(da.from_array(X, chunks=1000))
            results.append(km)
    np.testing.assert_array_equal(results[0].cluster_centers_, results[1].cluster_centers_)
    assert results[0].inertia_ == results[1].inertia_


def test_actor_passes_equal_task_passes_and_survive_a_lost_worker():
    """A pass through the per-worker actors equals the same pass as tasks, bit for bit.  When a worker
    holding blocks dies, the next pass falls back to tasks (the scheduler recomputes the lost blocks
    from the source) and gives the same partials again."""
    import os
    import signal

    from distributed import Client, LocalCluster

    from kmeans_dist.chunked.driver import DaskBlocks, make_blocks
    from kmeans_dist.chunked.lloyd import _lloyd_chunk

    X = _data(8, n=4000)
    C = X[:6].copy()

    def same(a, b):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as lc, Client(lc) as c:
        Xd = da.from_array(X, chunks=(700, -1))
        b = make_blocks(Xd, block_rows=300, client=c, persist=True)
        assert isinstance(b, DaskBlocks)
        first = b.map_reduce(_lloyd_chunk, kernels.combine_lloyd_partials, C)
        assert b.use_actors and b._hosts is not None and len(b._hosts[2]) == 2
        t = make_blocks(Xd, block_rows=300, client=c, persist=True)
        t.use_actors = False
        same(first, t.map_reduce(_lloyd_chunk, kernels.combine_lloyd_partials, C))
        same(first, kernels.tree_combine([_lloyd_chunk(X[o:o + 300], None, o, C) for o in range(0, 4000, 300)],
                                         kernels.combine_lloyd_partials, 8))
        t.release()
        pid = next(iter(c.run(os.getpid).values()))
        os.kill(pid, signal.SIGKILL)
        again = b.map_reduce(_lloyd_chunk, kernels.combine_lloyd_partials, C)
        assert not b.use_actors and b._hosts is None
        same(first, again)
        b.release()


def _slow_lloyd_chunk(X, w, offset, centers):
    import time

    from kmeans_dist.chunked.lloyd import _lloyd_chunk

    time.sleep(0.4)
    return _lloyd_chunk(X, w, offset, centers)


def test_worker_killed_during_an_actor_pass_falls_back_to_tasks():
    """A worker dies while its actor runs a pass: the pass is run again as tasks (the lost blocks are
    recomputed from the source) and returns the same partials; it must not hang."""
    import os
    import signal
    import threading
    import time

    from distributed import Client, LocalCluster

    from kmeans_dist.chunked.driver import make_blocks
    from kmeans_dist.chunked.lloyd import _lloyd_chunk

    X = _data(9, n=3000)
    C = X[:5].copy()
    ref = kernels.tree_combine([_lloyd_chunk(X[o:o + 300], None, o, C) for o in range(0, 3000, 300)],
                               kernels.combine_lloyd_partials, 8)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as lc, Client(lc) as c:
        b = make_blocks(da.from_array(X, chunks=(1000, -1)), block_rows=300, client=c, persist=True)
        b.map_reduce(_slow_lloyd_chunk, kernels.combine_lloyd_partials, C)  # actors made, one pass done
        assert b._hosts is not None
        pid = next(iter(c.run(os.getpid).values()))
        box = {}
        th = threading.Thread(target=lambda: box.setdefault(
            "part", b.map_reduce(_slow_lloyd_chunk, kernels.combine_lloyd_partials, C)), daemon=True)
        th.start()
        time.sleep(0.8)  # mid-pass: each worker runs 5 blocks of 0.4 s
        os.kill(pid, signal.SIGKILL)
        th.join(timeout=120)
        assert not th.is_alive(), "the pass hung after the worker died"
        assert not b.use_actors
        for key in ref:
            np.testing.assert_array_equal(np.asarray(box["part"][key]), np.asarray(ref[key]), err_msg=key)
        b.release()


@pytest.mark.parametrize("init", ["k-means||", "k-means++", "random", "random-partition"])
def test_seeding_methods(init, dask_client):
    X = _data(8, n=2000)
    Xd = da.from_array(X, chunks=500)
    a = init_centers(Xd, 5, init, random_state=1, client=dask_client, block_rows=300)
    b = init_centers(X, 5, init, random_state=1, block_rows=300)
    assert a.shape == (5, X.shape[1])
    np.testing.assert_array_equal(a, b)
    if init not in ("random-partition",):
        # centers are data points (k-means|| reduces weighted candidates with Lloyd, so not necessarily)
        if init != "k-means||":
            assert all(np.any(np.all(X == c, axis=1)) for c in a)
    km = KMeans(5, init=init, random_state=0).fit(X)
    sk = SKKMeans(5, n_init=10, random_state=0).fit(X)
    assert km.inertia_ <= sk.inertia_ * 1.05


def test_chunked_kmeanspp_with_fewer_distinct_points_than_k(dask_client):
    """Zero potential after the distinct points are taken: candidates are then drawn uniformly; the
    transports still agree and every center is a data point."""
    X = np.repeat(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]]), 400, axis=0)
    a = init_centers(da.from_array(X, chunks=500), 5, "k-means++", random_state=2, client=dask_client, block_rows=300)
    b = init_centers(X, 5, "k-means++", random_state=2, block_rows=300)
    np.testing.assert_array_equal(a, b)
    assert len({tuple(c) for c in a}) == 3
    assert all(np.any(np.all(X == c, axis=1)) for c in a)


def test_kmeans_parallel_quality_vs_sklearn_kmeanspp():
    # smaller replica of the benchmark's 2,000,000 x 32, 64 centers, std 1
    X, _ = make_blobs(60_000, 16, centers=32, cluster_std=1.0, random_state=0)
    X = X.astype(np.float32)
    sk = SKKMeans(32, init="k-means++", n_init=1, random_state=0).fit(X)
    km = KMeans(32, init="k-means||", random_state=0).fit(X)
    assert km.inertia_ <= sk.inertia_ * 1.01


def test_minibatch_partial_fit_equals_sklearn():
    X = _data(9, n=2000)
    C0 = X[:5].copy()
    sk = SKMiniBatch(5, init=C0, n_init=1, reassignment_ratio=0.0, batch_size=100)
    km = MiniBatchKMeans(5, init=C0, reassignment_ratio=0.0, batch_size=100)
    for i in range(0, 2000, 100):
        sk.partial_fit(X[i:i + 100])
        km.partial_fit(X[i:i + 100])
    np.testing.assert_allclose(km.cluster_centers_, sk.cluster_centers_, rtol=1e-9)
    np.testing.assert_allclose(km._counts, sk._counts, rtol=1e-12)
    np.testing.assert_array_equal(km.labels_, sk.labels_)


def test_minibatch_fit_quality_and_polish(dask_client):
    X, _ = make_blobs(20_000, 8, centers=6, random_state=1)
    Xd = da.from_array(X, chunks=5000)
    mb = MiniBatchKMeans(6, batch_size=512, random_state=0, polish_iter=3, client=dask_client).fit(Xd)
    sk = SKKMeans(6, n_init=3, random_state=0).fit(X)
    assert mb.inertia_ <= sk.inertia_ * 1.02
    assert mb.n_steps_ >= 1
    assert isinstance(mb.labels_, da.Array)


def test_predict_transform_score_lazy_and_eager(dask_client):
    X = _data(10)
    km = KMeans(5, random_state=0).fit(X)
    sk = SKKMeans(5, init=km.cluster_centers_, n_init=1).fit(X)  # same centers -> same predictions
    sk.cluster_centers_ = km.cluster_centers_
    np.testing.assert_array_equal(km.predict(X), sk.predict(X))
    np.testing.assert_allclose(km.transform(X), sk.transform(X), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(km.score(X), sk.score(X), rtol=1e-9)
    Xd = da.from_array(X, chunks=700)
    lab = km.predict(Xd)
    assert isinstance(lab, da.Array)
    np.testing.assert_array_equal(lab.compute(), km.predict(X))
    np.testing.assert_allclose(km.transform(Xd).compute(), km.transform(X))
    assert km.fit_predict(X).shape == (len(X),)


def test_xarray_and_zarr_inputs(tmp_path):
    import xarray as xr

    from kmeans_dist.data import write_store

    X = _data(11)
    url = write_store(tmp_path / "s.zarr", X, chunk_rows=1000)
    arr = xr.DataArray(X, dims=("sample", "feature"))
    a = KMeans(5, init=X[:5]).fit(arr)
    b = KMeans(5, init=X[:5]).fit(str(url))
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert isinstance(b.labels_, da.Array)


def test_history_and_attributes():
    X = _data(12)
    km = KMeans(5, random_state=0).fit(X)
    assert km.n_features_in_ == X.shape[1]
    assert len(km.history_) == km.n_iter_
    assert {"iteration", "inertia", "center_shift", "seconds"} <= set(km.history_[0])
    assert km.cluster_sizes_.sum() == len(X)


def test_empty_cluster_relocated_not_zero():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (50, 2)), rng.normal(10, 1, (50, 2))])
    C0 = np.array([[0.0, 0.0], [10.0, 10.0], [1000.0, 1000.0]])  # third center gets no point
    km = KMeans(3, init=C0, max_iter=1).fit(X)
    sk = SKKMeans(3, init=C0, n_init=1, max_iter=1, algorithm="lloyd").fit(X)
    # relocated onto the point farthest from its center, exactly as scikit-learn
    assert np.any(np.all(X == km.cluster_centers_[2], axis=1))
    np.testing.assert_allclose(km.cluster_centers_, sk.cluster_centers_, rtol=1e-12)


def test_save_load_roundtrip_without_pickle(tmp_path):
    from kmeans_dist import load_model

    X = _data(13)
    km = KMeans(5, random_state=0).fit(X)
    p = km.save(tmp_path / "model")
    m = load_model(p)
    np.testing.assert_array_equal(m.cluster_centers_, km.cluster_centers_)
    np.testing.assert_array_equal(m.predict(X), km.predict(X))
    assert m.inertia_ == km.inertia_ and m.n_iter_ == km.n_iter_
    with np.load(tmp_path / "model" / "arrays.npz", allow_pickle=False) as z:
        assert "cluster_centers_" in z.files
    # array init round-trips too
    km2 = KMeans(5, init=X[:5]).fit(X)
    m2 = load_model(km2.save(tmp_path / "m2"))
    np.testing.assert_array_equal(m2.init, X[:5])


def test_save_is_atomic_on_crash(tmp_path, monkeypatch):
    from kmeans_dist.estimators import persistence as kio
    from kmeans_dist import load_model

    X = _data(14)
    km = KMeans(5, random_state=0).fit(X)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(kio.json, "dump", boom)
    with pytest.raises(RuntimeError):
        km.save(tmp_path / "model")
    assert not (tmp_path / "model").exists()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "model")


def test_kernels_lloyd_inmemory_matches_sklearn():
    X = _data(15)
    C0 = X[:5].copy()
    sk = SKKMeans(5, init=C0, n_init=1, algorithm="lloyd").fit(X)
    r = kernels.lloyd_inmemory(X, C0)
    np.testing.assert_allclose(r.centers, sk.cluster_centers_, rtol=1e-9)
    np.testing.assert_allclose(r.inertia, sk.inertia_, rtol=1e-9)
    r2 = kernels.kmeans_inmemory(X, 5, n_init=3, random_state=0)
    assert r2.inertia <= sk.inertia_ * 1.01


def test_tree_combine_groups_consecutive_blocks():
    calls = []

    def comb(parts):
        calls.append(list(parts))
        return "(" + "+".join(parts) + ")"

    out = kernels.tree_combine([str(i) for i in range(10)], comb, 4)
    assert out == "((0+1+2+3)+(4+5+6+7)+(8+9))"


def test_tree_finished_from_worker_subtrees_is_the_same_tree():
    """Workers combine the complete subtrees of the blocks they hold; the client finishes the tree: the
    result is the very tree of tree_combine, whatever the split of blocks between workers."""
    def comb(parts):
        return "(" + "+".join(parts) + ")"

    rng = np.random.default_rng(0)
    for n in [1, 2, 7, 8, 9, 27, 64, 65, 130]:
        for s in [2, 4, 8]:
            ref = kernels.tree_combine([str(i) for i in range(n)], comb, s)
            for n_workers in [1, 2, 3, 5]:
                owner = rng.integers(0, n_workers, n)
                if n_workers == 2:
                    owner = np.arange(n) * 2 // n  # contiguous ranges, as DaskBlocks places them
                nodes = {}
                for w in range(n_workers):
                    mine = {(0, i): str(i) for i in range(n) if owner[i] == w}
                    nodes.update(kernels.tree_subtrees(mine, n, comb, s))
                assert kernels.tree_root(nodes, n, comb, s) == ref


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(1000, 7, 5), (333, 1, 3), (50, 4, 1), (3000, 40, 12), (2000, 4, 64), (777, 8, 33),
                                   (1501, 300, 7), (903, 784, 10), (7, 300, 2)])
def test_fused_kernel_equals_array_api_path(dtype, weighted, shape, monkeypatch):
    """The compiled NumPy loop (kmeans_dist.kernels.fused) gives what the array-API path gives: the same labels,
    counts and farthest rows exactly, sums/inertia up to float rounding (it accumulates in float64)."""
    from kmeans_dist.kernels import fused as fused_module
    from kmeans_dist.kernels import lloyd as lloyd_module

    if not fused_module.available():
        pytest.skip("numba not importable")
    n, d, k = shape
    rng = np.random.default_rng(n + d + k)
    X = rng.normal(size=(n, d)).astype(dtype)
    X[5] = X[6]  # a duplicated row: equal distances, ties broken by index
    C = X[rng.choice(n, k, replace=False)].copy()
    w = rng.uniform(0.5, 2.0, n) if weighted else None
    for exact in (False, True):
        for sub in (None, 64):
            fused = kernels.lloyd_partial(X, w, C, offset=11, exact_inertia=exact, return_labels=True,
                                          sub_rows=sub)
            monkeypatch.setattr(lloyd_module, "_use_fused", lambda X, C: False)
            ref = kernels.lloyd_partial(X, w, C, offset=11, exact_inertia=exact, return_labels=True,
                                        sub_rows=sub)
            monkeypatch.undo()
            np.testing.assert_array_equal(fused["labels"], ref["labels"])
            np.testing.assert_array_equal(fused["count"], ref["count"])
            np.testing.assert_array_equal(fused["far_index"], ref["far_index"])
            np.testing.assert_array_equal(fused["far_label"], ref["far_label"])
            np.testing.assert_array_equal(fused["far_x"], ref["far_x"])
            rtol = 1e-4 if dtype == np.float32 else 1e-10
            np.testing.assert_allclose(fused["far_dist"], ref["far_dist"], rtol=rtol)
            # ||x||^2 + min(||c||^2 - 2 x.c) cancels for a row on its center: rounding is relative to ||x||^2
            np.testing.assert_allclose(fused["dist"], ref["dist"], rtol=rtol, atol=rtol * float(ref["dist"].max()))
            # the reference sums in the data's dtype: its rounding grows like sqrt(rows) x eps x max|x|
            atol = max(1e-6, float(np.finfo(dtype).eps * np.sqrt(n) * np.abs(X).max()))
            np.testing.assert_allclose(fused["sum"], ref["sum"], rtol=rtol, atol=atol)
            np.testing.assert_allclose(fused["weight"], ref["weight"], rtol=1e-6)
            np.testing.assert_allclose(fused["inertia"], ref["inertia"], rtol=rtol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d,k", [(6, 16), (4, 64), (32, 64), (40, 12), (300, 8), (784, 10)])
def test_a_repeated_center_never_wins(dtype, d, k):
    """Equal centers: the first copy takes every row, in both layouts of the compiled loop (centers by columns
    or by rows of the distance GEMM) and in the nearest-center kernel, as in exact arithmetic."""
    from kmeans_dist.kernels import fused as fused_module

    rng = np.random.default_rng(d * k)
    X = rng.normal(size=(3000, d)).astype(dtype)
    C = X[rng.choice(len(X), k, replace=False)].copy()
    C[k - 1] = C[k // 2] = C[1]  # later copies at other places of the BLAS micro-kernel
    part = kernels.lloyd_partial(X, None, C, return_labels=True)
    labels, d2 = kernels.assign_labels(X, C)
    assert part["count"][k // 2] == part["count"][k - 1] == 0
    assert not np.isin(labels, [k // 2, k - 1]).any()
    np.testing.assert_array_equal(labels, part["labels"])
    assert fused_module.columns_layout(d, k) == (k >= 2 * d)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d,k", [(300, 7), (784, 10)])
def test_direct_products_do_not_depend_on_the_rows_place(dtype, d, k):
    """Few centers and long rows take the compiled direct products (four rows at a time); a row's labels and
    distances are the same bit for bit wherever it sits in the block, the last, padded rows included, and equal
    to the products one row at a time."""
    from kmeans_dist.kernels import fused as fused_module

    if not fused_module.available():
        pytest.skip("numba not importable")
    assert fused_module.direct_layout(d, k)
    rng = np.random.default_rng(d + k)
    X = rng.normal(size=(203, d)).astype(dtype)
    C = X[rng.choice(len(X), k, replace=False)].copy()
    labels, dist = fused_module.nearest_block(X, C)
    for shift in (1, 2, 3, 5):
        lab_s, dist_s = fused_module.nearest_block(np.ascontiguousarray(X[shift:]), C)
        np.testing.assert_array_equal(lab_s, labels[shift:])
        np.testing.assert_array_equal(dist_s, dist[shift:])
    one = [fused_module.nearest_block(X[i:i + 1], C) for i in range(0, len(X), 17)]
    np.testing.assert_array_equal(np.concatenate([o[0] for o in one]), labels[::17])
    np.testing.assert_array_equal(np.concatenate([o[1] for o in one]), dist[::17])
    part = kernels.lloyd_partial(X, None, C, return_labels=True)
    np.testing.assert_array_equal(part["labels"], labels)


def test_dask_blocks_of_an_in_memory_array_carry_only_their_rows(dask_client):
    """Each block of a NumPy input goes to the cluster in a graph of its own rows: 16 MB in 8 blocks of 2 MB
    sends no graph above Dask's 10 MB large-graph threshold (the whole array in every block's graph did)."""
    import warnings

    from kmeans_dist.chunked import make_blocks
    from kmeans_dist.chunked.lloyd import data_stats

    X = np.random.default_rng(0).normal(size=(8 * 16_384, 16))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        blocks = make_blocks(X, block_rows=16_384, client=dask_client, engine="dask")
        try:
            assert blocks.kind == "dask" and blocks.n_blocks == 8
            stats = data_stats(blocks)
        finally:
            blocks.release()
    assert not [w for w in caught if "large graph" in str(w.message)], [str(w.message) for w in caught]
    np.testing.assert_allclose(stats["mean"], X.mean(axis=0), rtol=1e-10, atol=1e-12)
