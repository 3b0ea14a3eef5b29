"""Drift checks as stored: ``<project>/drift/checks.jsonl`` (one line a check) and one
``<check id>.json`` report each; :mod:`workbench.monitor.drift` runs the checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from workbench.store.project import Project


def folder(project: Project) -> Path:
    """Where a project's drift checks are kept."""
    return project.folder / "drift"


def history(project: Project) -> pd.DataFrame:
    """Every stored drift check of a project, oldest first: check_id, time, version,
    batch, n_images, n_outliers, drifted, p_value, statistic, alpha, method, summary."""
    return history_in(folder(project))


def history_in(drift_folder: Path) -> pd.DataFrame:
    """:func:`history` read from a project's ``drift`` folder alone (no database): what a
    server without FiftyOne, such as the landing page's, can read."""
    columns = ["check_id", "time", "version", "batch", "n_images", "n_outliers", "drifted",
               "p_value", "statistic", "alpha", "method", "summary"]
    path = drift_folder / "checks.jsonl"
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:  # a line cut short by a crash: the others still count
                continue
    frame = pd.DataFrame(rows, columns=columns)
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    return frame


__all__ = ["folder", "history", "history_in"]
