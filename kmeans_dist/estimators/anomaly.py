"""Anomaly scores from a fitted clustering: the distance of every sample to its nearest center.

A sample far from every center is unusual for the model.  :class:`AnomalyScoresMixin` gives every
estimator of the k-means family (they all have ``transform``, the distance to every center)

- :meth:`~AnomalyScoresMixin.score_samples`: minus the distance to the nearest center, so that, as
  scikit-learn's outlier detectors, larger means more normal;
- :meth:`~AnomalyScoresMixin.anomaly_threshold`: the score below which a fraction ``contamination`` of the
  given samples lies;
- :meth:`~AnomalyScoresMixin.predict_outliers`: ``-1`` for the outliers, ``1`` for the inliers, as
  scikit-learn's ``OutlierMixin.fit_predict``.

The distance is the one the estimator's ``transform`` returns: Euclidean for :class:`kmeans_dist.KMeans`,
cosine for :class:`kmeans_dist.SphericalKMeans`.
"""
from __future__ import annotations

import numpy as np

from .validation import Interval, NONE, validate_params

__all__ = ["AnomalyScoresMixin"]


class AnomalyScoresMixin:
    """Anomaly scores for fitted clusterers that have ``transform`` (distance to every center).

    Examples
    --------
    >>> import numpy as np
    >>> from kmeans_dist import KMeans
    >>> X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [10.0, 10.0], [10.0, 11.0], [11.0, 10.0]])
    >>> km = KMeans(n_clusters=2, random_state=0, client=False).fit(X)
    >>> km.score_samples(np.array([[0.0, 0.5], [30.0, 30.0]])).round(2).tolist()
    [-0.37, -27.81]
    >>> km.predict_outliers(np.array([[0.0, 0.5], [30.0, 30.0]]), threshold=-5.0).tolist()
    [1, -1]
    """

    def score_samples(self, X):
        """Opposite of the distance of every sample to its nearest center (larger is more normal).

        Parameters
        ----------
        X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
            Samples (a store path or fsspec URL is opened lazily).

        Returns
        -------
        scores : ndarray or dask array of shape (n_samples,)
            ``-min_j distance(x, center_j)``; lazy (a dask array) for lazy input.
        """
        D = self.transform(X)
        return -D.min(axis=1)

    def anomaly_threshold(self, X, contamination=0.01):
        """The score below which a fraction ``contamination`` of the samples of X lies.

        Parameters
        ----------
        X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
            Reference samples (often the training data).  For lazy input the scores (one float per
            sample, not the rows) are computed and brought to the client for an exact quantile.
        contamination : float in (0, 0.5], default=0.01
            Expected fraction of outliers.

        Returns
        -------
        float
            The ``contamination`` quantile of :meth:`score_samples` (linear interpolation).
        """
        validate_params({"contamination": [Interval(float, 0, 0.5, "right")]}, {"contamination": contamination},
                        f"{type(self).__name__}.anomaly_threshold")
        s = self.score_samples(X)
        if hasattr(s, "compute"):
            s = s.compute()
        s = np.asarray(s.get() if hasattr(s, "get") and not isinstance(s, np.ndarray) else s, dtype=np.float64)
        return float(np.quantile(s, contamination))

    def predict_outliers(self, X, contamination=0.01, threshold=None):
        """``-1`` for the outliers of X, ``1`` for the inliers (scikit-learn's outlier convention).

        Parameters
        ----------
        X : array-like, dask array, xarray DataArray or str of shape (n_samples, n_features)
            Samples.
        contamination : float in (0, 0.5], default=0.01
            Used when ``threshold`` is None: the threshold is :meth:`anomaly_threshold` of X itself.
        threshold : float or None, default=None
            Scores strictly below it are outliers (e.g. ``anomaly_threshold`` of the training data).

        Returns
        -------
        ndarray or dask array of shape (n_samples,)
            ``-1`` or ``1`` (int64); lazy for lazy input when ``threshold`` is given.
        """
        validate_params({"threshold": [Interval(float, None, None), NONE]}, {"threshold": threshold},
                        f"{type(self).__name__}.predict_outliers")
        if threshold is None:
            threshold = self.anomaly_threshold(X, contamination)
        s = self.score_samples(X)
        out = (s >= threshold) * 2 - 1
        return out.astype(np.int64) if hasattr(out, "astype") else out
