"""Training jobs that outlive the page: real ``loupe worker`` processes, real (tiny)
trainings, the queue every process reads, cancel, and a worker killed mid-training.

Each test starts its own workers (``python -m workbench.cli worker``) and trains its own
projects of eight 32-pixel images with timm's ``test_efficientnet`` (random weights).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from browser_support import REPO_ROOT, free_port, log_tail, wait_for_server
from images_factory import write_image

import workbench as wb
from workbench import cli
from workbench.jobs import liveness, records
from workbench.train.classification.finetune import FinetuneSettings

TRAIN = {"backbone": "test_efficientnet", "weights": None, "mode": "finetune", "folds": 2,
         "epochs": 2, "image_size": 32}
#: Long enough to be stopped in the middle (2 batches per epoch, no early stopping, folds
#: trained like the final model): on an idle two-core machine about 8 epochs a second,
#: 3 x 40 epochs in all.
LONG = {**TRAIN, "epochs": 40, "settings": FinetuneSettings(
    batch_size=2, patience=100, fold_frozen_blocks=None, fold_epochs=None)}
#: A training that only ends when it is stopped.
ENDLESS = {**LONG, "epochs": 5000}
#: Seconds a job may take on a busy two-core machine.
JOB_TIMEOUT_S = 240


@pytest.fixture
def make_project(request, tmp_path) -> Iterator[Callable[[str], wb.Project]]:
    """Projects of 8 tiny images in two classes, named per process and test; any job of
    theirs still open at the end is cancelled."""
    made: list[str] = []

    def make(suffix: str) -> wb.Project:
        name = f"jobs-{os.getpid()}-{request.node.name}"[:50] + f"-{suffix}"
        name = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name)
        project = wb.Project.create(name, overwrite=True)
        for i in range(8):
            write_image(tmp_path / name / ("ok" if i % 2 else "scratch") / f"{i}.png",
                        seed=700 + i, size=(32, 32))
        project.import_folder(tmp_path / name, progress=False)
        made.append(name)
        return project

    yield make
    for name in made:
        for job_id in wb.jobs.list(name).query("state in ['queued', 'running']")["job_id"]:
            with contextlib.suppress(wb.jobs.JobError):
                wb.jobs.cancel(int(job_id), annotator="teardown")
        wb.delete_project(name)


@contextlib.contextmanager
def worker(log: Path, *, slots: int = 1) -> Iterator[subprocess.Popen]:
    """A ``loupe worker`` process (stopped with SIGTERM at the end if still running)."""
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "workbench.cli", "worker", "--slots",
                                    str(slots)], cwd=REPO_ROOT, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=90)


def wait_until(condition: Callable[[], bool], what: str, log: Path | None = None,
               timeout: float = JOB_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tail = f"; the worker's output ends with:\n{log_tail(log)}" if log else ""
            pytest.fail(f"{what} did not happen within {timeout} s{tail}")
        time.sleep(0.3)


def epochs_logged(job: wb.jobs.Job) -> int:
    return sum("epoch" in line for line in job.log_tail(200))


def runners(process: subprocess.Popen) -> list[psutil.Process]:
    """The training processes a worker started."""
    with contextlib.suppress(psutil.NoSuchProcess):
        return [child for child in psutil.Process(process.pid).children()
                if "workbench.jobs.runner" in " ".join(child.cmdline())]
    return []


@pytest.mark.slow
def test_jobs_return_at_once_run_one_per_project_and_write_versions(make_project, tmp_path,
                                                                    capsys):
    first, second = make_project("a"), make_project("b")
    wb.jobs.submit(first, "train", annotator="warm-up-check-only", **TRAIN).cancel(
        annotator="erin")  # the first submit imports the trainer; the timed ones do not
    started = time.monotonic()
    a1 = wb.jobs.submit(first, "train", annotator="erin", **TRAIN)
    a2 = wb.jobs.submit(first.name, "train", annotator="sam", **TRAIN)
    b1 = wb.jobs.submit(second, "train", annotator="erin", **TRAIN)
    assert time.monotonic() - started < 5  # nothing trains in this process
    assert a1.state == a2.state == b1.state == "queued"
    assert any("no worker is running" in line for line in a1.log_tail())

    log = tmp_path / "worker.log"
    with worker(log, slots=2) as process:
        wait_until(lambda: a1.finished and a2.finished and b1.finished, "three jobs", log)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0  # SIGTERM-clean
    for job in (a1, a2, b1):
        assert (job.state, job.error) == ("done", None), job.log_tail()
        assert job.progress == 1.0
    assert first.models()["name"].tolist() == [a1.result, a2.result] == ["v1", "v2"]
    assert second.models()["name"].tolist() == [b1.result] == ["v1"]
    assert f"done: {a1.result}" in a1.log_tail()[-1]
    # One training per project at a time (a2 waited for a1), other projects meanwhile.
    a1r, a2r, b1r = a1.record(), a2.record(), b1.record()
    assert a1r.finished_at <= a2r.started_at
    assert b1r.started_at < a1r.finished_at
    assert (a1r.submitted_by, a2r.submitted_by, a1r.attempts) == ("erin", "sam", 1)

    frame = wb.jobs.list(first)
    assert frame["job_id"].tolist()[-2:] == [a1.id, a2.id]
    assert frame["state"].tolist() == ["cancelled", "done", "done"]
    assert frame["arguments"].iloc[-1]["epochs"] == 2
    assert cli.main(["jobs", first.name]) == 0
    table = capsys.readouterr().out
    assert "submitted_by" in table and "sam" in table
    for job in (a1, a2):
        row = next(line for line in table.splitlines() if line.split()[0] == str(job.id))
        assert "done" in row and "100%" in row and row.rstrip().endswith(job.result)


@pytest.mark.slow
def test_cancel_stops_a_running_training_and_a_second_cancel_says_so(make_project, tmp_path):
    project = make_project("c")
    long = wb.jobs.submit(project, "train", annotator="erin", **ENDLESS)
    waiting = wb.jobs.submit(project, "train", annotator="erin", **TRAIN)
    log = tmp_path / "worker.log"
    with worker(log, slots=2):
        wait_until(lambda: long.state == "running" and epochs_logged(long) >= 1,
                   "an epoch of the long job", log)
        assert 0 < long.progress < 1 and "fold" in long.record().stage
        assert waiting.state == "queued"  # the project is busy: it waits its turn
        wb.jobs.cancel(waiting.id, annotator="sam")
        assert waiting.state == "cancelled" and waiting.record().started_at is None

        wb.jobs.cancel(long.id, annotator="sam")
        with pytest.raises(wb.jobs.JobError, match=r"being cancelled already.*sam"):
            wb.jobs.cancel(long.id, annotator="erin")
        long.wait(60)
    record = long.record()
    assert (record.state, record.cancelled_by, record.result) == ("cancelled", "sam", None)
    assert record.finished_at >= record.cancelled_at
    assert project.models().empty  # no version was written
    assert "cancelled by sam; no version was written" in long.log_tail()[-1]
    with pytest.raises(wb.jobs.JobError, match="already cancelled by sam"):
        wb.jobs.cancel(long.id, annotator="erin")
    with pytest.raises(wb.jobs.JobError, match="already cancelled"):
        long.cancel(annotator="erin")


@pytest.mark.slow
def test_a_worker_killed_mid_training_never_leaves_the_job_running(make_project, tmp_path):
    project = make_project("k")
    job = wb.jobs.submit(project, "train", annotator="erin", **LONG)
    log = tmp_path / "worker.log"
    with worker(log) as first:
        wait_until(lambda: epochs_logged(job) >= 2, "two epochs", log)
        training = runners(first)
        assert len(training) == 1
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        psutil.wait_procs(training, timeout=10)  # the training dies with its worker
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                       for p in training)
    # No worker at all now: readers see the job queued again, not running.
    assert job.state == "queued"
    assert "the worker running it stopped" in " ".join(job.log_tail(5))
    saved = list((project.folder / "models" / ".runs").glob("*/finetune_fold*"))
    assert saved  # the epochs it finished are on disk

    with worker(log) as second:
        wait_until(lambda: job.finished, "the resumed job", log)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0
    record = job.record()
    assert (record.state, record.attempts) == ("done", 2), job.log_tail(50)
    assert any("resuming from the saved training state" in line
               for line in job.log_tail(200))
    assert project.models()["name"].tolist() == [record.result]


@pytest.mark.slow
def test_a_stopped_worker_queues_its_job_again_for_the_next(make_project, tmp_path):
    project = make_project("s")
    job = wb.jobs.submit(project, "train", annotator="erin", **ENDLESS)
    log = tmp_path / "worker.log"
    with worker(log) as process:
        wait_until(lambda: epochs_logged(job) >= 1, "an epoch", log)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    assert job.state == "queued"
    assert "the worker stopped; queued again" in job.log_tail()[-1]
    assert job.record().cancelled_by is None


def test_a_job_whose_worker_died_too_often_fails_with_its_reason(make_project):
    project = make_project("d")
    job_id = records.insert(project=project.name, kind="train", arguments={},
                            submitted_by="erin")
    records.update(job_id, state="running", attempts=liveness.MAX_ATTEMPTS, worker_pid=1,
                   heartbeat_at=time.time() - 60)
    job = wb.jobs.get(job_id)
    assert job.state == "failed"  # nobody holds its lock: no process runs it
    assert f"{liveness.MAX_ATTEMPTS} times" in job.error and "pid 1" in job.error
    held = records.insert(project=project.name, kind="train", arguments={},
                          submitted_by="erin")
    records.update(held, state="running", attempts=1, worker_pid=os.getpid())
    lock = liveness.hold(held)  # as a live worker does
    try:
        assert wb.jobs.get(held).state == "running"
        wb.jobs.cancel(held, annotator="sam")
    finally:
        liveness.let_go(held, lock)
    assert wb.jobs.get(held).state == "cancelled"  # its worker went away: settled as asked


def test_submit_checks_its_arguments_before_queueing(make_project):
    project = make_project("v")
    before = len(wb.jobs.list())
    with pytest.raises(wb.jobs.JobError, match=r"kind='predict'.*'train'"):
        wb.jobs.submit(project, "predict", annotator="erin")
    with pytest.raises(wb.jobs.JobError, match="annotator"):
        wb.jobs.submit(project, "train", annotator="", **TRAIN)
    with pytest.raises(wb.jobs.JobError, match=r"no argument 'epoch'.*epochs"):
        wb.jobs.submit(project, "train", annotator="erin", epoch=3)
    with pytest.raises(wb.jobs.JobError, match="view="):
        wb.jobs.submit(project, "train", annotator="erin", view=project.dataset.limit(2))
    with pytest.raises(wb.jobs.JobError, match="cancel="):
        wb.jobs.submit(project, "train", annotator="erin", cancel=None)
    with pytest.raises(wb.jobs.JobError, match=r"settings.*batch"):
        wb.jobs.submit(project, "train", annotator="erin", settings={"batch": 2})
    with pytest.raises(wb.ProjectError, match="not found"):
        wb.jobs.submit("no-such-project-here", "train", annotator="erin")
    assert len(wb.jobs.list()) == before  # nothing was queued
    with pytest.raises(wb.jobs.JobError, match="no job 987654"):
        wb.jobs.cancel(987654, annotator="erin")
    assert cli.main(["jobs", "no-such-project-here"]) == 2
    assert cli.main(["jobs", project.name]) == 0


@pytest.mark.slow
def test_loupe_serve_runs_a_worker_and_stops_it_on_exit(make_project, tmp_path):
    project = make_project("serve")
    port, log = free_port(), tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen([sys.executable, "-m", "workbench.cli", "serve", "--project",
                                  project.name, "--port", str(port), "--no-preheat"],
                                 cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        wait_for_server(f"http://127.0.0.1:{port}/", serve, log)
        workers = [p for p in psutil.Process(serve.pid).children()
                   if "worker" in p.cmdline()]
        assert len(workers) == 1, log_tail(log)
        wait_until(lambda: workers[0].pid in records.live_workers(), "the worker's heartbeat",
                   log, timeout=60)
        os.killpg(serve.pid, signal.SIGINT)  # Ctrl+C in the terminal
        assert serve.wait(timeout=90) == 0
        psutil.wait_procs(workers, timeout=30)
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                       for p in workers)
        assert "loupe worker" in log.read_text() and "stopped" in log.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(serve.pid, signal.SIGKILL)


def test_progress_follows_the_trainers_bars_and_never_goes_back():
    from workbench.jobs.progress import Bar, BarProgress

    seen = BarProgress()
    assert seen.look([Bar("embedding (x)", "image", 5, 10)])[0] == pytest.approx(0.05)
    progress, stage, lines = seen.look([Bar("folds", "fold", 0, 2),
                                        Bar("fold 1/2", "epoch", 5, 10)])
    assert progress == pytest.approx(0.1 + 0.8 * 0.25)
    assert stage == "folds 0/2 fold; fold 1/2 5/10 epoch"
    assert lines == ["fold 1/2: epoch 5 of at most 10 done"]
    assert seen.look([Bar("folds", "fold", 0, 2), Bar("fold 1/2", "epoch", 5, 10)])[2] == []
    assert seen.look([Bar("folds", "fold", 1, 2)])[0] == pytest.approx(0.5)
    assert seen.look([Bar("final model", "epoch", 5, 10)])[0] == pytest.approx(0.95)
    assert seen.look([Bar("final model", "epoch", 3, 10)])[0] == pytest.approx(0.95)
    assert BarProgress(0.4).look([])[0] == 0.4  # a resumed job starts where it was
