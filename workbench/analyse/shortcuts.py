"""Shortcut checks: does a class come with its own lighting, focus, image size or slice?

The Project-level wrapper of :mod:`workbench.metrics.shortcuts`: it reads each labelled
image's pixels and slice fields, and a model version's held-out errors, and tests each
property against the labels and the errors.

>>> wb.shortcuts(p)          # newest version's errors too, when the project has one
>>> wb.shortcuts(p, "v2").query("is_shortcut")[["property", "note"]]
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image

from workbench.analyse.classification import held_out, resolve
from workbench.analyse.image_quality import UnreadableImagesWarning
from workbench.metrics.shortcuts import image_properties, shortcut_table
from workbench.store.coerce import as_project, require_task
from workbench.store.ingest.images import ImageRejectedError, read_bytes
from workbench.store.project import Project, ProjectError

if TYPE_CHECKING:
    from workbench.train.versions import ModelVersion

__all__ = ["shortcuts"]


def shortcuts(project: Project | str, version: ModelVersion | str | None = None, *,
              progress: bool = False) -> pd.DataFrame:
    """For each image property and slice field, how strongly it goes with the labels and
    with the model's errors, with a test of significance and a note in plain words.

    Parameters
    ----------
    project : Project or str
    version : ModelVersion or str, optional
        Whose held-out (out-of-fold or validation) errors to test against: wrong where the
        prediction differs from the current label. Default: the newest classifier version,
        or labels only when the project has none.
    progress : bool
        Show a progress bar while the images are read.

    Returns
    -------
    pd.DataFrame, one row per property, most suspicious first
        ``property`` (``brightness``, ``sharpness``, ``size``, ``aspect``, then each slice
        field), ``kind``, ``association`` (0..1: epsilon² for numbers, Cramér's V for
        categories), ``p_value`` (Holm-adjusted), ``error_association``,
        ``error_p_value``, ``is_shortcut``, ``note``; see
        :func:`workbench.metrics.shortcuts.shortcut_table`. ``attrs`` adds ``project`` and
        ``version`` (None: labels only).

    Raises
    ------
    ProjectError
        When the project has no labelled images or labels of fewer than two classes, or
        ``version`` is not a classifier of the project. An image that cannot be read is
        left out with an :class:`~workbench.analyse.image_quality.UnreadableImagesWarning`
        naming it (also in ``attrs["unreadable"]``).
    """
    project = as_project(project)
    require_task(project, "classification", "wb.shortcuts")
    frame = project.to_pandas()
    if frame.empty:
        raise ProjectError(f"project {project.name!r} has no images; import some (and label "
                           "them) before checking for shortcuts.")
    frame = frame[frame["label"].notna()].reset_index(drop=True)
    if frame.empty:
        raise ProjectError(f"project {project.name!r} has no labelled images; label some "
                           "before checking for shortcuts.")
    classes = sorted(frame["label"].unique())
    if len(classes) < 2:
        raise ProjectError(f"project {project.name!r} has labelled images of only one class "
                           f"({classes[0]!r}); a shortcut check compares classes: label "
                           "images of at least two.")
    version = _version(project, version)
    errors = None
    if version is not None:
        wrong = held_out(project, version).set_index("sample_id")["correct"].map(
            lambda right: not right)
        errors = [wrong.get(sid) for sid in frame["sample_id"]]
    unreadable: list[int] = []
    properties = image_properties(_pixels(frame["filepath"], unreadable, progress=progress))
    if unreadable:
        skipped = [frame["filepath"].iloc[k] for k in unreadable]
        warnings.warn(f"shortcuts: left out {len(skipped)} image(s) that cannot be read: "
                      f"{', '.join(map(repr, skipped[:5]))}{' …' if len(skipped) > 5 else ''}",
                      UnreadableImagesWarning, stacklevel=2)
        keep = np.setdiff1d(np.arange(len(frame)), unreadable)
        frame, properties = (frame.iloc[keep].reset_index(drop=True),
                             properties.iloc[keep].reset_index(drop=True))
        errors = None if errors is None else [errors[k] for k in keep]
    for field in project.slice_fields:
        properties[field if field not in properties else f"{field}_field"] = frame[field]
    table = shortcut_table(properties, frame["label"], errors)
    table.attrs.update(project=project.name,
                       version=None if version is None else version.name,
                       unreadable=[] if not unreadable else skipped)
    return table


def _version(project: Project, version: ModelVersion | str | None) -> ModelVersion | None:
    """The version whose errors to test: as given, else the newest classifier, else None."""
    if version is None:
        # models/v<n>/version.json (workbench.train.versions): looked at first, so a project
        # without versions is checked without importing torch.
        if not any((project.folder / "models").glob("v*/version.json")):
            return None
        versions = project.models()["name"].tolist()
        newest = (project.model(name) for name in reversed(versions))
        return next((v for v in newest if v.task == "classification"), None)
    project, version = resolve(project, version)
    if version.task != "classification":
        raise ProjectError(f"model version {version.name!r} is a {version.task} model; "
                           "shortcuts test a classifier's errors: pass a classifier version "
                           "or version=None.")
    return version


def _pixels(paths: Sequence[str], unreadable: list[int], *,
            progress: bool) -> Iterator[np.ndarray]:
    """Each image's pixels (grey or RGB, 0–255), read one at a time; a file that cannot be
    read yields a blank stand-in and its index goes to ``unreadable``."""
    from tqdm.auto import tqdm

    for k, path in enumerate(tqdm(list(paths), desc="image properties",
                                  disable=not progress)):
        try:
            with Image.open(io.BytesIO(read_bytes(path))) as image:
                if image.mode.startswith("I;16"):
                    yield np.asarray(image, dtype=np.float64) / 257.0
                else:
                    yield np.asarray(image if image.mode in ("L", "RGB")
                                     else image.convert("RGB"))
        except (ImageRejectedError, OSError):  # OSError: Pillow cannot decode the data
            unreadable.append(k)
            yield np.zeros((8, 8), dtype=np.uint8)
