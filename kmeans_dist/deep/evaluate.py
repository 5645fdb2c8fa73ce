"""Clustering scores against labels (ACC, NMI, ARI) through :mod:`kmeans_dist.metrics`, and the confusion
matrix with the clusters matched to the classes."""
from __future__ import annotations

import numpy as np

from ..metrics import adjusted_rand_score, clustering_accuracy, normalized_mutual_info_score

__all__ = ["clustering_scores", "confusion", "matched_confusion"]


def clustering_scores(y_true, y_pred) -> dict:
    """ACC (Hungarian-matched accuracy), NMI and ARI of a partition against labels.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        Class labels and cluster labels.

    Returns
    -------
    dict
        ``{"acc", "nmi", "ari"}``, each in [0, 1] (ARI may be negative).

    Examples
    --------
    >>> clustering_scores([0, 0, 1, 1], [1, 1, 0, 0])
    {'acc': 1.0, 'nmi': 1.0, 'ari': 1.0}
    """
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    return {"acc": float(clustering_accuracy(yt, yp)), "nmi": float(normalized_mutual_info_score(yt, yp)),
            "ari": float(adjusted_rand_score(yt, yp))}


def confusion(y_true, y_pred) -> np.ndarray:
    """Contingency table, true classes x clusters (labels are non-negative integers)."""
    y_true = np.asarray(y_true).astype(np.int64)
    y_pred = np.asarray(y_pred).astype(np.int64)
    M = np.zeros((int(y_true.max()) + 1, int(y_pred.max()) + 1), dtype=np.int64)
    np.add.at(M, (y_true, y_pred), 1)
    return M


def matched_confusion(y_true, y_pred) -> np.ndarray:
    """The confusion matrix with the clusters reordered by the Hungarian matching to the classes."""
    from scipy.optimize import linear_sum_assignment

    M = confusion(y_true, y_pred)
    r, c = linear_sum_assignment(-M)
    order = list(c[np.argsort(r)]) + [j for j in range(M.shape[1]) if j not in set(c)]
    return M[:, order]
