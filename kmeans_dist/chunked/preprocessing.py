"""Distributed moments and standardization (one pass, per-chunk count/mean/M2 merged by Chan's formula).

The same pass checks that every value is finite and says where it is not (block and row range), so
no separate validation pass is ever made.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..kernels.stats import check_stats, combine_stats, finish_stats, stats_chunk
from ..kernels.xp import get_namespace

__all__ = ["moments", "standardize", "standardize_store"]


def moments(X, *, client=None, split_every: int = 8, block_rows="auto", blocks=None, engine: str = "auto"):
    """Mean and (population) variance of every feature in one distributed pass.

    Parameters
    ----------
    X : array-like, dask array, xarray.DataArray or str
        The data (a Zarr path is opened lazily).
    client : distributed.Client, None or False, default=None
        None: the active client if any; False: in process.
    split_every : int, default=8
        Fan-in of the reduction tree.
    block_rows : "auto" or int, default="auto"
        Rows per canonical block.
    blocks : LocalBlocks, DaskBlocks, StreamBlocks or None, default=None
        Blocks already made (then ``X`` is not used).
    engine : {"auto", "dask", "ray", "local"}, default="auto"
        Where the pass runs, as :func:`~kmeans_dist.chunked.driver.make_blocks` (the moments are the same).

    Returns
    -------
    dict
        ``n``, ``mean`` and ``var`` (float64).

    Raises
    ------
    NonFiniteError
        Naming the chunk and rows if X holds NaN or infinity.

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist.chunked import moments
    >>> m = moments(np.array([[1.0, 0.0], [3.0, 0.0]]), client=False)
    >>> m["n"], m["mean"].tolist(), m["var"].tolist()
    (2, [2.0, 0.0], [1.0, 0.0])
    """
    from .driver import make_blocks
    from ..data import as_dask_array

    if blocks is None:
        blocks = make_blocks(as_dask_array(X), block_rows=block_rows, split_every=split_every, client=client,
                             persist=False, engine=engine)
    stats = blocks.map_reduce(stats_chunk, combine_stats)
    check_stats(stats, blocks.block_rows, chunks=blocks.source_chunks)
    out = finish_stats(stats)
    out.pop("bad")
    return out


def _scale_block(x, mean, scale):
    xp = get_namespace(x)
    m = xp.asarray(mean, dtype=x.dtype)
    s = xp.asarray(scale, dtype=x.dtype)
    return (x - m) / s


def standardize(X, *, mean=None, var=None, client=None, with_mean: bool = True, with_std: bool = True,
                engine: str = "auto"):
    """Lazily standardized X: ``(X - mean) / std``; zero-variance features left unscaled.

    Parameters
    ----------
    X : array-like, dask array, xarray.DataArray or str
        The data.
    mean, var : ndarray of shape (n_features,) or None, default=None
        Moments to use (None: computed with :func:`moments`, one pass).
    client : distributed.Client, None or False, default=None
        Where the moments pass runs.
    with_mean : bool, default=True
        Subtract the mean.
    with_std : bool, default=True
        Divide by the standard deviation.
    engine : {"auto", "dask", "ray", "local"}, default="auto"
        Where the moments pass runs (see :func:`moments`).

    Returns
    -------
    dask.array.Array
        Lazy, in X's dtype.
    """
    from ..data import as_dask_array

    Xd = as_dask_array(X)
    if mean is None or var is None:
        m = moments(Xd, client=client, engine=engine)
        mean, var = m["mean"], m["var"]
    mean = np.asarray(mean, dtype=np.float64) if with_mean else np.zeros(Xd.shape[1])
    std = np.sqrt(np.asarray(var, dtype=np.float64))
    zero = std == 0
    if zero.any() and with_std:
        warnings.warn(f"{int(zero.sum())} feature(s) have zero variance and are left unscaled "
                      f"(first: feature {int(np.flatnonzero(zero)[0])}).", UserWarning, stacklevel=2)
    scale = np.where(zero | (not with_std), 1.0, std)
    return Xd.map_blocks(_scale_block, mean, scale, dtype=Xd.dtype)


def standardize_store(src_url, dst_url, *, client=None, overwrite: bool = False, chunk_rows=None,
                      engine: str = "auto") -> dict:
    """Write the standardized ``X`` of store ``src_url`` (and its labels) to a new store ``dst_url``.

    The source is never modified; the target is written atomically.

    Parameters
    ----------
    src_url : str or os.PathLike
        Source store.
    dst_url : str or os.PathLike
        Target store (never the source).
    client : distributed.Client, None or False, default=None
        Where the passes run.
    overwrite : bool, default=False
        Replace an existing target.
    chunk_rows : int or None, default=None
        Rows per stored chunk of the target (None: the source's).
    engine : {"auto", "dask", "ray", "local"}, default="auto"
        Where the moments pass runs (see :func:`moments`).  The copy is written chunk by chunk as a Dask
        graph (:func:`kmeans_dist.data.write_store`): on the active Dask scheduler when the engine resolves
        to ``"dask"``, in process threads for ``"ray"`` and ``"local"``.

    Returns
    -------
    dict
        The moments used.
    """
    import contextlib

    import dask

    from .driver import resolve_engine
    from ..data import check_output, is_local_path, open_labels, open_store, store_info, write_store

    if is_local_path(dst_url):
        check_output(dst_url, [src_url], overwrite=overwrite)
    X = open_store(src_url)
    m = moments(X, client=client, engine=engine)
    Z = standardize(X, mean=m["mean"], var=m["var"])
    info = store_info(src_url)
    attrs = dict(info["attrs"])
    attrs.update({"standardized_from": str(src_url), "mean": m["mean"].tolist(), "std": np.sqrt(m["var"]).tolist()})
    in_process = resolve_engine(engine, client) in ("ray", "local")
    with dask.config.set(scheduler="threads") if in_process else contextlib.nullcontext():
        write_store(dst_url, Z, labels=open_labels(src_url), chunk_rows=chunk_rows or info["chunks"][0],
                    feature_names=attrs.pop("feature_names", None), attrs=attrs, overwrite=overwrite)
    return m
