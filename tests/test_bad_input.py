"""Every bad input gets a clear error, and nothing is written half-way."""
from __future__ import annotations


import numpy as np
import pytest
import dask.array as da

from kmeans_dist import KMeans, MiniBatchKMeans
from kmeans_dist.data import DataError, write_store


def _X(n=300, d=4, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def test_nan_names_chunk_and_rows():
    X = _X(1000)
    X[537, 2] = np.nan
    with pytest.raises(ValueError, match=r"Input X contains NaN.*row 537, feature 2.*rows 500 to 999"):
        KMeans(3, block_rows=500).fit(X)


def test_inf_in_dask_input(dask_client):
    X = _X(1000)
    X[10, 1] = np.inf
    with pytest.raises(ValueError, match=r"contains infinity.*row 10, feature 1"):
        KMeans(3, block_rows=250, client=dask_client).fit(da.from_array(X, chunks=250))


@pytest.mark.parametrize("shape,match", [((10,), "Expected a 2D array.*got 1D"), ((4, 5, 6), "Expected a 2D array.*got 3D")])
def test_wrong_ndim(shape, match):
    with pytest.raises(ValueError, match=match):
        KMeans(2).fit(np.zeros(shape))


@pytest.mark.parametrize("arr", [np.array([["a", "b"], ["c", "d"]]), np.array([[1, None], [2, 3]], dtype=object)])
def test_non_numeric_dtype(arr):
    with pytest.raises(TypeError, match="must have a numeric dtype"):
        KMeans(1).fit(arr)


def test_more_clusters_than_samples():
    with pytest.raises(ValueError, match=r"n_samples=5 should be >= n_clusters=6\."):
        KMeans(6).fit(_X(5))


@pytest.mark.parametrize("params,match", [
    ({"n_clusters": 0}, r"The 'n_clusters' parameter of KMeans must be an int in the range \[1, inf\)\. Got 0 instead\."),
    ({"n_clusters": 2.5}, r"The 'n_clusters' parameter of KMeans must be an int in the range \[1, inf\)\. Got 2.5 instead\."),
    ({"init": "kmeans"}, r"The 'init' parameter of KMeans must be a str among .* or an array-like\. Got 'kmeans' instead\."),
    ({"tol": -1.0}, r"The 'tol' parameter of KMeans must be a float in the range \[0, inf\)\. Got -1.0 instead\."),
    ({"max_iter": 0}, r"The 'max_iter' parameter of KMeans must be an int in the range \[1, inf\)"),
    ({"n_init": "many"}, r"The 'n_init' parameter of KMeans must be a str among \{'auto'\} or an int"),
])
def test_parameter_messages(params, match):
    with pytest.raises(ValueError, match=match):
        KMeans(**{"n_clusters": 2, **params}).fit(_X())


def test_minibatch_parameter_message():
    with pytest.raises(ValueError, match=r"The 'batch_size' parameter of MiniBatchKMeans must be an int in the range \[1, inf\)\. Got 0 instead\."):
        MiniBatchKMeans(2, batch_size=0).fit(_X())


def test_init_array_shape():
    with pytest.raises(ValueError, match="does not match the number of clusters 3"):
        KMeans(3, init=np.zeros((2, 4))).fit(_X())
    with pytest.raises(ValueError, match="does not match the number of features of the data 4"):
        KMeans(2, init=np.zeros((2, 3))).fit(_X())


def test_sample_weight_shape():
    with pytest.raises(ValueError, match=r"sample_weight.shape == \(3,\), expected \(300,\)"):
        KMeans(2).fit(_X(), sample_weight=np.ones(3))


def test_fewer_distinct_points_warns():
    X = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0]]), 20, axis=0)
    with pytest.warns(Warning, match=r"Number of distinct clusters \(2\) found smaller than n_clusters \(3\)"):
        KMeans(3, random_state=0).fit(X)


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        KMeans(2).fit(str(tmp_path / "nope.zarr"))


def test_empty_store(tmp_path):
    import zarr

    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w", zarr_format=3)
    with pytest.raises(DataError, match="has no array 'X'.*empty store"):
        KMeans(2).fit(str(tmp_path / "empty.zarr"))
    g = zarr.open_group(str(tmp_path / "empty2.zarr"), mode="w", zarr_format=3)
    g.create_array("X", shape=(0, 3), chunks=(1, 3), dtype="f8")
    with pytest.raises(DataError, match=r"is empty \(shape \(0, 3\)\)"):
        KMeans(2).fit(str(tmp_path / "empty2.zarr"))


def test_corrupt_chunk_is_named(tmp_path):
    url = write_store(tmp_path / "c.zarr", _X(400), chunk_rows=100)
    chunk = tmp_path / "c.zarr" / "X" / "c" / "2" / "0"
    assert chunk.exists()
    chunk.write_bytes(b"garbage, not a compressed chunk")
    with pytest.raises(Exception, match=r"Cannot decode chunk 2 \(rows 200 to 299\)"):
        KMeans(2).fit(url)


def test_not_fitted_and_feature_mismatch():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        KMeans(2).predict(_X())
    km = KMeans(2, random_state=0).fit(_X())
    with pytest.raises(ValueError, match="X has 3 features, but KMeans is expecting 4 features as input"):
        km.predict(_X(d=3))


def test_input_store_never_modified(tmp_path):
    url = write_store(tmp_path / "in.zarr", _X(500), chunk_rows=100)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "in.zarr").rglob("*") if p.is_file()}
    KMeans(3, random_state=0).fit(url)
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "in.zarr").rglob("*") if p.is_file()}
    assert before == after
