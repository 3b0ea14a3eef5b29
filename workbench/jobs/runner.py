"""The process that runs one job: ``python -m workbench.jobs.runner JOB_ID WORKER_PID``.

A worker starts one per job it claims (so a training that runs out of memory takes only
itself down) and passes on the job's lock. The runner dies with its worker (Linux:
``PR_SET_PDEATHSIG``), writes the job's progress, stage and heartbeat every second, turns a
cancel written by any process into the training's cancel flag (it stops at its next batch),
and writes the job's end: ``done`` with the result, ``failed`` with the reason,
``cancelled``, or back to ``queued`` when the worker is stopping (SIGTERM or SIGINT: the next
worker resumes it from the saved training state).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from typing import Any

from workbench.jobs import records
from workbench.jobs.kinds import kind_functions
from workbench.jobs.progress import BarProgress

#: Seconds between two progress writes.
REPORT_EVERY_S = 1.0
#: Exit status when the record is not this process's to run (nothing was done).
NOT_OURS = 3


class StopFlags:
    """The training's cancel flag (``is_set()``, checked before every batch): set when a
    person cancels the job, or when the worker stops."""

    def __init__(self) -> None:
        self.cancelled = False
        self.stopping = False

    def is_set(self) -> bool:
        return self.cancelled or self.stopping


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` when the parent process ends (Linux); exit at once if
    it has already ended."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


class Reporter(threading.Thread):
    """Writes progress and heartbeat, reads cancels, watches the worker."""

    def __init__(self, job_id: int, flags: StopFlags, parent: int, *,
                 progress: float = 0.0) -> None:
        super().__init__(name=f"job-{job_id}-reporter", daemon=True)
        self.job_id, self.flags, self.parent = job_id, flags, parent
        self.bars = BarProgress(progress)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(REPORT_EVERY_S):
            with contextlib.suppress(Exception):  # a busy database: try again next second
                self.report()

    def report(self) -> None:
        if os.getppid() != self.parent:  # the worker is gone (without PDEATHSIG)
            self.flags.stopping = True
        progress, stage, lines = self.bars.look()
        with records.transaction() as db:
            for line in lines:
                records.append_log(self.job_id, line, db=db)
            records.update(self.job_id, db=db, only_if=("running",), progress=progress,
                           stage=stage, heartbeat_at=time.time())
            record = records.get(self.job_id)
        if record is not None and record.cancelled_by:
            self.flags.cancelled = True


def run(job_id: int, parent: int) -> int:
    """Run job ``job_id`` for worker ``parent``; the exit status."""
    die_with_parent(parent)
    flags = StopFlags()

    def stop(signum: int, frame: Any) -> None:
        flags.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    record = records.get(job_id)
    if record is None or record.state != "running" or record.worker_pid != parent:
        print(f"job {job_id} is not running for worker {parent}; nothing done", flush=True)
        return NOT_OURS
    resume = record.attempts > 1
    print(f"--- job {job_id} attempt {record.attempts} (pid {os.getpid()}) "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    _log_warnings(job_id)
    _, run_kind = kind_functions(record.kind)
    reporter = Reporter(job_id, flags, parent, progress=record.progress)
    records.update(job_id, only_if=("running",), heartbeat_at=time.time(), stage="starting",
                   log=(f"attempt {record.attempts}: resuming from the saved training state"
                        if resume else f"training process {os.getpid()} started"))
    reporter.start()
    try:
        if record.cancelled_by:
            flags.cancelled = True
            raise _cancelled()
        result = run_kind(record.project, record.arguments, cancel=flags, resume=resume)
    except BaseException as error:  # every end is written to the record
        reporter.done.set()
        reporter.join(timeout=5)
        return _ended(job_id, error, flags)
    reporter.done.set()
    reporter.join(timeout=5)
    late = " (a cancel came after it had finished)" if flags.cancelled else ""
    records.update(job_id, only_if=("running",), state="done", result=str(result),
                   progress=1.0, stage="", finished_at=time.time(),
                   log=f"done: {result}{late}")
    return 0


def _cancelled() -> BaseException:
    from workbench.train._loop import TrainingCancelled

    return TrainingCancelled("cancelled before it started")


def _ended(job_id: int, error: BaseException, flags: StopFlags) -> int:
    """Write how the job ended with ``error``; the exit status."""
    from workbench.train._loop import TrainingCancelled

    stamp = time.time()
    if isinstance(error, TrainingCancelled | KeyboardInterrupt) and flags.cancelled:
        record = records.get(job_id)
        who = record.cancelled_by if record is not None else "someone"
        records.update(job_id, only_if=("running",), state="cancelled", finished_at=stamp,
                       stage="", log=f"cancelled by {who}; no version was written")
        return 0
    if isinstance(error, TrainingCancelled | KeyboardInterrupt) and flags.stopping:
        records.update(job_id, only_if=("running",), state="queued", stage="",
                       log="the worker stopped; queued again: it resumes from its saved "
                       "training state when a worker takes it")
        return 0
    traceback.print_exception(error, file=sys.stdout)
    sys.stdout.flush()
    reason = f"{type(error).__name__}: {error}"
    records.update(job_id, only_if=("running",), state="failed", error=reason,
                   finished_at=stamp, stage="", log=f"failed: {reason}")
    return 1


def _log_warnings(job_id: int) -> None:
    """Also put every warning in the job's log (a state file that was not used, say)."""
    shown = warnings.showwarning

    def show(message: Any, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        with contextlib.suppress(Exception):
            records.append_log(job_id, f"warning: {category.__name__}: {message}")
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    """``python -m workbench.jobs.runner JOB_ID WORKER_PID``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not all(a.isdigit() for a in args):
        print("usage: python -m workbench.jobs.runner JOB_ID WORKER_PID (a worker starts "
              "this; run 'loupe worker' instead)", file=sys.stderr)
        return 2
    return run(int(args[0]), int(args[1]))


if __name__ == "__main__":
    sys.exit(main())
