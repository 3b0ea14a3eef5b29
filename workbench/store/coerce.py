"""One coercion for every public function: names or objects in, project and version out,
and one clear error when a function does not apply to the project's task."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.errors import ProjectError
from workbench.store.project import Project

if TYPE_CHECKING:
    from workbench.train.versions import ModelVersion


def as_project(project: Project | str) -> Project:
    """``project`` itself, or the project of that name (:class:`ProjectError` if none)."""
    if isinstance(project, Project):
        return project
    if isinstance(project, str):
        return Project.open(project)
    raise ProjectError(f"expected a Project or a project name, got {type(project).__name__}")


def as_version(project: Project | str, version: ModelVersion | str | None = None
               ) -> tuple[Project, ModelVersion]:
    """The project and one of its model versions, from objects or names.

    ``version`` is a :class:`~workbench.train.versions.ModelVersion`, its name (``"v2"``) or
    None (the newest). A version of another project raises :class:`ProjectError`.
    """
    project = as_project(project)
    if version is None or isinstance(version, str):
        return project, project.model(version)
    owner = getattr(version, "project_name", None)
    if owner is None:
        raise ProjectError(f"expected a model version or its name (e.g. 'v2'), got "
                           f"{type(version).__name__}")
    if owner != project.name:
        raise ProjectError(f"model version {version.name!r} belongs to project {owner!r}, "
                           f"not {project.name!r}.")
    return project, version


def require_task(project: Project, task: str, what: str, *, instead: str = "") -> None:
    """Raise one clear :class:`ProjectError` when ``what`` does not apply to the project's
    task (``instead``: what to call for the other task)."""
    if project.task != task:
        hint = f"; for a {project.task} project use {instead}" if instead else ""
        raise ProjectError(f"{what} needs a {task} project; {project.name!r} is a "
                           f"{project.task} project{hint}")
