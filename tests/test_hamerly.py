"""algorithm="hamerly": the same Lloyd iterations with bounds (kmeans_dist.kernels.hamerly)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import make_blobs

import dask.array as da

from kmeans_dist import KMeans, kernels
from kmeans_dist.kernels import hamerly as H
from kmeans_dist.kernels import row_norms_sq

SET = settings(max_examples=int(__import__("os").environ.get("HYP_EXAMPLES", 15)), deadline=None,
               derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def _blobs(seed, n=6000, d=8, k=24, std=1.0, dtype=np.float64):
    X, _ = make_blobs(n, d, centers=k, cluster_std=std, random_state=seed)
    return X.astype(dtype)


def _same_fit(a, b):
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(np.asarray(a.labels_), np.asarray(b.labels_))
    assert a.n_iter_ == b.n_iter_
    assert a.inertia_ == b.inertia_  # the same final pass
    np.testing.assert_allclose([h["inertia"] for h in a.history_], [h["inertia"] for h in b.history_], rtol=1e-12)


@pytest.mark.parametrize("seed,weighted", [(0, False), (1, True), (2, False)])
def test_hamerly_equals_lloyd_bit_for_bit(seed, weighted):
    """Random (Forgy) starts on blobs with more centers than blobs: centers migrate for many iterations,
    some clusters empty and get relocated; the bounds must never change a label or a sum."""
    X = _blobs(seed)
    w = np.random.default_rng(seed).uniform(0.2, 3.0, len(X)) if weighted else None
    C0 = X[np.random.default_rng(seed).choice(len(X), 40, replace=False)]
    kw = dict(init=C0, max_iter=60, tol=0.0, block_rows=1000, client=False)
    lloyd = KMeans(40, **kw).fit(X, sample_weight=w)
    ham = KMeans(40, algorithm="hamerly", **kw).fit(X, sample_weight=w)
    _same_fit(lloyd, ham)


def test_hamerly_relocates_empty_clusters_as_lloyd():
    """Duplicated initial centers leave clusters empty: they are relocated to the same farthest rows."""
    X = _blobs(9, n=4000, d=6, k=12)
    C0 = X[np.random.default_rng(9).choice(len(X), 16, replace=False)].copy()
    C0[5] = C0[4]
    C0[9] = C0[8]
    C0[15] = C0[8]
    kw = dict(init=C0, max_iter=40, tol=0.0, block_rows=700, client=False)
    lloyd = KMeans(16, **kw).fit(X)
    ham = KMeans(16, algorithm="hamerly", **kw).fit(X)
    assert sum(h["n_relocated"] for h in ham.history_) >= 3
    _same_fit(lloyd, ham)


def test_hamerly_equals_sklearn_lloyd_and_elkan():
    X = _blobs(3, n=5000, d=5, k=12)
    C0 = X[np.random.default_rng(3).choice(len(X), 12, replace=False)]
    km = KMeans(12, init=C0, max_iter=100, algorithm="hamerly", client=False).fit(X)
    for alg in ("lloyd", "elkan"):
        sk = SKKMeans(12, init=C0, n_init=1, algorithm=alg, max_iter=100).fit(X)
        np.testing.assert_allclose(km.cluster_centers_, sk.cluster_centers_, rtol=1e-6, atol=1e-9)
        np.testing.assert_array_equal(km.labels_, sk.labels_)
        np.testing.assert_allclose(km.inertia_, sk.inertia_, rtol=1e-6)
        assert km.n_iter_ == sk.n_iter_


def test_hamerly_float32_stays_float32_and_matches_sklearn():
    X = _blobs(4, n=5000, d=6, k=10, dtype=np.float32)
    C0 = X[:10].copy()
    km = KMeans(10, init=C0, algorithm="hamerly", client=False).fit(X)
    sk = SKKMeans(10, init=C0, n_init=1, algorithm="lloyd").fit(X)
    assert km.cluster_centers_.dtype == np.float32
    np.testing.assert_allclose(km.cluster_centers_, sk.cluster_centers_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(km.inertia_, sk.inertia_, rtol=1e-4)


@st.composite
def passes(draw):
    """Data, and a sequence of center sets a bounded pass sees: small moves, no move, and jumps."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(50, 1500))
    d = draw(st.integers(1, 12))
    k = draw(st.integers(2, 20))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    offset = draw(st.sampled_from([0.0, 50.0]))  # far from the origin: the rounding bound grows
    X = ((rng.standard_normal((n, d)) + offset) * scale).astype(dtype)
    C = X[rng.choice(n, k, replace=False)].astype(np.float64)
    seq = [C]
    for _ in range(draw(st.integers(2, 6))):
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
def test_bounded_pass_labels_are_lloyds_except_near_ties(case):
    """Every bounded pass: the labels are Lloyd's, except where two centers are within the rounding
    bound of each other for a row (then the nearer by exact distance); the inertia is right; the far
    rows are the farthest; the sums, weights and counts are Lloyd's wherever the labels are."""
    X, seq = case
    n, d = X.shape
    k = seq[0].shape[0]
    x_sq = row_norms_sq(X)
    prev = None
    eps = float(np.finfo(X.dtype).eps)
    state = None
    for p, C in enumerate(seq):
        b = {"pass": p, **H.bound_params(C, prev)}
        state, (sums, weights, counts, inertia, labels, dist, far) = H.lloyd_block_bounded(X, None, C, k, state, b)
        prev = C
        ref = kernels.lloyd_partial(X, None, C, return_labels=True, x_sq=x_sq)
        X64 = X.astype(np.float64)
        exact = ((X64[:, None, :] - C.astype(np.float64)[None]) ** 2).sum(-1)
        lab = labels.astype(np.int64)
        own = exact[np.arange(n), lab]
        np.testing.assert_allclose(dist[far], own[far], rtol=1e-12, atol=1e-300)  # exact at the far rows
        bound = 2 * (4 * (d + 4) * eps + 1e-12) * ((X64 ** 2).sum(1) + (C.astype(np.float64) ** 2).sum(1).max())
        diff = lab != ref["labels"]
        # a different label only at a near-tie, and then the exactly nearer center
        assert np.all(np.abs(exact[diff, lab[diff]] - exact[diff, ref["labels"][diff]]) <= bound[diff])
        assert np.all(exact[diff, lab[diff]] <= exact[diff, ref["labels"][diff]])
        # the bounds the state carries to the next pass hold: upper >= the distance to the own center,
        # lower <= the distance to every other center
        assert np.all(state["upper"] >= np.sqrt(own) * (1 - 1e-12))
        if k > 1:
            others = np.where(np.arange(k)[None, :] == lab[:, None], np.inf, exact).min(1)
            assert np.all(state["lower"] <= np.sqrt(others) * (1 + 1e-12))
        # the inertia from per-center sums, in float64
        assert inertia == pytest.approx(float(own.sum()), rel=1e-9, abs=1e-12 * float((X64 ** 2).sum()))
        # the far rows: the farthest by exact distance, farthest first
        np.testing.assert_array_equal(far, np.lexsort((np.arange(n), -own))[:k])
        if not diff.any():
            np.testing.assert_array_equal(sums, ref["sum"])
            np.testing.assert_array_equal(counts, ref["count"])
            np.testing.assert_array_equal(weights, ref["weight"])


def test_stale_or_foreign_state_is_never_used(monkeypatch):
    """Bounds that are not from the previous pass (none, a state two passes old, one left by a failed pass) are
    ignored: the pass computes every distance.  The passes below claim that no center moved while the
    centers are in fact permuted, so bounds that were used would keep the old labels (shown first)."""
    X = _blobs(5, n=3000, d=4, k=8)
    C0 = X[:8].copy()
    Cn = C0[::-1].copy()  # the same points as centers, permuted: every label changes
    lie = H.bound_params(Cn, Cn)  # "nothing moved"

    def pass_(C, state, p, b):
        state, out = H.lloyd_block_bounded(X, None, C, 8, state, {"pass": p, **b})
        return state, [np.array(a, copy=True) for a in out]

    _, fresh = pass_(Cn, None, 0, H.bound_params(Cn, None))

    def same(out, ref):
        for i, (a, b) in enumerate(zip(out, ref)):
            if i == 5:  # distances: exact at the far rows only
                a, b = a[out[6]], b[ref[6]]
            np.testing.assert_array_equal(a, b)

    def start():
        return pass_(C0, None, 0, H.bound_params(C0, None))[0]

    # the state is used when it is the previous pass's: then the lie keeps the old labels
    _, kept = pass_(Cn, start(), 1, lie)
    assert not np.array_equal(kept[4], fresh[4])
    # no state, or a pass that skips one: full passes
    same(pass_(Cn, None, 1, lie)[1], fresh)
    same(pass_(Cn, start(), 2, lie)[1], fresh)
    # a pass that fails half-way leaves a state that the next pass refuses
    st = start()

    def boom(*a):
        raise RuntimeError("worker lost")

    real = H._accumulate
    monkeypatch.setattr(H, "_accumulate", boom)
    with pytest.raises(RuntimeError):
        pass_(Cn, st, 1, lie)
    monkeypatch.setattr(H, "_accumulate", real)
    same(pass_(Cn, st, 1, lie)[1], fresh)
    # and the real next pass, with true bounds, equals a full pass
    C1 = C0 + 0.3
    _, fresh1 = pass_(C1, None, 0, H.bound_params(C1, None))
    same(pass_(C1, start(), 1, H.bound_params(C1, C0))[1], fresh1)


def test_hamerly_on_dask_any_chunking_equals_in_process(dask_client):
    X = _blobs(6, n=5000, d=6, k=16, dtype=np.float32)
    kw = dict(init="k-means++", random_state=2, algorithm="hamerly", block_rows=600)
    ref = KMeans(20, client=False, **kw).fit(X)
    lloyd = KMeans(20, init="k-means++", random_state=2, block_rows=600, client=False).fit(X)
    np.testing.assert_array_equal(ref.cluster_centers_, lloyd.cluster_centers_)
    for chunks in (5000, 1667, 715):  # 1, 3, 7 chunks
        for persist in (True, False):
            km = KMeans(20, client=dask_client, persist=persist, **kw).fit(da.from_array(X, chunks=(chunks, -1)))
            np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
            assert km.inertia_ == ref.inertia_ and km.n_iter_ == ref.n_iter_
            np.testing.assert_array_equal(km.labels_.compute(), ref.labels_)


def test_hamerly_survives_a_worker_killed_mid_fit():
    """The bounds live on the workers; a worker SIGKILLed between iterations takes its bounds with it.
    The pass falls back to tasks, the lost blocks are recomputed from the source and start new bounds:
    same result as in-process."""
    import os
    import signal

    from distributed import Client, LocalCluster

    X = _blobs(7, n=6000, d=5, k=20)
    C0 = X[np.random.default_rng(7).choice(len(X), 20, replace=False)]
    ref = KMeans(20, init=C0, max_iter=30, tol=0, algorithm="hamerly", block_rows=500, client=False).fit(X)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as lc, Client(lc) as c:
        victim = next(iter(c.run(os.getpid).values()))

        def kill_once(state):
            if state["iteration"] == 5:
                os.kill(victim, signal.SIGKILL)

        km = KMeans(20, init=C0, max_iter=30, tol=0, algorithm="hamerly", block_rows=500, persist=True,
                    client=c, callback=kill_once).fit(da.from_array(X, chunks=(1000, -1)))
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert km.inertia_ == ref.inertia_
    np.testing.assert_allclose([h["inertia"] for h in km.history_], [h["inertia"] for h in ref.history_],
                               rtol=0, atol=0)


def test_algorithm_is_validated_with_sklearns_wording():
    with pytest.raises(ValueError, match=r"The 'algorithm' parameter of KMeans must be a str among "):
        KMeans(3, algorithm="full").fit(np.zeros((10, 2)))


def test_one_cluster_runs_plain_lloyd():
    X = _blobs(8, n=500, d=3, k=3)
    a = KMeans(1, init=X[:1], algorithm="hamerly", client=False).fit(X)
    b = KMeans(1, init=X[:1], client=False).fit(X)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 9, 13, 64, 257])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_best_two_of_the_columns_equal_numpys(k, dtype):
    """The smallest value of every column of ``PT + c_sq``, its first index and the second smallest (equal to
    the smallest where two tie), four centers at a time: the same as NumPy's, ties and every remainder of k
    by 4 included."""
    rng = np.random.default_rng(k)
    n = 301
    PT = rng.integers(-4, 4, size=(k, n)).astype(dtype)  # small integers: many exact ties
    c_sq = rng.integers(0, 3, size=k).astype(dtype)
    best, second = np.empty(n, dtype=dtype), np.empty(n, dtype=dtype)
    lab = np.empty(n, dtype=np.int32)
    H._best_two_cols(PT, c_sq, best, lab, second)
    V = PT + c_sq[:, None]
    np.testing.assert_array_equal(lab, V.argmin(0))
    np.testing.assert_array_equal(best, V.min(0))
    np.testing.assert_array_equal(second, np.sort(V, axis=0)[1] if k > 1 else np.full(n, np.inf, dtype=dtype))


@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_center_distances_below_never_exceed_the_exact_ones(offset):
    """The GEMM's center distances, less their rounding bound, are lower bounds on the exact distances (SciPy's
    direct differences), also for repeated and nearly repeated centers far from the origin, and tight
    elsewhere."""
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(1)
    C = rng.standard_normal((40, 784)) + offset
    C[5] = C[3]  # repeated
    C[7] = C[6] + 1e-9  # nearly repeated
    D = H.center_distances_below(C)
    exact = cdist(C, C)
    assert np.all(D <= exact) and np.all(np.diag(D) == 0)
    far = exact > 1.0
    np.testing.assert_allclose(D[far], exact[far], rtol=1e-6)
