"""SphericalKMeans against "normalize, then k-means with renormalised centers" (scikit-learn's KMeans step by step)."""
from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from sklearn.cluster import KMeans as SkKMeans
from sklearn.metrics.pairwise import cosine_distances
from sklearn.preprocessing import normalize
from threadpoolctl import threadpool_limits

from kmeans_dist import SphericalKMeans, load_model
from kmeans_dist.estimators.validation import InvalidParameterError


@pytest.fixture(scope="module")
def directions():
    rng = np.random.default_rng(0)
    means = normalize(rng.normal(size=(4, 6)))
    X = np.concatenate([m * rng.uniform(0.5, 5, size=(300, 1)) + 0.3 * rng.normal(size=(300, 6)) for m in means])
    return X


def test_matches_normalize_then_kmeans_with_renormalised_centers(directions):
    X = directions
    C0 = normalize(X[[0, 301, 602, 903]] + 0.5)  # the same init for both
    ours = SphericalKMeans(4, init=C0, tol=0.0, max_iter=100, client=False).fit(X)
    Xn, C = normalize(X), C0.copy()
    with threadpool_limits(1):
        for _ in range(100):  # one scikit-learn Lloyd step on the normalised rows, then renormalise the centers
            step = SkKMeans(4, init=C, n_init=1, max_iter=1, algorithm="lloyd").fit(Xn)
            new = normalize(step.cluster_centers_)
            if np.array_equal(step.predict(Xn), SkKMeans(4, init=new, n_init=1, max_iter=1).fit(Xn).labels_) \
                    and np.allclose(new, C, atol=1e-12):
                break
            C = new
    assert np.allclose(ours.cluster_centers_, C, atol=1e-6)
    labels = np.argmax(Xn @ C.T, axis=1)
    assert np.array_equal(ours.labels_, labels)
    assert np.allclose(np.linalg.norm(ours.cluster_centers_, axis=1), 1.0)
    assert ours.inertia_ == pytest.approx((1 - (Xn * C[labels]).sum(1)).sum(), rel=1e-6)


def test_transform_is_cosine_distance_and_scores(directions):
    skm = SphericalKMeans(4, random_state=0, client=False).fit(directions)
    D = skm.transform(directions[:100])
    assert np.allclose(D, cosine_distances(directions[:100], skm.cluster_centers_), atol=1e-9)
    assert np.array_equal(skm.predict(directions[:100]), D.argmin(1))
    assert np.allclose(skm.score_samples(directions[:100]), -D.min(1))
    assert skm.score(directions) == pytest.approx(-skm.inertia_, rel=1e-9)


def test_same_result_whatever_chunking_and_workers(directions, dask_client, tmp_path):
    X = directions.astype(np.float32)
    kw = dict(n_clusters=4, random_state=3, block_rows=256, init="k-means++")
    ref = SphericalKMeans(**kw, client=False).fit(X)
    for chunks, client in ((500, False), (170, dask_client)):
        got = SphericalKMeans(**kw, client=client).fit(da.from_array(X, chunks=(chunks, 6)))
        assert np.array_equal(got.cluster_centers_, ref.cluster_centers_)
        assert np.array_equal(got.labels_.compute(), ref.labels_)
    back = load_model(ref.save(tmp_path / "m"))
    assert type(back) is SphericalKMeans
    assert np.array_equal(back.predict(X), ref.labels_)
    assert np.array_equal(back.transform(X), ref.transform(X))


def test_zero_rows_and_validation():
    X = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.1], [0.0, 3.0], [0.1, 1.0]])
    skm = SphericalKMeans(2, random_state=0, client=False).fit(X)
    assert np.allclose(skm.transform(X[:1]), 1.0)
    with pytest.raises(InvalidParameterError, match="The 'n_init' parameter of SphericalKMeans must be"):
        SphericalKMeans(n_init=0).fit(X)



def test_sparse_tfidf_equals_dense(dask_client):
    """Text: a TF-IDF matrix, sparse in process and as a dask array of CSR chunks on the cluster, gives the
    dense result."""
    import dask.array as da
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer

    rng = np.random.default_rng(0)
    topics = [["ship", "sea", "port", "sail", "wave"], ["goal", "match", "team", "ball", "score"],
              ["stock", "market", "bank", "trade", "price"]]
    docs = [" ".join(rng.choice(topics[t], 8)) + " " + " ".join(rng.choice(sum(topics, []), 2))
            for t in rng.integers(0, 3, 600)]
    X = TfidfVectorizer().fit_transform(docs).astype(np.float64)
    C0 = X[:3].toarray()
    dense = SphericalKMeans(3, init=C0, n_init=1, client=False).fit(X.toarray())
    ours = SphericalKMeans(3, init=C0, n_init=1, client=False).fit(X)
    np.testing.assert_allclose(ours.cluster_centers_, dense.cluster_centers_, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(ours.labels_, dense.labels_)
    np.testing.assert_allclose(ours.transform(X), dense.transform(X.toarray()), atol=1e-12)
    Xd = da.from_array(sp.csr_matrix(X), chunks=(150, -1), asarray=False)
    dist = SphericalKMeans(3, init=C0, n_init=1, client=dask_client).fit(Xd)
    np.testing.assert_array_equal(dist.cluster_centers_, ours.cluster_centers_)
