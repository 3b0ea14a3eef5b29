"""Read what a line runs from the files the workbench writes (``wb.promote``), verified.

::

    DEPLOYMENTS_DIR/                    a project's ``deployments/`` folder (or a copy of it)
        <line>/current.json             the pointer: ``{"deployment_id": …, …}``
        <line>/<deployment id>/         model.onnx, deployment.json, reference.npz

Nothing here needs the workbench: a line PC reads a copied or shared folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: The files of a deployment folder and the line's pointer.
MODEL = "model.onnx"
RECORD = "deployment.json"
REFERENCE = "reference.npz"
POINTER = "current.json"


class DeploymentError(Exception):
    """A deployment that cannot be used: missing, half-written, tampered with, or a model
    that disagrees with its ``deployment.json``. The message names the folder and what to
    do."""


def sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_pointer(line_folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A line's ``current.json`` (None when the line has none yet)."""
    path = Path(line_folder) / POINTER
    try:
        pointer = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise DeploymentError(f"{path} is not readable ({error}); it is replaced atomically "
                              "by wb.promote and wb.rollback, so a copy of the folder may be "
                              "incomplete: copy it again") from None
    if not isinstance(pointer, dict) or not isinstance(pointer.get("deployment_id"), str):
        raise DeploymentError(f"{path} names no deployment_id; copy the folder again")
    return pointer


@dataclass(frozen=True)
class EdgeDeployment:
    """A verified deployment folder: every file its ``deployment.json`` lists is present
    and matches its sha256."""

    deployment_id: str
    folder: Path
    record: dict[str, Any]

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> EdgeDeployment:
        """Read and verify ``folder``; raise :class:`DeploymentError` saying what is wrong."""
        folder = Path(folder)
        if not folder.is_dir():
            raise DeploymentError(f"no deployment folder at {folder}: promote a version to "
                                  "the line first (wb.promote, or the line console)")
        try:
            record = json.loads((folder / RECORD).read_text())
        except (OSError, ValueError) as error:
            raise DeploymentError(f"{folder} is not a complete deployment ({RECORD}: "
                                  f"{error}); copy it again") from None
        if not isinstance(record, dict) or "deployment_id" not in record:
            raise DeploymentError(f"{folder / RECORD} is not a Loupe deployment record")
        listed = record.get("sha256") or {}
        if record.get("model", MODEL) not in listed:
            raise DeploymentError(f"{folder / RECORD} lists no checksum of its model")
        problems = []
        for name, digest in listed.items():
            path = folder / name
            if not path.is_file():
                problems.append(f"{name} is missing")
            elif sha256(path) != digest:
                problems.append(f"{name} does not match its sha256 (changed after the "
                                "promotion)")
        if problems:
            raise DeploymentError(f"deployment {folder} refused: {'; '.join(problems)}. "
                                  "Copy it again from the workbench, or promote anew.")
        return cls(deployment_id=str(record["deployment_id"]), folder=folder, record=record)

    @property
    def model_path(self) -> Path:
        return self.folder / self.record.get("model", MODEL)

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.record.get("classes") or []]

    @property
    def version(self) -> str:
        return str(self.record.get("version"))

    @property
    def task(self) -> str:
        return str(self.record.get("task") or "classification")

    @property
    def operating_point(self) -> dict[str, Any] | None:
        point = self.record.get("operating_point")
        return point if isinstance(point, dict) else None

    def reference(self) -> dict[str, np.ndarray]:
        """The arrays of ``reference.npz`` (image statistics of the training images; no
        pickles are read)."""
        name = (self.record.get("reference") or {}).get("file", REFERENCE)
        path = self.folder / name
        if not path.is_file():
            return {}
        with np.load(path, allow_pickle=False) as arrays:
            return {key: arrays[key] for key in arrays.files}


def current_deployment(deployments_dir: str | os.PathLike[str], line: str) -> EdgeDeployment:
    """The verified deployment that ``line``'s pointer names."""
    line_folder = Path(deployments_dir) / line
    pointer = read_pointer(line_folder)
    if pointer is None:
        raise DeploymentError(f"line {line!r} has no current deployment in {deployments_dir} "
                              f"(no {line}/{POINTER}): promote a version to it first")
    return EdgeDeployment.load(line_folder / pointer["deployment_id"])


__all__ = ["MODEL", "POINTER", "RECORD", "REFERENCE", "DeploymentError", "EdgeDeployment",
           "current_deployment", "read_pointer", "sha256"]
