"""Fuzzing the files users hand over: every mutation of a store or a model file gives the clean result or a
clear project error, never a wrong result with success, never a raw traceback."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kmeans_dist import KMeans, data, load_model
from kmeans_dist.data import DataError
from kmeans_dist.estimators import ModelFileError
from kmeans_dist.kernels import NonFiniteError

PROJECT_ERRORS = (DataError, NonFiniteError, ModelFileError)
X = np.vstack([np.random.default_rng(0).normal(c, 0.3, (100, 3)) for c in (0, 5, 10)])


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    url = data.write_store(base / "s.zarr", X, chunk_rows=50)
    ref = _fit(url)
    model = Path(ref.save(base / "m"))
    return base, ref


def _files(root: Path):
    return sorted(p for p in root.rglob("*") if p.is_file())


def _fit(url):
    return KMeans(3, init="k-means++", random_state=0, n_init=1, max_iter=20).fit(url)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(action=st.sampled_from(["delete", "flip", "truncate", "json"]), which=st.integers(0, 10_000),
       pos=st.integers(0, 10_000), byte=st.integers(1, 255))
def test_mutated_store(clean, tmp_path_factory, action, which, pos, byte):
    base, ref = clean
    work = tmp_path_factory.mktemp("s") / "s.zarr"
    shutil.copytree(base / "s.zarr", work)
    files = _files(work)
    if action == "json":
        files = [f for f in files if f.name == "zarr.json"]
    else:
        files = [f for f in files if f.name != "zarr.json"]
    f = files[which % len(files)]
    b = bytearray(f.read_bytes())
    if action == "delete":
        f.unlink()
    elif action == "truncate":
        f.write_bytes(bytes(b[: pos % max(1, len(b))]))
    else:
        b[pos % len(b)] ^= byte
        f.write_bytes(bytes(b))
    try:
        km = _fit(str(work))
    except PROJECT_ERRORS:
        return
    # it fitted: then it must be the clean result (e.g. a flipped byte in an unused JSON field)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(["model.json", "arrays.npz"]), action=st.sampled_from(["truncate", "flip"]),
       pos=st.integers(0, 100_000), byte=st.integers(1, 255))
def test_mutated_model(clean, tmp_path_factory, target, action, pos, byte):
    base, ref = clean
    work = tmp_path_factory.mktemp("m") / "m"
    shutil.copytree(base / "m", work)
    f = work / target
    b = bytearray(f.read_bytes())
    if action == "truncate":
        f.write_bytes(bytes(b[: pos % len(b)]))
    else:
        b[pos % len(b)] ^= byte
        f.write_bytes(bytes(b))
    try:
        m = load_model(work)
    except PROJECT_ERRORS:
        return
    np.testing.assert_array_equal(m.cluster_centers_, ref.cluster_centers_)
    assert m.get_params()["n_clusters"] == 3


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edit=st.sampled_from(["n_clusters", "class", "format", "arrays", "drop_attrs", "params_list"]),
       value=st.one_of(st.integers(-3, 9), st.text(max_size=5), st.none()))
def test_edited_model_json(clean, tmp_path_factory, edit, value):
    base, ref = clean
    work = tmp_path_factory.mktemp("j") / "m"
    shutil.copytree(base / "m", work)
    meta = json.loads((work / "model.json").read_text())
    if edit == "n_clusters":
        meta["params"]["n_clusters"] = value
    elif edit == "class":
        meta["class"] = value
    elif edit == "format":
        meta["format"] = value
    elif edit == "arrays":
        meta["arrays"]["cluster_centers_"]["shape"] = [value, 3]
    elif edit == "drop_attrs":
        meta.pop("attrs")
    else:
        meta["params"] = [value]
    (work / "model.json").write_text(json.dumps(meta))
    try:
        m = load_model(work)
    except PROJECT_ERRORS:
        return
    np.testing.assert_array_equal(m.cluster_centers_, ref.cluster_centers_)
