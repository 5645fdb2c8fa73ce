"""kmeans_dist.data.datasets: seeded, chunking-independent generation; Zarr output; where k-means shines
and where it visibly fails."""
from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

from kmeans_dist.data import datasets as D
from kmeans_dist import metrics as M
from kmeans_dist.kernels import kmeans_inmemory

NAMES = sorted(D.DATASETS)


pytestmark = pytest.mark.usefixtures("threaded_unless_cluster")


@pytest.mark.parametrize("name", NAMES)
def test_shapes_seeded_and_chunking_independent(name):
    X, y = D.make_dataset(name, 700, random_state=3, chunk_rows=128)
    assert isinstance(X, da.Array) and isinstance(y, da.Array)
    assert X.shape == (700, 2) and y.shape == (700,)
    assert X.chunks[0][0] == 128 and X.dtype == np.float64 and y.dtype == np.int64
    Xa, ya = dask.compute(X, y)
    Xb, yb = D.make_dataset(name, 700, random_state=3, chunk_rows=700, as_numpy=True)
    np.testing.assert_array_equal(Xa, Xb)
    np.testing.assert_array_equal(ya, yb)
    Xc, _ = D.make_dataset(name, 700, random_state=4, as_numpy=True)
    assert not np.allclose(Xa, Xc)
    assert np.isfinite(Xa).all()
    assert set(np.unique(ya)) <= set(range(5))


def test_generation_blocks_span_chunks():
    # more rows than one generation block: chunks that straddle block boundaries agree
    n = D.GEN_BLOCK + 1000
    a = D.blobs(n, n_features=3, random_state=1, chunk_rows=30_001)[1]
    b = D.blobs(n, n_features=3, random_state=1, chunk_rows=n)[1]
    np.testing.assert_array_equal(a[D.GEN_BLOCK - 5:D.GEN_BLOCK + 5].compute(), b[D.GEN_BLOCK - 5:D.GEN_BLOCK + 5].compute())


def test_unequal_sizes_exact_small_cluster():
    _, y = D.unequal_sizes(5000, small_size=15, random_state=0, chunk_rows=999, as_numpy=True)
    assert np.bincount(y)[2] == 15
    # huge n: only the labels of a few chunks are computed, lazily
    _, y = D.unequal_sizes(10**8, small_size=15, random_state=0, chunk_rows=10**6)
    assert y.numblocks[0] == 100


def test_blobs_centers_std_and_dtype():
    C = np.array([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0]])
    X, y = D.blobs(4000, centers=C, cluster_std=[0.5, 2.0], random_state=0, dtype="float32", as_numpy=True)
    assert X.dtype == np.float32 and X.shape == (4000, 3)
    for c, s in ((0, 0.5), (1, 2.0)):
        np.testing.assert_allclose(X[y == c].mean(axis=0), C[c], atol=0.2)
        np.testing.assert_allclose(X[y == c].std(axis=0), s, rtol=0.1)


def test_rings_and_moons_geometry():
    X, y = D.rings(2000, factor=0.3, noise=0.0, random_state=0, as_numpy=True)
    r = np.linalg.norm(X, axis=1)
    np.testing.assert_allclose(r[y == 0], 1.0)
    np.testing.assert_allclose(r[y == 1], 0.3)
    X, y = D.moons(2000, noise=0.0, random_state=0, as_numpy=True)
    np.testing.assert_allclose(np.linalg.norm(X[y == 0], axis=1), 1.0)
    np.testing.assert_allclose(np.linalg.norm(X[y == 1] - [1.0, 0.5], axis=1), 1.0)


def test_write_to_zarr(tmp_path):
    from kmeans_dist.data import open_labels, open_store, store_info

    url = D.rings(1000, random_state=5, chunk_rows=300, url=tmp_path / "rings.zarr")
    info = store_info(url)
    assert info["shape"] == (1000, 2) and info["chunks"] == (300, 2) and info["has_labels"]
    assert info["attrs"]["source"] == "kmeans_dist.data.datasets.rings" and info["attrs"]["random_state"] == 5
    X, y = D.rings(1000, random_state=5, as_numpy=True)
    np.testing.assert_array_equal(open_store(url).compute(), X)
    np.testing.assert_array_equal(open_labels(url).compute(), y)
    with pytest.raises(FileExistsError):
        D.rings(1000, random_state=5, url=url)
    D.rings(1000, random_state=6, url=url, overwrite=True)


def test_distributed_generation_equals_threaded(dask_client):
    X, y = D.anisotropic(3000, random_state=2, chunk_rows=700)
    Xd, yd = dask_client.compute([X, y], sync=True)
    with dask.config.set(scheduler="threads"):
        Xt, yt = dask.compute(X, y)
    np.testing.assert_array_equal(Xd, Xt)
    np.testing.assert_array_equal(yd, yt)


def _acc(name, k, n=1500, seed=0):
    X, y = D.make_dataset(name, n, random_state=seed, as_numpy=True)
    lab = np.asarray(kmeans_inmemory(X, k, n_init=3, random_state=0).labels)
    return M.clustering_accuracy(y, lab)


def test_kmeans_shines_on_blobs():
    assert _acc("blobs", 4) >= 0.99


@pytest.mark.parametrize("name,k,max_acc", [("rings", 2, 0.6), ("moons", 2, 0.9), ("anisotropic", 3, 0.85),
                                            ("unequal_sizes", 3, 0.9)])
def test_kmeans_visibly_fails(name, k, max_acc):
    assert _acc(name, k) < max_acc


def test_bad_arguments():
    with pytest.raises(ValueError, match="Unknown data set"):
        D.make_dataset("spirals")
    with pytest.raises(ValueError, match="factor"):
        D.rings(10, factor=1.5)
    with pytest.raises(ValueError, match="small_size"):
        D.unequal_sizes(10, small_size=10)
    with pytest.raises(ValueError, match="n_samples"):
        D.blobs(0)
    with pytest.raises(ValueError, match="non-negative"):
        D.moons(10, random_state=-1)
    with pytest.raises(ValueError, match="transform"):
        D.anisotropic(10, transform=np.eye(3))
