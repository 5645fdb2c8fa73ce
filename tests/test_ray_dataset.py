"""A Ray Dataset as input of ``engine="ray"``: every actor gets its rows from the dataset's blocks (the
driver never gathers X), in the dataset's order, cut into the same canonical blocks: the fit is
bit-identical to the in-process fit of the same rows as a NumPy array.  Numeric columns (one feature
each) or one tensor column of shape (d,); predict and score take a Dataset too."""
from __future__ import annotations

import os

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pd = pytest.importorskip("pandas")

from kmeans_dist import KMeans  # noqa: E402


@pytest.fixture(scope="module")
def ray_local():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        ray.shutdown()
    from pipelines.ray_local import init_local_ray  # every Ray process bound to 127.0.0.1

    init_local_ray(num_cpus=2, object_store_memory=300 * 2**20, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    old = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
    ctx.execution_options.preserve_order, ctx.enable_progress_bars = True, False
    yield
    ctx.execution_options.preserve_order, ctx.enable_progress_bars = old
    ray.shutdown()


@pytest.fixture(scope="module")
def X():
    from kmeans_dist.data.datasets import blobs

    return blobs(9_000, centers=5, n_features=4, random_state=11, as_numpy=True)[0]


def _frames(X, cuts=(0, 4_000, 5_321, 9_000), dtype=None):
    cols = {f"f{j}": X[:, j] if dtype is None else X[:, j].astype(dtype) for j in range(X.shape[1])}
    df = pd.DataFrame(cols)
    return [df.iloc[a:b].reset_index(drop=True) for a, b in zip(cuts[:-1], cuts[1:])]


def _same(a, b):
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.inertia_ == b.inertia_ and a.n_iter_ == b.n_iter_
    np.testing.assert_array_equal(a.labels_, b.labels_)


KW = dict(n_clusters=5, random_state=3, block_rows=1_000)


def _free_cpus():
    """The engine's pooled actors keep their CPUs between fits; Ray Data's tasks need some."""
    from kmeans_dist.chunked.ray_engine import shutdown_pool

    shutdown_pool()


def test_columns_dataset_bit_identical_to_numpy(ray_local, X):
    """Blocks of uneven sizes (4000, 1321, 3679 rows) against canonical blocks of 1000: the same fit,
    predict and score as in process on ``ds.to_pandas().to_numpy()``."""
    _free_cpus()
    ds = ray.data.from_pandas(_frames(X))
    Xn = ds.to_pandas().to_numpy()
    np.testing.assert_array_equal(Xn, X)
    local = KMeans(**KW, engine="local").fit(Xn)
    km = KMeans(**KW, engine="ray").fit(ds)
    _same(km, local)
    assert km.n_features_in_ == 4 and km.labels_.shape == (9_000,)
    np.testing.assert_array_equal(km.predict(ds), local.predict(Xn))
    assert km.score(ds) == local.score(Xn)
    w = np.random.default_rng(0).uniform(0.5, 2.0, size=X.shape[0])
    _same(KMeans(**KW, engine="ray").fit(ds, sample_weight=w), KMeans(**KW, engine="local").fit(Xn, sample_weight=w))


def test_tensor_column_lazy_dataset_and_dtypes(ray_local, X):
    """``ray.data.from_numpy`` (one tensor column of shape (d,)); a dataset still to be executed
    (``map_batches``, materialized on the cluster); float32 columns stay float32, integers become float64."""
    from kmeans_dist.chunked import make_blocks
    from kmeans_dist.estimators.kmeans import prepare_X

    _free_cpus()  # every dataset made first (Ray Data's tasks need the CPUs the actors take)
    tensor = ray.data.from_numpy(X)
    lazy = ray.data.from_pandas(_frames(X)).map_batches(lambda b: b, batch_format="pandas")
    cols = ray.data.from_pandas(_frames(X))
    X32, Xi = X.astype(np.float32), np.rint(X * 10).astype(np.int64)
    ds32, dsi = ray.data.from_pandas(_frames(X, dtype=np.float32)), ray.data.from_pandas(_frames(Xi))
    local = KMeans(**KW, engine="local").fit(X)
    _same(KMeans(**KW, engine="ray").fit(tensor), local)
    km = KMeans(**KW, engine="auto").fit(lazy)  # "auto" with a Dataset: the Ray engine; run on the cluster
    _same(km, local)
    src, is_lazy = prepare_X(cols)
    blocks = make_blocks(src, block_rows=1_000, engine="ray")
    try:  # every actor reads its own rows from the dataset's blocks: nothing put by the driver
        assert not is_lazy and blocks.n_blocks == 9 and blocks._refs == []
        assert all(s[0] == "dataset" for s in blocks._src)
    finally:
        blocks.release()
    km32 = KMeans(**KW, engine="ray").fit(ds32)
    assert km32.cluster_centers_.dtype == np.float32
    _same(km32, KMeans(**KW, engine="local").fit(X32))
    kmi = KMeans(**KW, engine="ray").fit(dsi)
    assert kmi.cluster_centers_.dtype == np.float64
    _same(kmi, KMeans(**KW, engine="local").fit(Xi))


def test_bad_datasets_are_refused_clearly(ray_local, X):
    _free_cpus()
    df = pd.DataFrame({"f0": X[:50, 0], "name": ["a"] * 50, "f1": X[:50, 1]})
    bad, ds = ray.data.from_pandas(df), ray.data.from_pandas(_frames(X[:300], cuts=(0, 300)))
    few = ray.data.from_numpy(X[:10, :3])
    with pytest.raises(TypeError, match="column 'name'"):
        KMeans(2, engine="ray").fit(bad)
    with pytest.raises(TypeError, match="engine='ray'"):
        KMeans(2, engine="local").fit(ds)

    def boom(batch):
        raise RuntimeError("the Dataset was executed")

    unexecuted = ray.data.from_numpy(X[:20]).map_batches(boom)  # refused before it is executed
    for engine in ("local", "dask"):
        with pytest.raises(TypeError, match="engine='ray'"):
            KMeans(2, engine=engine).fit(unexecuted)
    km = KMeans(2, random_state=0, engine="ray").fit(ds)
    with pytest.raises(TypeError, match="Ray Dataset"):
        km.transform(ds)
    with pytest.raises(ValueError, match="3 features"):
        km.predict(few)
