"""Examples for the label book: the images a version recognises best for a class."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from workbench.analyse.classification import held_out, resolve
from workbench.errors import ProjectError
from workbench.store.coerce import as_project
from workbench.store.labelbook import current_examples
from workbench.store.project import Project

if TYPE_CHECKING:
    from workbench.train.versions import ModelVersion


def suggest_examples(project: Project | str, version: ModelVersion | str | None,
                     label: str, n: int = 4) -> pd.DataFrame:
    """Candidate examples of ``label``: the version's held-out samples of that class that it
    predicted correctly, most confident first, leaving out the current examples.

    Returns
    -------
    pd.DataFrame
        At most ``n`` rows: ``sample_id``, ``filepath``, ``confidence``.
    """
    project, version = resolve(as_project(project), version)
    chosen = set(current_examples(project, label))
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ProjectError(f"n must be a positive integer, got {n!r}.")
    frame = held_out(project, version)
    frame = frame[(frame["given"] == label) & frame["correct"]
                  & ~frame["sample_id"].isin(chosen)]
    frame = frame.sort_values("confidence", ascending=False, kind="stable").head(n)
    return frame[["sample_id", "filepath", "confidence"]].reset_index(drop=True)


__all__ = ["suggest_examples"]
