"""What each line runs, on disk: deployment folders, the ``current`` pointers, the history.

::

    <project folder>/deployments/
        deployments.jsonl              every promotion, forced promotion, rollback, refusal
        <line>/current.json            the pointer: deployment id + the stack rollbacks pop
        <line>/<deployment id>/        model.onnx, deployment.json, reference.npz

A pointer is replaced with ``os.replace`` after the new folder is complete and synced, and
only under the line's ``flock`` after checking it still names what the promotion was
decided against (compare-and-swap). A process killed at any moment leaves the previous
pointer, which names a complete folder. Nothing here needs FiftyOne or torch.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loupe_edge.deployment import MODEL, POINTER, RECORD, REFERENCE, sha256

from workbench.errors import DeploymentError

#: Name of the folder of deployments inside a project folder. The file names inside a
#: deployment come from ``loupe_edge.deployment``, which reads them on the line.
FOLDER = "deployments"
HISTORY = "deployments.jsonl"
FORMAT_VERSION = 1
#: A line name: a letter or digit, then letters, digits, ``_`` or ``-``; at most 32.
LINE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


def check_line(line: object) -> str:
    """``line`` itself when it is a safe name (it becomes a folder), else DeploymentError."""
    if not isinstance(line, str) or not LINE_PATTERN.match(line):
        raise DeploymentError(
            f"line={line!r} is not a line name: use 1-32 letters, digits, '_' or '-', "
            "starting with a letter or digit (e.g. line='A' or line='press-2').")
    return line


def root(project_folder: Path) -> Path:
    """The project's ``deployments`` folder."""
    return project_folder / FOLDER


def line_folder(project_folder: Path, line: str) -> Path:
    return root(project_folder) / check_line(line)


def lines(project_folder: Path) -> list[str]:
    """Lines that have (or had) a current deployment, sorted."""
    base = root(project_folder)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir()
                  if p.is_dir() and LINE_PATTERN.match(p.name) and (p / POINTER).is_file())


# -- durability -----------------------------------------------------------------------------
def fsync_path(path: Path) -> None:
    """Flush a file or folder to the disk (folders: their entries, after renames)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file and flush it."""
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (waits; the OS frees it if we die)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


# -- the pointer ------------------------------------------------------------------------------
def read_pointer(project_folder: Path, line: str) -> dict[str, Any] | None:
    """The line's pointer (``deployment_id``, ``stack``, ``changed_by``, ``changed_at``),
    None when the line has no deployment."""
    path = line_folder(project_folder, line) / POINTER
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as error:  # never written half: os.replace; but say so if it happens
        raise DeploymentError(f"{path} is not readable ({error}); restore it from "
                              f"{HISTORY}, whose last event of the line names the current "
                              "deployment") from None


def switch_pointer(project_folder: Path, line: str, pointer: dict[str, Any]) -> None:
    """Replace the line's pointer atomically (write, flush, rename, flush the folder).
    The caller holds :func:`line_lock`."""
    folder = line_folder(project_folder, line)
    partial = folder / f".{POINTER}.{os.getpid()}.partial"
    partial.unlink(missing_ok=True)
    write_synced(partial, json.dumps(pointer, indent=1).encode())
    partial.replace(folder / POINTER)
    fsync_path(folder)


def line_lock(project_folder: Path, line: str) -> contextlib.AbstractContextManager[None]:
    return locked(line_folder(project_folder, line) / ".lock")


# -- the history ------------------------------------------------------------------------------
def append_event(project_folder: Path, event: dict[str, Any]) -> None:
    """Append one event to ``deployments.jsonl`` (one write, flushed, under a lock)."""
    base = root(project_folder)
    base.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(event, default=str) + "\n").encode()
    with locked(base / ".history.lock"):
        descriptor = os.open(base / HISTORY, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def read_events(project_folder: Path) -> list[dict[str, Any]]:
    """Every event, oldest first (a line cut short by a crash is skipped)."""
    path = root(project_folder) / HISTORY
    events = []
    if path.is_file():
        for text in path.read_text().splitlines():
            try:
                events.append(json.loads(text))
            except ValueError:
                continue
    return events


# -- a deployment folder ----------------------------------------------------------------------
@dataclass(frozen=True)
class Deployment:
    """One promoted model: a self-contained folder that needs no FiftyOne and no torch.

    Attributes
    ----------
    deployment_id, line, version : str
    folder : Path
        ``<project>/deployments/<line>/<deployment_id>/``
    record : dict
        ``deployment.json``: version, classes, preprocessing, operating point, label-book
        version, data snapshot, gate report, sha256 of every file, who and when.
    """

    deployment_id: str
    line: str
    version: str
    folder: Path
    record: dict[str, Any]

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Deployment:
        """Read a deployment folder (json alone; :meth:`verify` checks the files)."""
        folder = Path(folder)
        try:
            record = json.loads((folder / RECORD).read_text())
        except (OSError, ValueError) as error:
            raise DeploymentError(f"{folder} is not a readable deployment ({error}).") from None
        return cls(deployment_id=record["deployment_id"], line=record["line"],
                   version=record["version"], folder=folder, record=record)

    @property
    def model_path(self) -> Path:
        return self.folder / self.record["model"]

    @property
    def classes(self) -> list[str]:
        return list(self.record["classes"])

    @property
    def promoted_by(self) -> str:
        return str(self.record["promoted_by"])

    @property
    def promoted_at(self) -> str:
        return str(self.record["promoted_at"])

    @property
    def forced(self) -> bool:
        return bool(self.record.get("forced"))

    @property
    def reason(self) -> str | None:
        return self.record.get("reason")

    @property
    def gate(self) -> dict[str, Any]:
        """The gate report as recorded (``passed``, ``checks`` as records, …)."""
        return dict(self.record.get("gate") or {})

    def verify(self) -> list[str]:
        """What is wrong with the folder: missing files or checksums that differ (empty:
        the folder is intact)."""
        problems = []
        for name, digest in self.record.get("sha256", {}).items():
            path = self.folder / name
            if not path.is_file():
                problems.append(f"{name} is missing")
            elif sha256(path) != digest:
                problems.append(f"{name} does not match its sha256")
        return problems

    def __repr__(self) -> str:
        forced = ", forced" if self.forced else ""
        return (f"Deployment({self.line}: {self.version} as {self.deployment_id}, by "
                f"{self.promoted_by} at {self.promoted_at}{forced})")


def load_deployment(project_folder: Path, line: str, deployment_id: str) -> Deployment:
    return Deployment.load(line_folder(project_folder, line) / deployment_id)


__all__ = ["FOLDER", "HISTORY", "LINE_PATTERN", "MODEL", "POINTER", "RECORD", "REFERENCE",
           "Deployment", "append_event", "check_line", "fsync_path", "line_folder",
           "line_lock", "lines", "load_deployment", "locked", "read_events", "read_pointer",
           "root", "sha256", "switch_pointer", "write_synced"]
