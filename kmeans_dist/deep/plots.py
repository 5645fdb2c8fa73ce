"""Figures of a deep k-means run: loss curves, highest-membership histograms (the paper's Figure 3),
2-D embeddings coloured by cluster at a few epochs, and the confusion matrix against labels.

Matplotlib with the Agg backend; every function writes one PNG and returns its path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..plots import pyplot, save_figure

__all__ = ["plot_losses", "plot_membership_histogram", "plot_embeddings", "plot_confusion", "pca_2d"]


def _save(fig, path) -> Path:
    return Path(save_figure(fig, path))


def plot_losses(history: list[dict], path, title: str = "") -> Path:
    """Reconstruction and clustering loss per epoch, and ACC/NMI when present."""
    plt = pyplot()
    P = max([e["epoch"] for e in history if e.get("phase") == "pretrain"], default=0)

    def x(e):  # one axis: pretraining epochs 1..P, then finetuning epochs P+1..P+F
        return e["epoch"] + (P if e.get("phase") in ("init", "finetune") else 0)

    h = [e for e in history if e.get("rec_loss") is not None and e["rec_loss"] == e["rec_loss"]]
    has_scores = any("acc" in e for e in history)
    fig, axes = plt.subplots(1, 3 if has_scores else 2, figsize=(13 if has_scores else 9, 3.6))
    ep = [x(e) for e in h]
    axes[0].plot(ep, [e["rec_loss"] for e in h], marker=".")
    axes[0].set(xlabel="epoch", ylabel="reconstruction loss", title="reconstruction")
    axes[1].plot(ep, [e.get("clu_loss") or 0.0 for e in h], marker=".", color="C1")
    axes[1].set(xlabel="epoch", ylabel="clustering loss", title="clustering")
    if has_scores:
        s = [e for e in history if "acc" in e]
        for key in ("acc", "nmi", "ari"):
            axes[2].plot([x(e) for e in s], [e[key] for e in s], marker=".", label=key.upper())
        axes[2].set(xlabel="epoch", ylim=(0, 1), title="scores")
        axes[2].legend()
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_membership_histogram(before, after, path, title: str = "", bins: int = 50) -> Path:
    """Histogram of each point's highest membership before and after finetuning (Figure 3)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.hist(np.asarray(before), bins=bins, range=(0, 1), alpha=0.6, label="before finetuning")
    ax.hist(np.asarray(after), bins=bins, range=(0, 1), alpha=0.6, label="after finetuning")
    ax.set(xlabel="highest membership max_k G_ik", ylabel="points", title=title or "highest membership")
    ax.legend()
    return _save(fig, path)


def pca_2d(Z: np.ndarray) -> np.ndarray:
    """First two principal components (NumPy SVD, deterministic sign)."""
    Z = np.asarray(Z, dtype=np.float64)
    Zc = Z - Z.mean(axis=0)
    _, _, Vt = np.linalg.svd(Zc, full_matrices=False)
    V = Vt[:2].T
    V *= np.sign(V[np.argmax(np.abs(V), axis=0), range(V.shape[1])])
    return Zc @ V


def plot_embeddings(snapshots: dict, path, title: str = "") -> Path:
    """One panel per epoch: PCA of the seeded sample's embeddings coloured by cluster."""
    plt = pyplot()
    eps = sorted(snapshots)
    fig, axes = plt.subplots(1, max(len(eps), 1), figsize=(3.4 * max(len(eps), 1), 3.4), squeeze=False)
    for ax, ep in zip(axes[0], eps):
        Z, lab = snapshots[ep]
        P = pca_2d(Z)
        ax.scatter(P[:, 0], P[:, 1], c=np.asarray(lab), cmap="tab10", s=3, vmin=0, vmax=9)
        ax.set(title=f"epoch {ep}", xticks=[], yticks=[])
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_confusion(y_true, y_pred, path, title: str = "") -> Path:
    """Confusion matrix (classes x clusters, clusters in Hungarian-matched order)."""
    from .evaluate import matched_confusion

    plt = pyplot()
    M = matched_confusion(y_true, y_pred)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    im = ax.imshow(M, cmap="Blues")
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            ax.text(j, i, str(M[i, j]), ha="center", va="center", fontsize=6,
                    color="white" if M[i, j] > M.max() / 2 else "black")
    ax.set(xlabel="cluster (matched order)", ylabel="label", title=title or "confusion matrix")
    fig.colorbar(im, ax=ax)
    return _save(fig, path)
