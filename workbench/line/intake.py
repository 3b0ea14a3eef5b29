"""New images from the line: import a batch, tag it, and check it for drift in one step.

>>> rep = wb.import_batch(p, "inbox/night-2026-12-05", batch="night-2026-12-05",
...                       annotator="erin")                  # a folder on the server
>>> rep = wb.import_batch(p, upload.value, batch="night-2026-12-05",
...                       annotator="erin")                  # or a browser upload
>>> rep.imported.added, rep.drift.drifted, rep.reference      # what came, what moved, vs what
>>> print(rep.summary())

The batch is checked against the model the line runs: the version of the line's current
deployment (``wb.current_deployment``). With ``line=None`` that is the project's only line
with a deployment; when nothing is deployed, the newest version, and :attr:`IntakeReport.
reference` says so. The check is stored in the drift history (``p.drift_history()``) under
the batch's name. A batch too small to check (fewer than 5 readable images) or a project
with no version yet is imported all the same; ``drift_skipped`` says why there is no check.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from workbench.deploy import line_state
from workbench.deploy.deployments import current_deployment
from workbench.errors import ProjectError
from workbench.line.uploads import (
    MAX_FILE_BYTES,
    MAX_UPLOAD_BYTES,
    save_uploads,
)
from workbench.monitor.drift import DEFAULT_ALPHA, MIN_IMAGES, DriftReport, drift
from workbench.store.coerce import as_project
from workbench.store.ingest.scan import ImportReport, check_batch, display_path

if TYPE_CHECKING:
    from workbench.store.project import Project

#: What a check was run against.
Against = Literal["deployment", "newest_version", "none"]


@dataclass
class IntakeReport:
    """What :func:`import_batch` did.

    Attributes
    ----------
    project, batch : str
    folder : Path
        Where the batch's files are (an upload: ``<project>/uploads/<batch>/``).
    imported : ImportReport
        ``added``, ``duplicates``, ``rejected``, ``converted``.
    line : str or None
        The line whose deployment the batch was checked against (None: no deployment).
    version, deployment_id : str or None
        The version checked against, and its deployment when there is one.
    against : {"deployment", "newest_version", "none"}
        The line's current deployment; the newest version, because nothing is deployed
        (to that line); or nothing, because the project has no version yet.
    reference : str
        The same, in plain words.
    drift : DriftReport or None
        The stored check; None when there is none (``drift_skipped`` says why).
    drift_skipped : str or None
    """

    project: str
    batch: str
    folder: Path
    imported: ImportReport
    line: str | None
    version: str | None
    deployment_id: str | None
    against: Against
    reference: str
    drift: DriftReport | None = None
    drift_skipped: str | None = None

    @property
    def drifted(self) -> bool | None:
        """Whether the batch drifted (None: not checked)."""
        return None if self.drift is None else self.drift.drifted

    def summary(self) -> str:
        """Two sentences: what was imported, and the drift check against what."""
        text = f"batch {self.batch!r}: {self.imported.summary()}. "
        if self.drift is None:
            return text + f"No drift check: {self.drift_skipped}"
        return text + f"Checked against {self.reference}: {self.drift.summary()}"

    def __repr__(self) -> str:
        return f"IntakeReport({self.summary()})"


def import_batch(project: Project | str, path_or_uploads: Any, *, batch: str,
                 annotator: str, line: str | None = None, alpha: float = DEFAULT_ALPHA,
                 max_file_bytes: int = MAX_FILE_BYTES,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES,
                 progress: bool = False) -> IntakeReport:
    """Import a batch of new, unlabelled images, tag it, and check it for drift.

    Parameters
    ----------
    project : Project or str
    path_or_uploads : str, Path, FileUpload value or sequence of (name, bytes)
        A folder on the server (e.g. ``wb.inbox_batch(p, name)``), or the files of a
        browser upload, written first to ``<project>/uploads/<batch>/`` (see
        :func:`workbench.line.uploads.save_uploads`).
    batch : str
        The batch's name: every new sample's ``batch`` field, the name in the drift history.
    annotator : str
        Who imports (recorded).
    line : str, optional
        Check against this line's current deployment. None: the project's only line with a
        deployment; the newest version when none has one.
    alpha : float, default 0.01
        The drift check's false-alarm rate.
    max_file_bytes, max_upload_bytes : int
        Size limits of an upload, per file and in all.
    progress : bool, default False

    Returns
    -------
    IntakeReport

    Raises
    ------
    UploadRejectedError
        An upload with a file that is not an image, too large or badly named (named in the
        message); nothing is stored.
    ProjectError
        Several lines have a deployment and ``line`` is not given; nothing is imported.
    """
    project = as_project(project)
    name = check_batch(batch)
    if name is None:
        raise ValueError("batch must name the batch (e.g. batch='night-2026-12-05'); got None")
    if not isinstance(annotator, str) or not annotator.strip():
        raise ValueError(f"annotator must be the name of the person importing, e.g. "
                         f"annotator='erin'; got {annotator!r}")
    target = _reference(project, line)  # a bad line fails before anything is written
    if isinstance(path_or_uploads, str | os.PathLike):
        folder = Path(path_or_uploads)
        if not folder.is_dir():
            raise FileNotFoundError(f"batch folder not found: {display_path(folder)}")
    else:
        folder = save_uploads(project, path_or_uploads, batch=name,
                              max_file_bytes=max_file_bytes, max_upload_bytes=max_upload_bytes)
    imported = project.import_folder(folder, layout="unlabeled", annotator=annotator,
                                     batch=name, progress=progress)
    report = IntakeReport(project=project.name, batch=name, folder=folder, imported=imported,
                          **target)
    if report.version is None:
        report.drift_skipped = report.reference
        return report
    paths = _batch_paths(project, imported)
    if len(paths) < MIN_IMAGES:
        report.drift_skipped = (f"the batch has {len(paths)} importable image(s); a drift "
                                f"check needs at least {MIN_IMAGES} (20 or more recommended)")
        return report
    try:
        report.drift = drift(project, report.version, paths, alpha=alpha, batch_name=name,
                             progress=progress)
    except (ValueError, FileNotFoundError) as error:  # ProjectError is a ValueError
        report.drift_skipped = f"the check could not run: {error}"
    return report


def _reference(project: Project, line: str | None) -> dict[str, Any]:
    """The version a batch is checked against: ``line``, ``version``, ``deployment_id``,
    ``against`` and ``reference`` (plain words)."""
    if line is None:
        deployed = [name for name in line_state.lines(project.folder)
                    if current_deployment(project, line=name) is not None]
        if len(deployed) > 1:
            raise ProjectError(
                f"project {project.name!r} has deployments on lines {', '.join(deployed)}: "
                f"say which line the batch comes from, e.g. line={deployed[0]!r}")
        line = deployed[0] if deployed else None
    else:
        line_state.check_line(line)
    deployment = current_deployment(project, line=line) if line is not None else None
    if deployment is not None:
        return {"line": line, "version": deployment.version,
                "deployment_id": deployment.deployment_id, "against": "deployment",
                "reference": (f"line {line}'s current deployment ({deployment.version}, "
                              f"promoted by {deployment.promoted_by} at "
                              f"{deployment.promoted_at[:16].replace('T', ' ')} UTC)")}
    versions = project.models()
    where = f"line {line} has no deployment" if line else "nothing is deployed"
    if versions.empty:
        return {"line": None, "version": None, "deployment_id": None, "against": "none",
                "reference": f"{where} and the project has no model version yet: train one "
                             "(wb.train) to check new batches for drift"}
    newest = str(versions["name"].iloc[-1])
    return {"line": None, "version": newest, "deployment_id": None,
            "against": "newest_version",
            "reference": f"the newest version, {newest} ({where} yet)"}


def _batch_paths(project: Project, imported: ImportReport) -> list[str]:
    """The batch's images as imported: the new samples' files and the duplicates' files."""
    added = project.dataset.select(imported.added).values("filepath") if imported.added else []
    return [*added, *(path for path, _ in imported.duplicates)]


__all__ = ["IntakeReport", "import_batch"]
