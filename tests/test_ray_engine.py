"""Ray as a second engine of the chunked driver (``engine="ray"``): the blocks in Ray actors, the same
canonical blocks and reduction tree, so centers, inertia and labels are bit-identical to the Dask engine
(the session ``dask_client``) and to an in-process fit, for several data sets and every init; a Zarr store
is read by the actors themselves.  A local Ray (2 CPUs, 127.0.0.1) is started once for the module."""
from __future__ import annotations


import numpy as np
import pytest

ray = pytest.importorskip("ray")

from kmeans_dist import KMeans, MiniBatchKMeans  # noqa: E402
from kmeans_dist.chunked.driver import make_blocks, resolve_engine  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """blobs (NumPy), the same rows in a Zarr store with uneven chunks, and a dask array of other chunks."""
    import dask.array as da

    from kmeans_dist.data import write_store
    from kmeans_dist.data.datasets import blobs

    X, _ = blobs(12_000, centers=6, n_features=5, random_state=3, as_numpy=True)
    url = write_store(str(tmp_path_factory.mktemp("ray-engine") / "blobs.zarr"), X, chunk_rows=1_777)
    Xd = da.from_array(X, chunks=((5_000, 333, 6_667), (5,)))
    return {"numpy": X, "zarr": url, "dask": Xd}


def _same(a, b):
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.inertia_ == b.inertia_
    np.testing.assert_array_equal(np.asarray(a.labels_), np.asarray(b.labels_))
    assert a.n_iter_ == b.n_iter_


def _labels(km):
    lab = km.labels_
    return np.asarray(lab.compute() if hasattr(lab, "compute") else lab)


@pytest.mark.parametrize("init", ["k-means||", "k-means++", "random", "random-partition"])
def test_kmeans_ray_equals_dask_and_local(ray_local, dask_client, data, init):
    kw = dict(n_clusters=6, init=init, random_state=7, block_rows=1_000, n_init=2 if init.startswith("random") else 1)
    local = KMeans(**kw, engine="local").fit(data["numpy"])
    on_ray = KMeans(**kw, engine="ray").fit(data["numpy"])
    on_dask = KMeans(**kw, engine="dask", client=dask_client).fit(data["numpy"])
    _same(on_ray, local)
    _same(on_ray, on_dask)


@pytest.mark.parametrize("source", ["zarr", "dask"])
def test_lazy_inputs_read_by_the_actors(ray_local, dask_client, data, source):
    """A store path (and a dask array of other chunks): the same canonical blocks, the same fit; for the
    store every actor reads its own rows (the driver puts nothing in the object store)."""
    import dask

    kw = dict(n_clusters=6, random_state=1, block_rows=1_000)
    local = KMeans(**kw, engine="local").fit(data["numpy"])
    on_ray = KMeans(**kw, engine="ray").fit(data[source])
    on_dask = KMeans(**kw, engine="dask", client=dask_client).fit(data[source])
    for km in (on_ray, on_dask):
        np.testing.assert_array_equal(km.cluster_centers_, local.cluster_centers_)
        assert km.inertia_ == local.inertia_
        with dask.config.set(scheduler="threads"):
            np.testing.assert_array_equal(_labels(km), local.labels_)
    if source == "zarr":
        from kmeans_dist.data import as_dask_array

        blocks = make_blocks(as_dask_array(data["zarr"]), block_rows=1_000, engine="ray")
        try:
            assert blocks.kind == "ray" and blocks.n_blocks == 12
            assert all(src[0] == "dask" for src in blocks._src) and blocks._refs == []
        finally:
            blocks.release()


def test_weights_hamerly_and_minibatch(ray_local, dask_client, data):
    X = data["numpy"]
    w = np.random.default_rng(0).uniform(0.5, 2.0, size=X.shape[0])
    kw = dict(n_clusters=6, random_state=2, block_rows=1_500)
    _same(KMeans(**kw, engine="ray").fit(X, sample_weight=w), KMeans(**kw, engine="local").fit(X, sample_weight=w))
    # Hamerly's bounds live next to the blocks in the actors (one table per actor process)
    hk = dict(kw, algorithm="hamerly", n_clusters=12)
    _same(KMeans(**hk, engine="ray").fit(X), KMeans(**hk, engine="dask", client=dask_client).fit(X))
    mk = dict(n_clusters=6, random_state=5, batch_size=512, max_iter=3, block_rows=1_500, polish_iter=2)
    a = MiniBatchKMeans(**mk, engine="ray").fit(X)
    b = MiniBatchKMeans(**mk, engine="local").fit(X)
    c = MiniBatchKMeans(**mk, engine="dask", client=dask_client).fit(X)
    for other in (b, c):
        np.testing.assert_array_equal(a.cluster_centers_, other.cluster_centers_)
        assert a.inertia_ == other.inertia_
        np.testing.assert_array_equal(a.labels_, other.labels_)


def test_metrics_and_engine_resolution(ray_local, data):
    from kmeans_dist.metrics import partition_scores

    X = data["numpy"]
    C = X[:6]
    y = np.arange(X.shape[0]) % 3
    assert partition_scores(X, C, y, engine="ray") == partition_scores(X, C, y, engine="local")
    assert resolve_engine("auto", client=False) == "ray"  # a connected Ray driver, no Dask client
    assert resolve_engine("local") == "local"
    with pytest.raises(ValueError, match="engine must be one of"):
        resolve_engine("spark")
    with pytest.raises(ValueError, match="engine"):
        KMeans(2, engine="spark").fit(X)


def test_state_lost_from_an_actor_is_recomputed_from_its_lineage(ray_local, data):
    """k-means++ keeps per-block states in the actors; dropping every state mid-seeding (as a restarted
    actor would have none) recomputes them from the calls that made them: the same centers."""
    from kmeans_dist.chunked import ray_engine
    from kmeans_dist.chunked.seeding import init_centers

    X = data["numpy"]
    ref = init_centers(None, 6, "k-means++", random_state=4, blocks=make_blocks(X, block_rows=1_000, engine="local"))
    blocks = make_blocks(X, block_rows=1_000, engine="ray")
    calls = {"n": 0}
    orig = blocks.map_state

    def forgetful(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:  # forget every state kept so far
            ray.get([act.unload.remote(blocks.token) for act in blocks.actors])
            for i in range(len(blocks.actors)):
                blocks._reload(i)
        return orig(*a, **k)

    blocks.map_state = forgetful
    try:
        got = init_centers(None, 6, "k-means++", random_state=4, blocks=blocks)
    finally:
        blocks.release()
    np.testing.assert_array_equal(got, ref)
    assert calls["n"] > 4 and ray_engine.STATES_PER_BLOCK >= 2


def test_kernel_errors_surface_as_themselves(ray_local):
    from kmeans_dist.kernels.stats import NonFiniteError

    X = np.ones((3_000, 3))
    X[2_345, 1] = np.nan
    with pytest.raises((NonFiniteError, ValueError), match="2345|NaN"):
        KMeans(2, engine="ray", block_rows=1_000).fit(X)


def test_cli_fit_on_ray(ray_local, data, tmp_path, capsys):
    """``kmeans-dist fit STORE --engine ray``: the connected Ray runs the passes; same model as in process."""
    import json

    from kmeans_dist import load_model
    from kmeans_dist.cli import main

    out = tmp_path / "model"
    main(["fit", data["zarr"], "--k", "6", "--seed", "0", "--engine", "ray", "--out", str(out)])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ref = KMeans(6, random_state=0, engine="local").fit(data["numpy"])
    assert summary["inertia"] == ref.inertia_
    np.testing.assert_array_equal(load_model(str(out)).cluster_centers_, ref.cluster_centers_)
