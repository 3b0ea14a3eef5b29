"""Image-quality checks of a project: dark, overexposed, blurry, flat, odd and grey images.

The Project-level wrapper of :mod:`workbench.metrics.image_quality` (measurements from
cleanvision, thresholds relative to the project): it reads every image once, skips and
names the files it cannot read, and stores the result as run ``image_issues``.

>>> issues = wb.image_issues(p)                  # sample_id, issue, score, is_issue
>>> issues[issues["is_issue"]]
>>> issues.attrs["unreadable"]                   # files that could not be read
>>> p.dataset.match(F("image_issues.issues").contains("blurry"))
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from PIL import Image

from workbench.metrics.image_quality import (
    EXPLAINED_BY,
    PROPERTY_COLUMNS,
    image_quality_issues,
    measure_image,
    per_sample,
)
from workbench.store import _db as store
from workbench.store.coerce import as_project
from workbench.store.ingest.images import MAX_PIXELS, ImageRejectedError, read_bytes
from workbench.store.project import Project, ProjectError

__all__ = ["UnreadableImagesWarning", "image_issues", "measure_files"]

#: Run key (and field) of the stored results.
RUN_KEY = "image_issues"
#: Unreadable files named in the run's record and in the warning (all are counted).
MAX_NAMED = 50
MAX_WARNED = 10


class UnreadableImagesWarning(UserWarning):
    """Some images could not be read; they were left out of the checks."""


def image_issues(project: Project | str, *, write: bool = True,
                 progress: bool = False) -> pd.DataFrame:
    """Which images are dark, overexposed, blurry, low in information, oddly sized or
    shaped, or grey among colour images.

    Uses cleanvision (cleanlab's image checker) for the brightness and size measures, its
    issue types and its score convention; contrast, sharpness and colour are measured by
    Loupe, and thresholds are relative to the project's typical image, where cleanvision's
    missed planted faults or misfired on a whole data set (measured reasons in
    :mod:`workbench.metrics.image_quality`).

    Parameters
    ----------
    project : Project or str
    write : bool, default True
        Store the result as run ``image_issues``: per sample ``issues`` (names flagged),
        ``n_issues`` and ``<issue>_score``, so views can filter on
        ``F("image_issues.issues").contains("dark")``.
    progress : bool, default False
        Show a progress bar while reading the images.

    Returns
    -------
    pd.DataFrame, one row per (image, issue type)
        ``sample_id``, ``issue``, ``score`` (0–1, lower is worse), ``is_issue``.
        ``attrs["thresholds"]`` holds each check's threshold on this project,
        ``attrs["unreadable"]`` the paths that could not be read (skipped, and named in an
        :class:`UnreadableImagesWarning`).

    Raises
    ------
    ProjectError
        When the project has no images, or none of them can be read.
    """
    project = as_project(project)
    ids, paths = project.dataset.values(["id", "filepath"])
    if not ids:
        raise ProjectError(f"project {project.name!r} has no images; import some first "
                           "(p.import_folder(...)).")
    properties, unreadable = measure_files(paths, progress=progress)
    properties = properties.drop(columns="filepath")
    properties.insert(0, "sample_id", [ids[i] for i in properties.index])
    if unreadable:
        named = list(unreadable.items())[:MAX_WARNED]
        names = "; ".join(f"{path} ({why})" for path, why in named)
        more = (f"; and {len(unreadable) - len(named)} more (attrs['unreadable'])"
                if len(unreadable) > len(named) else "")
        warnings.warn(f"image_issues skipped {len(unreadable)} unreadable image(s) of project "
                      f"{project.name!r}: {names}{more}", UnreadableImagesWarning,
                      stacklevel=2)
    if properties.empty:
        raise ProjectError(f"none of the {len(ids)} images of project {project.name!r} can "
                           f"be read; first: {next(iter(unreadable.items()))}")
    issues = image_quality_issues(properties)
    issues.attrs["unreadable"] = list(unreadable)
    if write:
        store.write_run(project.dataset, RUN_KEY, per_sample(issues), method="image_issues",
                        config={"thresholds": issues.attrs["thresholds"],
                                "explained_by": {k: list(v) for k, v in EXPLAINED_BY.items()},
                                "n_unreadable": len(unreadable),
                                "unreadable": list(unreadable)[:MAX_NAMED]})
    return issues


def measure_files(paths: Sequence[str | Path], *,
                  progress: bool = False) -> tuple[pd.DataFrame, dict[str, str]]:
    """Measure image files for :func:`~workbench.metrics.image_quality.image_quality_issues`.

    Returns
    -------
    properties : pd.DataFrame
        ``filepath`` and the measurements of every readable file; its index is the file's
        position in ``paths``.
    unreadable : dict of str to str
        Path → why it could not be read (missing, empty, not an image, truncated, too
        large); these files are left out of ``properties``.
    """
    from tqdm.auto import tqdm

    rows, where, unreadable = [], [], {}
    for position, path in enumerate(tqdm(list(paths), desc="image quality", unit="image",
                                         disable=not progress)):
        try:
            rows.append({"filepath": str(path), **measure_image(_open(Path(path)))})
            where.append(position)
        except ImageRejectedError as error:
            unreadable[str(path)] = error.reason
    return (pd.DataFrame(rows, index=pd.Index(where, dtype=int),
                         columns=["filepath", *PROPERTY_COLUMNS]), unreadable)


def _open(path: Path) -> Image.Image:
    """The decoded image; :class:`ImageRejectedError` with a reason for anything unreadable."""
    data = read_bytes(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise ImageRejectedError(f"{image.width}x{image.height} exceeds "
                                         f"{MAX_PIXELS:,} pixels")
            image.load()
    except ImageRejectedError:
        raise
    except Exception as error:  # Pillow raises many types for broken files
        raise ImageRejectedError(f"cannot decode: {error}") from None
    return image
