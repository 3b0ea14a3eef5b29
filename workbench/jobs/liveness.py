"""Which running jobs still have a live worker, and what becomes of those that do not.

A worker holds an OS lock (``flock``, :mod:`workbench.train.run_lock`) on
``jobs/locks/<id>.lock`` from the moment it claims a job until the job's record is final;
the training process it starts shares that lock. The operating system releases it when
both processes end, however they end (``kill -9`` included), so a ``running`` job whose
lock can be taken has no worker any more: :func:`sweep` puts it back in the queue (it
resumes from its saved training state), or fails it with the reason after
:data:`MAX_ATTEMPTS` starts, or marks it cancelled if a cancel was asked for. Readers sweep
too, so a job is never shown as ``running`` when nothing runs it. The heartbeat the
training process writes every second is kept for people ("last seen …").
"""

from __future__ import annotations

import contextlib
import sqlite3
import time

from workbench.errors import JobError
from workbench.jobs import records
from workbench.train.run_lock import RunInProgressError, acquire, release

#: A job whose worker stopped this many times while running it fails instead of resuming.
MAX_ATTEMPTS = 3


def hold(job_id: int) -> int:
    """Take job ``job_id``'s lock (never waits): the open descriptor that holds it; raises
    :class:`JobError` while another process holds it."""
    try:
        return acquire(records.lock_path(job_id), what=f"running job {job_id}")
    except RunInProgressError as error:
        raise JobError(str(error)) from None


def let_go(job_id: int, descriptor: int) -> None:
    """Release a lock :func:`hold` took (and remove its file)."""
    release(records.lock_path(job_id), descriptor)


def sweep() -> list[int]:
    """Settle every ``running`` job that no process runs any more; their ids."""
    orphans: dict[int, int] = {}  # job id -> the descriptor holding its lock, meanwhile
    settled: list[int] = []
    try:
        for record in records.select(states=("running",)):
            with contextlib.suppress(JobError):  # held: its worker is alive
                orphans[record.id] = hold(record.id)
        if not orphans:
            return []
        with records.transaction() as db:
            for job_id in orphans:
                record = records.get(job_id)
                if record is not None and record.state == "running":
                    _settle(db, record)
                    settled.append(job_id)
    finally:
        for job_id, descriptor in orphans.items():
            let_go(job_id, descriptor)
    return settled


def _settle(db: sqlite3.Connection, record: records.JobRecord) -> None:
    seen = ("" if record.heartbeat_at is None else
            f", last heard from {time.time() - record.heartbeat_at.timestamp():.0f} s ago")
    gone = f"the worker running it stopped (pid {record.worker_pid}{seen})"
    if record.cancelled_by:
        records.update(record.id, db=db, state="cancelled", finished_at=time.time(),
                       log=f"{gone}; cancelled as {record.cancelled_by} asked")
    elif record.attempts >= MAX_ATTEMPTS:
        records.update(record.id, db=db, state="failed", finished_at=time.time(),
                       error=f"{gone} {record.attempts} times while running it; not resumed "
                       "again. Look at the job's output file, then submit it again.",
                       log=f"{gone}; failed after {record.attempts} attempts")
    else:
        records.update(record.id, db=db, state="queued",
                       log=f"{gone}; queued again: it resumes from its saved training state "
                       "when a worker takes it")


__all__ = ["MAX_ATTEMPTS", "hold", "let_go", "sweep"]
