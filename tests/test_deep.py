"""Deep k-means in plain PyTorch (no Ray): losses against NumPy, the k-means re-initialisation, and every
method for 2 + 2 epochs on 2,000 MNIST images."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kmeans_dist.deep import (Autoencoder, BatchLoader, embed, fit_method, make_method,  # noqa: E402
                              pretrain, reinit_centroids)
from kmeans_dist.deep import losses as L  # noqa: E402
from kmeans_dist.deep.train import METHODS, to_kernel_array  # noqa: E402
from kmeans_dist.kernels import kmeans_inmemory  # noqa: E402

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
        got = L.ct_loss(torch.tensor(z), torch.tensor(mu), L.get_membership("softmax", alpha=alpha))
        assert float(got) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    # the default membership is the paper's softmax with alpha = 3
    d = _np_sqdist(z, mu)
    assert float(L.ct_loss(torch.tensor(z), torch.tensor(mu))) == pytest.approx(
        (d * _np_softmax(-3.0 * d)).sum(1).mean(), rel=1e-12)


def test_memberships_match_numpy(data):
    z, mu = data
    d = _np_sqdist(z, mu)
    dt = torch.tensor(d)
    for m in (1.5, 2.0, 3.0):
        u = 1.0 / ((d[:, :, None] / d[:, None, :]) ** (1.0 / (m - 1))).sum(-1)
        np.testing.assert_allclose(L.fuzzy_cmeans_membership(dt, m).numpy(), u, rtol=1e-9)
    q = 1.0 / (1.0 + d)
    np.testing.assert_allclose(L.student_membership(dt).numpy(), q / q.sum(1, keepdims=True), rtol=1e-12)
    G = L.get_membership("fcm", m=2.0)(dt)
    np.testing.assert_allclose(G.sum(1).numpy(), 1.0, rtol=1e-12)
    with pytest.raises(ValueError):
        L.get_membership("nope")
    with pytest.raises(ValueError):
        L.fuzzy_cmeans_membership(dt, 1.0)


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
    # "mean" is PyTorch's MSELoss: the per-sample sum divided by the number of features
    assert float(L.reconstruction_loss(torch.tensor(xh), torch.tensor(x), "mean")) == pytest.approx(
        float(torch.nn.functional.mse_loss(torch.tensor(xh), torch.tensor(x))), rel=1e-12)
    with pytest.raises(ValueError, match="reduction"):
        L.reconstruction_loss(torch.tensor(xh), torch.tensor(x), "max")
    with pytest.raises(ValueError, match="reconstruction"):
        make_method("CT", 10, reconstruction="max")
    assert make_method("CT-mse", 10).describe()["reconstruction"] == "mean"


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
    ref = kmeans_inmemory(Z.numpy().copy(), 10, n_init=3, random_state=4 * 10_007 + 5 + 1)
    assert np.array_equal(ct.centroids.numpy(), ref.centers)
    assert np.array_equal(labels.numpy(), ref.labels)
    # and they are the k-means fixed point of the embeddings: each center is the mean of its points
    Zn = Z.numpy().astype(np.float64)
    lab = _np_sqdist(Zn, ct.centroids.numpy().astype(np.float64)).argmin(1)
    for j in range(10):
        np.testing.assert_allclose(ct.centroids.numpy()[j], Zn[lab == j].mean(0), rtol=1e-4, atol=1e-4)
    c2, l2, inertia = reinit_centroids(Z, 10, n_init=3, random_state=4 * 10_007 + 6)
    assert c2.dtype == Z.dtype and l2.dtype == torch.int64 and inertia > 0


def test_balanced_selection_keeps_the_most_balanced_of_the_same_restarts(embedded):
    from scipy.stats import entropy

    from kmeans_dist.deep.train import size_entropy
    from kmeans_dist.kernels import kmeans_plusplus, lloyd_inmemory

    Z = embedded
    Zn = Z.numpy().copy()
    # the candidates: the restarts kmeans_inmemory runs (same generator), scored by scipy's entropy of the sizes
    rng = np.random.default_rng(7)
    cands = [lloyd_inmemory(Zn, kmeans_plusplus(Zn, 10, rng)[0]) for _ in range(6)]
    ent = [entropy(np.bincount(c.labels, minlength=10)) / np.log(10) for c in cands]
    for c, e in zip(cands, ent):
        assert size_entropy(c.labels, 10) == pytest.approx(e, rel=1e-12)
    best = max(range(6), key=lambda i: (ent[i], -cands[i].inertia))
    c, labels, inertia = reinit_centroids(Z, 10, n_init=6, random_state=7, select="balanced")
    assert np.array_equal(c.numpy(), cands[best].centers) and np.array_equal(labels.numpy(), cands[best].labels)
    assert inertia == pytest.approx(cands[best].inertia)
    # the classical rule on the same restarts is kmeans_inmemory's lowest inertia
    ref = kmeans_inmemory(Zn, 10, n_init=6, random_state=7)
    assert ref.inertia == pytest.approx(min(cd.inertia for cd in cands))
    assert size_entropy(np.repeat(np.arange(4), 5), 4) == pytest.approx(1.0)
    m = make_method("CT-bal", 10, seed=7, n_init=6)
    assert m.name == "CT-bal" and m.select == "balanced" and m.describe()["select"] == "balanced"
    assert np.array_equal(m.initialize(Z).numpy(), cands[best].labels)
    with pytest.raises(ValueError, match="select must be one of"):
        make_method("CT", 10, select="silhouette")
    with pytest.raises(ValueError, match="select must be one of"):
        reinit_centroids(Z, 10, n_init=1, select="silhouette")


def test_warm_start_is_one_more_candidate_and_leaves_the_restarts_alone(embedded):
    from kmeans_dist.deep.train import size_entropy
    from kmeans_dist.kernels import lloyd_inmemory

    Z = embedded
    Zn = Z.numpy().copy()
    # one restart from seed 3, and a warm start from another partition's centers
    cold = kmeans_inmemory(Zn, 10, n_init=1, random_state=3)
    prev = kmeans_inmemory(Zn, 10, n_init=1, random_state=11).centers
    warm = lloyd_inmemory(Zn, prev)
    for select, key in (("inertia", lambda r: r.inertia),
                        ("balanced", lambda r: (-size_entropy(r.labels, 10), r.inertia))):
        want = warm if key(warm) < key(cold) else cold
        c, labels, inertia = reinit_centroids(Z, 10, n_init=1, random_state=3, select=select,
                                              warm_start=torch.from_numpy(prev))
        assert np.array_equal(c.numpy(), want.centers) and np.array_equal(labels.numpy(), want.labels)
        assert inertia == pytest.approx(want.inertia)
    # CT-bal-warm hands its current centroids to each re-initialisation; CT-bal does not
    m = make_method("CT-bal-warm", 10, seed=0, n_init=1)
    assert m.name == "CT-bal-warm" and m.describe()["reinit_warm"] and not make_method("CT-bal").reinit_warm
    m._set_centroids(torch.from_numpy(prev))
    lab = m.end_epoch(Z, 5).numpy()
    cold5 = kmeans_inmemory(Zn, 10, n_init=1, random_state=0 * 10_007 + 5 + 1)
    key = lambda r: (-size_entropy(r.labels, 10), r.inertia)  # noqa: E731
    assert np.array_equal(lab, (warm if key(warm) < key(cold5) else cold5).labels)


def test_knn_graph_and_its_normalised_cut_match_sklearn_and_numpy(embedded):
    from sklearn.neighbors import NearestNeighbors

    from kmeans_dist.deep.train import graph_cut, knn_graph

    Z = embedded
    anchors, nbrs = knn_graph(Z, n_neighbors=5, n_anchors=700, seed=3, block=256)
    assert anchors.shape == (700,) and nbrs.shape == (700, 5) and np.all(np.diff(anchors) > 0)
    a2, _ = knn_graph(Z, n_neighbors=5, n_anchors=700, seed=3)
    assert np.array_equal(a2, anchors)  # the anchors depend only on the seed and the number of rows
    S = Z.numpy()[anchors].astype(np.float64)
    ref = NearestNeighbors(n_neighbors=6).fit(S).kneighbors(S, return_distance=False)[:, 1:]  # drop itself
    assert (anchors[ref] == nbrs).mean() > 0.99  # float32 GEMM distances against sklearn's float64 (near-ties)
    full = knn_graph(Z, n_neighbors=3, n_anchors=10 ** 6)
    assert full[0].shape == (Z.shape[0],) and not np.any(full[1] == full[0][:, None])
    # the normalised cut, directly: per cluster, the mean fraction of its anchors' edges that leave it
    lab = kmeans_inmemory(Z.numpy().copy(), 10, n_init=1, random_state=0).labels
    leave = (lab[nbrs] != lab[anchors][:, None]).mean(1)
    la = lab[anchors]
    want = np.mean([leave[la == j].mean() for j in np.unique(la)])
    assert graph_cut(lab, (anchors, nbrs)) == pytest.approx(want, rel=1e-12)
    # two clusters, one made of two halves: cutting across each half is worse than separating them
    A, N = np.arange(4), np.array([[1], [0], [3], [2]])
    assert graph_cut(np.array([0, 0, 1, 1]), (A, N)) == 0.0 and graph_cut(np.array([0, 1, 0, 1]), (A, N)) == 1.0


def test_graph_selection_keeps_the_lowest_cut_of_the_nearly_balanced_restarts(embedded):
    from kmeans_dist.deep.train import GRAPH_TOLERANCE, graph_cut, knn_graph, size_entropy

    Z = embedded
    graph = knn_graph(Z, seed=5)
    for tol in (GRAPH_TOLERANCE, 0.05, 1.0):
        cands = []
        c, labels, inertia = reinit_centroids(Z, 10, n_init=8, random_state=5, select="graph", graph=graph,
                                              candidates=cands, graph_tolerance=tol)
        # the same restarts as the other rules; the graph rule only chooses differently among them
        ref = []
        reinit_centroids(Z, 10, n_init=8, random_state=5, select="inertia", candidates=ref)
        assert [cd["inertia"] for cd in cands] == [r["inertia"] for r in ref]
        for cd in cands:
            assert cd["graph_cut"] == graph_cut(cd["labels"], graph)
            assert cd["size_entropy"] == size_entropy(cd["labels"], 10)
        top = max(cd["size_entropy"] for cd in cands)
        tied = [cd for cd in cands if cd["size_entropy"] >= top - tol]
        want = min(tied, key=lambda cd: (cd["graph_cut"], cd["inertia"]))
        assert np.array_equal(labels.numpy(), want["labels"]) and np.array_equal(c.numpy(), want["centers"])
        assert inertia == want["inertia"]
    # without a graph it builds one from random_state; the method builds one with its own seed every epoch
    _, l2, _ = reinit_centroids(Z, 10, n_init=8, random_state=5, select="graph")
    assert np.array_equal(l2.numpy(), reinit_centroids(Z, 10, n_init=8, random_state=5, select="graph",
                                                       graph=graph)[1].numpy())
    m = make_method("CT-graph-warm", 10, seed=5, n_init=8)
    assert m.select == "graph" and m.reinit_warm and m.describe()["select"] == "graph"
    assert np.array_equal(m.initialize(Z).numpy(), l2.numpy())


def test_graph_split_separates_two_touching_strips_that_kmeans_cuts_across():
    """Two parallel strips, longer than their gap, and a far blob: Lloyd from a cut across the strips stays there;
    the split candidate re-splits the pair with the densest boundary along the neighbour graph, and the graph rule
    keeps it because its cut is lower."""
    from kmeans_dist.deep.train import graph_cut, graph_split, knn_graph
    from kmeans_dist.kernels import lloyd_inmemory

    rng = np.random.default_rng(0)
    n = 900
    strip = lambda y0: np.c_[rng.uniform(0, 3, n), rng.normal(y0, 0.08, n)]  # noqa: E731
    X = np.vstack([strip(0.0), strip(1.0), rng.normal((1.5, 8.0), 0.3, (n, 2))]).astype(np.float32)
    truth = np.repeat(np.arange(3), n)
    Z = torch.from_numpy(X)
    graph = knn_graph(Z, n_neighbors=8, n_anchors=2000, seed=0)
    km = lloyd_inmemory(X, np.array([[0.7, 0.5], [2.3, 0.5], [1.5, 8.0]], dtype=np.float32))
    crossed = lambda lab: max((lab[truth == 0] == v).mean() for v in range(3))  # noqa: E731
    assert crossed(km.labels) < 0.7  # k-means cuts across the strips
    alt = graph_split(X, km.labels, km.centers, graph, 3)
    assert alt.n_iter == 0 and alt.centers.dtype == np.float32
    assert crossed(alt.labels) == 1.0 and (alt.labels[truth == 0][0] != alt.labels[truth == 1][0])
    assert np.array_equal(alt.labels[truth == 2], km.labels[truth == 2])  # the far blob's center is untouched
    np.testing.assert_array_equal(alt.centers[2], km.centers[2])
    d = ((X[:, None, :] - alt.centers[None]) ** 2).sum(-1)
    assert np.array_equal(alt.labels, d.argmin(1)) and alt.inertia == pytest.approx(d.min(1).sum(), rel=1e-5)
    assert graph_cut(alt.labels, graph) < graph_cut(km.labels, graph)
    cands = []
    c, labels, _ = reinit_centroids(Z, 3, n_init=4, random_state=0, select="graph", graph=graph, candidates=cands,
                                    split=True)
    assert [cd["split"] for cd in cands] == [False] * 4 + [True] and crossed(labels.numpy()) == 1.0
    np.testing.assert_array_equal(c.numpy(), cands[-1]["centers"])
    with pytest.raises(ValueError, match="split needs select='graph'"):
        reinit_centroids(Z, 3, n_init=1, select="balanced", split=True)
    with pytest.raises(ValueError, match="graph_split needs select='graph'"):
        make_method("CT", 3, graph_split=True)


def test_merge_split_merges_the_pair_sharing_a_class_and_bisects_the_cluster_holding_two():
    """Two touching blobs in one cluster, a long strip cut in two, a far blob: no re-split of one pair reaches the
    right partition; merging the strip's halves and bisecting the two-blob cluster along the graph does, and the
    graph rule with ``merge_split=True`` keeps it (its cut is lower)."""
    from kmeans_dist.deep.train import fiedler_bisection, graph_cut, graph_merge_splits, knn_graph
    from kmeans_dist.kernels import lloyd_inmemory

    rng = np.random.default_rng(0)
    n = 600
    X = np.vstack([rng.normal((0, 0), 0.25, (n, 2)), rng.normal((1.6, 0), 0.25, (n, 2)),
                   np.c_[rng.uniform(0, 6, 2 * n), rng.normal(8, 0.1, 2 * n)],
                   rng.normal((10, -6), 0.3, (n, 2))]).astype(np.float32)
    truth = np.repeat(np.arange(4), [n, n, 2 * n, n])
    graph = knn_graph(torch.from_numpy(X), n_neighbors=8, n_anchors=2000, seed=0)
    km = lloyd_inmemory(X, np.array([[0.8, 0], [1.5, 8], [4.5, 8], [10, -6]], dtype=np.float32))
    table = lambda lab: np.bincount(lab * 4 + truth, minlength=16).reshape(4, 4)  # noqa: E731
    assert (table(km.labels)[0, :2] == n).all()  # blobs 0 and 1 share cluster 0; the strip is cut in two
    alts = graph_merge_splits(X, km.labels, km.centers, graph, 4)
    assert len(alts) == 2 and all(a.n_iter == 0 and a.centers.dtype == np.float32 for a in alts)
    right = alts[0]  # cluster order: the two-blob cluster (0) first, then the far blob (3)
    t = table(right.labels)
    assert sorted(t.max(axis=0).tolist()) == [n, n, n, 2 * n] and (np.count_nonzero(t, axis=0) == 1).all()
    d = ((X[:, None, :] - right.centers[None]) ** 2).sum(-1)
    assert np.array_equal(right.labels, d.argmin(1)) and right.inertia == pytest.approx(d.min(1).sum(), rel=1e-5)
    assert graph_cut(right.labels, graph) < graph_cut(km.labels, graph) < graph_cut(alts[1].labels, graph)
    side = fiedler_bisection(graph, np.flatnonzero(km.labels[np.asarray(graph[0])] == 0), len(X))
    assert side is not None and 0.4 < side.mean() < 0.6
    assert fiedler_bisection(graph, side.nonzero()[0][:2], len(X)) is None  # too few nodes for two eigenvectors
    cands = []
    c, labels, _ = reinit_centroids(torch.from_numpy(X), 4, n_init=1, random_state=0, select="graph", graph=graph,
                                    candidates=cands, warm_start=torch.from_numpy(km.centers), merge_split=True)
    assert [cd["merge_split"] for cd in cands] == [False, False, True, True] and "split" not in cands[0]
    kept = min(cands, key=lambda cd: (cd["graph_cut"], cd["inertia"]))  # all four are nearly balanced
    assert kept["merge_split"] and np.array_equal(labels.numpy(), kept["labels"])
    assert sorted(table(labels.numpy()).max(axis=0).tolist()) == [n, n, n, 2 * n]  # the right partition
    assert graph_merge_splits(X, np.zeros(len(X), dtype=np.int64), km.centers, graph, 4) == []  # no boundary
    with pytest.raises(ValueError, match="merge_split needs select='graph'"):
        reinit_centroids(torch.from_numpy(X), 4, n_init=1, select="inertia", merge_split=True)
    with pytest.raises(ValueError, match="merge_split needs select='graph'"):
        make_method("CT", 4, merge_split=True)
    assert make_method("CT-graph-msplit", 4).describe()["merge_split"] is True


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_runs(name, mnist, pretrained):
    X, y = mnist
    torch.manual_seed(1)
    model = Autoencoder(784, 10)
    model.load_state_dict(pretrained)
    method = make_method(name, 10, seed=0, n_init=3)
    res = fit_method(model, X, method, y=y, epochs=2, seed=0, snapshot_epochs=(1, 2), snapshot_size=300)
    hist = res["history"]
    expected_epochs = [0, 1, 2] if method.finetunes else [0]
    assert [h["epoch"] for h in hist] == expected_epochs
    for h in hist:
        assert 0.0 <= h["acc"] <= 1.0 and -1.0 <= h["ari"] <= 1.0 and 0.0 <= h["nmi"] <= 1.0
        if h["epoch"]:
            assert np.isfinite(h["rec_loss"]) and np.isfinite(h["clu_loss"]) and h["clu_loss"] >= 0
    assert hist[-1]["acc"] > 0.15  # above chance (about 0.11 for 10 matched clusters) after 2 + 2 epochs
    # the inertia of the epoch's k-means on the embeddings: the initial one, then each re-initialisation's
    reinit = name.startswith("CT") and name != "CT-noreinit" or name == "DKM+reinit"
    assert hist[0]["kmeans_inertia"] > 0
    assert all((h["kmeans_inertia"] is not None) == reinit for h in hist[1:])
    # the evenness of each epoch's partition, as the "balanced" selection ranks it
    from kmeans_dist.deep.train import size_entropy

    assert all(0.0 <= h["size_entropy"] <= 1.0 for h in hist)  # 0: one cluster (DCN can collapse on 2,000 images)
    assert hist[-1]["size_entropy"] == pytest.approx(size_entropy(res["labels"], 10), rel=1e-12)
    # what each k-means chose among: n_init restarts (+ the warm start), the kept one ranked first by the rule
    for h in hist:
        cands = h.get("kmeans_candidates")
        if h["kmeans_inertia"] is None:
            assert cands is None
            continue
        warm = method.describe().get("reinit_warm", False) and h["epoch"] > 0
        n_cold = getattr(method, "reinit_n_init", 3) if h["epoch"] else 3  # CT-reinit1: 1 restart per epoch
        moves = [c.get("merge_split", False) for c in cands].count(True)  # graph_merge_splits' candidates: last
        assert [c.get("merge_split", False) for c in cands] == [False] * (len(cands) - moves) + [True] * moves
        assert moves <= 8 and (moves == 0 or method.merge_split)
        split = [c["split"] for c in cands[:len(cands) - moves]] if method.graph_split else []  # at most one, last
        assert split in ([], [False] * len(split), [False] * (len(split) - 1) + [True])
        assert [c["warm"] for c in cands] == [False] * n_cold + [True] * warm + [False] * (split.count(True) + moves)
        if method.select == "graph":  # the lowest cut among the nearly most balanced
            from kmeans_dist.deep.train import GRAPH_TOLERANCE

            top = max(c["size_entropy"] for c in cands)
            kept = min((c for c in cands if c["size_entropy"] >= top - GRAPH_TOLERANCE),
                       key=lambda c: (c["graph_cut"], c["inertia"]))
        else:
            rank = ((lambda c: (-c["size_entropy"], c["inertia"])) if method.select == "balanced"
                    else (lambda c: c["inertia"]))
            kept = min(cands, key=rank)
        if method.consensus_window:  # each candidate's agreement with the partitions kept before it
            assert all(np.isnan(c["agreement"]) for c in cands) == (h["epoch"] == 0)
            if h is hist[-1]:  # the output: the last epoch's candidate that agrees best (Method.finalize)
                assert [c["final"] for c in cands].count(True) == 1
                kept = next(c for c in cands if c["final"])
                assert kept["agreement"] == max(c["agreement"] for c in cands)
        assert kept["inertia"] == pytest.approx(h["kmeans_inertia"], rel=1e-12)
        if name != "DKM+reinit":  # DKM's labels are its soft assignments' argmax, not the k-means partition's
            assert (kept["acc"], kept["size_entropy"]) == (h["acc"], h["size_entropy"])
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
    if name == "DKM-anneal":
        assert method.alpha > 0.1


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


def test_consensus_finalize_keeps_the_candidate_that_agrees_best(embedded):
    from sklearn.metrics import adjusted_rand_score

    from kmeans_dist.deep.train import partition_agreement

    Z = embedded
    rng = np.random.default_rng(0)
    refs = [rng.integers(0, 10, Z.shape[0]) for _ in range(3)]
    lab = refs[0].copy()
    lab[:500] = rng.integers(0, 10, 500)
    assert partition_agreement(lab, refs, 10) == pytest.approx(np.mean([adjusted_rand_score(r, lab) for r in refs]))
    assert np.isnan(partition_agreement(lab, [], 10))
    m = make_method("CT-bal-warm-cons", 10, seed=0, n_init=4, consensus_window=2)
    assert m.describe()["consensus_window"] == 2 and make_method("CT-bal-warm").finalize() is None
    kept = [m.initialize(Z).numpy()]
    for ep in (1, 2, 3):
        kept.append(m.end_epoch(Z, ep).numpy())
    assert len(m._kept) == 2 and all(np.array_equal(a, b) for a, b in zip(m._kept, kept[-2:]))
    cands = m.kmeans_candidates  # epoch 3's: scored against the partitions kept after epochs 1 and 2
    for c in cands:
        assert c["agreement"] == pytest.approx(np.mean([adjusted_rand_score(r, c["labels"]) for r in kept[1:3]]))
    labels = m.finalize().numpy()
    best = max(range(len(cands)), key=lambda i: (cands[i]["agreement"], -i))
    assert [c["final"] for c in cands] == [i == best for i in range(len(cands))]
    assert np.array_equal(labels, cands[best]["labels"]) and np.array_equal(m.centroids.numpy(), cands[best]["centers"])
    m2 = make_method("CT-bal-warm-cons", 10, seed=0, n_init=4, consensus_window=2)
    m2.load_state_dict(m.state_dict())
    assert all(np.array_equal(a, b) for a, b in zip(m2._kept, m._kept)) and len(m2._kept) == 2
    with pytest.raises(ValueError, match="consensus_window must be >= 0"):
        make_method("CT", 10, consensus_window=-1)


@pytest.mark.parametrize("name", ["CT", "DKM", "CT-bal-warm-cons"])
def test_fit_method_resume_matches_uninterrupted(name, mnist, pretrained):
    X, y = mnist
    Xs, ys = X[:400], y[:400]

    def run(epochs, resume=None):
        model = Autoencoder(784, 10)
        model.load_state_dict(pretrained)
        method = make_method(name, 10, seed=0, n_init=1)
        saved = []
        res = fit_method(model, Xs, method, y=ys, epochs=epochs, seed=0, snapshot_size=50,
                         checkpoint=saved.append, resume=resume)
        return res, saved

    full, _ = run(2)
    _, saved = run(2)  # the same run, keeping the checkpoint of epoch 1 ...
    resumed, _ = run(2, resume=saved[0])  # ... and continuing from it
    assert saved[0]["epoch"] == 1
    assert [h["epoch"] for h in resumed["history"]] == [0, 1, 2]
    np.testing.assert_array_equal(resumed["labels"], full["labels"])
    np.testing.assert_allclose(resumed["centroids"], full["centroids"], rtol=1e-6, atol=1e-6)


def test_denoising_pretraining_is_seeded_and_reconstructs_the_clean_input():
    X = torch.rand(600, 20)

    def run(corruption, start_epoch=0, model=None, opt=None, epochs=2):
        if model is None:
            torch.manual_seed(0)
            model = Autoencoder(20, 3)
        h = pretrain(model, X, epochs=epochs, batch_size=128, seed=5, corruption=corruption, optimizer=opt,
                     start_epoch=start_epoch)
        return model, h

    a, ha = run(0.3)
    b, hb = run(0.3)
    c, hc = run(0.0)
    assert torch.equal(a.encoder[0].weight, b.encoder[0].weight)  # the masks are seeded
    assert not torch.equal(a.encoder[0].weight, c.encoder[0].weight)
    # the loss is measured against the clean input: with everything masked the model sees only zeros, gives
    # one output for every row of a batch, and so cannot do better than the batch's variance
    torch.manual_seed(0)
    h_all = pretrain(Autoencoder(20, 3), X, epochs=1, batch_size=128, seed=5, corruption=1.0)
    assert h_all[0]["rec_loss"] >= 0.95 * float(X.var(0, unbiased=False).sum())
    # resuming after epoch 1 draws the same masks as the uninterrupted run
    torch.manual_seed(0)
    r = Autoencoder(20, 3)
    opt = torch.optim.Adam(r.parameters(), lr=1e-3)
    pretrain(r, X, epochs=1, batch_size=128, seed=5, corruption=0.3, optimizer=opt)
    pretrain(r, X, epochs=2, batch_size=128, seed=5, corruption=0.3, optimizer=opt, start_epoch=1)
    assert torch.equal(r.encoder[0].weight, a.encoder[0].weight)
