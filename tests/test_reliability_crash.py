"""Crashes: ``kill -9`` a training run mid-epoch and mid-checkpoint-write, and an import
halfway; nothing half-written becomes visible and re-running finishes the job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from images_factory import write_image

import workbench as wb
from workbench.store import _db as store
from workbench.train.classification import train as training

#: A tiny random network (timm's test model): the crash points matter here, not accuracy.
TRAIN = {"backbone": "test_efficientnet", "weights": None, "mode": "finetune", "folds": 2,
         "epochs": 3, "image_size": 64, "progress": False}

TRAIN_SCRIPT = r"""
import os, sys, time
from pathlib import Path
import torch
import workbench as wb

name, signal_file, how = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
if how == "slow":  # every batch takes a while: a kill after an epoch lands mid-epoch
    import torch.nn.functional as F
    real_loss = F.cross_entropy
    def slow_loss(*args, **kwargs):
        time.sleep(0.5)
        return real_loss(*args, **kwargs)
    F.cross_entropy = slow_loss
if how == "hang":  # write half of model.pt, say so, then hang until killed
    real_save = torch.save
    def save(obj, f, *args, **kwargs):
        if Path(str(f)).name == "model.pt":
            real_save(obj, f, *args, **kwargs)
            data = Path(f).read_bytes()
            Path(f).write_bytes(data[: len(data) // 2])
            signal_file.touch()
            time.sleep(600)
        return real_save(obj, f, *args, **kwargs)
    torch.save = save
wb.train(wb.Project.open(name), resume=True, **TRAIN)
"""


def _spawn(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _kill_when(process: subprocess.Popen, ready, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"process ended before {what}: {process.stderr.read()[-3000:]}")
        if time.time() > deadline:
            process.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


@pytest.fixture
def small(tmp_path):
    name = f"rel-crash-{os.getpid()}"
    p = wb.Project.create(name, overwrite=True)
    for i in range(10):
        write_image(tmp_path / "imgs" / ("ok" if i % 2 else "scratch") / f"{i}.png",
                    seed=300 + i, size=(64, 64))
    assert len(p.import_folder(tmp_path / "imgs", progress=False).added) == 10
    yield p
    wb.delete_project(name)


@pytest.mark.slow
def test_training_killed_mid_epoch_and_mid_checkpoint_write_resumes(small, tmp_path,
                                                                    monkeypatch):
    p = small
    script = TRAIN_SCRIPT.replace("**TRAIN", ", ".join(f"{k}={v!r}" for k, v in TRAIN.items()))
    runs = p.folder / "models" / ".runs"

    # 1. kill -9 while fold 0 is training, once an epoch has been saved
    first = _spawn(script, p.name, str(tmp_path / "unused"), "slow")
    _kill_when(first, lambda: any(runs.glob("*/finetune_fold0.state.pt")), "an epoch's state")
    reopened = wb.Project.open(p.name)
    assert reopened.models().empty and len(reopened) == 10
    with pytest.raises(wb.ProjectError, match="no model version"):
        reopened.model()

    # 2. resume; kill -9 in the middle of writing the version's checkpoint
    hung = tmp_path / "checkpoint-half-written"
    second = _spawn(script, p.name, str(hung), "hang")
    _kill_when(second, hung.exists, "the checkpoint write")
    assert wb.Project.open(p.name).models().empty  # the half-written version is invisible
    assert list((p.folder / "models").glob(".v*.partial/model.pt"))  # it exists, hidden

    # 3. resume in this process: folds already done are reused, and it completes
    resumed_from_state = []
    real_fit = training.fit

    def spy(*args, state_path=None, **kwargs):
        resumed_from_state.append(state_path is not None and Path(state_path).is_file())
        return real_fit(*args, state_path=state_path, **kwargs)

    monkeypatch.setattr(training, "fit", spy)
    version = wb.train(reopened, resume=True, **TRAIN)
    assert resumed_from_state == [True]  # only the final model, from its saved state
    models = reopened.models()
    assert models.name.tolist() == [version.name]
    assert models.metrics[0]["n_evaluated"] == 10
    frame = version.predict(reopened.dataset.values("filepath")[:3], progress=False)
    assert len(frame) == 3 and frame["confidence"].between(0, 1).all()
    assert not any(runs.glob("*/*.pt"))  # the run's saved state is cleaned up


IMPORT_SCRIPT = r"""
import sys, time
import workbench as wb
from workbench.store.ingest import write as importer

importer.BATCH_SIZE = 5  # insert in small batches, so a kill lands between two of them
real_check = importer.check_image
def slow_check(*args, **kwargs):
    time.sleep(0.1)
    return real_check(*args, **kwargs)
importer.check_image = slow_check
importer.CHUNK = 2
wb.Project.open(sys.argv[1]).import_folder(sys.argv[2], progress=False)
"""


@pytest.mark.slow
def test_import_killed_halfway_then_rerun_adds_exactly_the_missing_files(small, tmp_path):
    p = small
    folder = tmp_path / "batch"
    for i in range(60):
        write_image(folder / ("ok" if i % 3 else "scratch") / f"n{i:02d}.png", seed=1000 + i,
                    size=(32, 32))
    before = store.histories(p.dataset, p.dataset.values("id"))
    process = _spawn(IMPORT_SCRIPT, p.name, str(folder))
    collection = p.dataset._sample_collection
    _kill_when(process, lambda: collection.count_documents({}) >= 10 + 20, "20 new samples")
    landed = collection.count_documents({}) - 10
    assert 20 <= landed < 60, landed  # really halfway

    report = p.import_folder(folder, progress=False)
    assert len(report.added) == 60 - landed
    assert len(report.duplicates) == landed and not report.rejected
    assert len(p) == 70
    hashes = p.dataset.values("content_hash")
    assert len(set(hashes)) == 70  # no file stored twice
    after = store.histories(p.dataset, p.dataset.values("id"))
    assert {sid: after[sid] for sid in before} == before  # older samples untouched
    assert all(len(h) == 1 for h in after.values())  # the re-run added no label twice
    again = p.import_folder(folder, progress=False)
    assert not again.added and again.annotations_added == 0
