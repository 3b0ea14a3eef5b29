"""What the landing page says about each project, read from the project folders alone (no
database, no FiftyOne): the last drift check and the model each line runs.

``loupe serve``'s landing page (``templates/loupe/tree-lab.html``) renders
:func:`project_states`; the server reads the folders at every visit, so the page is as fresh
as the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from workbench.config import projects_dir
from workbench.deploy import line_state
from workbench.errors import LoupeError
from workbench.store.drift_checks import history_in


@dataclass(frozen=True)
class LineState:
    """The deployment a line runs now."""

    line: str
    version: str
    since: str
    by: str


@dataclass(frozen=True)
class ProjectState:
    """A project as the landing page lists it."""

    name: str
    #: "drift", "no drift" or "not checked".
    drift: str
    #: Words on the last check: when (UTC, ISO), batch, what moved; empty when none.
    drift_detail: str = ""
    drift_time: str = ""
    lines: list[LineState] = field(default_factory=list)


def _lines(folder: Path) -> list[LineState]:
    found = []
    for line in line_state.lines(folder):
        try:
            pointer = line_state.read_pointer(folder, line)
            if not pointer:
                continue
            record = line_state.load_deployment(folder, line, pointer["deployment_id"]).record
        except (LoupeError, OSError, KeyError):  # a damaged line is not the landing's to fix
            continue
        found.append(LineState(line=line, version=str(record.get("version", "?")),
                               since=str(record.get("promoted_at", "")),
                               by=str(record.get("promoted_by", ""))))
    return found


def project_state(folder: Path) -> ProjectState:
    """The landing page's facts about the project whose folder is ``folder``."""
    checks = history_in(folder / "drift")
    if checks.empty:
        return ProjectState(name=folder.name, drift="not checked", lines=_lines(folder))
    last = checks.iloc[-1]
    when = pd.Timestamp(last["time"])
    detail = f"{last['batch']}, {last['n_images']} images: {last['summary']}"
    return ProjectState(name=folder.name, drift="drift" if bool(last["drifted"]) else "no drift",
                        drift_detail=detail, drift_time=when.isoformat(), lines=_lines(folder))


def project_states(first: str | None = None) -> list[ProjectState]:
    """Every project folder under Loupe's home, ``first`` (the served project) first."""
    return project_page(first, per_page=None).states


#: Projects the landing page lists at once.
PER_PAGE = 25


@dataclass(frozen=True)
class ProjectPage:
    """One page of the landing page's project list."""

    states: list[ProjectState]
    #: Projects whose name contains ``search`` (all of them without one), and all.
    matching: int
    total: int
    #: 0-based page shown, of ``pages`` (at least 1).
    page: int
    pages: int
    search: str


def project_page(first: str | None = None, *, search: str = "", page: int = 0,
                 per_page: int | None = PER_PAGE) -> ProjectPage:
    """The projects whose name contains ``search`` (case-insensitive), ``first`` (the served
    project) first, then by name, ``per_page`` at a time (all with None). Only the page's
    project folders are read, so a visit costs the same with 10 projects or 1,000."""
    base = projects_dir()
    names = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    needle = search.strip().casefold()
    matching = sorted((n for n in names if needle in n.casefold()),
                      key=lambda name: (name != first, name))
    size = len(matching) if per_page is None else max(1, int(per_page))
    pages = max(1, -(-len(matching) // max(size, 1)))
    page = min(max(0, int(page)), pages - 1)
    shown = matching[page * size:(page + 1) * size]
    return ProjectPage(states=[project_state(base / name) for name in shown],
                       matching=len(matching), total=len(names), page=page, pages=pages,
                       search=search.strip())


__all__ = ["PER_PAGE", "LineState", "ProjectPage", "ProjectState", "project_page",
           "project_state", "project_states"]
