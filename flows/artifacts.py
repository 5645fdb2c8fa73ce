"""Prefect artifacts of the clustering flows: the markdown report, the per-iteration history table and
a progress bar updated during Lloyd."""
from __future__ import annotations

import re
import time

__all__ = ["artifact_key", "LloydProgress", "publish_report", "publish_history"]


def artifact_key(*parts) -> str:
    """Join ``parts`` into a valid artifact key (lowercase letters, digits and dashes).

    Empty and ``None`` parts are dropped, every other character becomes a dash, runs of dashes
    collapse to one, and the key is cut to 200 characters.

    Parameters
    ----------
    *parts : object
        The pieces of the key (converted with ``str``).

    Returns
    -------
    str
        The key; ``'artifact'`` when nothing is left.

    Examples
    --------
    >>> artifact_key("Lloyd progress", None, "fit_0")
    'lloyd-progress-fit-0'
    >>> artifact_key("", "--")
    'artifact'
    """
    s = "-".join(str(p) for p in parts if p not in (None, ""))
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", s.lower())).strip("-")[:200] or "artifact"


class LloydProgress:
    """Progress artifact of one fit, updated at most every ``min_interval`` seconds (and at the end).

    Safe to call from a task on a Dask worker; a failing API call never fails the fit.  Call the
    instance as ``progress(iteration, max_iter)`` (the ``progress`` callback of
    :func:`pipelines.stages.fit_lloyd`); the first call creates the artifact, with key
    ``lloyd-progress-<name>``.

    Parameters
    ----------
    name : str
        Name of the fit.
    description : str, optional
        Description of the artifact (default: ``'Lloyd iterations of <name>'``).
    min_interval : float, default: 0.5
        Least number of seconds between two updates.
    """

    def __init__(self, name: str, description: str | None = None, min_interval: float = 0.5):
        self.name = name
        self.description = description or f"Lloyd iterations of {name}"
        self.min_interval = min_interval
        self._id = None
        self._last = 0.0

    def __call__(self, iteration: int, max_iter: int, force: bool = False):
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        pct = max(0.0, min(100.0, 100.0 * iteration / max(1, max_iter)))
        now = time.monotonic()
        if not force and self._id is not None and now - self._last < self.min_interval:
            return
        self._last = now
        try:
            if self._id is None:
                self._id = create_progress_artifact(pct, key=artifact_key("lloyd-progress", self.name),
                                                    description=self.description)
            else:
                update_progress_artifact(self._id, pct, description=f"{self.description}: iteration {iteration}")
        except Exception:  # noqa: BLE001 - progress is cosmetic
            pass

    def done(self, iteration: int):
        """Set the progress to 100 %, whatever the time since the last update.

        Parameters
        ----------
        iteration : int
            Number of iterations the fit ran.
        """
        self(iteration, iteration, force=True)


def publish_history(history: list[dict], key: str, description: str = "Per-iteration history") -> None:
    """Publish a fit's history as a Prefect table artifact.

    One row per iteration (the first 2000) with ``iteration``, ``inertia``, ``center_shift`` and
    ``seconds``; nothing is published for an empty history.

    Parameters
    ----------
    history : list of dict
        Per-iteration entries of a fit (its ``history``).
    key : str
        Artifact key (made valid with :func:`artifact_key`).
    description : str, default: "Per-iteration history"
        Description of the artifact.
    """
    from prefect.artifacts import create_table_artifact

    rows = []
    for i, h in enumerate(history[:2000]):
        rows.append({"iteration": h.get("iteration", i + 1),
                     "inertia": _num(h.get("inertia")),
                     "center_shift": _num(h.get("center_shift")),
                     "seconds": _num(h.get("seconds"))})
    if rows:
        create_table_artifact(rows, key=artifact_key(key), description=description)


def publish_report(markdown: str, key: str, description: str) -> None:
    """Publish a report as a Prefect markdown artifact.

    Parameters
    ----------
    markdown : str
        The report text.
    key : str
        Artifact key (made valid with :func:`artifact_key`).
    description : str
        Description of the artifact.
    """
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown, key=artifact_key(key), description=description)


def _num(v):
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
