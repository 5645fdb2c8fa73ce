"""kmeans_dist.metrics against sklearn.metrics: equal to rtol 1e-9 in float64, on several data sets,
chunkings and schedulers (threaded with 1 and 2 workers, and a 2-process LocalCluster)."""
from __future__ import annotations


import dask
import dask.array as da
import numpy as np
import pytest
from sklearn import metrics as skm

from kmeans_dist.data import datasets as D
from kmeans_dist import metrics as M
from kmeans_dist.kernels import kmeans_inmemory

RTOL = 1e-9


pytestmark = pytest.mark.usefixtures("threaded_unless_cluster")


def _kmeans_labels(X, k, seed=0):
    return np.asarray(kmeans_inmemory(X, k, n_init=2, random_state=seed).labels)


def _cases():
    """(name, X float64, labels) data sets: where k-means shines, where it fails, and odd labels."""
    out = []
    X, y = D.blobs(240, centers=4, random_state=3, as_numpy=True)
    out.append(("blobs-truth", X, y))
    X, _ = D.moons(230, noise=0.08, random_state=1, as_numpy=True)
    out.append(("moons-kmeans3", X, _kmeans_labels(X, 3)))
    X, y = D.unequal_sizes(200, small_size=15, random_state=2, as_numpy=True)
    out.append(("unequal-truth", X, y))
    X, _ = D.anisotropic(210, random_state=4, as_numpy=True)
    lab = np.array([-7, 3, 11])[_kmeans_labels(X, 3)]  # non-contiguous label values
    out.append(("aniso-odd-labels", X, lab))
    rng = np.random.default_rng(5)
    X = rng.normal(size=(150, 6))
    lab = rng.integers(0, 5, size=150)
    lab[17] = 9  # a singleton cluster: its silhouette is 0
    out.append(("noise-singleton", X, lab))
    return out


CASES = _cases()
CHUNKINGS = [None, 64, 37]


def _as_dask(X, chunk):
    return da.from_array(X, chunks=(X.shape[0] if chunk is None else chunk, X.shape[1]))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("chunk", CHUNKINGS, ids=["1chunk", "c64", "c37"])
def test_unsupervised_equal_sklearn_threaded(case, chunk):
    _, X, lab = case
    Xd = _as_dask(X, chunk)
    with dask.config.set(scheduler="threads", num_workers=1 if chunk == 64 else 2):
        ours = {
            "sil": M.silhouette_score(Xd, lab),
            "ch": M.calinski_harabasz_score(Xd, lab),
            "db": M.davies_bouldin_score(Xd, lab),
        }
        samples = M.silhouette_samples(Xd, lab).compute()
    np.testing.assert_allclose(ours["sil"], skm.silhouette_score(X, lab), rtol=RTOL)
    np.testing.assert_allclose(ours["ch"], skm.calinski_harabasz_score(X, lab), rtol=RTOL)
    np.testing.assert_allclose(ours["db"], skm.davies_bouldin_score(X, lab), rtol=RTOL)
    np.testing.assert_allclose(samples, skm.silhouette_samples(X, lab), rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize("case", CASES[:3], ids=[c[0] for c in CASES[:3]])
def test_unsupervised_equal_sklearn_distributed(case, dask_client):
    _, X, lab = case
    Xd = _as_dask(X, 50)
    yd = da.from_array(lab, chunks=70)  # labels chunked differently from X
    np.testing.assert_allclose(M.silhouette_score(Xd, yd), skm.silhouette_score(X, lab), rtol=RTOL)
    np.testing.assert_allclose(M.calinski_harabasz_score(Xd, yd), skm.calinski_harabasz_score(X, lab), rtol=RTOL)
    np.testing.assert_allclose(M.davies_bouldin_score(Xd, yd), skm.davies_bouldin_score(X, lab), rtol=RTOL)
    per = M.silhouette_per_cluster(Xd, yd)
    s = skm.silhouette_samples(X, lab)
    for c in np.unique(lab):
        np.testing.assert_allclose(per["silhouette"].sel(cluster=c).item(), s[lab == c].mean(), rtol=RTOL)
        assert per["size"].sel(cluster=c).item() == np.sum(lab == c)
        np.testing.assert_allclose(per["silhouette_min"].sel(cluster=c).item(), s[lab == c].min(), rtol=RTOL)
    np.testing.assert_allclose(per.attrs["silhouette_score"], s.mean(), rtol=RTOL)


def test_silhouette_samples_numpy_in_numpy_out():
    _, X, lab = CASES[0]
    out = M.silhouette_samples(X, lab)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, skm.silhouette_samples(X, lab), rtol=RTOL, atol=1e-12)


def test_duplicate_points_and_zero_distances():
    X = np.repeat(np.array([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0]]), [5, 4, 6], axis=0)
    lab = np.array([0] * 5 + [1] * 4 + [1] * 3 + [2] * 3)
    Xd = _as_dask(X, 4)
    np.testing.assert_allclose(M.silhouette_samples(Xd, lab).compute(), skm.silhouette_samples(X, lab),
                               rtol=RTOL, atol=1e-7)
    np.testing.assert_allclose(M.davies_bouldin_score(Xd, lab), skm.davies_bouldin_score(X, lab), rtol=RTOL)
    # every cluster collapsed onto one point: Davies-Bouldin is 0, Calinski-Harabasz 1 (as sklearn)
    lab2 = np.repeat([0, 1, 2], [5, 4, 6])
    assert M.davies_bouldin_score(Xd, lab2) == skm.davies_bouldin_score(X, lab2) == 0.0
    assert M.calinski_harabasz_score(Xd, lab2) == skm.calinski_harabasz_score(X, lab2) == 1.0


def test_inputs_xarray_and_zarr(tmp_path):
    import xarray as xr

    from kmeans_dist.data import write_store

    _, X, lab = CASES[1]
    url = write_store(tmp_path / "m.zarr", X, labels=lab, chunk_rows=60)
    ref = skm.silhouette_score(X, lab)
    np.testing.assert_allclose(M.silhouette_score(url, url), ref, rtol=RTOL)  # X and labels from the store
    xa = xr.DataArray(da.from_array(X, chunks=(100, 2)), dims=("sample", "feature"))
    la = xr.DataArray(lab, dims=("sample",))
    np.testing.assert_allclose(M.silhouette_score(xa, la), ref, rtol=RTOL)
    np.testing.assert_allclose(M.calinski_harabasz_score(url, lab), skm.calinski_harabasz_score(X, lab), rtol=RTOL)
    np.testing.assert_allclose(M.adjusted_rand_score(url, lab), 1.0)


def test_float32_input_close_to_sklearn():
    _, X, lab = CASES[0]
    X32 = X.astype(np.float32)
    Xd = _as_dask(X32, 50)
    ref = skm.silhouette_score(X32, lab)
    np.testing.assert_allclose(M.silhouette_score(Xd, lab), ref, rtol=1e-5)
    np.testing.assert_allclose(M.silhouette_score(Xd, lab, precision="float64"), ref, rtol=1e-5)
    np.testing.assert_allclose(M.calinski_harabasz_score(Xd, lab), skm.calinski_harabasz_score(X32, lab), rtol=1e-4)


def test_sample_size_matches_sklearn_semantics():
    _, X, lab = CASES[1]
    ours = M.silhouette_score(_as_dask(X, 40), lab, sample_size=90, random_state=7)
    np.testing.assert_allclose(ours, skm.silhouette_score(X, lab, sample_size=90, random_state=7), rtol=RTOL)


def test_silhouette_estimate_ci_and_exactness():
    _, X, lab = CASES[1]
    Xd = _as_dask(X, 60)
    exact = skm.silhouette_score(X, lab)
    est = M.silhouette_estimate(Xd, lab, n_sampled=80, random_state=0, confidence=0.99)
    assert est.ci[0] <= exact <= est.ci[1]
    assert est.n_sampled == 80 and est.std_error > 0
    # each sampled value is the exact silhouette of that point against all the data
    np.testing.assert_allclose(est.values, skm.silhouette_samples(X, lab)[est.indices], rtol=RTOL, atol=1e-12)
    again = M.silhouette_estimate(Xd, lab, n_sampled=80, random_state=0, confidence=0.99)
    assert again.score == est.score
    full = M.silhouette_estimate(Xd, lab, n_sampled=10**6, random_state=0)
    np.testing.assert_allclose(full.score, exact, rtol=RTOL)
    assert full.std_error == 0.0


def test_inertia_modes():
    _, X, lab = CASES[0]
    Xd = _as_dask(X, 50)
    means = np.stack([X[lab == c].mean(axis=0) for c in np.unique(lab)])
    w = sum(((X[lab == c] - means[i]) ** 2).sum() for i, c in enumerate(np.unique(lab)))
    np.testing.assert_allclose(M.inertia(Xd, lab), w, rtol=RTOL)
    np.testing.assert_allclose(M.inertia(Xd, lab, centers=means), w, rtol=RTOL)
    from sklearn.cluster import KMeans

    km = KMeans(4, n_init=1, random_state=0).fit(X)
    np.testing.assert_allclose(M.inertia(Xd, centers=km.cluster_centers_), km.inertia_, rtol=1e-7)
    with pytest.raises(ValueError):
        M.inertia(Xd)


def test_errors_like_sklearn():
    _, X, lab = CASES[0]
    Xd = _as_dask(X, 50)
    msg = r"Number of labels is 1\. Valid values are 2 to n_samples - 1 \(inclusive\)"
    for fn in (M.silhouette_score, M.silhouette_samples, M.calinski_harabasz_score, M.davies_bouldin_score):
        with pytest.raises(ValueError, match=msg):
            fn(Xd, np.zeros(len(X), dtype=int))
    with pytest.raises(ValueError, match=r"Number of labels is 240\."):
        M.silhouette_score(Xd, np.arange(len(X)))
    with pytest.raises(ValueError, match="entries but X has"):
        M.silhouette_score(Xd, lab[:-1])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        M.adjusted_rand_score(lab, lab[:-3])
    with pytest.raises(ValueError, match="euclidean"):
        M.silhouette_score(Xd, lab, metric="cosine")
    with pytest.raises(ValueError, match="average_method"):
        M.normalized_mutual_info_score(lab, lab, average_method="median")


# --------------------------------------------------------------------------------------------------
# labelled metrics
# --------------------------------------------------------------------------------------------------

def _label_pairs():
    rng = np.random.default_rng(11)
    t = rng.integers(0, 6, size=1000)
    p = np.where(rng.random(1000) < 0.7, (t + 2) % 6, rng.integers(0, 8, size=1000))
    yield "noisy-perm", t, p
    yield "identical", t, t.copy()
    yield "more-clusters", t, t * 3 + rng.integers(0, 3, size=1000)
    yield "strings", np.array(["cat", "dog", "eel"])[t % 3], p
    yield "single-cluster", t, np.zeros(1000, dtype=int)
    yield "independent", t, rng.integers(0, 4, size=1000)


LABEL_PAIRS = list(_label_pairs())


def _acc_bruteforce(t, p):
    """Best one-to-one matching by exhaustive dynamic programming over subsets of the smaller side."""
    ct = skm.cluster.contingency_matrix(t, p)
    if ct.shape[0] > ct.shape[1]:
        ct = ct.T
    r, c = ct.shape  # r <= c: every row gets a distinct column (or none)
    best = {0: 0}
    for j in range(c):
        nxt = dict(best)
        for mask, v in best.items():
            for i in range(r):
                if not mask & (1 << i):
                    m2 = mask | (1 << i)
                    nxt[m2] = max(nxt.get(m2, 0), v + ct[i, j])
        best = nxt
    return max(best.values()) / len(t)


@pytest.mark.parametrize("pair", LABEL_PAIRS, ids=[p[0] for p in LABEL_PAIRS])
def test_labelled_equal_sklearn(pair):
    _, t, p = pair
    td = da.from_array(t, chunks=137)
    pd_ = da.from_array(p, chunks=250)
    ct = M.contingency_matrix(td, pd_)
    np.testing.assert_array_equal(ct.table, skm.cluster.contingency_matrix(t, p))
    np.testing.assert_allclose(M.adjusted_rand_score(td, pd_), skm.adjusted_rand_score(t, p), rtol=RTOL, atol=1e-15)
    for avg in ("arithmetic", "geometric", "min", "max"):
        np.testing.assert_allclose(M.normalized_mutual_info_score(td, pd_, average_method=avg),
                                   skm.normalized_mutual_info_score(t, p, average_method=avg), rtol=RTOL, atol=1e-15)
    np.testing.assert_allclose(M.homogeneity_completeness_v_measure(td, pd_),
                               skm.homogeneity_completeness_v_measure(t, p), rtol=RTOL, atol=1e-15)
    np.testing.assert_allclose(M.homogeneity_completeness_v_measure(td, pd_, beta=0.5),
                               skm.homogeneity_completeness_v_measure(t, p, beta=0.5), rtol=RTOL, atol=1e-15)
    np.testing.assert_allclose(M.mutual_info_score(td, pd_), skm.mutual_info_score(t, p), rtol=RTOL, atol=1e-15)
    np.testing.assert_allclose(M.clustering_accuracy(td, pd_), _acc_bruteforce(t, p), rtol=RTOL)
    ref_purity = skm.cluster.contingency_matrix(t, p).max(axis=0).sum() / len(t)
    np.testing.assert_allclose(M.purity_score(td, pd_), ref_purity, rtol=RTOL)


def test_labelled_distributed_and_report(dask_client):
    _, t, p = LABEL_PAIRS[0]
    td = da.from_array(t, chunks=100)
    pd_ = da.from_array(p, chunks=100)
    rep = M.clustering_report(td, pd_)
    np.testing.assert_allclose(rep["ari"], skm.adjusted_rand_score(t, p), rtol=RTOL)
    np.testing.assert_allclose(rep["nmi"], skm.normalized_mutual_info_score(t, p), rtol=RTOL)
    np.testing.assert_allclose(rep["v_measure"], skm.v_measure_score(t, p), rtol=RTOL)
    np.testing.assert_allclose(rep["acc"], _acc_bruteforce(t, p), rtol=RTOL)
    assert rep["n_samples"] == 1000 and rep["n_classes"] == 6
    acc, mapping = M.clustering_accuracy(td, pd_, return_mapping=True)
    assert mapping[2] == 0 and mapping[3] == 1  # predicted = (true + 2) % 6 most of the time


def test_acc_permutation_invariant():
    _, t, _ = LABEL_PAIRS[0]
    perm = np.array([4, 0, 5, 1, 3, 2])
    assert M.clustering_accuracy(t, perm[t]) == 1.0
    assert M.purity_score(t, perm[t]) == 1.0
    assert M.adjusted_rand_score(t, perm[t]) == 1.0


# --------------------------------------------------------------------------------------------------
# property-based: random small data and labels (few examples)
# --------------------------------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _db_exact(X, lab):
    """Davies-Bouldin by its definition, with exact (difference-based) distances."""
    cl = np.unique(lab)
    C = np.stack([X[lab == c].mean(axis=0) for c in cl])
    s = np.array([np.linalg.norm(X[lab == c] - C[i], axis=1).mean() for i, c in enumerate(cl)])
    r = []
    for i in range(len(cl)):
        r.append(max((s[i] + s[j]) / np.linalg.norm(C[i] - C[j]) for j in range(len(cl)) if j != i))
    return float(np.mean(r))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(6, 40), d=st.integers(1, 4), k=st.integers(2, 5), chunk=st.integers(3, 25),
       seed=st.integers(0, 2**16))
def test_property_equal_sklearn(n, d, k, chunk, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.1, 10)
    lab = rng.integers(0, k, size=n)
    n_lab = len(np.unique(lab))
    Xd = _as_dask(X, chunk)
    with dask.config.set(scheduler="sync"):
        if not 1 < n_lab < n:
            with pytest.raises(ValueError, match="Number of labels is"):
                M.silhouette_score(Xd, lab)
            return
        np.testing.assert_allclose(M.silhouette_score(Xd, lab), skm.silhouette_score(X, lab), rtol=RTOL, atol=1e-13)
        np.testing.assert_allclose(M.calinski_harabasz_score(Xd, lab), skm.calinski_harabasz_score(X, lab),
                                   rtol=RTOL)
        db = M.davies_bouldin_score(Xd, lab)
        np.testing.assert_allclose(db, _db_exact(X, lab), rtol=RTOL)
        if np.bincount(lab).min() > 1 or np.bincount(lab).max() == 0:
            np.testing.assert_allclose(db, skm.davies_bouldin_score(X, lab), rtol=RTOL)
        else:
            # a singleton cluster: scikit-learn's expanded ||x||^2 - 2 x.c + ||c||^2 reports a distance of
            # ~1e-7 instead of 0 between the point and its own centroid; ours (direct differences) is exact
            np.testing.assert_allclose(db, skm.davies_bouldin_score(X, lab), rtol=1e-6)
        t = rng.integers(0, 3, size=n)
        np.testing.assert_allclose(M.adjusted_rand_score(t, lab), skm.adjusted_rand_score(t, lab), rtol=RTOL,
                                   atol=1e-15)
        np.testing.assert_allclose(M.normalized_mutual_info_score(t, lab),
                                   skm.normalized_mutual_info_score(t, lab), rtol=RTOL, atol=1e-15)


# --- partition_scores: every score of a nearest-center partition in two passes -----------------------

def _partition_case(seed=0, n=330, d=5):
    """Blobs with labels, and centers whose last one is far from every point: an empty cluster."""
    X, y = D.blobs(n, centers=4, n_features=d, random_state=seed, as_numpy=True)
    C = np.asarray(kmeans_inmemory(X, 4, n_init=2, random_state=seed).centers)
    C = np.vstack([C, np.full((1, d), 1e3)])
    return X, np.asarray(y), C


def _sk_partition(X, y, C):
    from scipy.optimize import linear_sum_assignment

    lab = np.argmin(((X[:, None, :] - C[None]) ** 2).sum(-1), axis=1)
    cont = skm.cluster.contingency_matrix(y, lab)
    r, c = linear_sum_assignment(-cont)
    return lab, {"ari": skm.adjusted_rand_score(y, lab), "nmi": skm.normalized_mutual_info_score(y, lab),
                 "accuracy": cont[r, c].sum() / len(y),
                 "calinski_harabasz": skm.calinski_harabasz_score(X, lab),
                 "davies_bouldin": skm.davies_bouldin_score(X, lab),
                 "silhouette": skm.silhouette_score(X, lab),
                 "inertia": float(((X - C[lab]) ** 2).sum())}


@pytest.mark.parametrize("chunk", [None, 64, 37], ids=["1chunk", "c64", "c37"])
def test_partition_scores_equal_sklearn(chunk):
    """With the whole data as the silhouette sample every score is exact; the empty cluster is absent from
    the unsupervised scores (scikit-learn encodes the labels it gets) but listed in the sizes."""
    X, y, C = _partition_case()
    lab, ref = _sk_partition(X, y, C)
    out = M.partition_scores(_as_dask(X, chunk), C, da.from_array(y, chunks=50), silhouette_sample=10**6,
                             split_every=3)
    for key, v in ref.items():
        np.testing.assert_allclose(out[key], v, rtol=RTOL, err_msg=key)
    assert out["cluster_sizes"] == np.bincount(lab, minlength=5).tolist() and out["empty_clusters"] == 1
    assert out["silhouette_se"] == 0.0 and out["n_samples"] == len(X) and out["k"] == 5


def test_partition_scores_distributed_sample_equals_silhouette_estimate(dask_client):
    """On the 2-process cluster: a 100-row sample gives silhouette_estimate's value and standard error for
    the same seed, and the labelled scores need no labels pass of their own."""
    X, y, C = _partition_case(seed=1, n=400)
    C = C[:4]
    lab, ref = _sk_partition(X, y, C)
    Xd = _as_dask(X, 90)
    out = M.partition_scores(Xd, C, y, silhouette_sample=100, random_state=7, client=dask_client)
    est = M.silhouette_estimate(Xd, lab, n_sampled=100, random_state=7)
    np.testing.assert_allclose(out["silhouette"], est.score, rtol=RTOL)
    np.testing.assert_allclose(out["silhouette_se"], est.std_error, rtol=1e-7)
    for key in ("ari", "nmi", "accuracy", "calinski_harabasz", "davies_bouldin", "inertia"):
        np.testing.assert_allclose(out[key], ref[key], rtol=RTOL, err_msg=key)


def test_partition_scores_reads_each_chunk_twice():
    """Two passes over X, whatever the scores asked for: streamed, each chunk is loaded once per pass; kept in
    memory (the default when X fits), each chunk is loaded once in all."""
    import threading

    X, y, C = _partition_case(seed=2, n=300)
    loads = []
    lock = threading.Lock()

    def load(block, block_info=None):
        with lock:
            loads.append(block_info[0]["chunk-location"][0])
        return block

    Xd = _as_dask(X, 50).map_blocks(load, dtype=X.dtype)
    with dask.config.set(scheduler="sync"):
        M.partition_scores(Xd, C, y, silhouette_sample=120, persist=False, client=False)
        assert sorted(loads) == sorted(list(range(6)) * 2)
        loads.clear()
        M.partition_scores(Xd, C, y, silhouette_sample=120, client=False)
        assert sorted(loads) == list(range(6))
        loads.clear()
        one = M.partition_scores(Xd, C[:1], None, silhouette_sample=120, persist=False, client=False)  # 1 cluster: one pass
    assert sorted(loads) == list(range(6)) and "silhouette" not in one and "ari" not in one


def test_evaluate_is_deterministic_across_chunking_and_workers(dask_client, monkeypatch, tmp_path):
    """``evaluate`` (and the metrics under it) runs through the block driver: the same canonical blocks and the
    same reduction tree whatever the input chunking, in process or on 2 worker processes, so every score is
    bit-identical."""
    from kmeans_dist.kernels import tree
    from kmeans_dist.data import write_store
    from pipelines import stages

    monkeypatch.setattr(tree, "BLOCK_BYTES", 1)  # the smallest canonical blocks: 1,024 rows, so 5 blocks
    X, y, C = _partition_case(seed=3, n=5000, d=6)
    runs = []
    for chunk in (5000, 700, 1311):
        for client in (False, dask_client):
            runs.append(M.partition_scores(_as_dask(X, chunk), C, y, silhouette_sample=300, random_state=1,
                                           client=client))
    assert all(r == runs[0] for r in runs[1:]), runs
    assert "silhouette" in runs[0] and "ari" in runs[0]
    sil = {M.silhouette_score(_as_dask(X, chunk), y) for chunk in (5000, 700, 1311)}
    ch = {M.calinski_harabasz_score(_as_dask(X, chunk), y) for chunk in (5000, 700, 1311)}
    assert len(sil) == 1 and len(ch) == 1
    # the pipeline stage on two stores of the same data chunked differently
    outs = []
    for chunk in (700, 2500):
        url = write_store(tmp_path / f"c{chunk}.zarr", X, labels=y, chunk_rows=chunk)
        store = {"url": url, "has_labels": True}
        np.savez(tmp_path / f"fit{chunk}.npz", centers=C)
        fit = {"name": f"fit{chunk}", "path": str(tmp_path / f"fit{chunk}.npz")}
        res = stages.evaluate(store, fit, tmp_path / f"out{chunk}", silhouette_sample=300, client=dask_client)
        outs.append({k: v for k, v in res.items() if k not in ("seconds", "path")})
    assert outs[0] == outs[1]
