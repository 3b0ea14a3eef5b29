"""What a job can be: its arguments checked when it is submitted, and run in the worker.

One kind so far, ``"train"``: :func:`workbench.train.classification.train.train` (detection
projects go to the detector trainer through it). Arguments travel through the queue as
JSON, so they are checked against ``train``'s signature at submission, in the page, and a
mistake is an error there, not a failed job later.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from workbench.errors import JobError

if TYPE_CHECKING:
    from workbench.train._loop import CancelFlag

Kind = Literal["train"]
#: Arguments the job sets itself (``view``: a FiftyOne view cannot travel to a worker).
_RESERVED = {"project": "the job's project", "cancel": "wb.jobs.cancel(job.id, annotator=…)",
             "progress": "job.progress", "view": "train in the notebook: wb.train(p, view=…)"}
_SETTINGS_KEY = "__settings__"


def _train_signature() -> inspect.Signature:
    from workbench.train.classification.train import train

    return inspect.signature(train)


def check_train(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """``train`` keyword arguments as JSON-ready values (a settings dataclass as a dict);
    :class:`JobError` naming the argument a worker cannot take."""
    for name, instead in _RESERVED.items():
        if name in arguments:
            raise JobError(f"{name}= is not a job argument: the job sets it (instead: "
                           f"{instead}).")
    accepted = [p for p in _train_signature().parameters if p not in _RESERVED]
    checked: dict[str, Any] = {}
    for name, value in arguments.items():
        if name not in accepted:
            raise JobError(f"train takes no argument {name!r}; a train job takes "
                           f"{', '.join(accepted)}.")
        if name == "settings" and dataclasses.is_dataclass(value) \
                and not isinstance(value, type):
            value = {_SETTINGS_KEY: type(value).__name__, **dataclasses.asdict(value)}
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise JobError(f"{name}={value!r} cannot be sent to a worker: give numbers, "
                           "strings, lists or dicts (settings may be a FinetuneSettings or "
                           "DetectionSettings).") from None
        checked[name] = value
    if "settings" in checked:
        _settings(checked["settings"])  # a bad field fails now, not in the worker
    return checked


def _settings(value: Any) -> Any:
    """A settings dict back as its dataclass (``None`` stays ``None``)."""
    if value is None:
        return None
    from workbench.train.classification.finetune import FinetuneSettings
    from workbench.train.detection.train import DetectionSettings

    classes = {"FinetuneSettings": FinetuneSettings, "DetectionSettings": DetectionSettings}
    if not isinstance(value, Mapping):
        raise JobError(f"settings must be a FinetuneSettings, a DetectionSettings or a dict "
                       f"of their fields, got {type(value).__name__}.")
    fields = dict(value)
    cls = classes.get(fields.pop(_SETTINGS_KEY, "FinetuneSettings"))
    if cls is None:
        raise JobError(f"settings of type {value[_SETTINGS_KEY]!r} are not "
                       f"{' or '.join(classes)}.")
    try:
        return cls(**fields)
    except TypeError as error:
        raise JobError(f"settings: {error}; the fields of {cls.__name__} are "
                       f"{', '.join(f.name for f in dataclasses.fields(cls))}.") from None


def run_train(project: str, arguments: Mapping[str, Any], *, cancel: CancelFlag,
              resume: bool) -> str:
    """Train; the new version's name."""
    from workbench.train.classification.train import train

    options = dict(arguments)
    if "settings" in options:
        options["settings"] = _settings(options["settings"])
    if resume:  # a stopped classification run goes on; a detector trains again
        from workbench.store.project import Project

        options["resume"] = Project.open(project).task == "classification"
    version = train(project, cancel=cancel, progress=True, **options)
    return version.name


#: Each kind: (check the arguments at submission, run them in the worker).
KINDS: dict[str, tuple[Callable[[Mapping[str, Any]], dict[str, Any]], Callable[..., str]]] = {
    "train": (check_train, run_train),
}


def kind_functions(kind: str) -> tuple[Callable[[Mapping[str, Any]], dict[str, Any]],
                                       Callable[..., str]]:
    """The check and run functions of ``kind``; :class:`JobError` listing the kinds."""
    try:
        return KINDS[kind]
    except (KeyError, TypeError):
        raise JobError(f"kind={kind!r} is not a job kind; choose one of {list(KINDS)}.") \
            from None


__all__ = ["KINDS", "Kind", "check_train", "kind_functions", "run_train"]
