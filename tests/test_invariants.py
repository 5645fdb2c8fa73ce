"""Property tests (hypothesis) and array-API conformance of the kernels."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmeans_dist import KMeans, kernels

SET = settings(max_examples=int(__import__("os").environ.get("HYP_EXAMPLES", 15)), deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def datasets(draw):
    n = draw(st.integers(20, 200))
    d = draw(st.integers(1, 5))
    k = draw(st.integers(1, min(6, n)))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
    return X, k, seed


@pytest.mark.parametrize("algorithm", ["lloyd", "hamerly"])
@SET
@given(data=datasets())
def test_inertia_never_rises(data, algorithm):
    X, k, seed = data
    km = KMeans(k, init="random", n_init=1, random_state=seed, tol=0.0, max_iter=50, algorithm=algorithm,
                client=False).fit(X)
    inert = [h["inertia"] for h in km.history_]
    assert all(b <= a * (1 + 1e-12) + 1e-12 for a, b in zip(inert, inert[1:]))
    assert km.inertia_ <= inert[-1] * (1 + 1e-12) + 1e-12


@pytest.mark.parametrize("algorithm", ["lloyd", "hamerly"])
@SET
@given(data=datasets())
def test_labels_are_argmin(data, algorithm):
    X, k, seed = data
    km = KMeans(k, random_state=seed, algorithm=algorithm, client=False).fit(X)
    D = ((X[:, None, :] - km.cluster_centers_[None]) ** 2).sum(-1)
    best = D.min(axis=1)
    chosen = D[np.arange(len(X)), km.labels_]
    np.testing.assert_allclose(chosen, best, rtol=1e-9, atol=1e-9 * max(1.0, float(best.max())))


@SET
@given(datasets(), st.data())
def test_weight_two_equals_duplicated_row(data, more):
    X, k, seed = data
    i = more.draw(st.integers(0, len(X) - 1))
    C0 = X[np.random.default_rng(seed).choice(len(X), k, replace=False)]
    w = np.ones(len(X))
    w[i] = 2.0
    a = KMeans(k, init=C0, tol=0.0, max_iter=20, block_rows=10_000, client=False).fit(X, sample_weight=w)
    Xdup = np.vstack([X, X[i:i + 1]])
    b = KMeans(k, init=C0, tol=0.0, max_iter=20, block_rows=10_000, client=False).fit(Xdup)
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.inertia_, b.inertia_, rtol=1e-9, atol=1e-12)


@SET
@given(datasets(), st.sampled_from([1, 3, 7]))
def test_same_seed_same_result_whatever_the_chunking(data, n_chunks):
    import dask.array as da

    X, k, seed = data
    ref = KMeans(k, random_state=seed, block_rows=16, client=False).fit(X)
    Xd = da.from_array(X, chunks=(max(1, -(-len(X) // n_chunks)), -1))
    km = KMeans(k, random_state=seed, block_rows=16, client=False).fit(Xd)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert km.inertia_ == ref.inertia_


def test_kernels_run_on_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(0)
    Xn = rng.standard_normal((300, 4))
    Cn = Xn[:3].copy()
    X, C = xps.asarray(Xn), xps.asarray(Cn)
    lab, dist = kernels.assign_labels(X, C)
    lab_n, dist_n = kernels.assign_labels(Xn, Cn)
    np.testing.assert_array_equal(np.from_dlpack(lab), lab_n)
    np.testing.assert_allclose(np.from_dlpack(dist), dist_n, rtol=1e-12)
    p = kernels.lloyd_partial(X, None, C, offset=100)
    q = kernels.lloyd_partial(Xn, None, Cn, offset=100)
    for key in ("sum", "weight", "count", "far_index"):
        np.testing.assert_allclose(p[key], q[key], rtol=1e-12)
    r = kernels.lloyd_inmemory(X, C)
    r_n = kernels.lloyd_inmemory(Xn, Cn)
    np.testing.assert_allclose(np.from_dlpack(r.centers) if not isinstance(r.centers, np.ndarray) else r.centers,
                               r_n.centers, rtol=1e-12)
    c, idx = kernels.kmeans_plusplus(X, 3, np.random.default_rng(1))
    c_n, idx_n = kernels.kmeans_plusplus(Xn, 3, np.random.default_rng(1))
    np.testing.assert_array_equal(idx, idx_n)


def test_kernels_float32_accumulate_in_float64():
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((20_000, 3)) + 1000).astype(np.float32)
    C = X[:2].copy()
    p = kernels.lloyd_partial(X, None, C)
    assert p["sum"].dtype == np.float64 and p["weight"].dtype == np.float64
    lab, _ = kernels.assign_labels(X, C)
    for j in range(2):
        np.testing.assert_allclose(p["sum"][j], X[lab == j].astype(np.float64).sum(0), rtol=1e-6)


@pytest.mark.gpu
def test_cupy_kernels_match_numpy():
    from kmeans_dist.kernels.xp import gpu_available

    if not gpu_available():
        pytest.skip("no CUDA GPU")
    import cupy as cp

    rng = np.random.default_rng(0)
    Xn = rng.standard_normal((5000, 16)).astype(np.float32)
    km_c = KMeans(4, init=Xn[:4]).fit(cp.asarray(Xn))
    km_n = KMeans(4, init=Xn[:4]).fit(Xn)
    np.testing.assert_allclose(km_c.cluster_centers_, km_n.cluster_centers_, rtol=1e-4)
    assert isinstance(km_c.labels_, cp.ndarray)
