"""Compare two model versions of a project on the samples both held out.

>>> frame = wb.compare(p, "v1", "v2")          # one row per sample, outcome better/worse/…
>>> frame["outcome"].value_counts()
>>> wb.class_deltas(p, "v1", "v2")             # recall and F1 per class, and the change

The label each prediction is compared with is the project's *current* consensus, so a
relabel shows up in both versions without retraining.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from workbench.analyse.classification import held_out, resolve
from workbench.metrics.compare import compare_predictions, per_class_deltas
from workbench.store.project import Project, ProjectError

if TYPE_CHECKING:
    from workbench.train.versions import ModelVersion


def _versions(project: Project | str, a: ModelVersion | str,
              b: ModelVersion | str) -> tuple[Project, ModelVersion, ModelVersion]:
    for name, value in (("a", a), ("b", b)):
        if value is None:
            raise ProjectError(f"compare: {name} must name a model version (e.g. 'v1'), got "
                               "None; list them with p.models().")
    project, version_a = resolve(project, a)
    _, version_b = resolve(project, b)
    if version_a.name == version_b.name:
        raise ProjectError(f"compare: a and b are both {version_a.name!r}; pass two different "
                           f"versions of project {project.name!r} (e.g. a='v1', b='v2').")
    return project, version_a, version_b


def compare(project: Project | str, a: ModelVersion | str,
            b: ModelVersion | str) -> pd.DataFrame:
    """Per sample held out by both versions: the given label, both predictions, the outcome.

    Parameters
    ----------
    project : Project or str
    a, b : ModelVersion or str
        The version compared from (``a``, e.g. the older one) and to (``b``).

    Returns
    -------
    pandas.DataFrame
        As :func:`workbench.metrics.compare.compare_predictions`: ``sample_id``, ``given``,
        ``predicted_a``, ``predicted_b``, ``confidence_a``, ``confidence_b``, ``outcome``
        (``better``, ``worse``, ``same_right``, ``same_wrong``). ``attrs`` holds ``a``,
        ``b`` (version names) and ``classes`` (display order).

    Raises
    ------
    ProjectError
        For an unknown version, the same version twice, or a version without held-out
        predictions.
    """
    project, version_a, version_b = _versions(project, a, b)
    frame = compare_predictions(held_out(project, version_a), held_out(project, version_b))
    frame.attrs.update(a=version_a.name, b=version_b.name,
                       classes=_classes(project, version_a, version_b))
    return frame


def class_deltas(project: Project | str, a: ModelVersion | str,
                 b: ModelVersion | str) -> pd.DataFrame:
    """Recall and F1 per class under ``a`` and ``b`` and their change, on the samples both
    held out: ``class``, ``n``, ``recall_a``, ``recall_b``, ``recall_delta``, ``f1_a``,
    ``f1_b``, ``f1_delta`` (see :func:`workbench.metrics.compare.per_class_deltas`)."""
    frame = compare(project, a, b)
    return per_class_deltas(frame, classes=frame.attrs["classes"])


def _classes(project: Project, a: ModelVersion, b: ModelVersion) -> list[str]:
    """Version a's classes, then b's new ones, then the project's (stable display order)."""
    ordered = list(a.classes)
    for name in [*b.classes, *project.classes]:
        if name not in ordered:
            ordered.append(name)
    return ordered


__all__ = ["class_deltas", "compare"]
