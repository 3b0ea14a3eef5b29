"""The worker: takes queued jobs, oldest first, one per project at a time, and runs each in
its own process (:mod:`workbench.jobs.runner`).

``loupe worker`` runs one until it is stopped; ``loupe serve`` starts one beside Voila
(:func:`start_worker_process`) and stops it on exit. Several workers on one machine share
the queue safely: a job is claimed in one transaction, together with its lock.

Stopping (SIGTERM or SIGINT) is clean: the running trainings are asked to stop at their next
batch and their jobs go back to the queue (the next worker resumes them from the saved
training state); a training that does not stop within ``stop_timeout`` seconds is killed
and its job queued again all the same. A worker that is killed (``kill -9``) takes its
trainings with it, and the next worker, or any reader, finds their jobs by their released
locks (:mod:`workbench.jobs.liveness`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workbench.errors import JobError
from workbench.jobs import liveness, records
from workbench.text import printable

#: Seconds between two looks at the queue.
POLL_S = 0.5
#: Seconds between two heartbeats of the worker itself.
HEARTBEAT_S = 2.0
#: Environment variable naming the process a worker must not outlive (``loupe serve``).
PARENT_ENV = "LOUPE_WORKER_PARENT"
#: Variables a worker and its trainings never receive (the dashboards' access token).
SECRET_ENV = ("LOUPE_TOKEN", "JUPYTER_TOKEN")


@dataclass
class _Running:
    """A job this worker runs: its process and the lock it holds."""

    job_id: int
    project: str
    process: subprocess.Popen
    lock: int
    stop_sent: float | None = None


class Worker:
    """Runs queued jobs until :meth:`stop` (or SIGTERM/SIGINT in :meth:`run_forever`).

    Parameters
    ----------
    slots : int, default 1
        Jobs run at once (each of another project).
    stop_timeout : float, default 30
        Seconds a stopping training may take to reach its next batch before it is killed.
    """

    def __init__(self, *, slots: int = 1, stop_timeout: float = 30.0,
                 say: Any = None) -> None:
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise JobError(f"slots must be an integer >= 1 (jobs run at once), got {slots!r}.")
        if not stop_timeout >= 0:
            raise JobError(f"stop_timeout must be seconds >= 0, got {stop_timeout!r}.")
        self.slots, self.stop_timeout = slots, float(stop_timeout)
        self.say = say or (lambda text: print(printable(text), flush=True))
        self.running: dict[int, _Running] = {}
        self.stopping = False
        self.pid = os.getpid()
        self.started = time.time()
        self._beat = 0.0

    # -- the loop ------------------------------------------------------------------------
    def run_forever(self) -> int:
        """Run until SIGTERM or SIGINT; 0 once every job is settled."""
        def stop(signum: int, frame: Any) -> None:
            self.stopping = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        records.private_folders()
        self.say(f"loupe worker {self.pid}: taking jobs from {records.database_path()} "
                 f"({self.slots} at a time); stop with Ctrl+C or SIGTERM")
        try:
            while not self.stopping:
                self.step()
                time.sleep(POLL_S)
            self.shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            records.worker_gone(self.pid)
        self.say(f"loupe worker {self.pid}: stopped")
        return 0

    def step(self) -> None:
        """One look: heartbeat, reap ended jobs, settle orphaned ones, start new ones."""
        now = time.time()
        if now - self._beat >= HEARTBEAT_S:
            records.worker_heartbeat(self.pid, started_at=self.started)
            self._beat = now
        self._reap()
        for job_id in liveness.sweep():
            self.say(f"job {job_id}: its worker had stopped; {records.get(job_id).state}")
        while len(self.running) < self.slots and not self.stopping:
            claimed = self._claim()
            if claimed is None:
                break
            self._start(*claimed)

    def shutdown(self) -> None:
        """Ask every training to stop, wait ``stop_timeout``, kill the rest; settle all."""
        for job in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                job.process.send_signal(signal.SIGTERM)
            job.stop_sent = time.monotonic()
        deadline = time.monotonic() + self.stop_timeout
        while self.running and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.2)
        for job in list(self.running.values()):
            job.process.kill()
            job.process.wait()
        self._reap()

    # -- jobs ------------------------------------------------------------------------------
    def _claim(self) -> tuple[records.JobRecord, int] | None:
        """The oldest queued job of a project with nothing running, now ``running`` here,
        and its lock."""
        with records.transaction() as db:
            busy = {r.project for r in records.select(states=("running",))}
            for record in records.select(states=("queued",)):
                if record.project in busy:
                    continue
                try:
                    lock = liveness.hold(record.id)
                except JobError:
                    continue  # a process is still settling it
                records.update(record.id, db=db, only_if=("queued",), state="running",
                               attempts=record.attempts + 1, worker_pid=self.pid,
                               started_at=record.started_at.timestamp()
                               if record.started_at else time.time(),
                               heartbeat_at=time.time(), stage="starting",
                               log=f"taken by worker {self.pid}")
                return records.get(record.id), lock
        return None

    def _start(self, record: records.JobRecord, lock: int) -> None:
        output = records.output_path(record.id)
        output.parent.mkdir(parents=True, exist_ok=True)
        try:
            with output.open("ab") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "workbench.jobs.runner", str(record.id),
                     str(self.pid)], stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, env=job_environment(), pass_fds=(lock,))
        except OSError as error:
            records.update(record.id, only_if=("running",), state="failed",
                           finished_at=time.time(), error=f"could not start: {error}",
                           log=f"failed: could not start the training process ({error})")
            liveness.let_go(record.id, lock)
            return
        self.running[record.id] = _Running(record.id, record.project, process, lock)
        self.say(f"job {record.id}: {record.kind} {record.project!r} started (attempt "
                 f"{record.attempts}, output {output})")

    def _reap(self) -> None:
        for job_id, job in list(self.running.items()):
            code = job.process.poll()
            if code is None:
                continue
            record = records.get(job_id)
            if record is not None and record.state == "running":
                self._settle_crash(record, code, job)
            del self.running[job_id]
            liveness.let_go(job_id, job.lock)
            record = records.get(job_id)
            state = record.state if record else "gone"
            detail = (f": {record.result}" if state == "done" and record else
                      f": {record.error}" if state == "failed" and record else "")
            self.say(f"job {job_id}: {state}{detail}")

    def _settle_crash(self, record: records.JobRecord, code: int, job: _Running) -> None:
        """The training process ended without writing how: record why."""
        how = (f"was killed by signal {signal.Signals(-code).name}" if code < 0
               else f"exited with status {code}")
        if job.stop_sent is not None:  # killed while this worker stops: resume later
            records.update(record.id, only_if=("running",), state="queued",
                           log=f"the training process {how} while the worker stopped; "
                           "queued again: it resumes from its saved training state")
        elif record.cancelled_by:
            records.update(record.id, only_if=("running",), state="cancelled",
                           finished_at=time.time(),
                           log=f"the training process {how}; cancelled as "
                           f"{record.cancelled_by} asked")
        else:
            hint = " (out of memory?)" if code == -signal.SIGKILL else ""
            records.update(record.id, only_if=("running",), state="failed",
                           finished_at=time.time(),
                           error=f"the training process {how}{hint}; its output: "
                           f"{records.output_path(record.id)}",
                           log=f"failed: the training process {how}{hint}")


def job_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker or a training: this one, without the dashboards' token,
    with progress bars that write seldom (they go to the job's output file)."""
    env = dict(os.environ if base is None else base)
    for name in (*SECRET_ENV, PARENT_ENV):
        env.pop(name, None)
    env.setdefault("TQDM_MININTERVAL", "10")
    return env


def start_worker_process(*, slots: int = 1) -> subprocess.Popen:
    """Start ``loupe worker`` beside this process (``loupe serve``): it ends when this
    process ends, however it ends; stop it with :func:`stop_worker_process`."""
    env = job_environment()
    env[PARENT_ENV] = str(os.getpid())
    return subprocess.Popen([sys.executable, "-m", "workbench.cli", "worker", "--slots",
                             str(slots)], stdin=subprocess.DEVNULL, env=env)


def stop_worker_process(process: subprocess.Popen, *, timeout: float = 45.0) -> int | None:
    """SIGTERM, wait up to ``timeout`` seconds (running jobs go back to the queue), then
    kill; the worker's exit status."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def follow_parent() -> None:
    """In a worker ``loupe serve`` started: receive SIGTERM when ``loupe serve`` ends."""
    parent = os.environ.get(PARENT_ENV, "")
    if parent.isdigit():
        from workbench.jobs.runner import die_with_parent

        die_with_parent(int(parent), signal.SIGTERM)


def run_worker(*, slots: int = 1, stop_timeout: float = 30.0) -> int:
    """``loupe worker``: run jobs until stopped; the exit status."""
    follow_parent()
    return Worker(slots=slots, stop_timeout=stop_timeout).run_forever()


__all__ = ["Worker", "job_environment", "run_worker", "start_worker_process",
           "stop_worker_process"]
