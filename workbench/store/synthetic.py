"""Synthetic samples as stored: the recipes' records, their folders, removal and vetoes.

:mod:`workbench.improve.synthesize` makes synthetic images; this module is what the
project keeps of them. Every path is checked to stay inside ``<project>/synthetic`` before
anything is deleted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.errors import ProjectError, UnsafePathError
from workbench.store import _db as store
from workbench.store.labels import now
from workbench.store.safe_paths import inside, remove_inside

if TYPE_CHECKING:
    from workbench.store.project import Project


def recipe_records(project: Project) -> dict[str, dict[str, Any]]:
    """Recipe id → record (method, target, base, n, seed, time, folder) of every synthesis."""
    project.dataset.reload()
    return dict(store.project_info(project.dataset).get("synthetic", {}))


def remove_recipe(project: Project, recipe_id: str) -> int:
    """Delete the samples and images of one synthesis; returns how many samples went.

    Nothing else is touched: real samples, their labels and histories, model versions.

    Raises
    ------
    ProjectError
        An unknown recipe id.
    UnsafePathError
        A recipe id that names no single folder inside ``<project folder>/synthetic`` (an
        absolute path, ``..``; from a hostile archive, say): nothing is deleted then.
    """
    recipes = recipe_records(project)
    if recipe_id not in recipes:
        raise ProjectError(f"no synthesis {recipe_id!r} in project {project.name!r} "
                           f"(recipes: {', '.join(recipes) or 'none'})")
    recipe_folder = recipe_path(project.folder, recipe_id)
    dataset = project.dataset
    view = dataset.match({f"{store.SYNTHETIC_FIELD}.recipe": recipe_id})
    count = len(view)
    dataset.delete_samples(view)
    remove_inside(project.folder / "synthetic", recipe_folder, what="recipe folder")
    del recipes[recipe_id]
    store.update_project_info(dataset, synthetic=recipes)
    return count


def veto(project: Project, sample_ids: Sequence[str], *, annotator: str) -> int:
    """Take out synthetic images a person judged bad; returns how many went.

    The veto (who, when, which recipe, the image's parameters) is kept in the recipe's record
    (``wb.synthetic_recipes(p)[recipe]["vetoed"]``); the image file is deleted with its sample.

    Raises
    ------
    ProjectError
        For an empty annotator, or an id that is not a synthetic sample (real images are
        never deleted this way); nothing is removed then.
    UnsafePathError
        A sample whose file lies outside ``<project folder>/synthetic``; nothing is
        removed then.
    """
    if not isinstance(annotator, str) or not annotator.strip():
        raise ProjectError("annotator must be a non-empty name, e.g. annotator='alice'")
    ids = list(dict.fromkeys(sample_ids))
    view = project.dataset.select(ids)
    found = dict(zip(*view.values(["id", f"{store.SYNTHETIC_FIELD}.recipe"]), strict=True))
    refused = [sid for sid in ids if found.get(sid) is None]
    if refused:
        raise ProjectError(f"only synthetic images can be vetoed; not synthetic (or not in "
                           f"project {project.name!r}): {', '.join(refused[:5])}")
    paths = dict(zip(*view.values(["id", "filepath"]), strict=True))
    synthetic_folder = project.folder / "synthetic"
    for sid, path in paths.items():  # every file checked before anything is deleted
        inside(synthetic_folder, path, what=f"file of synthetic sample {sid}")
    recipes = recipe_records(project)
    stamp = now().isoformat()
    for sid in ids:
        record = recipes.setdefault(found[sid], {})
        record.setdefault("vetoed", []).append(
            {"sample_id": sid, "by": annotator.strip(), "time": stamp,
             "file": Path(paths[sid]).name})
    store.update_project_info(project.dataset, synthetic=recipes)
    project.dataset.delete_samples(ids)
    for path in map(Path, paths.values()):
        remove_inside(synthetic_folder, path, what="synthetic image")
        remove_inside(synthetic_folder, path.parent / "masks" / path.name, what="mask")
    return len(ids)


#: A recipe id is one folder name: what :func:`synthesize` makes (``syn-<time>-<hex>``).
_RECIPE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def recipe_path(project_folder: Path, recipe_id: object) -> Path:
    """``<project folder>/synthetic/<recipe id>``, or UnsafePathError for an id that is not
    one plain folder name (an absolute path, ``..``, a separator)."""
    if not isinstance(recipe_id, str) or not _RECIPE_ID.match(recipe_id):
        raise UnsafePathError(f"recipe id {recipe_id!r} is not a plain folder name (letters, "
                              "digits, '_', '.', '-'); refused")
    return inside(Path(project_folder) / "synthetic", recipe_id, what="recipe id")


__all__ = ["recipe_path", "recipe_records", "remove_recipe", "veto"]
