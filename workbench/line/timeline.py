"""Everything that happened to a line and its project, who and when, newest first.

One frame merged from the records each step keeps: batch imports (the samples'
``batch`` and ``imported_at``), drift checks (``p.drift_history()``), label edits (the
samples' append-only histories, counted per person and day), trainings (the job queue
and the model versions), promotions, rollbacks and refused attempts
(``wb.deployment_history``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from workbench.deploy import line_state
from workbench.deploy.deployments import deployment_history
from workbench.jobs.queue import list_jobs
from workbench.store.coerce import as_project

if TYPE_CHECKING:
    from workbench.store.project import Project

TIMELINE_COLUMNS = ["time", "kind", "who", "what", "line"]
#: Deployment events in plain words.
_EVENTS = {"promote": "promotion", "rollback": "rollback", "refused_gate": "refused promotion",
           "refused_conflict": "refused promotion", "failed": "failed promotion"}


def line_timeline(project: Project | str, *, line: str | None = None) -> pd.DataFrame:
    """The project's history as one table, newest first.

    Parameters
    ----------
    project : Project or str
    line : str, optional
        Keep only this line's deployment events (imports, checks, edits and trainings are
        the project's and always shown).

    Returns
    -------
    pandas.DataFrame
        time (UTC), kind (``import``, ``drift check``, ``label edits``, ``training``,
        ``new version``, ``promotion``, ``rollback``, ``refused promotion``, ``failed
        promotion``), who ("" when the record keeps no name), what (one sentence), line
        ("" for project-wide events).
    """
    if line is not None:
        line_state.check_line(line)
    project = as_project(project)
    parts = [_imports_and_edits(project), _drift(project), _trainings(project),
             _versions(project), _deployments(project, line)]
    frame = pd.concat([p for p in parts if len(p)], ignore_index=True) \
        if any(len(p) for p in parts) else pd.DataFrame(columns=TIMELINE_COLUMNS)
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    return frame.sort_values("time", ascending=False, kind="stable")[TIMELINE_COLUMNS] \
        .reset_index(drop=True)


def _frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=TIMELINE_COLUMNS)
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    return frame


def _imports_and_edits(project: Project) -> pd.DataFrame:
    dataset = project.dataset
    dataset.reload()
    fields = dataset.get_field_schema()
    batches = (dataset.values("batch") if "batch" in fields
               else [None] * len(dataset))
    ids, imported = dataset.values("id"), dataset.values("imported_at")
    histories = project.histories(ids)
    rows = []
    samples = pd.DataFrame({"batch": batches, "imported_at": imported})
    samples = samples.dropna(subset=["imported_at"])
    for batch, group in samples.groupby(samples["batch"].fillna(""), sort=False):
        name = f"batch {batch}" if batch else "images without a batch name"
        rows.append({"time": group["imported_at"].max(), "kind": "import", "who": "",
                     "what": f"{name}: {len(group)} image(s) imported", "line": ""})
    edits = [{"who": entry.get("annotator", ""), "time": entry.get("time")}
             for sid, stamp in zip(ids, imported, strict=True)
             for entry in histories.get(sid, [])
             if entry.get("time") is not None and entry.get("time") != stamp]
    if edits:
        frame = pd.DataFrame(edits)
        frame["time"] = pd.to_datetime(frame["time"], utc=True)
        frame["day"] = frame["time"].dt.date
        for (who, day), group in frame.groupby(["who", "day"], sort=False):
            rows.append({"time": group["time"].max(), "kind": "label edits", "who": who,
                         "what": f"{len(group)} label edit(s) on {day:%Y-%m-%d}", "line": ""})
    return _frame(rows)


def _drift(project: Project) -> pd.DataFrame:
    checks = project.drift_history()
    rows = [{"time": row.time, "kind": "drift check", "who": "",
             "what": f"batch {row.batch}: {'DRIFT' if row.drifted else 'no drift'} — "
                     f"{row.summary}", "line": ""}
            for row in checks.itertuples(index=False)]
    return _frame(rows)


def _trainings(project: Project) -> pd.DataFrame:
    jobs = list_jobs(project)
    rows = []
    for row in jobs.itertuples(index=False):
        outcome = {"done": f"made {row.result}", "failed": f"failed: {row.error}",
                   "cancelled": f"cancelled by {row.cancelled_by}"}.get(row.state, row.state)
        rows.append({"time": row.submitted_at, "kind": "training", "who": row.submitted_by,
                     "what": f"job {row.job_id} ({row.arguments.get('mode', 'auto')}): "
                             f"{outcome}", "line": ""})
    return _frame(rows)


def _versions(project: Project) -> pd.DataFrame:
    models = project.models()
    rows = []
    for row in models.itertuples(index=False):
        figure = (f"accuracy at training {row.accuracy:.1%}"
                  if isinstance(row.accuracy, float) and row.accuracy == row.accuracy else "")
        rows.append({"time": row.created, "kind": "new version", "who": "",
                     "what": f"{row.name} ({row.mode}"
                             f"{', from ' + row.parent if isinstance(row.parent, str) else ''})"
                             f"{': ' + figure if figure else ''}", "line": ""})
    return _frame(rows)


def _deployments(project: Project, line: str | None) -> pd.DataFrame:
    events = deployment_history(project, line=line)
    rows = []
    for row in events.itertuples(index=False):
        kind = _EVENTS.get(row.event, row.event)
        what = f"{row.version} on line {row.line}"
        if row.event == "promote" and row.forced:
            what += f", forced: {row.reason}"
        elif row.event == "rollback":
            what = f"back to {row.version} on line {row.line}"
        elif row.event != "promote" and isinstance(row.detail, str) and row.detail:
            what += f": {row.detail.splitlines()[0]}"
        rows.append({"time": row.time, "kind": kind, "who": row.annotator or "",
                     "what": what, "line": row.line})
    return _frame(rows)
