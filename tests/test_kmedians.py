"""KMedians against NumPy/SciPy references: exact per-cluster medians over the blocks, L1-nearest labels,
determinism whatever the chunking or the workers, every input type, persistence and validation."""
import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.spatial.distance import cdist
from sklearn.datasets import make_blobs

from kmeans_dist import KMedians, load_model
from kmeans_dist.chunked.driver import make_blocks
from kmeans_dist.chunked.medians import cluster_medians, feature_range
from kmeans_dist.estimators.validation import InvalidParameterError

pytestmark = pytest.mark.usefixtures("threaded_unless_cluster")


def _blobs(n=1500, d=3, k=4, seed=0):
    X, _ = make_blobs(n_samples=n, n_features=d, centers=k, cluster_std=1.5, random_state=seed)
    return X


def _check_median_fixed_point(X, km, rtol=1e-12):
    D = cdist(X, km.cluster_centers_, "cityblock")
    labels = np.asarray(km.labels_)
    # every label is an L1-nearest center (the lowest index at a tie)
    np.testing.assert_array_equal(labels, np.argmin(D, axis=1))
    np.testing.assert_allclose(km.inertia_, D.min(axis=1).sum(), rtol=rtol)
    for j in range(km.n_clusters):
        np.testing.assert_array_equal(km.cluster_centers_[j], np.median(X[labels == j], axis=0))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_converged_centers_are_exact_medians_and_labels_l1_nearest(dtype):
    X = _blobs().astype(dtype)
    km = KMedians(n_clusters=4, random_state=0, block_rows=200, client=False).fit(X)
    assert km.converged_ and km.n_iter_ < km.max_iter
    assert km.cluster_centers_.dtype == dtype
    # distances are summed in X's dtype
    _check_median_fixed_point(X.astype(np.float64), km, rtol=1e-12 if dtype == np.float64 else 1e-5)
    assert km.n_passes_ >= km.n_iter_ + 1
    np.testing.assert_array_equal(km.predict(X), km.labels_)
    np.testing.assert_allclose(km.transform(X), cdist(X, km.cluster_centers_, "cityblock"), rtol=1e-5)
    np.testing.assert_allclose(-km.score(X), km.inertia_, rtol=1e-6)


def test_duplicates_and_even_counts_exact():
    rng = np.random.default_rng(1)
    X = rng.integers(0, 6, size=(1000, 4)).astype(float)  # many ties, even and odd cluster sizes
    km = KMedians(n_clusters=3, random_state=2, block_rows=97, n_buckets=4, client=False).fit(X)
    assert km.converged_
    _check_median_fixed_point(X, km)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 400), d=st.integers(1, 3), k=st.integers(1, 4),
       rows=st.integers(1, 150), buckets=st.integers(2, 9), gather=st.integers(1, 40), kind=st.integers(0, 2))
def test_cluster_medians_equal_np_median_of_repeated_rows(seed, n, d, k, rows, buckets, gather, kind):
    """Integer weights: the weighted median is np.median of the rows repeated that many times (zeros
    included), whatever the blocks, buckets and gather threshold."""
    rng = np.random.default_rng(seed)
    X = [rng.integers(0, 4, (n, d)).astype(float), rng.standard_normal((n, d)),
         np.round(rng.standard_normal((n, d)), 1)][kind]
    w = rng.integers(0, 4, n).astype(float)
    C = X[rng.choice(n, size=min(k, n), replace=False)]
    blocks = make_blocks(X, w, block_rows=rows, client=False)
    med, asg, _ = cluster_medians(blocks, C, feature_range(blocks), n_buckets=buckets, gather_max=gather)
    labels = np.argmin(cdist(X, C, "cityblock"), axis=1)
    for j in range(C.shape[0]):
        Xr = np.repeat(X[labels == j], w[labels == j].astype(int), axis=0)
        if len(Xr):
            np.testing.assert_array_equal(med[j], np.median(Xr, axis=0))
        else:  # an empty (or zero-weight) cluster keeps its center
            np.testing.assert_array_equal(med[j], C[j])
    np.testing.assert_array_equal(asg["count"], np.bincount(labels, minlength=C.shape[0]))


def test_float_weights_weighted_median():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((500, 2))
    w = rng.uniform(0.1, 2.0, 500)
    blocks = make_blocks(X, w, block_rows=64, client=False)
    C = X[:1]
    med, _, _ = cluster_medians(blocks, C, feature_range(blocks), n_buckets=8, gather_max=16)
    for f in range(2):
        o = np.argsort(X[:, f], kind="stable")
        cw = np.cumsum(w[o])
        assert med[0, f] == X[o, f][np.searchsorted(cw, cw[-1] / 2)]  # F(t1) >= W/2 first; no exact half here


def test_same_result_whatever_the_chunking_and_workers(dask_client, tmp_path):
    import xarray as xr

    from kmeans_dist.data import write_store

    X = _blobs(n=800, seed=4)
    kw = dict(n_clusters=4, random_state=7, block_rows=128, max_iter=3)  # a few iterations: the same ones
    ref = KMedians(**kw, client=False).fit(X)
    runs = [KMedians(**kw).fit(da.from_array(X, chunks=(137, 3))),  # blocks on the 2 worker processes
            KMedians(**kw, client=False).fit(str(write_store(tmp_path / "s.zarr", X, chunk_rows=300))),
            KMedians(**kw, client=False).fit(da.from_array(X, chunks=(500, 3))),
            KMedians(**kw, client=False).fit(xr.DataArray(X, dims=("sample", "feature")))]
    for r in runs:
        np.testing.assert_array_equal(r.cluster_centers_, ref.cluster_centers_)
        assert r.inertia_ == ref.inertia_ and r.n_iter_ == ref.n_iter_ and r.n_passes_ == ref.n_passes_
        np.testing.assert_array_equal(np.asarray(r.labels_), ref.labels_)
    assert isinstance(runs[0].labels_, da.Array)


def test_empty_cluster_reseeded_on_farthest_row():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (50, 2)), rng.normal(10, 1, (50, 2))])
    C0 = np.array([[0.0, 0.0], [10.0, 10.0], [1000.0, 1000.0]])
    km = KMedians(3, init=C0, client=False).fit(X)
    assert len(np.unique(km.labels_)) == 3 and km.converged_
    _check_median_fixed_point(X, km)


def test_save_load_roundtrip(tmp_path):
    X = _blobs(n=300)
    km = KMedians(n_clusters=3, random_state=0, client=False).fit(X)
    m = load_model(km.save(tmp_path / "m"))
    assert type(m) is KMedians and m.n_passes_ == km.n_passes_
    np.testing.assert_array_equal(m.cluster_centers_, km.cluster_centers_)
    np.testing.assert_array_equal(m.predict(X), km.predict(X))
    assert m.score(X) == km.score(X)


def test_parameter_validation_and_input_errors():
    X = _blobs(n=50)
    with pytest.raises(InvalidParameterError, match=r"The 'n_clusters' parameter of KMedians must be an int in "
                                                    r"the range \[1, inf\)\. Got 0 instead\."):
        KMedians(n_clusters=0).fit(X)
    with pytest.raises(InvalidParameterError, match="The 'n_buckets' parameter of KMedians"):
        KMedians(n_buckets=1).fit(X)
    with pytest.raises(InvalidParameterError, match="The 'init' parameter of KMedians"):
        KMedians(init="build").fit(X)
    with pytest.raises(TypeError, match="sparse"):
        import scipy.sparse as sp

        KMedians(2).fit(sp.csr_array(X))
    Xn = X.copy()
    Xn[7, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        KMedians(2, client=False).fit(Xn)
