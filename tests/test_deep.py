"""Deep k-means in plain PyTorch (no Ray): losses against NumPy, the k-means re-initialisation, and every
method of the paper for 2 + 2 epochs on 2,000 MNIST images."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kmeans_dist.deep import (Autoencoder, BatchLoader, embed, fit_method, make_method,  # noqa: E402
                              pretrain, reinit_centroids)
from kmeans_dist.deep import losses as L  # noqa: E402
from kmeans_dist.deep import METHODS, to_kernel_array  # noqa: E402
from kmeans_dist import KMeans  # noqa: E402
from kmeans_dist.deep import latent_block_rows  # noqa: E402

N_IMAGES = 2000


def _np_sqdist(z, mu):
    return ((z[:, None, :] - mu[None, :, :]) ** 2).sum(-1)


def _np_softmax(a):
    a = a - a.max(axis=1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(64, 10))
    mu = rng.normal(size=(7, 10))
    return z, mu


def test_ct_loss_matches_numpy(data):
    z, mu = data
    for alpha in (3.0, 0.2):
        d = _np_sqdist(z, mu)
        G = _np_softmax(-alpha * d)
        expected = (d * G).sum(1).mean()
        got = L.ct_loss(torch.tensor(z), torch.tensor(mu), lambda d: L.softmax_membership(d, alpha))
        assert float(got) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    # the default membership is the paper's softmax with alpha = 3
    d = _np_sqdist(z, mu)
    assert float(L.ct_loss(torch.tensor(z), torch.tensor(mu))) == pytest.approx(
        (d * _np_softmax(-3.0 * d)).sum(1).mean(), rel=1e-12)


def test_dkm_dcn_losses_match_numpy(data):
    z, mu = data
    d = _np_sqdist(z, mu)
    assert float(L.dkm_loss(torch.tensor(z), torch.tensor(mu), 5.0)) == pytest.approx(
        (d * _np_softmax(-5.0 * d)).sum(1).mean(), rel=1e-12)
    s = d.argmin(1)
    assert float(L.dcn_loss(torch.tensor(z), torch.tensor(mu), torch.tensor(s))) == pytest.approx(
        d[np.arange(len(s)), s].mean(), rel=1e-12)
    x = np.random.default_rng(1).random((5, 8))
    xh = np.random.default_rng(2).random((5, 8))
    assert float(L.reconstruction_loss(torch.tensor(xh), torch.tensor(x))) == pytest.approx(
        ((xh - x) ** 2).sum(1).mean(), rel=1e-12)


def test_autoencoder_shapes():
    m = Autoencoder(784, 10)
    sizes = [mod.out_features for mod in m.encoder if isinstance(mod, torch.nn.Linear)]
    assert sizes == [500, 500, 2000, 10]
    sizes = [mod.out_features for mod in m.decoder if isinstance(mod, torch.nn.Linear)]
    assert sizes == [2000, 500, 500, 784]
    assert not isinstance(m.encoder[-1], torch.nn.ReLU) and not isinstance(m.decoder[-1], torch.nn.ReLU)
    z, xh = m(torch.rand(3, 784))
    assert z.shape == (3, 10) and xh.shape == (3, 784)


def test_autoencoder_init():
    """'torch' keeps nn.Linear's default (bound 1/sqrt(fan_in), nonzero biases); 'glorot' is Xavier uniform,
    bound sqrt(6 / (fan_in + fan_out)), with zero biases; the same seed gives the same weights."""
    torch.manual_seed(0)
    t = Autoencoder(784, 10)
    torch.manual_seed(0)
    g = Autoencoder(784, 10, init="glorot")
    torch.manual_seed(0)
    g2 = Autoencoder(784, 10, init="glorot")
    for a, b in zip(g.state_dict().values(), g2.state_dict().values()):
        assert torch.equal(a, b)
    lt = [m for m in t.modules() if isinstance(m, torch.nn.Linear)]
    lg = [m for m in g.modules() if isinstance(m, torch.nn.Linear)]
    for a, b in zip(lt, lg):
        fan_out, fan_in = b.weight.shape
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert b.weight.abs().max() <= bound and b.weight.abs().max() > 0.9 * bound
        assert b.weight.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.05)
        assert not b.bias.any()
        assert a.weight.abs().max() <= fan_in ** -0.5 and a.bias.any()
    assert g.config()["init"] == "glorot" and t.config()["init"] == "torch"
    with pytest.raises(ValueError, match="The 'init' parameter of Autoencoder must be"):
        Autoencoder(784, 10, init="he")


def test_batch_loader_covers_all_rows_once():
    X = torch.arange(1000, dtype=torch.float32)[:, None]
    ld = BatchLoader(X, 256, seed=3)
    ld.set_epoch(2)
    rows = torch.cat(list(ld))[:, 0]
    assert sorted(rows.tolist()) == list(range(1000))
    ld.set_epoch(3)
    assert not torch.equal(torch.cat(list(ld))[:, 0], rows)


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    from kmeans_dist.data import load_mnist

    X, y = load_mnist(mnist_dir, limit=N_IMAGES, scale=1 / 255)
    assert 0.0 <= X.min() and X.max() <= 1.0
    return torch.from_numpy(X), y


@pytest.fixture(scope="module")
def pretrained(mnist):
    X, _ = mnist
    torch.manual_seed(0)
    model = Autoencoder(784, 10)
    hist = pretrain(model, X, epochs=2, batch_size=256, seed=0)
    assert len(hist) == 2 and hist[1]["rec_loss"] < hist[0]["rec_loss"]
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def embedded(mnist, pretrained):
    """The 2,000 images' embeddings by the pretrained autoencoder (tests read them, never write)."""
    X, _ = mnist
    model = Autoencoder(784, 10)
    model.load_state_dict(pretrained)
    return embed(model, X)


def test_dlpack_handover_shares_memory(embedded):
    Z = embedded
    A = to_kernel_array(Z)
    assert isinstance(A, np.ndarray)
    assert A.__array_interface__["data"][0] == Z.data_ptr()  # no host copy


def test_reinit_gives_exactly_the_kmeans_centers(embedded):
    Z = embedded
    ct = make_method("CT", 10, seed=4, n_init=3)
    ct.initialize(Z)
    labels = ct.end_epoch(Z, 5)
    # the project's KMeans on the same canonical blocks (the per-epoch k-means runs the chunked engine)
    ref = KMeans(10, init="k-means++", n_init=3, random_state=4 * 10_007 + 5 + 1,
                 block_rows=latent_block_rows(Z.shape[0])).fit(Z.numpy().copy())
    assert np.array_equal(ct.centroids.numpy(), ref.cluster_centers_)
    assert np.array_equal(labels.numpy(), ref.labels_)
    assert ct.kmeans_inertia == ref.inertia_
    # and they are the k-means fixed point of the embeddings: each center is the mean of its points
    Zn = Z.numpy().astype(np.float64)
    lab = _np_sqdist(Zn, ct.centroids.numpy().astype(np.float64)).argmin(1)
    for j in range(10):
        np.testing.assert_allclose(ct.centroids.numpy()[j], Zn[lab == j].mean(0), rtol=1e-4, atol=1e-4)
    c2, l2, inertia = reinit_centroids(Z, 10, n_init=3, random_state=4 * 10_007 + 6)
    assert c2.dtype == Z.dtype and l2.dtype == torch.int64 and inertia > 0


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_runs(name, mnist, pretrained):
    X, y = mnist
    torch.manual_seed(1)
    model = Autoencoder(784, 10)
    model.load_state_dict(pretrained)
    method = make_method(name, 10, seed=0, n_init=3)
    res = fit_method(model, X, method, y=y, epochs=2, seed=0, snapshot_epochs=(1, 2), snapshot_size=300)
    hist = res["history"]
    expected = [("init", 0), ("finetune", 1), ("finetune", 2)] if method.finetunes else [("init", 0)]
    assert [(h["phase"], h["epoch"]) for h in hist] == expected
    for h in hist:
        assert 0.0 <= h["acc"] <= 1.0 and -1.0 <= h["ari"] <= 1.0 and 0.0 <= h["nmi"] <= 1.0
        if h["epoch"]:
            assert np.isfinite(h["rec_loss"]) and np.isfinite(h["clu_loss"]) and h["clu_loss"] >= 0
    assert hist[-1]["acc"] > 0.15  # above chance (about 0.11 for 10 matched clusters) after 2 + 2 epochs
    # the inertia of the epoch's k-means on the embeddings: the initial one, then each re-initialisation's
    reinit = name in ("CT", "DKM+reinit")
    assert hist[0]["kmeans_inertia"] > 0
    assert all(("kmeans_inertia" in h) == reinit for h in hist[1:])
    if reinit:  # the re-initialisation is classical k-means on the embeddings: the labels are its partition
        assert hist[-1]["kmeans_inertia"] == pytest.approx(method.kmeans_inertia, rel=1e-12)
    assert res["labels"].shape == (N_IMAGES,)
    assert res["max_membership_before"].shape == res["max_membership_after"].shape == (N_IMAGES,)
    assert set(res["snapshots"]) == ({0, 1, 2} if method.finetunes else {0})
    if name == "CT-noreinit":  # frozen centroids, never re-initialised
        c0 = make_method("CT", 10, seed=0, n_init=3)
        m0 = Autoencoder(784, 10)
        m0.load_state_dict(pretrained)
        c0.initialize(embed(m0, X))
        assert np.array_equal(res["centroids"], c0.centroids.numpy())
    if name == "DCN":
        assert float(method.counts.sum()) == pytest.approx(N_IMAGES * 3)  # initial counts + 2 epochs
    if name.startswith("DKM"):
        assert isinstance(method.centroids, torch.nn.Parameter)


def test_state_dict_roundtrip(embedded):
    Z = embedded
    for name in ("DCN", "DKM", "CT"):
        m = make_method(name, 10, seed=0, n_init=2)
        m.initialize(Z)
        m2 = make_method(name, 10, seed=0, n_init=2)
        m2.load_state_dict(m.state_dict())
        assert torch.equal(m2.centroids.detach(), m.centroids.detach())


def test_deep_package_never_imports_ray_or_prefect():
    import subprocess
    import sys

    code = ("import sys, kmeans_dist.deep, kmeans_dist.deep.plots; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'prefect')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["CT", "DKM", "DCN"])
def test_fit_method_resume_matches_uninterrupted(name, mnist, pretrained):
    """A run killed after finetuning epoch 1 (the exception raised by the epoch callback) and resumed from
    its last checkpoint ends exactly as an uninterrupted one."""
    X, y = mnist
    Xs, ys = X[:400], y[:400]

    def run(resume=None, on_epoch=None):
        model = Autoencoder(784, 10)
        model.load_state_dict(pretrained)
        method = make_method(name, 10, seed=0, n_init=1)
        saved = []
        res = fit_method(model, Xs, method, y=ys, epochs=2, seed=0, snapshot_size=50, checkpoint=saved.append,
                         resume=resume, callback=on_epoch)
        return res, saved

    def fail_at_epoch_2(rec):
        if (rec["phase"], rec["epoch"]) == ("finetune", 2):
            raise RuntimeError("injected failure")

    full, saved_full = run()
    assert [(st["phase"], st["epoch"]) for st in saved_full] == [("init", 0), ("finetune", 1), ("finetune", 2)]
    saved = []
    with pytest.raises(RuntimeError, match="injected"):
        model = Autoencoder(784, 10)
        model.load_state_dict(pretrained)
        fit_method(model, Xs, make_method(name, 10, seed=0, n_init=1), y=ys, epochs=2, seed=0, snapshot_size=50,
                   checkpoint=saved.append, callback=fail_at_epoch_2)
    assert (saved[-1]["phase"], saved[-1]["epoch"]) == ("finetune", 1)
    for st in (saved[0], saved[-1]):  # from the initial k-means's checkpoint, or from epoch 1's
        resumed, _ = run(resume=st)
        assert [(h["phase"], h["epoch"]) for h in resumed["history"]] == [("init", 0), ("finetune", 1),
                                                                          ("finetune", 2)]
        np.testing.assert_array_equal(resumed["labels"], full["labels"])
        np.testing.assert_allclose(resumed["centroids"], full["centroids"], rtol=1e-6, atol=1e-6)
        assert resumed["history"][-1]["rec_loss"] == pytest.approx(full["history"][-1]["rec_loss"], rel=1e-6)


def test_pretrain_resume_matches_uninterrupted_and_checkpoints_in_the_one_format():
    from kmeans_dist.deep import restore_training_state, training_state

    X = torch.rand(600, 20)

    def fresh():
        torch.manual_seed(0)
        return Autoencoder(20, 3, hidden=(16,))

    a = fresh()
    saved = []
    ha = pretrain(a, X, epochs=3, batch_size=128, seed=5, checkpoint=saved.append)
    assert [(h["phase"], h["epoch"]) for h in ha] == [("pretrain", 1), ("pretrain", 2), ("pretrain", 3)]
    assert [(st["format"], st["phase"], st["epoch"], st["method"]) for st in saved] == [
        (1, "pretrain", e, None) for e in (1, 2, 3)]
    b = fresh()
    hb = pretrain(b, X, epochs=3, batch_size=128, seed=5, resume=saved[0])
    assert [h["epoch"] for h in hb] == [1, 2, 3]
    for wa, wb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(wa, wb)
    # the one format: round trip through restore_training_state, and a foreign dict is refused
    m = make_method("CT", 3, n_init=1)
    m.initialize(torch.rand(50, 3))
    st = training_state(a, None, m, phase="init", epoch=0, history=[])
    c = fresh()
    restore_training_state(st, c, m2 := make_method("CT", 3))
    assert torch.equal(m2.centroids, m.centroids) and torch.equal(c.encoder[0].weight, a.encoder[0].weight)
    with pytest.raises(ValueError, match="format"):
        restore_training_state({"model": {}}, c)
    with pytest.raises(ValueError, match="phase"):
        training_state(a, None, None, phase="warmup", epoch=0, history=[])
    with pytest.raises(ValueError, match="pretraining"):
        pretrain(c, X, epochs=1, resume=st)
    with pytest.raises(ValueError, match="'init' or 'finetune'"):
        fit_method(c, X, make_method("CT", 3), epochs=1, resume=saved[0])


def test_only_the_papers_methods_are_registered():
    assert sorted(METHODS) == ["AEKM", "CT", "CT-noreinit", "DCN", "DKM", "DKM+reinit"]
    assert make_method("CT").describe() == {"name": "CT", "lam": 10.0, "n_init": 10, "alpha": 3.0, "reinit": True}
    assert make_method("DKM").describe() == {"name": "DKM", "lam": 1.0, "n_init": 10, "alpha": 1000.0,
                                             "reinit": False}
    assert make_method("DKM+reinit").name == "DKM+reinit" and make_method("CT-noreinit").name == "CT-noreinit"
    for gone in ("CT-bal", "CT-graph-split", "CT-fcm", "DKM-anneal", "CT-reinit1"):
        with pytest.raises(ValueError, match="unknown method"):
            make_method(gone)


def test_batch_loader_shards_pad_to_equal_steps_and_cover_every_row():
    X = torch.arange(2000, dtype=torch.float32)[:, None]
    shards = [BatchLoader(X, 256, seed=0, rank=r, world_size=2) for r in range(2)]
    batches = [list(s) for s in shards]
    assert len(batches[0]) == len(batches[1]) == len(shards[0]) == 4  # 8 batches of 256 (the last one short)
    rows = torch.cat([torch.cat(b) for b in batches])[:, 0]
    assert sorted(set(rows.tolist())) == list(range(2000))
    one = BatchLoader(X, 256, seed=0)  # one process: the same permutation, every batch once
    assert torch.equal(torch.cat(list(one)), torch.cat([batches[j % 2][j // 2] for j in range(8)]))
