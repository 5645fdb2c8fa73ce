"""Prefect artifacts of the clustering flows: the markdown report, the per-iteration history table and
a progress bar updated during Lloyd."""
from __future__ import annotations

import re
import time

__all__ = ["artifact_key", "LloydProgress", "publish_report", "publish_history"]


def artifact_key(*parts) -> str:
    """A valid artifact key (lowercase letters, digits and dashes)."""
    s = "-".join(str(p) for p in parts if p not in (None, ""))
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", s.lower())).strip("-")[:200] or "artifact"


class LloydProgress:
    """Progress artifact of one fit, updated at most every ``min_interval`` seconds (and at the end).

    Safe to call from a task on a Dask worker; a failing API call never fails the fit.
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
        self(iteration, iteration, force=True)


def publish_history(history: list[dict], key: str, description: str = "Per-iteration history") -> None:
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
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown, key=artifact_key(key), description=description)


def _num(v):
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
