"""Anomaly scores (distance to the nearest center) and KMeans(min_cluster_size=...)."""
from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from scipy.optimize import linear_sum_assignment
from sklearn.metrics.pairwise import euclidean_distances

from kmeans_dist import BisectingKMeans, KMeans
from kmeans_dist.chunked.min_size import constrained_assignment
from kmeans_dist.estimators.validation import InvalidParameterError


@pytest.fixture(scope="module")
def blobs_with_outliers():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(400, 3)) + c for c in ([0, 0, 0], [8, 0, 0], [0, 8, 0])])
    out = rng.uniform(-30, 30, size=(10, 3)) + np.array([60.0, 60.0, 60.0])
    return X, out


def test_score_samples_is_minus_distance_to_nearest_center(blobs_with_outliers):
    X, out = blobs_with_outliers
    for est in (KMeans(3, random_state=0, client=False), BisectingKMeans(3, random_state=0, client=False)):
        est.fit(X)
        s = est.score_samples(X)
        assert np.allclose(s, -euclidean_distances(X, est.cluster_centers_).min(1))
        lazy = est.score_samples(da.from_array(X, chunks=(250, 3)))
        assert isinstance(lazy, da.Array) and np.allclose(lazy.compute(), s)


def test_threshold_and_outliers(blobs_with_outliers):
    X, out = blobs_with_outliers
    km = KMeans(3, random_state=0, client=False).fit(X)
    thr = km.anomaly_threshold(X, contamination=0.05)
    assert np.mean(km.score_samples(X) < thr) == pytest.approx(0.05, abs=1 / len(X))
    flags = km.predict_outliers(np.concatenate([X, out]), contamination=0.01)
    assert set(np.flatnonzero(flags == -1)) >= set(range(len(X), len(X) + len(out)))
    assert (km.predict_outliers(out, threshold=km.anomaly_threshold(X, 0.01)) == -1).all()
    with pytest.raises(InvalidParameterError, match="The 'contamination' parameter of KMeans.anomaly_threshold must "
                                                    r"be a float in the range \(0, 0.5\]"):
        km.anomaly_threshold(X, contamination=0.7)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(20, 120), k=st.integers(2, 6), frac=st.floats(0.2, 1.0), seed=st.integers(0, 2**16),
       dup=st.booleans())
def test_every_cluster_meets_the_bound(n, k, frac, seed, dup):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2)) * rng.uniform(0.1, 10, size=2)
    if dup:  # heavy duplicates: nearest-center assignment alone cannot always meet the bound
        X = X[rng.integers(0, max(2, n // 10), size=n)]
    m = max(1, int(frac * n / k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        km = KMeans(k, random_state=seed, client=False, min_cluster_size=m).fit(X)
    counts = np.bincount(km.labels_, minlength=k)
    assert counts.min() >= m and np.array_equal(counts, km.cluster_sizes_)
    assert km.inertia_ == pytest.approx(((X - km.cluster_centers_[km.labels_]) ** 2).sum(), rel=1e-6, abs=1e-9)


def test_min_size_over_the_blocks_of_a_dask_cluster(dask_client):
    """A small, well separated group: the split rule falls back to it, the priced constrained assignment
    over the blocks meets the bound; the same result in process and on the two workers."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(300, 2)), rng.normal(size=(300, 2)) + [6, 0],
                        rng.normal(size=(40, 2)) * 0.7 + [3, 3]])
    kw = dict(n_clusters=3, random_state=0, block_rows=128, min_cluster_size=80)
    plain = KMeans(3, random_state=0, block_rows=128, client=False).fit(X)
    assert plain.cluster_sizes_.min() < 80
    ref = KMeans(**kw, client=False).fit(X)
    assert np.bincount(ref.labels_).min() >= 80 and np.array_equal(np.bincount(ref.labels_), ref.cluster_sizes_)
    assert ref.inertia_ > plain.inertia_
    for Xin, client in ((X, dask_client), (da.from_array(X, chunks=(200, 2)), False)):
        got = KMeans(**kw, client=client).fit(Xin)
        assert np.array_equal(got.cluster_sizes_, ref.cluster_sizes_)
        assert np.array_equal(got.cluster_centers_, ref.cluster_centers_)
    assert np.array_equal(got.labels_.compute() if hasattr(got.labels_, "compute") else got.labels_,
                          got.predict(X))  # lazy labels_ are the nearest centers


def test_constrained_assignment_is_the_min_cost_flow():
    """One assignment step equals the assignment problem with min_size slots per cluster plus free slots."""
    rng = np.random.default_rng(2)
    X, C, m = rng.normal(size=(30, 2)), rng.normal(size=(3, 2)) * 3, 7
    _, labels = constrained_assignment(X, C, m, max_iter=1)
    D = ((X[:, None] - C[None]) ** 2).sum(-1)
    cost = np.concatenate([np.repeat(D, m, axis=1), np.repeat(D.min(1, keepdims=True), len(X) - 3 * m, axis=1)], 1)
    r, c = linear_sum_assignment(cost)
    assert D[np.arange(len(X)), labels].sum() == pytest.approx(cost[r, c].sum())
    assert np.bincount(labels, minlength=3).min() >= m


def test_min_cluster_size_validation():
    X = np.zeros((10, 2))
    with pytest.raises(InvalidParameterError, match="The 'min_cluster_size' parameter of KMeans must be an int in "
                                                    r"the range \[1, inf\) or None"):
        KMeans(2, min_cluster_size=0).fit(X)
    with pytest.raises(ValueError, match="should be >= n_clusters \\* min_cluster_size=12"):
        KMeans(2, min_cluster_size=6, client=False).fit(X)
