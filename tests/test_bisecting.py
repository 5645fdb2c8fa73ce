"""BisectingKMeans: scikit-learn's reference, the tree, determinism over chunkings and workers, persistence."""
from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
from sklearn.cluster import BisectingKMeans as SkBisectingKMeans
from threadpoolctl import threadpool_limits

from kmeans_dist import BisectingKMeans, load_model
from kmeans_dist.chunked import make_blocks
from kmeans_dist.chunked.bisecting import bisecting_on_blocks
from kmeans_dist.data import write_store
from kmeans_dist.estimators import ModelFileError
from kmeans_dist.estimators.validation import InvalidParameterError


@pytest.fixture(scope="module")
def gauss():
    return np.random.default_rng(0).normal(size=(3000, 5))


@pytest.mark.parametrize("strategy", ["biggest_inertia", "largest_cluster"])
@pytest.mark.parametrize("init", ["random", "k-means++"])
def test_inertia_within_2_percent_of_sklearn(gauss, strategy, init):
    ratios = []
    for seed in range(5):
        ours = BisectingKMeans(8, init=init, bisecting_strategy=strategy, random_state=seed, client=False).fit(gauss)
        with threadpool_limits(1):  # OpenMP threads spinning on a shared machine slow scikit-learn down 100x
            ref = SkBisectingKMeans(8, init=init, bisecting_strategy=strategy, random_state=seed).fit(gauss)
        ratios.append(ours.inertia_ / ref.inertia_)
        assert ours.cluster_centers_.shape == ref.cluster_centers_.shape
    assert abs(np.median(ratios) - 1) < 0.02, ratios


def test_tree_predict_and_labels(gauss):
    bkm = BisectingKMeans(6, n_init=3, random_state=1, client=False).fit(gauss)
    assert np.array_equal(bkm.predict(gauss), bkm.labels_)
    assert np.array_equal(np.bincount(bkm.labels_, minlength=6), bkm.cluster_sizes_)
    # the inertia is that of the labels on their leaves
    d2 = ((gauss - bkm.cluster_centers_[bkm.labels_]) ** 2).sum()
    assert bkm.inertia_ == pytest.approx(d2, rel=1e-10)
    # predict descends the tree: at the root the nearer of its two children, and so on
    ch, C, lab = bkm._tree_children, bkm._tree_centers, bkm._tree_labels
    x = gauss[:50]
    node = np.zeros(len(x), dtype=int)
    while (ch[node, 0] >= 0).any():
        inner = ch[node, 0] >= 0
        kids = ch[node[inner]]
        d = ((x[inner, None, :] - C[kids]) ** 2).sum(-1)
        node[inner] = kids[np.arange(len(kids)), d.argmin(1)]
    assert np.array_equal(lab[node], bkm.predict(x))
    assert ch.shape == (11, 2) and sorted(lab[lab >= 0].tolist()) == list(range(6))


def test_every_try_advances_in_the_same_pass(gauss):
    """n_init tries of a bisection share the passes: the number of 2-means passes is the iteration count
    (+ one scoring pass per bisection when there are several tries), whatever n_init."""
    class Counting:
        def __init__(self, blocks):
            self.b, self.calls = blocks, []

        def __getattr__(self, name):
            return getattr(self.b, name)

        def map_state(self, fn, *a, **kw):
            self.calls.append(fn.__name__)
            return self.b.map_state(fn, *a, **kw)

    for n_init in (1, 4):
        blocks = Counting(make_blocks(gauss, block_rows=700, client=False))
        res = bisecting_on_blocks(blocks, 5, n_init=n_init, random_state=0)
        steps = blocks.calls.count("_step_chunk")
        assert steps == res.n_iter + (4 if n_init > 1 else 0)
        assert blocks.calls.count("_split_chunk") == 4 and blocks.calls.count("_fetch_chunk") == 4


def test_same_result_whatever_chunking_and_workers(dask_client, tmp_path):
    X = np.random.default_rng(3).normal(size=(3000, 4)).astype(np.float32)
    w = np.random.default_rng(4).uniform(0.5, 2.0, size=3000)
    kw = dict(n_clusters=4, n_init=2, init="k-means++", random_state=7, block_rows=500, max_iter=8)
    ref = BisectingKMeans(**kw, client=False).fit(X, sample_weight=w)
    for chunks, client in ((1700, False), (600, dask_client)):  # leaves kept on the two workers in the second
        got = BisectingKMeans(**kw, client=client).fit(da.from_array(X, chunks=(chunks, 4)), sample_weight=w)
        assert np.array_equal(got.cluster_centers_, ref.cluster_centers_)
        assert np.array_equal(np.asarray(got.labels_.compute()), ref.labels_)
        assert got.inertia_ == ref.inertia_
    # a Zarr store path and an xarray DataArray, in process
    url = write_store(tmp_path / "x.zarr", X, chunk_rows=900)
    from_store = BisectingKMeans(**kw, client=False).fit(str(url), sample_weight=w)
    assert np.array_equal(from_store.cluster_centers_, ref.cluster_centers_)
    xr = pytest.importorskip("xarray")
    arr = xr.DataArray(X, dims=("sample", "feature"))
    assert np.array_equal(BisectingKMeans(**kw, client=False).fit(arr, sample_weight=w).cluster_centers_,
                          ref.cluster_centers_)


def test_save_load_round_trip(gauss, tmp_path):
    bkm = BisectingKMeans(7, bisecting_strategy="largest_cluster", random_state=0, client=False).fit(gauss)
    path = bkm.save(tmp_path / "m")
    back = load_model(path)
    assert type(back) is BisectingKMeans and back.bisecting_strategy == "largest_cluster"
    for a in ("cluster_centers_", "_tree_centers", "_tree_children", "_tree_labels"):
        assert np.array_equal(getattr(back, a), getattr(bkm, a))
    assert np.array_equal(back.predict(gauss), bkm.labels_)
    # a tree edited into a non-tree does not load
    z = dict(np.load(tmp_path / "m" / "arrays.npz"))
    z["_tree_children"][0] = [0, 0]
    np.savez(tmp_path / "m" / "arrays.npz", **z)
    with pytest.raises(ModelFileError, match="not a tree"):
        load_model(path)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["class"] == "BisectingKMeans"


def test_validation_wording():
    X = np.zeros((5, 2))
    with pytest.raises(InvalidParameterError, match="The 'bisecting_strategy' parameter of BisectingKMeans must be "
                                                    "a str among"):
        BisectingKMeans(bisecting_strategy="smallest").fit(X)
    with pytest.raises(InvalidParameterError, match="The 'n_init' parameter of BisectingKMeans must be an int"):
        BisectingKMeans(n_init=0).fit(X)
    with pytest.raises(ValueError, match="n_samples=5 should be >= n_clusters=8"):
        BisectingKMeans(client=False).fit(X)


def test_one_cluster_and_duplicates():
    X = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]])
    one = BisectingKMeans(1, client=False).fit(X)
    assert np.allclose(one.cluster_centers_, X.mean(axis=0)) and (one.labels_ == 0).all()
    with pytest.warns(Warning, match="Number of distinct clusters"):
        BisectingKMeans(3, client=False, random_state=0).fit(np.ones((6, 2)))
