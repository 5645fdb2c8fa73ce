"""Plots users look at first: the centroid grid (for image data), inertia per iteration, cluster sizes.

Every function writes a PNG atomically (temp file, then rename) and returns its path.
"""
from __future__ import annotations

import io
import os

import numpy as np

from .data.atomic import atomic_write_bytes

__all__ = ["plot_centroid_grid", "plot_inertia", "plot_cluster_sizes", "save_figure", "pyplot"]


def save_figure(fig, path) -> str:
    """Write ``fig`` to ``path`` as a PNG atomically (a temporary file renamed into place) and close it.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure (rendered at 110 dpi, tight bounding box).
    path : str or path-like
        The target file; its folder is created if missing.

    Returns
    -------
    str
        ``path``.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def pyplot():
    """``matplotlib.pyplot``, on the Agg backend unless ``MPLBACKEND`` chose one (notebooks set it).

    The one place where the project imports pyplot: plotting works on servers without a display.

    Returns
    -------
    module
        ``matplotlib.pyplot``.
    """
    import matplotlib

    if os.environ.get("MPLBACKEND") is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_centroid_grid(centers, image_shape, path, *, sizes=None, title="Cluster centers", cols=None) -> str:
    """Each center drawn as an image (e.g. 28x28 for MNIST) in a grid, with the cluster size.

    Each panel is titled with the cluster index (and ``n=`` its size when ``sizes`` is given);
    the PNG is written atomically by :func:`save_figure`.

    Parameters
    ----------
    centers : array-like of shape (n_clusters, n_features)
        Cluster centers, ``n_features == prod(image_shape)``.
    image_shape : tuple of int
        Shape each center is reshaped to, e.g. ``(28, 28)``.
    path : str or path-like
        PNG file to write.
    sizes : array-like of shape (n_clusters,), optional
        Number of samples in each cluster, shown in the panel titles.
    title : str, default="Cluster centers"
        Title of the figure.
    cols : int, optional
        Panels per row (default: ``min(n_clusters, 10)``).

    Returns
    -------
    str
        ``path``.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from kmeans_dist.plots import plot_centroid_grid
    >>> centers = np.random.default_rng(0).random((3, 16))
    >>> path = os.path.join(tempfile.mkdtemp(), "centers.png")
    >>> plot_centroid_grid(centers, (4, 4), path, sizes=[5, 3, 2]) == path
    True
    """
    plt = pyplot()
    centers = np.asarray(centers)
    k = centers.shape[0]
    cols = cols or min(k, 10)
    rows = int(np.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.6 * rows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < k:
            ax.imshow(centers[i].reshape(image_shape), cmap="gray_r")
            ax.set_title(f"{i}" + (f" (n={int(sizes[i])})" if sizes is not None else ""), fontsize=7)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def plot_inertia(history, path, *, title="Inertia per iteration") -> str:
    """Inertia against the iteration number (e.g. an estimator's ``history_``), as a PNG.

    Parameters
    ----------
    history : list of dict
        One dict per iteration with at least ``iteration`` and ``inertia``.
    path : str or path-like
        PNG file to write (atomically, by :func:`save_figure`).
    title : str, default="Inertia per iteration"
        Title of the plot.

    Returns
    -------
    str
        ``path``.

    Examples
    --------
    >>> import os, tempfile
    >>> from kmeans_dist.plots import plot_inertia
    >>> history = [{"iteration": 1, "inertia": 10.0}, {"iteration": 2, "inertia": 4.0}]
    >>> path = os.path.join(tempfile.mkdtemp(), "inertia.png")
    >>> plot_inertia(history, path) == path
    True
    """
    plt = pyplot()
    it = [h["iteration"] for h in history]
    inertia = [h["inertia"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(it, inertia, marker="o", ms=3)
    ax.set_xlabel("iteration")
    ax.set_ylabel("inertia (sum of squared distances)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_cluster_sizes(counts, path, *, title="Cluster sizes") -> str:
    """Bar chart of the number of samples per cluster, as a PNG.

    Parameters
    ----------
    counts : array-like of shape (n_clusters,)
        Samples in each cluster (e.g. ``cluster_sizes_``).
    path : str or path-like
        PNG file to write (atomically, by :func:`save_figure`).
    title : str, default="Cluster sizes"
        Title of the plot.

    Returns
    -------
    str
        ``path``.

    Examples
    --------
    >>> import os, tempfile
    >>> from kmeans_dist.plots import plot_cluster_sizes
    >>> path = os.path.join(tempfile.mkdtemp(), "sizes.png")
    >>> plot_cluster_sizes([5, 3, 2], path) == path
    True
    """
    plt = pyplot()
    counts = np.asarray(counts)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(np.arange(len(counts)), counts)
    ax.set_xlabel("cluster")
    ax.set_ylabel("samples")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
