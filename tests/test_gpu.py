"""The CuPy path: the same kernels, drivers, estimator and deep re-initialisation on a CUDA GPU.

Every test compares the GPU result with the NumPy result on the same inputs and the same initial
centers.  Skipped where there is no CUDA GPU with CuPy (CI and the development machine); run them with
``pytest -m gpu`` on a machine that has one.
"""
from __future__ import annotations

import numpy as np
import pytest

from kmeans_dist.kernels.xp import gpu_available

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not gpu_available(), reason="no CUDA GPU with CuPy")]


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


def _blobs(n=6000, d=16, k=5, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    C = rng.normal(scale=6.0, size=(k, d))
    y = rng.integers(0, k, n)
    return (C[y] + rng.normal(size=(n, d))).astype(dtype), y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lloyd_partial_matches_numpy(cp, dtype):
    from kmeans_dist.kernels import lloyd_partial

    X, _ = _blobs(dtype=dtype)
    w = np.random.default_rng(1).uniform(0.5, 2.0, X.shape[0]).astype(dtype)
    C = X[:5].copy()
    pn = lloyd_partial(X, w, C, return_labels=True, exact_inertia=True)
    pc = lloyd_partial(cp.asarray(X), cp.asarray(w), cp.asarray(C), return_labels=True, exact_inertia=True)
    # partials come back to the host as NumPy whatever the namespace
    assert isinstance(pc["sum"], np.ndarray) and pc["sum"].dtype == np.float64
    np.testing.assert_array_equal(cp.asnumpy(pc["labels"]) if not isinstance(pc["labels"], np.ndarray)
                                  else pc["labels"], pn["labels"])
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(pc["sum"], pn["sum"], rtol=rtol)
    np.testing.assert_array_equal(pc["count"], pn["count"])
    np.testing.assert_allclose(pc["weight"], pn["weight"], rtol=1e-12)
    assert pc["inertia"] == pytest.approx(pn["inertia"], rel=rtol)


def test_assign_labels_and_distances_match_numpy(cp):
    from kmeans_dist.kernels import assign_labels, sq_distances

    X, _ = _blobs(n=3000, d=24, k=7, seed=2, dtype=np.float64)
    C = X[::500][:7].copy()
    ln, dn = assign_labels(X, C)
    lc, dc = assign_labels(cp.asarray(X), cp.asarray(C))
    assert isinstance(lc, cp.ndarray)
    np.testing.assert_array_equal(cp.asnumpy(lc), ln)
    np.testing.assert_allclose(cp.asnumpy(dc), dn, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cp.asnumpy(sq_distances(cp.asarray(X), cp.asarray(C))), sq_distances(X, C),
                               rtol=1e-9, atol=1e-9)


def test_kmeans_inmemory_matches_numpy(cp):
    from kmeans_dist.kernels import kmeans_inmemory

    X, _ = _blobs(n=5000, d=8, k=6, seed=3, dtype=np.float64)
    rn = kmeans_inmemory(X, 6, n_init=3, random_state=7)
    rc = kmeans_inmemory(cp.asarray(X), 6, n_init=3, random_state=7)
    assert isinstance(rc.centers, cp.ndarray) and isinstance(rc.labels, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(rc.centers), rn.centers, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(cp.asnumpy(rc.labels), np.asarray(rn.labels))
    assert rc.inertia == pytest.approx(rn.inertia, rel=1e-9)


@pytest.mark.parametrize("algorithm", ["lloyd", "hamerly"])
def test_estimator_on_cupy_matches_numpy(cp, algorithm):
    from kmeans_dist import KMeans

    X, _ = _blobs(seed=4)
    init = X[:5].copy()
    kn = KMeans(5, init=init, algorithm=algorithm, max_iter=50).fit(X)
    kc = KMeans(5, init=init, algorithm=algorithm, max_iter=50).fit(cp.asarray(X))
    assert isinstance(kc.labels_, cp.ndarray)
    np.testing.assert_array_equal(cp.asnumpy(kc.labels_), np.asarray(kn.labels_))
    np.testing.assert_allclose(kc.cluster_centers_, kn.cluster_centers_, rtol=1e-4, atol=1e-5)
    assert kc.inertia_ == pytest.approx(kn.inertia_, rel=1e-5)
    assert kc.n_iter_ == kn.n_iter_
    # predict/transform on device arrays stay on the device
    assert isinstance(kc.predict(cp.asarray(X[:100])), cp.ndarray)


def test_dask_array_of_cupy_chunks(cp):
    import dask
    import dask.array as da

    from kmeans_dist import KMeans

    X, y = _blobs(n=8000, d=12, k=4, seed=5)
    Xd = da.from_array(cp.asarray(X), chunks=(1500, 12), asarray=False)
    assert isinstance(Xd._meta, cp.ndarray)
    init = X[np.r_[0, 1, 2, 3]].copy()
    with dask.config.set(scheduler="threads"):
        kc = KMeans(4, init=init, max_iter=30).fit(Xd)
    kn = KMeans(4, init=init, max_iter=30).fit(X)
    np.testing.assert_allclose(kc.cluster_centers_, kn.cluster_centers_, rtol=1e-4, atol=1e-5)
    assert kc.inertia_ == pytest.approx(kn.inertia_, rel=1e-5)


def test_deep_reinit_on_cuda_is_kmeans_of_the_embeddings(cp):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    from kmeans_dist.chunked import LocalBlocks, kmeans_on_blocks
    from kmeans_dist.deep import latent_block_rows, nearest_centroid, reinit_centroids, to_kernel_array

    Z = torch.from_numpy(_blobs(n=4000, d=10, k=10, seed=6)[0]).cuda()
    view = to_kernel_array(Z)
    assert isinstance(view, cp.ndarray)
    assert view.data.ptr == Z.data_ptr()  # DLPack: the kernels see the tensor's memory, no copy
    c, labels, inertia = reinit_centroids(Z, 10, n_init=2, random_state=3)
    assert c.is_cuda and labels.is_cuda
    # the chunked engine on CuPy blocks of the same rows (the deep stage's k-means)
    ref = kmeans_on_blocks(LocalBlocks(view.copy(), None, latent_block_rows(4000)), 10, n_init=2, random_state=3)
    np.testing.assert_array_equal(c.cpu().numpy(), np.asarray(ref.centers))
    np.testing.assert_array_equal(labels.cpu().numpy(), nearest_centroid(Z, c).cpu().numpy())
    assert inertia == ref.inertia


def test_deep_ct_finetunes_on_cuda(cp):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    from kmeans_dist.deep import Autoencoder, fit_method, make_method, pretrain

    X_np, y = _blobs(n=2000, d=20, k=4, seed=7)
    X_np = (X_np - X_np.min()) / (X_np.max() - X_np.min())
    X = torch.from_numpy(X_np).cuda()
    torch.manual_seed(0)
    model = Autoencoder(20, 4).cuda()
    pretrain(model, X, epochs=2, batch_size=256, seed=0)
    res = fit_method(model, X, make_method("CT", 4, seed=0), y=y, epochs=2, batch_size=256, seed=0)
    assert [h["epoch"] for h in res["history"]] == [0, 1, 2]
    assert res["labels"].shape == (2000,) and res["centroids"].shape == (4, 4)
    assert np.isfinite(res["history"][-1]["rec_loss"]) and np.isfinite(res["history"][-1]["clu_loss"])
