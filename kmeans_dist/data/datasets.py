"""Teaching data sets, generated chunk by chunk (lazily on Dask, or straight into a Zarr store).

Five shapes, chosen to show where k-means shines and where it visibly fails:

- :func:`blobs`: isotropic Gaussian blobs (k-means' own model: it shines);
- :func:`anisotropic`: Gaussian noise sheared by a linear map (long parallel clusters: k-means cuts
  across them);
- :func:`unequal_sizes`: large clusters beside one tiny cluster of 15 points (k-means favours
  splitting a large cluster over isolating the tiny one);
- :func:`moons`: two interleaving half circles (non-convex: k-means fails);
- :func:`rings`: concentric circles (non-convex, nested: k-means fails completely).

Every generator is seeded and *independent of the chunking*: rows are produced in fixed generation
blocks of :data:`GEN_BLOCK` rows, block ``b`` drawn from ``numpy.random.default_rng([seed, b])``, so
the same ``random_state`` gives the same data whatever ``chunk_rows`` is, on any scheduler, and any
chunk can be generated on a worker without generating the others.  Nothing is ever materialised on
the client unless asked (``as_numpy=True``).

Each function returns ``(X, y)`` as lazy dask arrays (float ``(n, d)``, int64 ``(n,)``), or, with
``url=...``, writes a Zarr v3 store chunk by chunk (``X`` and ``labels``, via
:func:`kmeans_dist.data.write_store`) and returns the store's URL.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "blobs",
    "anisotropic",
    "unequal_sizes",
    "moons",
    "rings",
    "make_dataset",
    "DATASETS",
    "GEN_BLOCK",
]

GEN_BLOCK = 65_536


# --------------------------------------------------------------------------------------------------
# per-generation-block samplers: (rng, size, global start row, params) -> (X float64 (size, d), y)
# --------------------------------------------------------------------------------------------------

def _gen_blobs(rng, size, start, p):
    centers, std, weights = p["centers"], p["std"], p["weights"]
    y = rng.choice(len(centers), size=size, p=weights)
    X = centers[y] + rng.standard_normal((size, centers.shape[1])) * std[y, None]
    if p.get("transform") is not None:
        X = centers[y] + (X - centers[y]) @ p["transform"]
    return X, y


def _gen_unequal(rng, size, start, p):
    X, y = _gen_blobs(rng, size, start, p)
    # the tiny cluster: fixed global rows, drawn once from the seed (independent of chunking)
    small = p["small_rows"]
    lo, hi = np.searchsorted(small, [start, start + size])
    local = small[lo:hi] - start
    if local.size:
        c = p["small_center"]
        y[local] = p["small_label"]
        X[local] = c + rng.standard_normal((local.size, c.shape[0])) * p["small_std"]
    return X, y


def _gen_moons(rng, size, start, p):
    y = rng.integers(0, 2, size=size)
    t = rng.uniform(0.0, math.pi, size=size)
    X = np.empty((size, 2))
    X[:, 0] = np.where(y == 0, np.cos(t), 1.0 - np.cos(t))
    X[:, 1] = np.where(y == 0, np.sin(t), 0.5 - np.sin(t))
    X += rng.standard_normal((size, 2)) * p["noise"]
    return X, y


def _gen_rings(rng, size, start, p):
    y = rng.integers(0, 2, size=size)
    t = rng.uniform(0.0, 2 * math.pi, size=size)
    r = np.where(y == 0, 1.0, p["factor"])
    X = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    X += rng.standard_normal((size, 2)) * p["noise"]
    return X, y


_SAMPLERS = {"blobs": _gen_blobs, "unequal": _gen_unequal, "moons": _gen_moons, "rings": _gen_rings}


def _generate_rows(kind, params, seed, n, start, stop):
    """Rows [start, stop) of the data set as one float64 block with the label in the last column."""
    sampler = _SAMPLERS[kind]
    outs = []
    for b in range(start // GEN_BLOCK, (stop - 1) // GEN_BLOCK + 1):
        b0 = b * GEN_BLOCK
        size = min(GEN_BLOCK, n - b0)
        X, y = sampler(np.random.default_rng([seed, b]), size, b0, params)
        lo, hi = max(start, b0) - b0, min(stop, b0 + size) - b0
        outs.append(np.column_stack([X[lo:hi], y[lo:hi].astype(np.float64)]))
    return np.concatenate(outs) if len(outs) > 1 else outs[0]


def _block(kind, params, seed, n, d, dtype, block_info=None):
    loc = block_info[None]["array-location"][0]
    A = _generate_rows(kind, params, seed, n, loc[0], loc[1])
    return A


def _seed(random_state) -> int:
    if random_state is None:
        return int(np.random.SeedSequence().entropy % (2**63))
    if isinstance(random_state, (int, np.integer)):
        if random_state < 0:
            raise ValueError(f"random_state must be a non-negative int or None, got {random_state}")
        return int(random_state)
    raise TypeError(f"random_state must be an int or None (chunked generation), got {type(random_state).__name__}")


def _build(kind, params, n_samples, n_features, random_state, chunk_rows, dtype, url, overwrite, as_numpy,
           attrs):
    import dask.array as da

    n = int(n_samples)
    if n < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    seed = _seed(random_state)
    from .store import rows_per_chunk

    rows = int(min(chunk_rows or rows_per_chunk(n_features, np.dtype(dtype).itemsize), n))
    chunks = tuple([rows] * (n // rows) + ([n % rows] if n % rows else []))
    A = da.map_blocks(_block, kind, params, seed, n, n_features, dtype, dtype=np.float64,
                      chunks=(chunks, (n_features + 1,)))
    X = A[:, :n_features].astype(dtype)
    y = A[:, n_features].astype(np.int64)
    if url is not None:
        from .store import write_store

        return write_store(url, X, labels=y, chunk_rows=rows, overwrite=overwrite,
                           attrs={"source": f"kmeans_dist.data.datasets.{kind}", "random_state": seed, **attrs})
    if as_numpy:
        import dask

        return dask.compute(X, y)
    return X, y


def _blob_centers(centers, n_features, center_box, seed):
    if isinstance(centers, (int, np.integer)):
        rng = np.random.default_rng([seed, 2**31 - 1])
        return rng.uniform(center_box[0], center_box[1], size=(int(centers), n_features))
    C = np.asarray(centers, dtype=np.float64)
    if C.ndim != 2:
        raise ValueError(f"centers must be an int or a (k, d) array, got shape {C.shape}")
    return C


def blobs(n_samples: int = 1000, *, centers=4, n_features: int = 2, cluster_std=1.0,
          center_box=(-10.0, 10.0), weights=None, random_state=0, chunk_rows=None, dtype="float64",
          url=None, overwrite=False, as_numpy=False):
    """Isotropic Gaussian blobs (like ``sklearn.datasets.make_blobs``, generated chunk by chunk).

    ``centers``: an int (drawn uniformly in ``center_box`` from the seed) or a (k, d) array;
    ``cluster_std``: a float or one per cluster; ``weights``: cluster proportions (equal by default;
    each row's cluster is drawn independently, so sizes are multinomial).
    """
    seed = _seed(random_state)
    C = _blob_centers(centers, n_features, center_box, seed)
    k, d = C.shape
    std = np.broadcast_to(np.asarray(cluster_std, dtype=np.float64), (k,)).copy()
    w = np.full(k, 1.0 / k) if weights is None else np.asarray(weights, dtype=np.float64) / np.sum(weights)
    params = {"centers": C, "std": std, "weights": w}
    return _build("blobs", params, n_samples, d, seed, chunk_rows, np.dtype(dtype), url, overwrite, as_numpy,
                  {"kind": "blobs", "centers": C.tolist(), "cluster_std": std.tolist()})


def anisotropic(n_samples: int = 1000, *, centers=None, n_features: int = 2, cluster_std=1.0,
                transform=None, random_state=0, chunk_rows=None, dtype="float64", url=None,
                overwrite=False, as_numpy=False):
    """Gaussian clusters whose noise is sheared by a linear map: each row is
    ``center + noise @ transform`` (default transform ``[[0.6, -0.6], [-0.4, 0.8]]`` in 2-D, as in
    scikit-learn's k-means assumptions example), i.e. long thin parallel clusters.

    The default centers (2-D) are three strips side by side along the short axis, 1.5 apart: well
    separated to the eye, but k-means (isotropic by design) cuts across them (ACC about 0.7).
    ``centers`` may be an int (drawn in (-10, 10) from the seed) or a (k, d) array.
    """
    seed = _seed(random_state)
    if centers is None:
        if n_features != 2:
            centers = 3
        else:
            centers = np.array([[-1.09, -1.03], [0.0, 0.0], [1.09, 1.03]])
    C = _blob_centers(centers, n_features, (-10.0, 10.0), seed)
    k, d = C.shape
    if transform is None:
        transform = (np.array([[0.6, -0.6], [-0.4, 0.8]]) if d == 2
                     else np.random.default_rng([seed, 7]).normal(size=(d, d)))
    T = np.asarray(transform, dtype=np.float64)
    if T.shape != (d, d):
        raise ValueError(f"transform must have shape ({d}, {d}), got {T.shape}")
    std = np.broadcast_to(np.asarray(cluster_std, dtype=np.float64), (k,)).copy()
    params = {"centers": C, "std": std, "weights": np.full(k, 1.0 / k), "transform": T}
    return _build("blobs", params, n_samples, d, seed, chunk_rows, np.dtype(dtype), url, overwrite,
                  as_numpy, {"kind": "anisotropic", "centers": C.tolist(), "transform": T.tolist()})


def unequal_sizes(n_samples: int = 1000, *, small_size: int = 15, centers=None, cluster_std=1.0,
                  small_center=None, small_std: float = 0.25, random_state=0, chunk_rows=None,
                  dtype="float64", url=None, overwrite=False, as_numpy=False):
    """Large Gaussian clusters beside one tiny cluster of exactly ``small_size`` points.

    Defaults (2-D): two large clusters at (-3, 0) and (3, 0) (std 1) and the tiny one (label 2) at
    (0, 3) (std 0.25).  With k = 3, k-means prefers splitting a large cluster to isolating the tiny
    one.  The tiny cluster's rows are fixed global rows drawn from the seed.
    """
    seed = _seed(random_state)
    C = np.array([[-3.0, 0.0], [3.0, 0.0]]) if centers is None else np.asarray(centers, dtype=np.float64)
    k, d = C.shape
    sc = np.zeros(d) if small_center is None else np.asarray(small_center, dtype=np.float64)
    if small_center is None:
        sc[min(1, d - 1)] = 3.0
    n = int(n_samples)
    if not 0 < small_size < n:
        raise ValueError(f"small_size must be between 1 and n_samples - 1, got {small_size}")
    small_rows = np.sort(np.random.default_rng([seed, 2**31 - 2]).choice(n, size=small_size, replace=False))
    std = np.broadcast_to(np.asarray(cluster_std, dtype=np.float64), (k,)).copy()
    params = {"centers": C, "std": std, "weights": np.full(k, 1.0 / k), "small_rows": small_rows,
              "small_center": sc, "small_std": float(small_std), "small_label": k}
    return _build("unequal", params, n, d, seed, chunk_rows, np.dtype(dtype), url, overwrite, as_numpy,
                  {"kind": "unequal_sizes", "centers": C.tolist(), "small_center": sc.tolist(),
                   "small_size": int(small_size)})


def moons(n_samples: int = 1000, *, noise: float = 0.05, random_state=0, chunk_rows=None, dtype="float64",
          url=None, overwrite=False, as_numpy=False):
    """Two interleaving half circles (labels 0 and 1), Gaussian noise of std ``noise``."""
    seed = _seed(random_state)
    return _build("moons", {"noise": float(noise)}, n_samples, 2, seed, chunk_rows, np.dtype(dtype), url,
                  overwrite, as_numpy, {"kind": "moons", "noise": float(noise)})


def rings(n_samples: int = 1000, *, factor: float = 0.5, noise: float = 0.05, random_state=0, chunk_rows=None,
          dtype="float64", url=None, overwrite=False, as_numpy=False):
    """Concentric circles: radius 1 (label 0) and ``factor`` (label 1), Gaussian noise of std ``noise``."""
    if not 0 < factor < 1:
        raise ValueError(f"factor must be between 0 and 1, got {factor}")
    seed = _seed(random_state)
    return _build("rings", {"factor": float(factor), "noise": float(noise)}, n_samples, 2, seed, chunk_rows,
                  np.dtype(dtype), url, overwrite, as_numpy, {"kind": "rings", "factor": float(factor),
                                                              "noise": float(noise)})


DATASETS = {
    "blobs": blobs,
    "anisotropic": anisotropic,
    "unequal_sizes": unequal_sizes,
    "moons": moons,
    "rings": rings,
}


def make_dataset(name: str, n_samples: int = 1000, **kw):
    """Any teaching data set by name (``blobs``, ``anisotropic``, ``unequal_sizes``, ``moons``,
    ``rings``); keyword arguments go to its generator."""
    try:
        fn = DATASETS[name]
    except KeyError:
        raise ValueError(f"Unknown data set {name!r}; choose one of {sorted(DATASETS)}") from None
    return fn(n_samples, **kw)
