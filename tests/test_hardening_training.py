"""Hardened training (issue 20, rows 1 and 8): no code from a project folder ever runs when
training resumes, and two identical runs at once end in a defined way.

Real tiny trainings (timm's test network at 32 px, 8 images), real pickles that would write
a marker file if anything unpickled them, real processes started at the same moment.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from images_factory import write_image

import workbench as wb
from workbench.train.classification.finetune import (
    STATE_FORMAT,
    FinetuneSettings,
    UnusableStateWarning,
)
from workbench.train.classification.train import RunInProgressError as ExportedRunInProgressError
from workbench.train.run_lock import RunInProgressError, acquire, release

TRAIN = {"backbone": "test_efficientnet", "weights": None, "mode": "finetune", "folds": 2,
         "epochs": 2, "image_size": 32, "progress": False}


class StopAfter:
    """A cancel flag set after ``n`` checks (one check per training batch)."""

    def __init__(self, n: float) -> None:
        self.n, self.checks = n, 0

    def is_set(self) -> bool:
        self.checks += 1
        return self.checks > self.n


class Payload:
    """What an attacker pickles: unpickling it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


@pytest.fixture
def tiny(request, tmp_path):
    """A project of 8 tiny images in two classes, named per process and test."""
    name = f"hard-train-{os.getpid()}-{request.node.name}"[:60]
    name = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name)
    p = wb.Project.create(name, overwrite=True)
    for i in range(8):
        write_image(tmp_path / "imgs" / ("ok" if i % 2 else "scratch") / f"{i}.png",
                    seed=700 + i, size=(32, 32))
    assert len(p.import_folder(tmp_path / "imgs", progress=False).added) == 8
    yield p
    wb.delete_project(name)


def _run_dir(project: wb.Project) -> Path:
    """The run's state folder, made by a run cancelled at its first batch."""
    with pytest.raises(wb.TrainingCancelled):
        wb.train(project, cancel=StopAfter(0), **TRAIN)
    runs = [d for d in (project.folder / "models" / ".runs").iterdir() if d.is_dir()]
    assert len(runs) == 1
    return runs[0]


def _oof(version: wb.ModelVersion) -> np.ndarray:
    frame = version.oof_predictions().sort_values("sample_id")
    return frame[version.classes].to_numpy()


# -- row 1: no pickle from a project folder -------------------------------------------------
@pytest.mark.parametrize("fold_frozen_blocks", [None, 4], ids=["pixels", "feature-cache"])
def test_saved_training_state_loads_without_pickle(tiny, fold_frozen_blocks):
    options = {**TRAIN, "settings": FinetuneSettings(fold_frozen_blocks=fold_frozen_blocks)}
    with pytest.raises(wb.TrainingCancelled):
        wb.train(tiny, cancel=StopAfter(1), **options)  # fold 0 has finished one epoch
    state = next((tiny.folder / "models" / ".runs").glob("*/finetune_fold0.state.pt"))
    saved = torch.load(state, map_location="cpu", weights_only=True)  # no pickled objects
    assert saved["format"] == STATE_FORMAT and saved["epoch"] == 1
    assert saved["rng"].dtype == torch.uint8 and saved["order"].dtype == torch.uint8
    if fold_frozen_blocks is None:  # early stopping scores the held-out fold every epoch
        assert isinstance(saved["val_probs"], torch.Tensor)
    else:  # the cache's folds run every epoch and score it after the last
        assert saved["val_probs"] is None
    version = wb.train(tiny, resume=True, **options)
    assert version.metrics["n_evaluated"] == 8


@pytest.mark.parametrize("how", ["torch-zip", "raw-pickle"])
def test_a_pickled_state_in_the_project_never_runs(tiny, tmp_path, how):
    reference = _oof(wb.train(tiny, **TRAIN))
    run_dir = _run_dir(tiny)
    marker = tmp_path / "payload-ran"
    planted = run_dir / "finetune_fold0.state.pt"
    if how == "torch-zip":  # what torch.save of a hostile object writes
        torch.save({"model": Payload(marker)}, planted)
    else:  # a bare pickle stream, which torch.load also reads
        planted.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.warns(UnusableStateWarning, match="finetune_fold0.state.pt"):
        version = wb.train(tiny, resume=True, **TRAIN)
    assert not marker.exists()  # the payload never ran
    assert np.allclose(_oof(version), reference, atol=1e-5)  # fold 0 trained from scratch
    assert not run_dir.exists()


def test_fold_results_with_pickled_objects_are_retrained_not_loaded(tiny, tmp_path):
    reference = _oof(wb.train(tiny, **TRAIN))
    run_dir = _run_dir(tiny)
    marker = tmp_path / "payload-ran"
    np.savez(run_dir / "finetune_fold0.npz", probs=np.array([Payload(marker)], dtype=object),
             best_epoch=1, curve="[]")
    (run_dir / "finetune_fold1.npz").write_bytes(b"not a zip file")
    with pytest.warns(UnusableStateWarning) as caught:
        version = wb.train(tiny, resume=True, **TRAIN)
    ignored = " ".join(str(w.message) for w in caught)
    assert "finetune_fold0.npz" in ignored and "finetune_fold1.npz" in ignored
    assert not marker.exists()
    assert np.allclose(_oof(version), reference, atol=1e-5)


def test_a_state_of_another_shape_is_ignored_with_a_warning(tiny):
    reference = _oof(wb.train(tiny, **TRAIN))
    run_dir = _run_dir(tiny)
    torch.save({"format": STATE_FORMAT, "model": {"weight": torch.zeros(3)}},
               run_dir / "finetune_fold1.state.pt")
    with pytest.warns(UnusableStateWarning, match="not this model's state dict"):
        version = wb.train(tiny, resume=True, **TRAIN)
    assert np.allclose(_oof(version), reference, atol=1e-5)


def test_a_link_planted_where_fold_results_are_written_is_not_written_through(tiny, tmp_path):
    run_dir = _run_dir(tiny)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (run_dir / ".finetune_fold0.npz.partial.npz").symlink_to(victim)
    version = wb.train(tiny, resume=True, **TRAIN)
    assert version.metrics["n_evaluated"] == 8
    assert victim.read_text() == "keep me"


def test_a_runs_folder_that_leads_outside_is_refused_and_nothing_is_deleted(tiny, tmp_path):
    run_dir = _run_dir(tiny)
    outside = tmp_path / "elsewhere"
    (outside / run_dir.name).mkdir(parents=True)
    (outside / run_dir.name / "precious.txt").write_text("keep me")
    runs = run_dir.parent
    for entry in runs.iterdir():
        (entry.rmdir() if entry.is_dir() else entry.unlink())
    runs.rmdir()
    runs.symlink_to(outside, target_is_directory=True)
    with pytest.raises(wb.UnsafePathError, match="training state folder"):
        wb.train(tiny, **TRAIN)
    assert (outside / run_dir.name / "precious.txt").read_text() == "keep me"


# -- row 8: two identical runs at once ------------------------------------------------------
RACE_SCRIPT = r"""
import sys, time
from pathlib import Path
import torch.nn.functional as F
import workbench as wb
from workbench.train.classification.train import RunInProgressError

name, folder, me = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
real_loss = F.cross_entropy
def slow_loss(*args, **kwargs):  # every batch takes a while: the runs overlap for sure
    time.sleep(0.3)
    return real_loss(*args, **kwargs)
F.cross_entropy = slow_loss
project = wb.Project.open(name)
(folder / f"ready-{me}").touch()
while not (folder / "go").exists():
    time.sleep(0.01)
try:
    version = wb.train(project, **TRAIN)
except RunInProgressError as error:
    print("REFUSED", error)
else:
    print("TRAINED", version.name)
"""


@pytest.mark.slow
def test_two_identical_trainings_at_once_one_trains_the_other_is_refused(tiny, tmp_path):
    script = RACE_SCRIPT.replace("**TRAIN", ", ".join(f"{k}={v!r}" for k, v in TRAIN.items()))
    processes = [subprocess.Popen([sys.executable, "-c", script, tiny.name, str(tmp_path), me],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for me in ("a", "b")]
    deadline = time.time() + 300
    while not all((tmp_path / f"ready-{me}").exists() for me in ("a", "b")):
        assert time.time() < deadline and all(p.poll() is None for p in processes), \
            [p.stderr.read()[-3000:] for p in processes if p.poll() is not None]
        time.sleep(0.05)
    (tmp_path / "go").touch()  # both call train now
    results = [p.communicate(timeout=300) for p in processes]
    for process, (_, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err[-3000:]
        assert "FileNotFoundError" not in err
    last = [out.strip().splitlines()[-1] if out.strip() else "" for out, _ in results]
    trained = [i for i, line in enumerate(last) if line.startswith("TRAINED")]
    refused = [i for i, line in enumerate(last) if line.startswith("REFUSED")]
    assert len(trained) == 1 and len(refused) == 1, last
    message = last[refused[0]]
    assert f"already training project {tiny.name!r}" in message
    assert f"(pid {processes[trained[0]].pid})" in message and "resume=True" in message
    assert wb.Project.open(tiny.name).models()["name"].tolist() == ["v1"]
    assert not list((tiny.folder / "models" / ".runs").iterdir())  # state and lock removed


HOLD_SCRIPT = r"""
import sys, time
from pathlib import Path
from workbench.train.run_lock import acquire
acquire(Path(sys.argv[1]), what="testing")
print("held", flush=True)
time.sleep(600)
"""


def test_a_killed_runs_lock_is_released_by_the_os(tmp_path):
    lock = tmp_path / "runs" / "key.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(lock)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunInProgressError, match=rf"already testing \(pid {holder.pid}\)"):
            acquire(lock, what="testing")
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    descriptor = acquire(lock, what="testing")  # kill -9 let go of it
    assert lock.read_text().strip() == str(os.getpid())
    release(lock, descriptor)
    assert not lock.exists()
    assert ExportedRunInProgressError is RunInProgressError
    assert issubclass(RunInProgressError, wb.LoupeError)
