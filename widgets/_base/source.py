"""What a widget was given: a Project, a project name, or a FiftyOne dataset/view of one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from workbench import LoupeError, Project, ProjectError


def resolve_source(source: Any, view: Any = None) -> tuple[Project, list[str] | None]:
    """The project behind ``source`` and the sample ids to restrict to (None: all).

    Parameters
    ----------
    source : Project, str, fiftyone.core.dataset.Dataset or fiftyone.core.view.DatasetView
        A project, its name, its dataset, or any view of its dataset.
    view : fiftyone view, optional
        A view of the same project's dataset, restricting the samples further.

    Raises
    ------
    ProjectError
        If ``source`` is none of these, or a view belongs to a dataset that is not a Loupe
        project.
    """
    project, ids = _one(source)
    if view is not None:
        view_project, view_ids = _one(view)
        if view_project.name != project.name:
            raise ProjectError(f"view= is a view of {view_project.name!r}, not of project "
                               f"{project.name!r}")
        if ids is None:
            ids = view_ids
        elif view_ids is not None:
            keep = set(view_ids)
            ids = [sid for sid in ids if sid in keep]
    return project, ids


def annotator_name(annotator: str | None, widget: str, *, argument: str = "annotator") -> str:
    """The name a widget stores its decisions under ("" when none was given).

    Without a name a widget shows the data and refuses every write with a message that
    asks for one, so that no decision is recorded under a made-up name. A blank name
    given explicitly is a mistake and raises at once."""
    if annotator is None:
        return ""
    if not isinstance(annotator, str) or not annotator.strip():
        raise ProjectError(f"{widget}: {argument} must be a non-empty name, e.g. "
                           f"{argument}='erin' (the name every decision is stored under)")
    return annotator.strip()


def require_annotator(annotator: str, widget: str) -> str:
    """``annotator``, or a clear refusal when the widget was opened without one."""
    if not annotator:
        raise ProjectError(f"{widget} was opened without a name, so it cannot record "
                           f"decisions: open it with annotator='your name' "
                           f"(e.g. {widget}(p, annotator='erin'))")
    return annotator


def is_detection_source(source: Any) -> bool:
    """Whether ``source`` (a project, its name or a view) is a detection project; False
    when it is none of these (the constructor then says why)."""
    try:
        if isinstance(source, Project):
            return source.task == "detection"
        if isinstance(source, str):
            return Project.open(source).task == "detection"
        root = getattr(source, "_root_dataset", None)  # a FiftyOne dataset or view
        return root is not None and Project.open(root.name).task == "detection"
    except (ProjectError, ValueError):
        return False


def _one(source: Any) -> tuple[Project, list[str] | None]:
    if isinstance(source, Project):
        return source, None
    if isinstance(source, str):
        return Project.open(source), None
    root = getattr(source, "_root_dataset", None)
    if root is None or not hasattr(source, "values"):
        raise ProjectError(f"expected a Project, a project name or a FiftyOne view of one, got "
                           f"{type(source).__name__}")
    project = Project.open(root.name)
    if source is root or type(source).__name__ == "Dataset":
        return project, None
    return project, list(source.values("id"))


def run_message(handlers: Mapping[str, Callable[[Mapping], None]], content: Any) -> str:
    """Run the handler of a front-end message by its ``type``; returns "" or the error to
    show in the widget (instead of a log nobody reads)."""
    try:
        kind = content.get("type") if isinstance(content, Mapping) else None
        handler = handlers.get(kind)
        if handler is None:
            raise ProjectError(f"unknown message {content!r}: 'type' must be one of "
                               f"{', '.join(handlers)}")
        handler(content)
    except Exception as error:
        return str(error) if isinstance(error, ValueError | LoupeError) \
            else f"{type(error).__name__}: {error}"
    return ""
