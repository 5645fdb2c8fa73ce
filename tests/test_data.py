"""Data layer: stores, ingest from every source, standardization, CLI."""
from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import dask.array as da

from kmeans_dist import data
from kmeans_dist.chunked.preprocessing import moments, standardize, standardize_store

REPO = Path(__file__).resolve().parent.parent


def test_write_open_roundtrip_with_dims_and_attrs(tmp_path):
    import xarray as xr

    X = np.random.default_rng(0).standard_normal((1000, 3)).astype(np.float32)
    y = np.arange(1000) % 4
    url = data.write_store(tmp_path / "s.zarr", X, labels=y, chunk_rows=300, feature_names=["a", "b", "c"],
                           attrs={"source": "test"})
    d = data.open_dataarray(url)
    assert d.dims == ("sample", "feature") and list(d.coords["feature"].values) == ["a", "b", "c"]
    assert d.attrs["source"] == "test"
    np.testing.assert_array_equal(d.values, X)
    np.testing.assert_array_equal(data.open_labels(url).compute(), y)
    assert data.open_store(url).chunks[0][0] == 300
    ds = xr.open_zarr(url, consolidated=False)
    assert ds["X"].dims == ("sample", "feature")
    with pytest.raises(FileExistsError):
        data.write_store(url, X)


def test_ingest_npy_csv_parquet(tmp_path):
    import pandas as pd

    X = np.random.default_rng(1).standard_normal((500, 4))
    np.save(tmp_path / "x.npy", X)
    u1 = data.ingest(tmp_path / "x.npy", tmp_path / "a.zarr", chunk_rows=128)
    np.testing.assert_allclose(data.open_store(u1).compute(), X)
    df = pd.DataFrame(X, columns=list("abcd"))
    df["y"] = np.arange(500) % 3
    df.to_csv(tmp_path / "x.csv", index=False)
    u2 = data.ingest(tmp_path / "x.csv", tmp_path / "b.zarr", label_column="y")
    np.testing.assert_allclose(data.open_store(u2).compute(), X)
    np.testing.assert_array_equal(data.open_labels(u2).compute(), df["y"].values)
    df.to_parquet(tmp_path / "x.parquet")
    u3 = data.ingest(tmp_path / "x.parquet", tmp_path / "c.zarr", label_column="y")
    np.testing.assert_allclose(data.open_store(u3).compute(), X)
    assert data.store_info(u3)["attrs"]["feature_names"] == list("abcd")


def _write_idx(path, arr, gz):
    arr = np.asarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    op = gzip.open if gz else open
    with op(path, "wb") as f:
        f.write(head + arr.tobytes())


@pytest.mark.parametrize("gz", [True, False])
def test_ingest_mnist_idx_streams(tmp_path, gz):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (250, 28, 28), dtype=np.uint8)
    labs = rng.integers(0, 10, 250, dtype=np.uint8)
    sfx = ".gz" if gz else ""
    _write_idx(tmp_path / f"train-images.idx3-ubyte{sfx}", imgs[:200], gz)
    _write_idx(tmp_path / f"train-labels.idx1-ubyte{sfx}", labs[:200], gz)
    _write_idx(tmp_path / f"t10k-images.idx3-ubyte{sfx}", imgs[200:], gz)
    _write_idx(tmp_path / f"t10k-labels.idx1-ubyte{sfx}", labs[200:], gz)
    url = data.ingest_mnist(tmp_path, tmp_path / "m.zarr", chunk_rows=64)
    X = data.open_store(url).compute()
    np.testing.assert_array_equal(X, imgs.reshape(250, -1).astype(np.float32))
    np.testing.assert_array_equal(data.open_labels(url).compute(), labs)
    assert data.open_store(url).chunks[0][0] == 64
    # a limit that ends inside a chunk keeps the partial tail (within the first file and across into the second)
    for limit in (150, 230):
        url = data.ingest_mnist(tmp_path, tmp_path / f"m{limit}.zarr", chunk_rows=64, limit=limit)
        np.testing.assert_array_equal(data.open_store(url).compute(), imgs.reshape(250, -1)[:limit])
        np.testing.assert_array_equal(data.open_labels(url).compute(), labs[:limit])


def test_real_mnist_subset(mnist_dir, tmp_path):
    url = data.ingest_mnist(mnist_dir, tmp_path / "m.zarr", limit=2500, scale=1 / 255)
    X = data.open_store(url)
    assert X.shape == (2500, 784) and X.dtype == np.float32
    assert float(X.max().compute()) <= 1.0
    y = data.open_labels(url).compute()
    assert set(np.unique(y)) == set(range(10))


def test_idx_bad_magic(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(data.DataError, match="not an IDX file"):
        data.read_idx(tmp_path / "bad")


def test_moments_and_standardize(dask_client, tmp_path):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((3000, 4)) * [1, 10, 100, 0] + [5, -3, 1e4, 7]
    m = moments(da.from_array(X, chunks=700), client=dask_client, block_rows=500)
    np.testing.assert_allclose(m["mean"], X.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m["var"], X.var(0), rtol=1e-10, atol=1e-12)
    with pytest.warns(UserWarning, match="zero variance"):
        Z = standardize(X).compute()
    np.testing.assert_allclose(Z[:, :3].mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(Z[:, :3].std(0), 1, rtol=1e-9)
    np.testing.assert_allclose(Z[:, 3], 0)
    src = data.write_store(tmp_path / "src.zarr", X[:, :3], chunk_rows=500)
    before = sorted(p.stat().st_mtime_ns for p in (tmp_path / "src.zarr").rglob("*") if p.is_file())
    standardize_store(src, tmp_path / "dst.zarr")
    after = sorted(p.stat().st_mtime_ns for p in (tmp_path / "src.zarr").rglob("*") if p.is_file())
    assert before == after
    Zs = data.open_store(tmp_path / "dst.zarr").compute()
    np.testing.assert_allclose(Zs.std(0), 1, rtol=1e-9)


def test_cli_ingest_fit_predict_info(tmp_path):
    X = np.vstack([np.random.default_rng(0).normal(c, 0.3, (200, 2)) for c in (0, 5, 10)])
    np.save(tmp_path / "x.npy", X)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    exe = [sys.executable, "-m", "kmeans_dist.cli"]

    def run(*a):
        r = subprocess.run(exe + list(a), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert "wrote" in run("ingest", "x.npy", "x.zarr")
    out = run("fit", "x.zarr", "--k", "3", "--out", "model", "--workers", "0")
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["k"] == 3 and summary["n_iter"] >= 1
    ham = json.loads(run("fit", "x.zarr", "--k", "3", "--algorithm", "hamerly", "--workers", "0").strip().splitlines()[-1])
    assert ham["n_iter"] == summary["n_iter"] and ham["inertia"] == summary["inertia"]
    run("predict", "model", "x.zarr", "--out", "labels.zarr", "--workers", "0")
    labels = data.open_store(tmp_path / "labels.zarr").compute()[:, 0]
    assert len(np.unique(labels)) == 3
    info = json.loads(run("info", "x.zarr"))
    assert info["shape"] == [600, 2]
    r = subprocess.run(exe + ["fit", "nope.zarr", "--k", "3", "--workers", "0"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "does not exist" in r.stderr
