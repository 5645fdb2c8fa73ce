"""The family by name: every ``--algorithm`` of the CLI fits, saves and loads the estimator it names, with the
same result as the estimator fitted directly; a model with a callable init is refused at save, clearly."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from kmeans_dist import KMeans, load_model
from kmeans_dist.cli import main
from kmeans_dist.data import write_store
from kmeans_dist.estimators import ALGORITHMS, make_estimator


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    X = make_blobs(900, 4, centers=3, cluster_std=0.6, random_state=0)[0].astype(np.float32)
    return write_store(tmp_path_factory.mktemp("family") / "s.zarr", X, chunk_rows=300), X


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_cli_fits_every_member_of_the_family(store, tmp_path, capsys, algorithm):
    url, X = store
    out = tmp_path / "model"
    assert main(["fit", url, "--k", "3", "--algorithm", algorithm, "--seed", "0", "--engine", "local",
                 "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model = load_model(out)
    cls, fixed = ALGORITHMS[algorithm]
    assert type(model) is cls and all(getattr(model, k) == v for k, v in fixed.items())
    # the CLI's defaults, passed to the estimator directly
    direct = make_estimator(algorithm, 3, init="k-means||", random_state=0, client=False, max_iter=300, tol=1e-4,
                            batch_size=1024, polish_iter=0, n_init="auto").fit(url)
    np.testing.assert_array_equal(model.cluster_centers_, direct.cluster_centers_)
    assert summary["inertia"] == pytest.approx(direct.inertia_)
    np.testing.assert_array_equal(model.predict(X), direct.predict(X))


def test_make_estimator_refuses_an_unknown_name():
    with pytest.raises(ValueError, match="algorithm must be one of"):
        make_estimator("kmeans-magic", 3)


def test_a_callable_init_is_refused_at_save(tmp_path):
    X = make_blobs(200, 2, centers=3, random_state=0)[0]
    km = KMeans(3, init=lambda X, k, random_state: X[:k].copy(), n_init=1, client=False).fit(X)
    with pytest.raises(ValueError, match="callable init"):
        km.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()
