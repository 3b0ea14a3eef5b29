"""Deployments: which model each line runs, promoted through the gate, rolled back in one step.

>>> dep = wb.promote(p, "v3", line="A", annotator="erin")       # GateFailed if refused
>>> dep = wb.promote(p, "v3", line="A", annotator="erin", force=True,
...                  reason="night shift, supervisor ok")        # a failed gate, overridden
>>> wb.current_deployment(p, line="A")                            # Deployment or None
>>> wb.rollback(p, line="A", annotator="erin")                    # back to the one before
>>> wb.deployments(p)            # deployment_id, line, version, promoted_by, …, current
>>> wb.deployment_history(p)     # every event: promotions, rollbacks, refusals

A promotion exports the candidate into a hidden staging folder, runs the gate on that very
file, writes ``deployment.json`` and the drift reference, flushes everything, renames the
folder into place, and only then, under the line's lock, switches ``current.json`` if it
still names the deployment the decision was taken against; otherwise it raises
:class:`~workbench.errors.DeploymentConflictError`. Every attempt is appended to
``deployments.jsonl``. See :mod:`workbench.deploy.line_state` for the layout.
"""

from __future__ import annotations

import io
import json
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from workbench.deploy import line_state
from workbench.deploy.gate import evaluate
from workbench.deploy.line_state import Deployment
from workbench.errors import DeploymentConflictError, DeploymentError, GateFailedError
from workbench.store.coerce import as_project, as_version
from workbench.store.labels import now
from workbench.store.leftovers import partial_path, remove_stale

if TYPE_CHECKING:
    from workbench.deploy.gate import GateReport
    from workbench.store.project import Project
    from workbench.train.versions import ModelVersion

#: ``expected`` default: the deployment that is current when :func:`promote` is called.
AT_CALL = "at-call"
DEPLOYMENT_COLUMNS = ["deployment_id", "line", "version", "promoted_by", "promoted_at",
                      "gate_passed", "forced", "reason", "current"]
EVENT_COLUMNS = ["time", "line", "event", "deployment_id", "version", "annotator",
                 "gate_passed", "forced", "reason", "detail"]


def _check_person(annotator: object) -> str:
    if not isinstance(annotator, str) or not annotator.strip():
        raise DeploymentError(f"annotator must be the name of the person deciding, e.g. "
                              f"annotator='erin'; got {annotator!r}.")
    return annotator


def promote(project: Project | str, version: ModelVersion | str, *, line: str,
            annotator: str, force: bool = False, reason: str | None = None,
            expected: str | None = AT_CALL, n_boot: int = 1000) -> Deployment:
    """Make ``version`` the model ``line`` runs, if the gate passes.

    Parameters
    ----------
    project : Project or str
    version : ModelVersion or str
        A version of ``project``.
    line : str
        1-32 letters, digits, ``_`` or ``-`` (a new name starts a new line).
    annotator : str
        Who decides (recorded).
    force : bool, default False
        Promote although the gate failed (not when the exported file itself failed:
        ``onnx_parity``, ``edge_predictor``). Needs ``reason``.
    reason : str, optional
        Why; required with ``force``, recorded either way.
    expected : str or None, optional
        The deployment id the decision was taken against (a dashboard passes the one it
        showed; None: "the line had no deployment"). Default: the current one at the call.
    n_boot : int, default 1000

    Returns
    -------
    Deployment
        The new current deployment of the line.

    Raises
    ------
    GateFailed
        The gate refused (``error.report`` holds the checks); nothing was switched.
    DeploymentConflict
        The line's current model changed while deciding; nothing was switched.
    DeploymentError
        A bad line name, no annotator, ``force`` without a reason, or a write that failed
        (a full disk): nothing was switched, the line runs what it ran.
    """
    line_state.check_line(line)
    _check_person(annotator)
    if force and (not isinstance(reason, str) or not reason.strip()):
        raise DeploymentError("force=True needs a reason, e.g. reason='night shift, "
                              "supervisor ok': it is recorded with the deployment.")
    project, candidate = as_version(project, version)
    folder = line_state.line_folder(project.folder, line)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale(folder)  # staging folders of promotions killed earlier
    pointer = line_state.read_pointer(project.folder, line)
    against = (pointer["deployment_id"] if pointer else None) if expected == AT_CALL \
        else expected
    deployment_id = f"{now():%Y%m%dT%H%M%S}-{candidate.name}-{uuid.uuid4().hex[:6]}"
    event = {"line": line, "deployment_id": deployment_id, "version": candidate.name,
             "annotator": annotator, "reason": reason, "previous": against}
    staging = partial_path(folder / deployment_id)
    staging.mkdir()
    try:
        report = evaluate(project, candidate, None, line=line,
                          model_path=staging / line_state.MODEL, n_boot=n_boot,
                          deployment_id=against)
        forced = not report.passed
        if forced and (report.hard_failures or not force):
            _record(project, "refused_gate", event, report, forced=False,
                    detail=report.summary())
            hint = ("" if report.hard_failures else
                    "\nTo promote anyway: force=True with a reason (recorded).")
            raise GateFailedError(f"the gate refused {candidate.name} for line {line}:\n"
                             f"{report.summary()}{hint}", report)
        _write_folder(project, candidate, staging, deployment_id, line, annotator,
                      report, forced=forced, reason=reason, previous=against)
        staging.rename(folder / deployment_id)
        line_state.fsync_path(folder)
    except (GateFailedError, DeploymentError):
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise _write_failed(project, line, event, error) from error
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error.__cause__, OSError):  # an export that could not write its file
            raise _write_failed(project, line, event, error) from error
        raise
    _switch(project, line, deployment_id, against, annotator, event, report, forced)
    return line_state.load_deployment(project.folder, line, deployment_id)


def _write_failed(project: Project, line: str, event: dict[str, Any],
                  error: BaseException) -> DeploymentError:
    _record(project, "failed", event, None, forced=False, detail=str(error))
    pointer = line_state.read_pointer(project.folder, line)
    still = pointer["deployment_id"] if pointer else "no model"
    return DeploymentError(f"writing the deployment failed ({error}); nothing was switched: "
                           f"line {line} still runs {still}. Free disk space and promote "
                           "again.")


def _switch(project: Project, line: str, deployment_id: str, against: str | None,
            annotator: str, event: dict[str, Any], report: GateReport, forced: bool) -> None:
    """Compare-and-swap the line's pointer under its lock, and record the outcome."""
    with line_state.line_lock(project.folder, line):
        pointer = line_state.read_pointer(project.folder, line)
        current = pointer["deployment_id"] if pointer else None
        if current != against:
            shutil.rmtree(line_state.line_folder(project.folder, line) / deployment_id,
                          ignore_errors=True)
            who = f" by {pointer['changed_by']} at {pointer['changed_at']}" if pointer else ""
            detail = (f"line {line} now runs {current or 'no model'}{who}, not "
                      f"{against or 'no model'}")
            _record(project, "refused_conflict", event, report, forced=forced, detail=detail)
            raise DeploymentConflictError(
                f"the current model changed while you were deciding: {detail}. Nothing was "
                f"switched; look at the new champion and promote {event['version']} again "
                "if it is still better.")
        stack = [*(pointer["stack"] if pointer else []), deployment_id]
        line_state.switch_pointer(project.folder, line, {
            "deployment_id": deployment_id, "stack": stack, "changed_by": annotator,
            "changed_at": now().isoformat(), "event": "promote"})
        _record(project, "promote", event, report, forced=forced, detail=None)


def _record(project: Project, kind: str, event: dict[str, Any], report: GateReport | None, *,
            forced: bool, detail: str | None) -> None:
    line_state.append_event(project.folder, {
        "time": now().isoformat(), "event": kind, **event,
        "gate_passed": None if report is None else report.passed, "forced": forced,
        "detail": detail})


# -- the folder ------------------------------------------------------------------------------
def _write_folder(project: Project, candidate: ModelVersion, staging: Path, deployment_id: str,
                  line: str, annotator: str, report: GateReport, *, forced: bool,
                  reason: str | None, previous: str | None) -> None:
    """reference.npz and deployment.json beside the exported model, every file flushed."""
    reference = _reference(project, candidate)
    buffer = io.BytesIO()
    np.savez(buffer, **reference.pop("arrays"))
    line_state.write_synced(staging / line_state.REFERENCE, buffer.getvalue())
    line_state.fsync_path(staging / line_state.MODEL)
    files = {name: line_state.sha256(staging / name)
             for name in (line_state.MODEL, line_state.REFERENCE)}
    metadata = _model_metadata(staging / line_state.MODEL, candidate)
    record = {
        "format_version": line_state.FORMAT_VERSION, "deployment_id": deployment_id,
        "project": project.name, "line": line, "version": candidate.name,
        "task": candidate.task, "classes": candidate.classes, "model": line_state.MODEL,
        "preprocessing": metadata,
        "operating_point": candidate.record.get("operating_point"),
        "label_book": _label_book_version(project),
        "data_snapshot": _snapshot_id(candidate),
        "reference": {"file": line_state.REFERENCE, **reference},
        "gate": report.to_dict(), "forced": forced, "reason": reason,
        "previous": previous, "promoted_by": annotator, "promoted_at": now().isoformat(),
        "sha256": files}
    line_state.write_synced(staging / line_state.RECORD,
                            json.dumps(record, indent=1, default=str).encode())
    line_state.fsync_path(staging)


def _model_metadata(path: Path, candidate: ModelVersion) -> dict[str, Any]:
    """Input size, normalisation and layout the exported graph applies itself."""
    from workbench.deploy.edge import EdgeDetector, EdgePredictor

    loader = EdgeDetector if candidate.task == "detection" else EdgePredictor
    meta = loader(path).metadata
    if candidate.task == "anomaly":  # resized outside the graph, keeping the aspect ratio
        settings = candidate.anomaly.settings
        return {"image_size": meta.get("image_size"), "input": meta.get("input"),
                "mean": list(settings.mean), "std": list(settings.std),
                "inside_the_graph": False, "decoding": None,
                "threshold": meta.get("threshold"), "normal": meta.get("normal")}
    network = candidate.detector if candidate.task == "detection" else candidate.classifier
    return {"image_size": meta.get("image_size"), "input": meta.get("input"),
            "mean": np.asarray(network.mean).flatten().tolist(),
            "std": np.asarray(network.std).flatten().tolist(),
            "inside_the_graph": True, "decoding": meta.get("decoding")}


def _label_book_version(project: Project) -> dict[str, Any] | None:
    from workbench.store.labelbook import book_history

    history = book_history(project)
    if history.empty:
        return None
    return {"edits": len(history), "updated_at": str(history["time"].max())}


def _snapshot_id(candidate: ModelVersion) -> dict[str, Any]:
    snapshot = candidate.snapshot()
    columns = [c for c in ("sample_id", "content_hash", "label") if c in snapshot]
    text = snapshot[columns].astype(str).to_csv(index=False).encode()
    import hashlib

    return {"id": hashlib.sha256(text).hexdigest()[:16], "n_images": len(snapshot),
            "version": candidate.name}


def _reference(project: Project, candidate: ModelVersion) -> dict[str, Any]:
    """The drift reference of the training images (real ones): image statistics, labels
    and, when the backbone is at hand, embeddings; numpy arrays, no pickles."""
    from PIL import Image

    from workbench.metrics.drift_tests import PROPERTIES, image_properties
    from workbench.store import _db as database

    snapshot = candidate.snapshot()
    if candidate.task == "anomaly":  # it learned from the normal images only (fold >= 0)
        snapshot = snapshot[snapshot["fold"] >= 0]
    synthetic = set(project.dataset.match_tags(database.SYNTHETIC_TAG).values("id"))
    snapshot = snapshot[~snapshot["sample_id"].isin(synthetic)]
    rows, paths, labels = [], [], []
    for row in snapshot.itertuples(index=False):
        try:
            with Image.open(row.filepath) as image:
                props = image_properties(np.asarray(image.convert("L")))
        except (OSError, ValueError):
            continue
        rows.append([props[name] for name in PROPERTIES])
        paths.append(row.filepath)
        labels.append(str(getattr(row, "label", "")))
    arrays: dict[str, np.ndarray] = {
        "properties": np.asarray(rows, dtype=np.float64).reshape(-1, len(PROPERTIES)),
        "property_names": np.array(PROPERTIES), "labels": np.array(labels, dtype=str)}
    note = None
    try:
        from workbench.train.embeddings import EmbeddingCache

        config = candidate.config
        arrays["vectors"] = EmbeddingCache(project.folder / "embeddings").embed(
            paths, backbone=config["backbone"], weights=config.get("weights", "default"),
            image_size=config["image_size"], progress=False).vectors.astype(np.float32)
    except Exception as error:  # the statistics alone still serve the line's checks
        note = f"no embeddings: {type(error).__name__}: {error}"
    shares = pd.Series(labels).value_counts(normalize=True)
    return {"arrays": arrays, "n_images": len(paths),
            "properties": list(PROPERTIES), "class_shares": shares.round(4).to_dict(),
            "embeddings": None if note else {
                "backbone": candidate.config.get("backbone"),
                "image_size": candidate.config.get("image_size")},
            "note": note}


# -- reading and rolling back -----------------------------------------------------------------
def current_deployment(project: Project | str, *, line: str) -> Deployment | None:
    """What ``line`` runs now (None: nothing promoted to it yet)."""
    project = as_project(project)
    pointer = line_state.read_pointer(project.folder, line)
    if pointer is None:
        return None
    return line_state.load_deployment(project.folder, line, pointer["deployment_id"])


def rollback(project: Project | str, *, line: str, annotator: str,
             reason: str | None = None) -> Deployment:
    """Switch ``line`` back to the deployment it ran before the current one (an appended
    event; the rolled-back folder stays on disk).

    Raises
    ------
    DeploymentError
        A bad line name, a line with nothing before its current deployment, or a previous
        folder whose files fail their checksums (nothing is switched then).
    """
    line_state.check_line(line)
    _check_person(annotator)
    project = as_project(project)
    with line_state.line_lock(project.folder, line):
        pointer = line_state.read_pointer(project.folder, line)
        if pointer is None:
            known = ", ".join(line_state.lines(project.folder)) or "none yet"
            raise DeploymentError(f"line {line!r} of {project.name!r} has no deployment: "
                                  f"nothing to roll back (lines: {known}).")
        stack = list(pointer["stack"])
        if len(stack) < 2:
            raise DeploymentError(f"nothing to roll back to: {stack[-1]} is the first "
                                  f"deployment of line {line}; promote another version "
                                  "instead.")
        target = line_state.load_deployment(project.folder, line, stack[-2])
        problems = target.verify()
        if problems:
            raise DeploymentError(f"cannot roll back to {target.deployment_id}: "
                                  f"{'; '.join(problems)}. Line {line} still runs {stack[-1]}.")
        line_state.switch_pointer(project.folder, line, {
            "deployment_id": target.deployment_id, "stack": stack[:-1],
            "changed_by": annotator, "changed_at": now().isoformat(), "event": "rollback"})
        line_state.append_event(project.folder, {
            "time": now().isoformat(), "event": "rollback", "line": line,
            "deployment_id": target.deployment_id, "version": target.version,
            "annotator": annotator, "reason": reason, "previous": stack[-1],
            "gate_passed": None, "forced": False, "detail": f"from {stack[-1]}"})
    return target


def deployment_history(project: Project | str, *, line: str | None = None) -> pd.DataFrame:
    """Every event, oldest first: time, line, event (promote, rollback, refused_gate,
    refused_conflict, failed), deployment_id, version, annotator, gate_passed, forced,
    reason, detail."""
    project = as_project(project)
    if line is not None:
        line_state.check_line(line)
    events = [e for e in line_state.read_events(project.folder)
              if line is None or e.get("line") == line]
    frame = pd.DataFrame(events, columns=EVENT_COLUMNS)
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    return frame


def deployments(project: Project | str, line: str | None = None) -> pd.DataFrame:
    """Every promotion, oldest first: deployment_id, line, version, promoted_by,
    promoted_at, gate_passed, forced, reason, current (what the line runs now).

    Raises
    ------
    DeploymentError
        A malformed ``line``, or one that never had a deployment (the message lists them).
    """
    project = as_project(project)
    known = line_state.lines(project.folder)
    if line is not None and line_state.check_line(line) not in known:
        raise DeploymentError(f"line {line!r} of {project.name!r} has no deployment (lines: "
                              f"{', '.join(known) or 'none yet'}).")
    current = {name: (line_state.read_pointer(project.folder, name) or {}).get("deployment_id")
               for name in known}
    rows = [{"deployment_id": e["deployment_id"], "line": e["line"], "version": e["version"],
             "promoted_by": e["annotator"], "promoted_at": e["time"],
             "gate_passed": e["gate_passed"], "forced": e["forced"], "reason": e["reason"],
             "current": current.get(e["line"]) == e["deployment_id"]}
            for e in line_state.read_events(project.folder)
            if e.get("event") == "promote" and (line is None or e["line"] == line)]
    frame = pd.DataFrame(rows, columns=DEPLOYMENT_COLUMNS)
    frame["promoted_at"] = pd.to_datetime(frame["promoted_at"], utc=True, format="ISO8601")
    return frame


__all__ = ["DEPLOYMENT_COLUMNS", "Deployment", "current_deployment", "deployment_history",
           "deployments", "promote", "rollback"]
