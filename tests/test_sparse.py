"""Sparse input (scipy.sparse arrays and matrices, dask arrays of sparse chunks, Zarr CSR groups).

Kernels against their dense counterparts; KMeans / MiniBatchKMeans against scikit-learn's on the same sparse
data from the same init; results bit-identical in process, on the 2-process LocalCluster, across chunkings and
when streamed from a Zarr CSR group."""
from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.cluster import KMeans as SKKMeans
from sklearn.cluster import MiniBatchKMeans as SKMiniBatch

from kmeans_dist import KMeans, MiniBatchKMeans
from kmeans_dist.chunked import init_centers, make_blocks
from kmeans_dist.data import DataError, check_sparse, ingest, open_store, store_info, write_sparse_store, write_store
from kmeans_dist.kernels import NonFiniteError, lloyd_partial, sparse
from kmeans_dist.kernels import assign_labels, row_norms_sq, sq_distances, stats_chunk
from kmeans_dist.kernels.distances import exact_sq_dist_to

pytestmark = pytest.mark.usefixtures("threaded_unless_cluster")


def _tfidf(n=3000, d=400, density=0.02, seed=0, dtype=np.float64):
    """TF-IDF-like rows: random sparse counts, l2-normalised (some rows empty)."""
    X = sp.random(n, d, density=density, format="csr", random_state=seed, dtype=np.float64)
    X.data = np.floor(X.data * 5) + 1.0
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    X = sp.csr_matrix(sp.diags(1.0 / norms) @ X)
    return X.astype(dtype)


def _init(X, k, seed=1):
    rows = np.random.default_rng(seed).choice(X.shape[0], size=k, replace=False)
    return np.asarray(X[rows].toarray())


# ------------------------------------------------------------------------------------------------ kernels

def test_kernels_equal_their_dense_counterparts():
    X = _tfidf(500, 60, 0.1)
    D = X.toarray()
    C = _init(X, 4) + 0.01
    np.testing.assert_allclose(row_norms_sq(X), row_norms_sq(D), rtol=1e-12)
    np.testing.assert_allclose(sq_distances(X, C), sq_distances(D, C), rtol=1e-10, atol=1e-12)
    ls, ds = assign_labels(X, C)
    ld, dd = assign_labels(D, C)
    np.testing.assert_array_equal(ls, ld)
    np.testing.assert_allclose(ds, dd, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(exact_sq_dist_to(X, C, ls), exact_sq_dist_to(D, C, ld), rtol=1e-12, atol=1e-14)
    w = np.random.default_rng(0).uniform(0.5, 2.0, size=500)
    ps = lloyd_partial(X, w, C, offset=7, return_labels=True)
    pd = lloyd_partial(D, w, C, offset=7, return_labels=True)
    for key in ("sum", "weight", "inertia", "far_dist", "far_x"):
        np.testing.assert_allclose(ps[key], pd[key], rtol=1e-10, atol=1e-12)
    for key in ("count", "far_index", "far_label"):
        np.testing.assert_array_equal(ps[key], pd[key])
    np.testing.assert_array_equal(np.asarray(ps["labels"]), np.asarray(pd["labels"]))
    st, sd = stats_chunk(X, None, 0), stats_chunk(D, None, 0)
    np.testing.assert_allclose(st["mean"], sd["mean"], rtol=1e-12)
    np.testing.assert_allclose(st["M2"], sd["M2"], rtol=1e-10)
    np.testing.assert_allclose(sparse.cluster_sums(X, ls, 4, w), pd["sum"], rtol=1e-12)
    assert sp.issparse(sparse.as_csr(sp.csc_matrix(X))) and sparse.as_csr(sp.csc_matrix(X)).format == "csr"
    # centers at any address (as pickle protocol 5 delivers them on a worker) give the same bits
    for off in (1, 4, 8, 12):
        buf = np.zeros(C.size * 8 + 64, dtype=np.uint8)
        Cu = np.frombuffer(buf.data, dtype=np.float64, count=C.size, offset=off).reshape(C.shape)
        Cu[...] = C
        assert lloyd_partial(X, None, Cu)["inertia"] == lloyd_partial(X, None, C)["inertia"]
        np.testing.assert_array_equal(sq_distances(X, Cu), sq_distances(X, C))


def test_check_sparse_formats_and_dtypes():
    X = _tfidf(50, 10, 0.3)
    for fmt in ("csr", "csc", "coo", "lil", "dok", "bsr", "dia"):
        Y = check_sparse(X.asformat(fmt))
        assert Y.format == "csr" and Y.has_canonical_format and (Y != X).nnz == 0
    assert check_sparse(sp.csr_array(X)).__class__ is sp.csr_array
    assert check_sparse((X > 0).astype(np.int32)).dtype == np.float64
    assert check_sparse(X.astype(np.float32)).dtype == np.float32
    dup = sp.coo_matrix(([1.0, 2.0], ([0, 0], [1, 1])), shape=(2, 3))
    assert check_sparse(dup).toarray()[0, 1] == 3.0
    with pytest.raises(ValueError, match="Complex data not supported"):
        check_sparse(X.astype(np.complex128))
    with pytest.raises(ValueError, match="0 sample"):
        check_sparse(sp.csr_matrix((0, 3)))


# ------------------------------------------------------------------------------------------------ vs scikit-learn

@pytest.mark.parametrize("kind", ["csr_matrix", "csr_array", "csc_matrix"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kmeans_equals_sklearn_on_sparse(kind, dtype):
    X = getattr(sp, kind)(_tfidf(2000, 300, dtype=dtype))
    C0 = _init(sp.csr_matrix(X), 6)
    w = np.random.default_rng(3).uniform(0.5, 2.0, size=X.shape[0]) if kind == "csr_array" else None
    sk = SKKMeans(6, init=C0, n_init=1, algorithm="lloyd", tol=1e-4).fit(X, sample_weight=w)
    km = KMeans(6, init=C0, n_init=1, tol=1e-4, client=False).fit(X, sample_weight=w)
    rtol = 1e-6 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(km.cluster_centers_, sk.cluster_centers_, rtol=rtol, atol=rtol * 1e-2)
    np.testing.assert_array_equal(np.asarray(km.labels_), sk.labels_)
    assert km.n_iter_ == sk.n_iter_
    assert km.inertia_ == pytest.approx(sk.inertia_, rel=rtol)
    Xt = X[:300]
    np.testing.assert_array_equal(km.predict(Xt), sk.predict(Xt))
    np.testing.assert_allclose(km.transform(Xt), sk.transform(Xt), rtol=rtol, atol=1e-5)
    assert km.score(Xt) == pytest.approx(sk.score(Xt), rel=rtol)


def test_minibatch_partial_fit_equals_sklearn_on_sparse():
    X = _tfidf(2000, 200)
    C0 = _init(X, 5)
    sk = SKMiniBatch(5, init=C0, n_init=1, reassignment_ratio=0.0, batch_size=100)
    km = MiniBatchKMeans(5, init=C0, reassignment_ratio=0.0, batch_size=100, client=False)
    for i in range(0, 2000, 100):
        sk.partial_fit(X[i:i + 100])
        km.partial_fit(sp.csr_array(X[i:i + 100]))
    np.testing.assert_allclose(km.cluster_centers_, sk.cluster_centers_, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(km.labels_), sk.labels_)
    np.testing.assert_array_equal(km.predict(X[:200]), sk.predict(X[:200]))


@pytest.mark.parametrize("init", ["k-means||", "k-means++", "random", "random-partition"])
def test_every_seeding_on_sparse_equals_dense(init):
    X = _tfidf(1500, 80, 0.1)
    Cs = init_centers(X, 5, init, random_state=4, client=False, block_rows=400)
    Cd = init_centers(X.toarray(), 5, init, random_state=4, client=False, block_rows=400)
    km = KMeans(5, init=init, n_init=2, random_state=4, client=False, block_rows=400).fit(X)
    kd = KMeans(5, init=init, n_init=2, random_state=4, client=False, block_rows=400).fit(X.toarray())
    if init == "k-means||":
        # its candidate weights count the points closest to each candidate; on TF-IDF rows (unit norm, disjoint
        # supports) many points are exactly equidistant to two candidates, and rounding decides: same quality
        assert Cs.shape == (5, 80) and km.inertia_ == pytest.approx(kd.inertia_, rel=0.05)
        return
    np.testing.assert_allclose(Cs, Cd, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(km.cluster_centers_, kd.cluster_centers_, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(km.labels_), np.asarray(kd.labels_))
    mb = MiniBatchKMeans(5, init=init, random_state=4, batch_size=200, client=False).fit(X)
    assert mb.cluster_centers_.shape == (5, 80) and np.isfinite(mb.inertia_)


@pytest.mark.parametrize("algorithm", ["hamerly", "elkan"])
def test_bounded_algorithms_on_sparse_run_lloyds_iterations(algorithm):
    """Sparse blocks take the plain Lloyd pass whatever ``algorithm`` says (the bounds are dense-only)."""
    X = _tfidf(1500, 100)
    C0 = _init(X, 8)
    a = KMeans(8, init=C0, client=False, algorithm=algorithm).fit(X)
    b = KMeans(8, init=C0, client=False, algorithm="lloyd").fit(X)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(np.asarray(a.labels_), np.asarray(b.labels_))


# ------------------------------------------------------------------------------------------------ distribution

def _fingerprint(m):
    return m.cluster_centers_, float(m.inertia_), int(m.n_iter_), np.asarray(m.labels_ if not hasattr(m.labels_, "compute")
                                                                              else m.labels_.compute())


def _same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1] and a[2] == b[2]
    np.testing.assert_array_equal(a[3], b[3])


def test_bit_identical_in_process_on_the_cluster_and_across_chunkings(dask_client, tmp_path):
    X = _tfidf(3000, 200, seed=5)
    params = dict(n_clusters=7, init="k-means||", random_state=2, block_rows=700)
    ref = _fingerprint(KMeans(**params, client=False).fit(X))
    # a dask array of sparse chunks, chunked differently from the canonical blocks
    Xd = da.from_array(X, chunks=(1100, 200), asarray=False, meta=X[:0])
    _same(ref, _fingerprint(KMeans(**params, client=False).fit(Xd)))
    # the 2-process LocalCluster: blocks persisted on the workers, and streamed
    _same(ref, _fingerprint(KMeans(**params, client=dask_client, persist=True).fit(X)))
    # streamed (a graph per pass), from dask and from a Zarr CSR group, on the cluster: Lloyd from a fixed init
    # (in process from the store: test_zarr_csr_group_round_trip_and_integrity)
    fixed = dict(n_clusters=7, init=_init(X, 7), max_iter=4, block_rows=700)
    ref_l = _fingerprint(KMeans(**fixed, client=False).fit(X))
    _same(ref_l, _fingerprint(KMeans(**fixed, client=dask_client, persist=False).fit(Xd.rechunk({0: 900}))))
    url = write_sparse_store(tmp_path / "x.zarr", X, chunk_rows=1300)
    _same(ref_l, _fingerprint(KMeans(**fixed, client=dask_client, persist=False).fit(url)))
    # k-means++ and mini-batch: the same in process and on the cluster
    p2 = dict(n_clusters=5, init="k-means++", random_state=3, block_rows=700)
    _same(_fingerprint(KMeans(**p2, client=False).fit(X)), _fingerprint(KMeans(**p2, client=dask_client).fit(Xd)))
    mb = dict(n_clusters=5, random_state=3, block_rows=700, batch_size=256, max_iter=2)
    a = MiniBatchKMeans(**mb, client=False).fit(X)
    b = MiniBatchKMeans(**mb, client=dask_client, persist=True).fit(Xd)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    # predict / transform / score on a dask array of sparse chunks
    km = KMeans(**params, client=dask_client, persist=True).fit(X)
    np.testing.assert_array_equal(km.predict(Xd).compute(), km.predict(X))
    np.testing.assert_allclose(km.transform(Xd).compute(), km.transform(X), rtol=1e-12)
    assert km.score(Xd) == km.score(X)


# ------------------------------------------------------------------------------------------------ Zarr CSR group

def test_zarr_csr_group_round_trip_and_integrity(tmp_path):
    X = _tfidf(1000, 50, 0.1, dtype=np.float32)
    X[5] = 0  # an empty row
    X.eliminate_zeros()
    y = np.arange(1000) % 3
    url = write_store(tmp_path / "a.zarr", X, labels=y, chunk_rows=300)
    info = store_info(url)
    assert info["shape"] == (1000, 50) and info["layout"] == "csr" and info["nnz"] == X.nnz
    assert info["dtype"] == "float32" and info["has_labels"]
    Xd = open_store(url)
    assert Xd.chunks[0] == (300, 300, 300, 100) and Xd.dtype == np.float32
    blk = Xd.blocks[1].compute()
    assert sp.issparse(blk) and blk.format == "csr"
    assert (Xd.compute() != X).nnz == 0
    # ingest: an in-memory matrix, and a scipy .npz file
    sp.save_npz(tmp_path / "x.npz", sp.csc_matrix(X))
    url2 = ingest(str(tmp_path / "x.npz"), tmp_path / "b.zarr", chunk_rows=450)
    assert (open_store(url2).compute() != X).nnz == 0
    url3 = ingest(X, tmp_path / "c.zarr", chunk_rows=1000)
    assert open_store(url3).chunks[0] == (1000,)
    # a fit that streams the group equals the in-memory fit
    C0 = _init(X, 4)
    a = KMeans(4, init=C0, client=False, block_rows=250).fit(X)
    b = KMeans(4, init=C0, client=False, block_rows=250, persist=False).fit(url)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    # a missing chunk is an error naming it, never zeros
    import shutil

    shutil.rmtree(tmp_path / "a.zarr" / "X" / "2" / "data" / "c")
    with pytest.raises(DataError, match="re-ingest"):
        open_store(url).compute()


# ------------------------------------------------------------------------------------------------ NaN / inf

def test_nonfinite_sparse_values_are_refused():
    X = _tfidf(600, 40, 0.2)
    bad = X.copy()
    bad.data[bad.indptr[123]] = np.nan
    with pytest.raises(NonFiniteError, match="row 123"):
        KMeans(3, client=False, block_rows=200).fit(bad)
    km = KMeans(3, client=False, random_state=0).fit(X)
    with pytest.raises(ValueError, match="NaN"):
        km.predict(bad)
    inf = X.copy()
    inf.data[inf.indptr[7]] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        km.transform(inf)
    mb = MiniBatchKMeans(3, client=False, random_state=0).partial_fit(X)
    before = mb.cluster_centers_.copy()
    with pytest.raises(ValueError, match="NaN"):
        mb.partial_fit(bad)
    np.testing.assert_array_equal(mb.cluster_centers_, before)


def test_sparse_tag():
    assert KMeans().__sklearn_tags__().input_tags.sparse
    assert MiniBatchKMeans().__sklearn_tags__().input_tags.sparse
