"""The scikit-learn API beyond check_estimator, each behaviour against scikit-learn's on the same inputs:
callable init, copy_x, verbose lines, warnings and error wording, feature names and set_output, and the
MiniBatchKMeans state under any order of fit/partial_fit calls."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans as SKKMeans
from sklearn.cluster import MiniBatchKMeans as SKMiniBatchKMeans
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning

import dask.array as da

from kmeans_dist import KMeans, MiniBatchKMeans


@pytest.fixture(scope="module")
def X():
    return make_blobs(600, 3, centers=4, cluster_std=0.5, random_state=0)[0]


def _first_rows(X, n_clusters, random_state):
    return np.array(X[:n_clusters], copy=True)  # a copy: scikit-learn would update a view of X in place


@pytest.mark.parametrize("algorithm", ["lloyd", "elkan"])
def test_callable_init_as_sklearn(X, algorithm):
    seen = []

    def init(Xc, k, random_state):
        seen.append((type(Xc), type(random_state)))
        return np.asarray(Xc[:k] if not isinstance(Xc, da.Array) else Xc[:k].compute(), dtype=np.float64).copy()

    km = KMeans(4, init=init, n_init=1, algorithm=algorithm, client=False).fit(X)
    sk = SKKMeans(4, init=_first_rows, n_init=1, algorithm=algorithm).fit(X)
    np.testing.assert_allclose(km.cluster_centers_, sk.cluster_centers_, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(km.labels_, sk.labels_)
    assert seen == [(np.ndarray, np.random.RandomState)]
    # lazy input: the callable gets the dask array; n_init="auto" is 10 for a callable, as scikit-learn's
    KMeans(4, init=init, client=False).fit(da.from_array(X, chunks=(200, -1)))
    assert len(seen) == 11 and seen[-1][0] is da.Array
    mb = MiniBatchKMeans(4, init=_first_rows, n_init=1, batch_size=100, random_state=0, client=False).fit(X)
    assert mb.cluster_centers_.shape == (4, 3)
    with pytest.raises(ValueError, match=re.escape("The shape of the initial centers (3, 3) does not match the "
                                                   "number of clusters 4.")):
        KMeans(4, init=lambda X, k, random_state: X[:3], client=False).fit(X)


@pytest.mark.parametrize("copy_x", [True, False])
def test_copy_x_leaves_X_unchanged(X, copy_x):
    X0 = X.copy()
    km = KMeans(4, init=X[:4], copy_x=copy_x, client=False).fit(X)
    np.testing.assert_array_equal(X, X0)
    ref = KMeans(4, init=X[:4], client=False).fit(X0)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    sk = SKKMeans(4, init=X[:4], n_init=1, copy_x=copy_x).fit(X.copy())
    np.testing.assert_allclose(km.cluster_centers_, sk.cluster_centers_, rtol=1e-6)


def _lines(out):
    return [re.sub(r"[-+0-9.e]+", "#", line) for line in out.strip().splitlines()]


def test_verbose_lines_are_sklearns(X, capsys):
    C0 = X[[0, 1, 2, 3]]
    KMeans(4, init=C0, n_init=1, verbose=1, tol=0.0, client=False).fit(X)
    ours = capsys.readouterr().out
    SKKMeans(4, init=C0, n_init=1, verbose=1, tol=0.0).fit(X)
    theirs = capsys.readouterr().out
    assert _lines(ours) == _lines(theirs)
    assert ours.splitlines()[0] == "Initialization complete" and "strict convergence" in ours
    # tol-based convergence, same wording
    KMeans(4, init=C0, n_init=1, verbose=1, tol=10.0, client=False).fit(X)
    ours = capsys.readouterr().out.strip().splitlines()[-1]
    SKKMeans(4, init=C0, n_init=1, verbose=1, tol=10.0).fit(X)
    theirs = capsys.readouterr().out.strip().splitlines()[-1]
    assert _lines(ours) == _lines(theirs) and "within tolerance" in ours
    MiniBatchKMeans(4, batch_size=100, max_iter=1, verbose=1, random_state=0, client=False).fit(X)
    out = capsys.readouterr().out
    assert "Init 1/1 with method k-means++" in out and "Minibatch step 1/6: mean batch inertia: " in out


def _messages(fn):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        fn()
    return [(w.category, str(w.message)) for w in rec if w.category in (RuntimeWarning, ConvergenceWarning)]


@pytest.mark.parametrize("ours,theirs", [(KMeans, SKKMeans), (MiniBatchKMeans, SKMiniBatchKMeans)])
def test_explicit_init_with_n_init_warns_as_sklearn(X, ours, theirs):
    a = _messages(lambda: ours(4, init=X[:4], n_init=3, client=False).fit(X))
    b = _messages(lambda: theirs(4, init=X[:4], n_init=3).fit(X))
    assert a == b and a and a[0][0] is RuntimeWarning


def test_fewer_distinct_points_warns_as_sklearn():
    Xd = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0]] * 5)
    a = _messages(lambda: KMeans(3, init="random", random_state=0, client=False).fit(Xd))
    b = _messages(lambda: SKKMeans(3, init="random", random_state=0).fit(Xd))
    assert a == b == [(ConvergenceWarning, "Number of distinct clusters (2) found smaller than n_clusters (3). "
                       "Possibly due to duplicate points in X.")]


def test_error_wording_as_sklearn(X):
    for bad in (X[:3], X[:4, :2]):
        with pytest.raises(ValueError) as theirs:
            SKKMeans(4, init=bad, n_init=1).fit(X)
        with pytest.raises(ValueError, match=re.escape(str(theirs.value))):
            KMeans(4, init=bad, client=False).fit(X)
    with pytest.raises(ValueError, match="Sample weights must contain at least one non-zero number"):
        SKKMeans(2, n_init=1).fit(X, sample_weight=np.zeros(len(X)))
    with pytest.raises(ValueError, match="Sample weights must contain at least one non-zero number"):
        KMeans(2, client=False).fit(X, sample_weight=np.zeros(len(X)))
    km = KMeans(2, client=False).fit(X)
    for v, word in ((np.nan, "NaN"), (np.inf, "infinity")):
        Xb = X.copy()
        Xb[5, 1] = v
        with pytest.raises(ValueError, match=f"Input X contains {word}"):
            SKKMeans(2, n_init=1).fit(X).predict(Xb)
        with pytest.raises(ValueError, match=f"Input X contains {word}"):
            km.predict(Xb)


def test_feature_names_and_set_output(X):
    pd = pytest.importorskip("pandas")
    xr = pytest.importorskip("xarray")
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    km = KMeans(3, random_state=0, client=False).set_output(transform="pandas").fit(df)
    sk = SKKMeans(3, n_init=1, random_state=0).set_output(transform="pandas").fit(df)
    np.testing.assert_array_equal(km.feature_names_in_, sk.feature_names_in_)
    np.testing.assert_array_equal(km.get_feature_names_out(), sk.get_feature_names_out())
    out = km.transform(df)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == ["kmeans0", "kmeans1", "kmeans2"]
    assert list(out.index) == list(df.index)
    assert isinstance(km.fit_transform(df), pd.DataFrame)
    xa = xr.DataArray(X, dims=("sample", "feature"), coords={"feature": ["a", "b", "c"]})
    km2 = MiniBatchKMeans(3, batch_size=100, random_state=0, client=False).fit(xa)
    assert list(km2.feature_names_in_) == ["a", "b", "c"]
    assert list(km2.get_feature_names_out()) == ["minibatchkmeans0", "minibatchkmeans1", "minibatchkmeans2"]
    with pytest.raises(ValueError, match="feature names should match"):
        km.predict(df[["c", "b", "a"]].set_axis(["c", "b", "a"], axis=1))


@settings(max_examples=int(__import__("os").environ.get("HYP_EXAMPLES", 12)), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["fit", "partial_fit", "partial_fit_small", "save_load"]), min_size=1, max_size=5))
def test_minibatch_state_whatever_the_call_order(X, tmp_path_factory, calls):
    mb = MiniBatchKMeans(4, batch_size=64, max_iter=2, random_state=0, client=False)
    steps = None
    for c in calls:
        if c == "fit":
            mb.fit(X)
            steps = mb.n_steps_
            assert steps >= 1
        elif c.startswith("partial_fit"):
            mb.partial_fit(X[:64] if c == "partial_fit" else X[100:108])
            steps = 1 if steps is None else steps + 1
            assert mb.labels_.shape[0] in (64, 8)
        elif hasattr(mb, "cluster_centers_"):
            path = tmp_path_factory.mktemp("mb") / "m"
            mb.save(path)
            from kmeans_dist import load_model

            mb = load_model(path)
        if steps is not None:
            assert mb.n_steps_ == steps
            assert np.all(np.isfinite(mb.cluster_centers_)) and mb.cluster_centers_.shape == (4, 3)
            assert mb.predict(X[:5]).shape == (5,)
