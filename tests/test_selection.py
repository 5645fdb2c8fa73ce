"""kmeans_dist.selection: every criterion finds 4 well-separated blobs; the gap statistic follows
Tibshirani, Walther & Hastie (2001), checked against direct NumPy computations."""
from __future__ import annotations

import json
import math

import dask
import numpy as np
import pytest

from kmeans_dist.data import datasets as D
from kmeans_dist import selection as S

CENTERS = [[-6.0, -6.0], [-6.0, 6.0], [6.0, -6.0], [6.0, 6.0]]


pytestmark = pytest.mark.usefixtures("threaded_unless_cluster")


@pytest.fixture(scope="module")
def blobs4():
    with dask.config.set(scheduler="threads"):
        return D.blobs(300, centers=CENTERS, cluster_std=1.0, random_state=0, as_numpy=True)


@pytest.fixture(scope="module")
def selection4(blobs4):
    X, _ = blobs4
    with dask.config.set(scheduler="threads"):
        return S.choose_k(X, range(1, 8), gap_B=6, n_init=2, random_state=0)


def test_every_criterion_recommends_4(selection4):
    assert selection4.recommendations == {c: 4 for c in S.CRITERIA}
    t = selection4.table
    assert list(t["k"].values) == list(range(1, 8))
    assert np.isnan(t["silhouette"].sel(k=1)) and np.isnan(t["davies_bouldin"].sel(k=1))
    assert t.attrs["recommended_gap"] == 4 and t.attrs["B"] == 6 and t.attrs["reference"] == "uniform"
    assert t["ref_log_w"].shape == (7, 6)


def test_gap_standard_error_follows_the_paper(selection4):
    t = selection4.table
    ref = t["ref_log_w"].values                        # log W*_kb, shape (K, B)
    B = ref.shape[1]
    lbar = ref.sum(axis=1) / B                         # (1/B) sum_b log W*_kb
    sd = np.sqrt(((ref - lbar[:, None]) ** 2).sum(axis=1) / B)   # sd_k with 1/B, as in the paper
    s = sd * np.sqrt(1 + 1 / B)                        # s_k
    np.testing.assert_allclose(t["gap_sd"].values, sd, rtol=1e-12)
    np.testing.assert_allclose(t["gap_s"].values, s, rtol=1e-12)
    np.testing.assert_allclose(t["gap"].values, lbar - np.log(t["inertia"].values), rtol=1e-12)
    ks = t["k"].values
    g = t["gap"].values
    first = next(int(ks[i]) for i in range(len(ks) - 1) if g[i] >= g[i + 1] - s[i + 1])
    assert first == selection4.recommendations["gap"]


def test_log_w_and_reference_direct_numpy(blobs4):
    """k = 1: W_1 and every W*_1b recomputed directly from the data and the regenerated references."""
    X, _ = blobs4
    bounds = S.reference_bounds(X, "uniform")
    np.testing.assert_array_equal(bounds["lo"], X.min(axis=0))
    np.testing.assert_array_equal(bounds["hi"], X.max(axis=0))
    row = S.evaluate_k(X, 1, gap_B=4, bounds=bounds, random_state=5)
    np.testing.assert_allclose(row["log_w"], np.log(((X - X.mean(axis=0)) ** 2).sum()), rtol=1e-12)
    for b in range(4):
        R = S.reference_data(bounds, (X.shape[0],), b, random_state=5).compute()
        assert (R >= bounds["lo"]).all() and (R <= bounds["hi"]).all()
        np.testing.assert_allclose(row["ref_log_w"][b], np.log(((R - R.mean(axis=0)) ** 2).sum()), rtol=1e-12)


def test_pca_reference_box():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3)) @ np.array([[3.0, 1.0, 0.0], [0.0, 0.5, 0.2], [0.0, 0.0, 0.1]]) + 5.0
    b = S.reference_bounds(X, "pca")
    assert b["method"] == "pca" and b["V"].shape == (3, 3)
    np.testing.assert_allclose(b["V"].T @ b["V"], np.eye(3), atol=1e-12)
    Z = (X - X.mean(axis=0)) @ b["V"]
    np.testing.assert_allclose(b["lo"], Z.min(axis=0), rtol=1e-10)
    np.testing.assert_allclose(b["hi"], Z.max(axis=0), rtol=1e-10)
    R = S.reference_data(b, (200, 150), 0, random_state=1).compute()
    assert R.shape == (350, 3)
    Zr = (R - b["mean"]) @ b["V"]
    assert (Zr >= b["lo"] - 1e-9).all() and (Zr <= b["hi"] + 1e-9).all()
    # the first principal axis is the direction of largest spread
    assert np.ptp(Zr[:, 0]) > np.ptp(Zr[:, 2])
    with pytest.raises(ValueError, match="reference"):
        S.reference_bounds(X, "gaussian")


def test_kneedle_and_gap_choice():
    k = np.arange(1, 11)
    y = np.r_[1000.0, 600.0, 300.0, 50.0, 45.0, 40.0, 36.0, 33.0, 30.0, 28.0]
    assert S.kneedle(k, y) == 4
    assert S.kneedle(k, 100.0 / k) in (2, 3)        # a smooth hyperbola: an early knee
    assert S.kneedle(k[:2], y[:2]) is None
    assert S.kneedle(k, np.ones(10)) is None
    assert S.kneedle(k, -y, direction="increasing", curve="concave") == 4
    # the elbow recommendation uses log W_k: a short range of k does not pull the knee to 3
    import xarray as xr

    w = np.array([146505.0, 51866.0, 21938.0, 7973.0, 7344.0, 6610.0])
    assert S.kneedle(np.arange(1, 7), w) == 3           # linear scale: biased early on a short range
    ds = xr.Dataset({v: ("k", np.full(6, np.nan)) for v in ("silhouette", "calinski_harabasz", "davies_bouldin")},
                    coords={"k": np.arange(1, 7)}).assign(inertia=("k", w))
    assert S.recommend(ds)["elbow"] == 4
    assert S.gap_choice([1, 2, 3, 4], [0.1, 0.5, 0.52, 0.3], [0.05, 0.05, 0.05, 0.05]) == 2
    assert S.gap_choice([1, 2, 3], [0.1, 0.5, 0.9], [0.01, 0.01, 0.01]) is None


def test_rows_assemble_like_separate_tasks(blobs4, selection4):
    """Evaluating each k on its own (as a Prefect task would) and assembling gives the same table."""
    X, _ = blobs4
    bounds = S.reference_bounds(X)
    rows = [S.evaluate_k(X, k, gap_B=6, n_init=2, random_state=0, bounds=bounds) for k in (5, 3, 4)]
    json.dumps(rows)  # rows are small plain values
    ds, rec = S.assemble(rows)
    assert list(ds["k"].values) == [3, 4, 5]
    for var in ("inertia", "silhouette", "calinski_harabasz", "davies_bouldin", "gap", "gap_s"):
        np.testing.assert_allclose(ds[var].values, selection4.table[var].sel(k=[3, 4, 5]).values, rtol=1e-12)
    assert rec["silhouette"] == 4 and rec["gap"] == 4
    with pytest.raises(ValueError, match="duplicate"):
        S.assemble(rows + rows[:1])


def test_plot(selection4, tmp_path):
    p = tmp_path / "k.png"
    fig = selection4.plot(p)
    assert p.stat().st_size > 1000
    assert len(fig.axes) == 5
    assert "recommended k = 4" in fig.axes[4].get_title()


def test_chunked_path_on_cluster(dask_client):
    """Chunked data: kmeans_dist.KMeans on the 2-process cluster, references drawn on the workers."""
    X, _ = D.blobs(1200, centers=CENTERS, random_state=1, chunk_rows=400)
    from kmeans_dist import metrics as M

    row = S.evaluate_k(X, 4, gap_B=2, n_init=1, random_state=0, client=dask_client, silhouette="sample",
                       silhouette_exact_max=300)
    assert row["k"] == 4 and len(row["ref_log_w"]) == 2
    assert row["silhouette_method"] == "sample" and row["silhouette_se"] > 0
    assert row["silhouette"] > 0.8 and row["davies_bouldin"] < 0.3
    assert all(math.isfinite(v) for v in row["ref_log_w"]) and row["ref_log_w"][0] > row["log_w"]
    Xn = X.compute()
    assert row["inertia"] <= ((Xn - Xn.mean(axis=0)) ** 2).sum() / 10
    assert row["inertia"] >= M.inertia(X, centers=np.asarray(CENTERS)) * 0.9


def test_bad_inputs(blobs4):
    X, _ = blobs4
    with pytest.raises(ValueError, match="k must be"):
        S.evaluate_k(X, 0, gap_B=0)
    with pytest.raises(ValueError, match="n_samples=300 should be >= n_clusters=301"):
        S.evaluate_k(X, 301, gap_B=0)
    with pytest.raises(ValueError, match="silhouette must be"):
        S.evaluate_k(X, 2, gap_B=0, silhouette="approximate")
    with pytest.raises(ValueError, match="empty"):
        S.choose_k(X, [])
