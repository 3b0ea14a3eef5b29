"""What a line runs now, and the keywords that retrain it the same way.

Pure reading: the line's pointer and deployment folder (:mod:`workbench.deploy`), the
project's drift history, and the job queue (:mod:`workbench.jobs`). Nothing here writes.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from workbench.deploy import line_state
from workbench.deploy.deployments import current_deployment
from workbench.jobs.queue import list_jobs
from workbench.store import eval_sets
from workbench.store.coerce import as_project, as_version

if TYPE_CHECKING:
    from workbench.deploy.line_state import Deployment
    from workbench.store.project import Project
    from workbench.train.versions import ModelVersion

#: Jobs still to finish (what the status strip lists).
OPEN_STATES = ("queued", "running")
#: Keys of a version's config that are ``train`` keywords of the same name.
_SAME_NAME = ("backbone", "mode", "folds", "epochs", "image_size", "seed", "probe_c", "weights")
CHANGE_COLUMNS = ["sample_id", "filepath", "reference", "champion", "candidate", "change"]


@dataclass(frozen=True)
class LineStatus:
    """A line at one moment.

    Attributes
    ----------
    project, line : str
    deployment : Deployment or None
        What the line runs (None: nothing promoted yet).
    frozen_accuracy : float or None
        Accuracy on the frozen set as the deployment's gate measured it (None: not measured).
    frozen_n : int or None
        How many frozen images that accuracy is on.
    last_drift : dict or None
        The project's latest drift check (a row of ``p.drift_history()``).
    jobs : pandas.DataFrame
        The project's queued and running jobs (``wb.jobs.list`` rows).
    newest_version : str or None
        The project's newest model version.
    """

    project: str
    line: str
    deployment: Deployment | None
    frozen_accuracy: float | None
    frozen_n: int | None
    last_drift: dict[str, Any] | None
    jobs: pd.DataFrame
    newest_version: str | None

    @property
    def version(self) -> str | None:
        """The version the line runs (None: nothing yet)."""
        return None if self.deployment is None else self.deployment.version

    @property
    def deployment_id(self) -> str | None:
        return None if self.deployment is None else self.deployment.deployment_id


def line_status(project: Project | str, *, line: str = "A") -> LineStatus:
    """The line's deployment, its frozen-set accuracy, the last drift check and the open
    training jobs of the project.

    Raises
    ------
    DeploymentError
        A malformed line name.
    """
    line_state.check_line(line)
    project = as_project(project)
    deployment = current_deployment(project, line=line)
    accuracy, n_frozen = _frozen_accuracy(deployment)
    drift = project.drift_history()
    jobs = list_jobs(project)
    models = project.models()
    return LineStatus(
        project=project.name, line=line, deployment=deployment, frozen_accuracy=accuracy,
        frozen_n=n_frozen, last_drift=drift.iloc[-1].to_dict() if len(drift) else None,
        jobs=jobs[jobs["state"].isin(OPEN_STATES)].reset_index(drop=True),
        newest_version=str(models["name"].iloc[-1]) if len(models) else None)


def _frozen_accuracy(deployment: Deployment | None) -> tuple[float | None, int | None]:
    if deployment is None:
        return None, None
    figures = {row.get("check"): row.get("figure")
               for row in deployment.gate.get("checks", []) if isinstance(row, dict)}
    accuracy, n = figures.get("accuracy"), figures.get("frozen_set")
    accuracy = float(accuracy) if isinstance(accuracy, int | float) \
        and math.isfinite(accuracy) else None
    n = int(n) if isinstance(n, int | float) and math.isfinite(n) and n > 0 else None
    return accuracy, n


def retrain_arguments(project: Project | str, *, line: str = "A"
                      ) -> tuple[str, dict[str, Any]]:
    """The version a retrain starts from (what ``line`` runs, else the newest) and the
    ``train`` keywords that repeat its configuration (backbone, mode, folds, epochs, image
    size, seed, …): what ``wb.jobs.submit(p, "train", annotator=…, **arguments)`` takes.

    Raises
    ------
    ProjectError
        The project has no model version yet (train one first: ``wb.train(p)``).
    """
    line_state.check_line(line)
    project = as_project(project)
    deployment = current_deployment(project, line=line)
    project, parent = as_version(project, deployment.version if deployment else None)
    return parent.name, _train_keywords(parent)


def _train_keywords(version: ModelVersion) -> dict[str, Any]:
    from workbench.train.classification.train import train

    accepted = set(inspect.signature(train).parameters)
    config = dict(version.config)
    arguments = {key: config[key] for key in _SAME_NAME
                 if key in config and key in accepted and config[key] is not None}
    if arguments.get("weights") == "None":  # recorded as str(None): trained from scratch
        arguments["weights"] = None
    if arguments.get("mode") in ("finetune", "ensemble", "auto") \
            and isinstance(config.get("finetune"), dict):
        arguments["settings"] = dict(config["finetune"])
    return arguments


def changed_verdicts(project: Project | str, version: ModelVersion | str,
                     baseline: ModelVersion | str | None) -> pd.DataFrame:
    """The frozen images on which the candidate ``version`` and the champion ``baseline``
    answer differently.

    Returns
    -------
    pandas.DataFrame
        sample_id, filepath, reference (the frozen label), champion, candidate (their
        predictions) and change: ``fixed`` (the candidate is right, the champion was not),
        ``broken`` (the reverse) or ``other`` (both wrong). Empty without a champion, a
        frozen set, or for a detection project.
    """
    project, new = as_version(project, version)
    frozen = eval_sets.references(project, "frozen")
    if baseline is None or not frozen or new.task == "detection":
        return pd.DataFrame(columns=CHANGE_COLUMNS)
    _, old = as_version(project, baseline)
    ids = list(frozen)
    paths = dict(zip(*project.dataset.select(ids).values(["id", "filepath"]), strict=True))
    ids = [sid for sid in ids if sid in paths]
    files = [paths[sid] for sid in ids]
    new_labels = list(new.predict(files, progress=False)["label"])
    old_labels = list(old.predict(files, progress=False)["label"])
    rows = []
    for sid, path, new_label, old_label in zip(ids, files, new_labels, old_labels,
                                               strict=True):
        if new_label == old_label:
            continue
        reference = frozen[sid]
        change = ("fixed" if new_label == reference else
                  "broken" if old_label == reference else "other")
        rows.append({"sample_id": sid, "filepath": path, "reference": reference,
                     "champion": old_label, "candidate": new_label, "change": change})
    order = {"broken": 0, "fixed": 1, "other": 2}
    frame = pd.DataFrame(rows, columns=CHANGE_COLUMNS)
    return frame.sort_values("change", key=lambda s: s.map(order), kind="stable"
                             ).reset_index(drop=True)
