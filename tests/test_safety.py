"""Nothing lost, nothing silently wrong: each case reproduces a way data could be destroyed or a wrong result
returned with success, and checks that it now gives a clear project error instead."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from kmeans_dist import KMeans, MiniBatchKMeans, data, load_model
from kmeans_dist.data import DataError, OutputError
from kmeans_dist.data.store import write_stream
from kmeans_dist.estimators import ModelFileError
from kmeans_dist.kernels import NonFiniteError

REPO = Path(__file__).resolve().parent.parent


def _X(n=600, seed=0):
    rng = np.random.default_rng(seed)
    return np.vstack([rng.normal(c, 0.3, (n // 3, 2)) for c in (0, 5, 10)])


def _cli(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "kmeans_dist.cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------------------------ outputs and inputs

def test_cli_never_overwrites_its_input_or_an_existing_output(tmp_path):
    data.write_store(tmp_path / "v.zarr", _X(), chunk_rows=100)
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "v.zarr").rglob("*"))
    r = _cli(tmp_path, "fit", "v.zarr", "--k", "3", "--out", "v.zarr", "--workers", "0", "--overwrite")
    assert r.returncode == 2 and "is the input" in r.stderr
    r = _cli(tmp_path, "fit", "v.zarr", "--k", "3", "--out", "v.zarr/model", "--workers", "0")
    assert r.returncode == 2 and "lies inside the input" in r.stderr
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "v.zarr").rglob("*")) == before
    assert _cli(tmp_path, "fit", "v.zarr", "--k", "3", "--out", "m", "--workers", "0").returncode == 0
    r = _cli(tmp_path, "fit", "v.zarr", "--k", "3", "--out", "m", "--workers", "0")
    assert r.returncode == 2 and "already exists" in r.stderr and "--overwrite" in r.stderr
    assert _cli(tmp_path, "fit", "v.zarr", "--k", "3", "--out", "m", "--workers", "0", "--overwrite").returncode == 0
    r = _cli(tmp_path, "predict", "m", "v.zarr", "--out", "v.zarr", "--overwrite", "--workers", "0")
    assert r.returncode == 2 and "is the input" in r.stderr
    assert data.open_store(tmp_path / "v.zarr").shape == (600, 2)
    (tmp_path / "afile").write_text("not a folder")  # a blocked output path, whoever runs the test
    r = _cli(tmp_path, "fit", "v.zarr", "--k", "3", "--out", "afile/m", "--workers", "0")
    assert r.returncode == 2 and "cannot be written" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o500)
    try:
        if not os.access(tmp_path / "ro", os.W_OK):  # (root may write anywhere)
            r = _cli(tmp_path, "fit", "v.zarr", "--k", "3", "--out", "ro/m", "--workers", "0")
            assert r.returncode == 2 and "cannot be written" in r.stderr and "Traceback" not in r.stderr
    finally:
        os.chmod(tmp_path / "ro", 0o700)


def test_standardize_store_refuses_its_source(tmp_path):
    from kmeans_dist.chunked import standardize_store

    url = data.write_store(tmp_path / "s.zarr", _X(), chunk_rows=100)
    with pytest.raises(OutputError, match="is the input"):
        standardize_store(url, url, overwrite=True)


def test_save_refuses_an_existing_model_unless_asked(tmp_path):
    km = KMeans(3, random_state=0).fit(_X())
    km.save(tmp_path / "m")
    with pytest.raises(FileExistsError, match="already exists"):
        km.save(tmp_path / "m")
    km.save(tmp_path / "m", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no .old-* or .tmp-* left behind


def test_concurrent_saves_give_one_model_and_clear_errors(tmp_path):
    """Many writers at once on one target: every call either saves a complete model or says another process
    is writing; what is left loads and is one of the models, never a mix."""
    models = [KMeans(3, random_state=s, n_init=1).fit(_X(seed=s)) for s in range(4)]
    errors, done = [], []

    def save(m):
        try:
            m.save(tmp_path / "m", overwrite=True)
            done.append(m)
        except OutputError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=save, args=(models[i % 4],)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert done and len(done) + len(errors) == 40
    assert all("being written by another process" in e for e in errors)
    loaded = load_model(tmp_path / "m")
    assert any(np.array_equal(loaded.cluster_centers_, m.cluster_centers_) for m in done)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_a_crashed_write_leaves_nothing_that_opens_and_is_cleaned(tmp_path, monkeypatch):
    X = _X()

    def blocks():
        yield X[:100], None
        raise KeyboardInterrupt  # a kill mid-ingest

    with pytest.raises(KeyboardInterrupt):
        write_stream(tmp_path / "s.zarr", blocks(), 600, 2, np.float64, 100, False)
    assert not (tmp_path / "s.zarr").exists()
    for left in tmp_path.glob(".s.zarr.tmp-*"):  # whatever a hard kill leaves is not a store
        with pytest.raises(DataError):
            data.open_store(left)
    # simulate the folder a SIGKILL leaves, then write again: it is cleaned
    stale = tmp_path / ".s.zarr.tmp-dead0000" / "content"
    stale.mkdir(parents=True)
    data.write_store(tmp_path / "s.zarr", X, chunk_rows=100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


# ------------------------------------------------------------------------------------ integrity of stores

def test_missing_chunk_is_an_error_never_zeros(tmp_path):
    url = data.write_store(tmp_path / "s.zarr", _X(), chunk_rows=100)
    os.remove(tmp_path / "s.zarr" / "X" / "c" / "2" / "0")
    with pytest.raises(DataError, match="holds 5 of its 6 chunks"):
        data.open_store(url)
    # a store without a manifest still refuses the missing chunk when it is read
    import zarr

    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r+")
    attrs = dict(g.attrs)
    attrs.pop("chunk_counts")
    g.attrs.clear()
    g.attrs.update(attrs)
    with pytest.warns(data.IntegrityWarning):
        Xd = data.open_store(url)
    with pytest.raises(DataError, match=r"Chunk 2 \(rows 200 to 299\).*missing"):
        KMeans(3, random_state=0).fit(Xd)


def test_flipped_byte_fails_the_checksum(tmp_path):
    url = data.write_store(tmp_path / "s.zarr", _X(), chunk_rows=100)
    p = tmp_path / "s.zarr" / "X" / "c" / "1" / "0"
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))
    with pytest.raises(DataError, match=r"Cannot decode chunk 1 \(rows 100 to 199\)"):
        KMeans(3, random_state=0).fit(data.open_store(url))


@pytest.mark.parametrize("array", ["X", "labels"])
def test_swapped_chunks_are_refused(tmp_path, array):
    """Two chunk files of the same shape swapped: each still decodes (its checksum is its own), but the
    fingerprints in the manifest say they are not the rows written there."""
    url = data.write_store(tmp_path / "s.zarr", _X(), labels=np.arange(600), chunk_rows=100)
    base = tmp_path / "s.zarr" / array / "c"
    a, b = (base / "1" / "0", base / "3" / "0") if array == "X" else (base / "1", base / "3")
    tmp = a.with_name("swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    with pytest.raises(DataError, match=r"Chunk [13] \(rows \d+ to \d+\).*holds the rows written as chunk [13]"):
        if array == "X":
            KMeans(3, random_state=0, client=False).fit(url)
        else:
            data.open_labels(url).compute()


# ------------------------------------------------------------------------------------ inputs at every entry

def test_predict_transform_score_refuse_nan_and_inf():
    X = _X()
    km = KMeans(3, random_state=0).fit(X)
    bad = X.copy()
    bad[7, 1] = np.nan
    for fn in (km.predict, km.transform, km.score):
        with pytest.raises(NonFiniteError, match="row 7, feature 1"):
            fn(bad)
    bad[7, 1] = np.inf
    with pytest.raises(NonFiniteError, match="infinity"):
        km.predict(bad)
    lazy = da.from_array(bad, chunks=(100, 2))
    with pytest.raises(NonFiniteError, match=r"row 7, feature 1 \(chunk, rows 0 to 99\)"):
        km.predict(lazy).compute()
    with pytest.raises(NonFiniteError, match="row 7"):
        km.transform(lazy).compute()


def test_cli_predict_refuses_nan(tmp_path):
    X = _X()
    data.write_store(tmp_path / "ok.zarr", X, chunk_rows=100)
    X[450, 0] = np.nan
    data.write_store(tmp_path / "bad.zarr", X, chunk_rows=100)
    assert _cli(tmp_path, "fit", "ok.zarr", "--k", "3", "--out", "m", "--workers", "0").returncode == 0
    r = _cli(tmp_path, "predict", "m", "bad.zarr", "--out", "labels.zarr", "--workers", "0")
    assert r.returncode == 2 and "row 450" in r.stderr and not (tmp_path / "labels.zarr").exists()


def test_partial_fit_leaves_the_estimator_unchanged_on_a_bad_batch():
    X = _X()
    bad = X[:200].copy()
    bad[3, 0] = np.nan
    m = MiniBatchKMeans(3, random_state=0, batch_size=200)
    with pytest.raises(NonFiniteError, match="row 3"):
        m.partial_fit(bad)
    assert not hasattr(m, "cluster_centers_")
    m.partial_fit(X[:200])
    C = m.cluster_centers_.copy()
    with pytest.raises(NonFiniteError):
        m.partial_fit(bad)
    np.testing.assert_array_equal(m.cluster_centers_, C)
    m.partial_fit(X[200:400])
    assert np.isfinite(m.cluster_centers_).all()
    # fit, then partial_fit: the state is complete whatever the order of the calls
    m2 = MiniBatchKMeans(3, random_state=0, batch_size=100).fit(X)
    m2.partial_fit(X[:100])
    assert np.isfinite(m2.cluster_centers_).all()


def test_partial_fit_on_a_loaded_model(tmp_path):
    X = _X()
    m = load_model(MiniBatchKMeans(3, random_state=0, batch_size=100).fit(X).save(tmp_path / "m"))
    m.partial_fit(X[:100])
    assert np.isfinite(m.cluster_centers_).all() and m.n_steps_ >= 1


@pytest.mark.parametrize("value, match", [(-1.0, "negative"), (np.nan, "NaN or infinity")])
def test_dask_weights_are_checked_in_the_pass(value, match):
    X = _X()
    w = np.ones(600)
    w[321] = value
    with pytest.raises(ValueError, match=f"sample_weight contains {match}.*row 321"):
        KMeans(3, random_state=0).fit(da.from_array(X, chunks=(100, 2)), sample_weight=da.from_array(w, chunks=100))


def test_all_zero_weights_are_an_error():
    X = _X()
    with pytest.raises(ValueError, match="sums to zero"):
        KMeans(3, random_state=0).fit(da.from_array(X, chunks=(100, 2)),
                                      sample_weight=da.zeros(600, chunks=100))


# ------------------------------------------------------------------------------------ model files

def _saved(tmp_path):
    km = KMeans(3, random_state=0).fit(_X())
    return Path(km.save(tmp_path / "m"))


def _edit_json(p, fn):
    meta = json.loads((p / "model.json").read_text())
    fn(meta)
    (p / "model.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("case, match", [
    ("n_clusters", "cluster_centers_ is"),
    ("n_features", "cluster_centers_ is"),
    ("class", "class 'Evil' is not one of"),
    ("json", "JSONDecodeError"),
    ("truncate", "arrays.npz"),
    ("nan", "NaN or infinity"),
    ("shadow", "unexpected arrays"),
    ("missing", "lists"),
    ("attr", "unknown attributes"),
    ("param", "invalid parameters"),
])
def test_load_model_validates_the_files(tmp_path, case, match):
    p = _saved(tmp_path)
    az = p / "arrays.npz"
    if case == "n_clusters":
        _edit_json(p, lambda m: m["params"].update(n_clusters=4))
    elif case == "n_features":
        _edit_json(p, lambda m: m["attrs"].update(n_features_in_=3))
    elif case == "class":
        _edit_json(p, lambda m: m.update({"class": "Evil"}))
    elif case == "json":
        (p / "model.json").write_text("{not json")
    elif case == "truncate":
        az.write_bytes(az.read_bytes()[:100])
    elif case in ("nan", "shadow", "missing"):
        with np.load(az) as z:
            arrays = {k: z[k] for k in z.files}
        if case == "nan":
            arrays["cluster_centers_"][0, 0] = np.nan
        elif case == "shadow":
            arrays["predict"] = np.zeros(3)
        else:
            arrays.pop("cluster_sizes_")
        np.savez(az, **arrays)
    elif case == "attr":
        _edit_json(p, lambda m: m["attrs"].update(predict=1))
    elif case == "param":
        _edit_json(p, lambda m: m["params"].update(max_iter=-5))
    with pytest.raises(ModelFileError, match=match) as exc:
        load_model(p)
    assert os.fspath(p) in str(exc.value)


# ------------------------------------------------------------------------------------ clear messages

def test_nan_message_names_the_stores_chunk(tmp_path):
    X = _X()
    X[437, 1] = np.nan
    url = data.write_store(tmp_path / "s.zarr", X, chunk_rows=100)
    with pytest.raises(NonFiniteError, match=r"row 437, feature 1 \(chunk 4, rows 400 to 499\)"):
        KMeans(3, random_state=0).fit(url)


@pytest.mark.parametrize("case, match", [
    ("str", "holds <U"), ("complex", "complex128"), ("empty", "is empty"), ("truncated", "Cannot read"),
    ("1d", "2-D array"),
])
def test_bad_npy_gets_a_clear_error(tmp_path, case, match):
    p = tmp_path / "x.npy"
    if case == "str":
        np.save(p, np.array([["a", "b"], ["c", "d"]]))
    elif case == "complex":
        np.save(p, np.ones((4, 2), dtype=complex))
    elif case == "empty":
        np.save(p, np.ones((0, 3)))
    elif case == "1d":
        np.save(p, np.ones(5))
    else:
        np.save(p, np.ones((1000, 4)))
        p.write_bytes(p.read_bytes()[:2000])
    with pytest.raises(DataError, match=match) as exc:
        data.ingest(p, tmp_path / "s.zarr")
    assert "x.npy" in str(exc.value)
    assert not (tmp_path / "s.zarr").exists()


def test_corrupt_zarr_json_names_the_file(tmp_path):
    url = data.write_store(tmp_path / "s.zarr", _X(), chunk_rows=100)
    (tmp_path / "s.zarr" / "zarr.json").write_text("{broken")
    with pytest.raises(DataError, match=r"zarr\.json"):
        data.open_store(url)


@pytest.mark.parametrize("body, match", [
    ("a,b\n1,2\n3,x\n5,6\n", r"row 1, column 'b' is 'x', not a number"),
    ("a,b\n1,2\n3\n5,6\n", r"row 1, column 'b' is missing \(an empty cell or a short row\)"),
])
def test_bad_csv_cells_name_the_row_and_column(tmp_path, body, match):
    p = tmp_path / "t.csv"
    p.write_text(body)
    with pytest.raises(DataError, match=match) as exc:
        data.ingest(p, tmp_path / "s.zarr")
    assert "t.csv" in str(exc.value) and not (tmp_path / "s.zarr").exists()


def test_feature_names_are_kept_and_checked():
    import pandas as pd
    import xarray as xr

    X = _X()
    df = pd.DataFrame(X, columns=["a", "b"])
    km = KMeans(3, random_state=0).fit(df)
    assert list(km.feature_names_in_) == ["a", "b"]
    assert list(km.get_feature_names_out()) == ["kmeans0", "kmeans1", "kmeans2"]
    np.testing.assert_array_equal(km.predict(df), km.predict(X))
    with pytest.raises(ValueError, match="feature names should match"):
        km.predict(df[["b", "a"]])
    da_ = xr.DataArray(X, dims=("sample", "feature"), coords={"feature": ["a", "b"]})
    km2 = KMeans(3, random_state=0).fit(da_)
    assert list(km2.feature_names_in_) == ["a", "b"]
    with pytest.raises(ValueError, match="feature names should match"):
        km2.predict(da_.assign_coords(feature=["x", "y"]))
    assert not hasattr(KMeans(3, random_state=0).fit(X), "feature_names_in_")


def test_a_store_of_strings_is_named(tmp_path):
    import zarr

    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3)
    z = g.create_array("X", shape=(4, 2), chunks=(2, 2), dtype=np.dtypes.StringDType())
    z[:] = np.array([["a", "b"], ["c", "d"]] * 2, dtype=np.dtypes.StringDType())
    with pytest.raises(DataError, match=r"s\.zarr.*holds StringDType\(\) values; k-means needs numbers"):
        KMeans(2).fit(str(tmp_path / "s.zarr"))
