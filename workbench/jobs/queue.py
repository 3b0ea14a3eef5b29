"""Submit, list and cancel jobs from any process (a dashboard's kernel, a notebook, a script).

>>> job = wb.jobs.submit(project, "train", annotator="erin", mode="finetune", epochs=10)
>>> job.state, job.progress, job.log_tail()     # read afresh from the queue at each access
>>> wb.jobs.list(project)                        # one row per job, oldest first
>>> wb.jobs.cancel(job.id, annotator="erin")     # a running training stops at its next batch

Nothing here trains: a worker process (``loupe worker``; ``loupe serve`` starts one) takes
queued jobs, one per project at a time, oldest first.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from workbench.errors import JobError
from workbench.jobs import liveness, records
from workbench.jobs.kinds import Kind, kind_functions

if TYPE_CHECKING:
    from workbench.store.project import Project


class Job:
    """A handle on one job: every attribute reads the job's record afresh, so a dashboard
    can keep the handle and poll it.

    Attributes
    ----------
    state : {"queued", "running", "done", "failed", "cancelled"}
    progress : float in [0, 1]
    stage : str
        What the training is doing ("fold 2/5 9/15 epoch").
    result : str or None
        What the job made (a train job: the new version's name, e.g. ``"v3"``).
    error : str or None
        Why it failed.
    """

    def __init__(self, job_id: int) -> None:
        self.id = int(job_id)

    def record(self) -> records.JobRecord:
        """The job's whole record, read now."""
        liveness.sweep()
        record = records.get(self.id)
        if record is None:
            raise JobError(f"there is no job {self.id} in {str(records.database_path())!r}; "
                           "list the jobs with wb.jobs.list(project) or loupe jobs PROJECT.")
        return record

    def __getattr__(self, name: str) -> Any:
        if name in records.COLUMNS and name != "id":
            return getattr(self.record(), name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # Spelled out for readers and type checkers; the rest of the record via __getattr__.
    @property
    def state(self) -> str:
        """``queued``, ``running``, ``done``, ``failed`` or ``cancelled``."""
        return self.record().state

    @property
    def progress(self) -> float:
        """Share done, 0 to 1 (1 once done)."""
        return self.record().progress

    @property
    def result(self) -> str | None:
        """What the job made (a train job: the new version's name), once done."""
        return self.record().result

    @property
    def finished(self) -> bool:
        """Whether the job ended (done, failed or cancelled)."""
        return self.record().state in records.FINAL_STATES

    def log_tail(self, n: int = 20) -> list[str]:
        """The last ``n`` log lines ("HH:MM:SS what happened", UTC), oldest first."""
        return records.log_tail(self.id, n)

    def cancel(self, *, annotator: str) -> Job:
        """Cancel this job (:func:`cancel`)."""
        return cancel(self.id, annotator=annotator)

    def wait(self, timeout: float | None = None, *, poll: float = 0.5) -> Job:
        """Block until the job ends (``TimeoutError`` after ``timeout`` seconds)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} is still {self.state} after {timeout} s")
            time.sleep(poll)
        return self

    def __repr__(self) -> str:
        record = records.get(self.id)
        if record is None:
            return f"Job({self.id}, unknown)"
        return (f"Job({self.id}, {record.kind} {record.project!r}, {record.state}, "
                f"{record.progress:.0%})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("job", self.id))


def submit(project: Project | str, kind: Kind = "train", *, annotator: str,
           **arguments: Any) -> Job:
    """Queue a job for a worker and return at once.

    Parameters
    ----------
    project : Project or str
    kind : {"train"}
        ``"train"`` runs ``wb.train(project, **arguments)``.
    annotator : str
        Who asked for it (recorded).
    **arguments
        The kind's keyword arguments (``train``: mode, folds, epochs, image_size, backbone,
        settings, …), checked now; not ``view``, ``cancel`` or ``progress``.

    Returns
    -------
    Job
        ``queued``; one job per project runs at a time, the others wait their turn.
    """
    name = _project_name(project, check=True)
    _check_annotator(annotator)
    check, _ = kind_functions(kind)
    job_id = records.insert(project=name, kind=kind, arguments=check(arguments),
                            submitted_by=annotator)
    if not records.worker_alive():
        records.append_log(job_id, "no worker is running: start one with 'loupe worker' "
                           "(loupe serve starts one); the job waits in the queue until then")
    return Job(job_id)


def get(job_id: int) -> Job:
    """The job ``job_id`` (:class:`JobError` if there is none)."""
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise JobError(f"job_id must be a job's number (job.id), got {job_id!r}.")
    job = Job(job_id)
    job.record()
    return job


def list_jobs(project: Project | str | None = None) -> pd.DataFrame:
    """The jobs of ``project`` (all projects: ``None``), oldest first.

    Returns
    -------
    pandas.DataFrame
        One row per job: job_id, project, kind, state, progress, stage, submitted_by,
        submitted_at, started_at, finished_at, result, error, cancelled_by, cancelled_at,
        attempts, arguments (times in UTC).
    """
    liveness.sweep()
    name = None if project is None else _project_name(project, check=False)
    rows = [{"job_id": r.id, "project": r.project, "kind": r.kind, "state": r.state,
             "progress": r.progress, "stage": r.stage, "submitted_by": r.submitted_by,
             "submitted_at": r.submitted_at, "started_at": r.started_at,
             "finished_at": r.finished_at, "result": r.result, "error": r.error,
             "cancelled_by": r.cancelled_by, "cancelled_at": r.cancelled_at,
             "attempts": r.attempts, "arguments": r.arguments}
            for r in records.select(project=name)]
    frame = pd.DataFrame(rows, columns=_FRAME_COLUMNS)
    for column in ("submitted_at", "started_at", "finished_at", "cancelled_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


_FRAME_COLUMNS = ["job_id", "project", "kind", "state", "progress", "stage", "submitted_by",
                  "submitted_at", "started_at", "finished_at", "result", "error",
                  "cancelled_by", "cancelled_at", "attempts", "arguments"]


def cancel(job_id: int, *, annotator: str) -> Job:
    """Cancel a job: a queued one at once, a running training at its next batch (its
    finished epochs stay on disk; no version is written).

    Raises
    ------
    JobError
        The job ended already, or its cancel was already asked for (says by whom and when).
    """
    _check_annotator(annotator)
    job = get(job_id)
    with records.transaction() as db:
        record = records.get(job.id)
        assert record is not None  # get() found it; records are never deleted
        if record.state in records.FINAL_STATES:
            by = f" by {record.cancelled_by}" if record.state == "cancelled" else ""
            raise JobError(f"job {job.id} is already {record.state}{by} "
                           f"({_when(record.finished_at)}); there is nothing to cancel.")
        if record.cancelled_by:
            raise JobError(f"job {job.id} is being cancelled already (asked by "
                           f"{record.cancelled_by} at {_when(record.cancelled_at)}); it stops "
                           "at the training's next batch.")
        stamp = time.time()
        if record.state == "queued":
            records.update(job.id, db=db, only_if=("queued",), state="cancelled",
                           cancelled_by=annotator, cancelled_at=stamp, finished_at=stamp,
                           log=f"cancelled by {annotator} before it started")
        else:
            records.update(job.id, db=db, only_if=("running",), cancelled_by=annotator,
                           cancelled_at=stamp, log=f"cancel asked by {annotator}: the "
                           "training stops at its next batch")
    return job


def _when(moment: datetime | None) -> str:
    return "at an unknown time" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _check_annotator(annotator: Any) -> None:
    if not isinstance(annotator, str) or not annotator.strip():
        raise JobError(f"annotator must be the name of the person asking, e.g. "
                       f"annotator='erin'; got {annotator!r}.")


def _project_name(project: Project | str, *, check: bool) -> str:
    """The project's name (``check``: a name must be a project's)."""
    if isinstance(project, str):
        if check:
            from workbench.store.project import Project

            Project.open(project)  # ProjectError naming the projects there are
        return project
    name = getattr(project, "name", None)
    if not isinstance(name, str):
        raise JobError(f"project must be a Project or a project name, got "
                       f"{type(project).__name__}.")
    return name


__all__ = ["Job", "cancel", "get", "list_jobs", "submit"]
