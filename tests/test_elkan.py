"""algorithm="elkan": Lloyd's iterations with Elkan's bounds, as caller-owned per-block state."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import make_blobs

import dask.array as da

from kmeans_dist import KMeans, kernels
from kmeans_dist.kernels import elkan as E

SET = settings(max_examples=int(__import__("os").environ.get("HYP_EXAMPLES", 10)), deadline=None,
               derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def _blobs(seed, n=4000, d=6, k=16, std=1.0, dtype=np.float64):
    X, _ = make_blobs(n, d, centers=k, cluster_std=std, random_state=seed)
    return X.astype(dtype)


def _same_fit(a, b, history=True):
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(np.asarray(a.labels_), np.asarray(b.labels_))
    assert a.n_iter_ == b.n_iter_ and a.inertia_ == b.inertia_
    if history:
        assert [h["inertia"] for h in a.history_] == [h["inertia"] for h in b.history_]


@pytest.mark.parametrize("seed,weighted", [(0, False), (1, True)])
def test_elkan_equals_hamerly_bit_for_bit_and_lloyd(seed, weighted):
    """More centers than blobs from random rows: centers migrate, some clusters empty and are relocated."""
    X = _blobs(seed)
    w = np.random.default_rng(seed).uniform(0.2, 3.0, len(X)) if weighted else None
    C0 = X[np.random.default_rng(seed).choice(len(X), 30, replace=False)].copy()
    C0[7] = C0[6]  # a duplicated center: an empty cluster, relocated
    kw = dict(init=C0, max_iter=50, tol=0.0, block_rows=700, client=False)
    el = KMeans(30, algorithm="elkan", **kw).fit(X, sample_weight=w)
    _same_fit(el, KMeans(30, algorithm="hamerly", **kw).fit(X, sample_weight=w))
    lloyd = KMeans(30, **kw).fit(X, sample_weight=w)
    np.testing.assert_array_equal(el.cluster_centers_, lloyd.cluster_centers_)
    np.testing.assert_array_equal(el.labels_, lloyd.labels_)
    assert sum(h["n_relocated"] for h in el.history_) >= 1


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_long_rows_and_few_centers_take_the_direct_products_in_all_three(dtype):
    """300 features and 8 centers: Lloyd's kernel and both bounded passes compute the products by the compiled
    direct loop (kmeans_dist.kernels.fused.direct_layout), and the three fits agree as on short rows."""
    from kmeans_dist.kernels import fused

    assert fused.direct_layout(300, 8)
    X = _blobs(3, n=3000, d=300, k=5, std=4.0, dtype=dtype)
    C0 = X[np.random.default_rng(3).choice(len(X), 8, replace=False)].copy()
    kw = dict(init=C0, max_iter=30, tol=0.0, block_rows=700, client=False)
    el = KMeans(8, algorithm="elkan", **kw).fit(X)
    _same_fit(el, KMeans(8, algorithm="hamerly", **kw).fit(X))
    lloyd = KMeans(8, **kw).fit(X)
    np.testing.assert_array_equal(el.cluster_centers_, lloyd.cluster_centers_)
    np.testing.assert_array_equal(el.labels_, lloyd.labels_)
    sk = SKKMeans(8, init=C0, n_init=1, max_iter=30, tol=0.0, algorithm="lloyd").fit(X)
    np.testing.assert_array_equal(lloyd.labels_, sk.labels_)
    np.testing.assert_allclose(lloyd.cluster_centers_, sk.cluster_centers_, rtol=1e-4 if dtype == np.float32 else 1e-9,
                               atol=1e-4 if dtype == np.float32 else 1e-9)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-6), (np.float32, 1e-4)])
def test_elkan_equals_sklearn_elkan(dtype, rtol):
    X = _blobs(3, n=3000, d=5, k=12, std=2.0, dtype=dtype)
    C0 = X[np.random.default_rng(3).choice(len(X), 12, replace=False)]
    km = KMeans(12, init=C0, n_init=1, algorithm="elkan", client=False).fit(X)
    sk = SKKMeans(12, init=C0, n_init=1, algorithm="elkan").fit(X)
    assert km.cluster_centers_.dtype == dtype
    np.testing.assert_allclose(km.cluster_centers_, sk.cluster_centers_, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(km.inertia_, sk.inertia_, rtol=rtol)
    if dtype == np.float64:
        np.testing.assert_array_equal(km.labels_, sk.labels_)
        assert km.n_iter_ == sk.n_iter_


def test_elkan_on_dask_any_chunking_equals_in_process(dask_client):
    X = _blobs(6, n=2000, d=6, k=12, dtype=np.float32)
    kw = dict(init="k-means++", random_state=2, algorithm="elkan", block_rows=400, max_iter=6, tol=0.0)
    ref = KMeans(16, client=False, **kw).fit(X)
    for chunks, persist in ((715, True), (1000, False)):  # persisted (the states on the workers), streamed
        km = KMeans(16, client=dask_client, persist=persist, **kw).fit(da.from_array(X, chunks=(chunks, -1)))
        np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
        assert km.inertia_ == ref.inertia_ and km.n_iter_ == ref.n_iter_
        np.testing.assert_array_equal(km.labels_.compute(), ref.labels_)


def test_state_is_the_callers_and_a_stale_or_broken_one_is_not_used(monkeypatch):
    """The state returned by a pass is used only by the next pass of the same run; the passes below claim
    that no center moved while the centers are permuted, so a state that was used keeps the old labels."""
    X = _blobs(5, n=2000, d=4, k=8)
    C0 = X[:8].copy()
    Cn = C0[::-1].copy()
    lie = E.elkan_params(Cn, Cn, 1)  # "nothing moved"
    s0, _ = E.elkan_partial(X, None, C0, None, E.elkan_params(C0, None, 0))
    assert s0["pass"] == 0 and s0["lower"].shape == (2000, 8)
    _, fresh = E.elkan_partial(X, None, Cn, None, E.elkan_params(Cn, None, 0))
    kept, used = E.elkan_partial(X, None, Cn, {k: np.copy(v) for k, v in s0.items()}, lie)
    assert not np.array_equal(used["count"], fresh["count"])  # the state was used (and the lie believed)
    for stale in ({**s0, "pass": -1}, {**s0, "pass": 5}, {**s0, "lower": s0["lower"][:, :4]}):
        _, p = E.elkan_partial(X, None, Cn, stale, lie)
        np.testing.assert_array_equal(p["count"], fresh["count"])
    # a pass that fails half-way leaves its state marked invalid
    s1, _ = E.elkan_partial(X, None, C0, None, E.elkan_params(C0, None, 0))
    real = E.accumulate_bounded
    monkeypatch.setattr(E, "accumulate_bounded", lambda *a: (_ for _ in ()).throw(RuntimeError("lost")))
    with pytest.raises(RuntimeError):
        E.elkan_partial(X, None, C0, s1, E.elkan_params(C0, C0, 1))
    monkeypatch.setattr(E, "accumulate_bounded", real)
    assert s1["pass"] == -1
    _, p = E.elkan_partial(X, None, Cn, s1, lie)
    np.testing.assert_array_equal(p["count"], fresh["count"])


@st.composite
def passes(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n, d, k = draw(st.integers(30, 800)), draw(st.integers(1, 10)), draw(st.integers(2, 16))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    X = ((rng.standard_normal((n, d)) + draw(st.sampled_from([0.0, 50.0]))) * scale).astype(dtype)
    C = X[rng.choice(n, k, replace=False)].astype(np.float64)
    seq = [C]
    for _ in range(draw(st.integers(2, 5))):
        kind = draw(st.sampled_from(["small", "none", "jump"]))
        C = C.copy()
        if kind == "small":
            C += rng.standard_normal(C.shape) * scale * 0.05
        elif kind == "jump":
            C[rng.integers(k)] = X[rng.integers(n)]
        seq.append(C)
    return X, [c.astype(dtype) for c in seq]


@SET
@given(passes())
def test_bounded_pass_equals_a_full_pass_and_lloyd(case):
    """Every pass with bounds returns the partial of a pass without them (the bounds only save work);
    its labels are Lloyd's except at near-ties, where the exactly nearer center wins."""
    X, seq = case
    n, d = X.shape
    state, prev = None, None
    eps = float(np.finfo(X.dtype).eps)
    X64 = X.astype(np.float64)
    for p, C in enumerate(seq):
        params = E.elkan_params(C, prev, p)
        state, part = E.elkan_partial(X, None, C, state, params)
        _, full = E.elkan_partial(X, None, C, None, params)
        for key in ("sum", "weight", "count", "far_index", "far_dist"):
            np.testing.assert_array_equal(part[key], full[key])
        assert part["inertia"] == full["inertia"]
        prev = C
        ref = kernels.lloyd_partial(X, None, C, return_labels=True)
        lab = state["labels"].astype(np.int64)
        exact = ((X64[:, None, :] - C.astype(np.float64)[None]) ** 2).sum(-1)
        bound = 2 * (4 * (d + 4) * eps + 1e-12) * ((X64 ** 2).sum(1) + (C.astype(np.float64) ** 2).sum(1).max())
        diff = lab != ref["labels"]
        assert np.all(np.abs(exact[diff, lab[diff]] - exact[diff, ref["labels"][diff]]) <= bound[diff])
        assert np.all(exact[diff, lab[diff]] <= exact[diff, ref["labels"][diff]])
        assert np.all(state["upper"] ** 2 >= exact[np.arange(n), lab] * (1 - 1e-9))
        low = state["lower"].astype(np.float64)
        assert np.all(low <= np.sqrt(exact) * (1 + 1e-9) + 1e-300)


def test_one_cluster_and_state_size():
    X = _blobs(8, n=400, d=3, k=3)
    a = KMeans(1, init=X[:1], algorithm="elkan", client=False).fit(X)
    b = KMeans(1, init=X[:1], client=False).fit(X)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert E.state_nbytes(1000, 64, np.float32) == 1000 * (64 * 4 + 20)
