"""Import reads only regular files, of a bounded size, and reports every entry it skips
(issue 20, rows 9, 14 and 15); an import killed halfway leaves labels ``annotate`` accepts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from images_factory import write_image

import workbench as wb
from workbench.store.ingest import images


@pytest.fixture
def project(request):
    name = f"hi-{request.node.name[5:45]}-{os.getpid()}".replace("_", "-")
    p = wb.Project.create(name, overwrite=True)
    yield p
    wb.delete_project(name)


class _Unblock:
    """Opens a FIFO for writing after ``seconds`` if a reader still waits on it, so that code
    that blocks on it (the bug) ends and the test fails instead of hanging forever;
    ``needed`` says whether it had to."""

    def __init__(self, fifo: Path, seconds: float = 20) -> None:
        self.fifo, self.done, self.needed = fifo, threading.Event(), False
        self.thread = threading.Thread(target=self._run, args=(seconds,), daemon=True)

    def _run(self, seconds: float) -> None:
        if self.done.wait(seconds):
            return
        while not self.done.is_set():
            try:
                os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))
                self.needed = True
            except OSError:  # no reader at this instant
                time.sleep(0.05)

    def __enter__(self) -> _Unblock:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(timeout=5)


def _bytes_read() -> int:
    """Bytes this process has read so far (files, pipes and sockets: ``rchar``)."""
    return int(re.search(r"^rchar: (\d+)$", Path("/proc/self/io").read_text(), re.M)[1])


def _reasons(report) -> dict[str, str]:
    return {Path(path).name: reason for path, reason in report.rejected}


def test_a_fifo_named_jpg_is_rejected_at_once(project, tmp_path):
    folder = tmp_path / "in"
    write_image(folder / "ok" / "good.png", seed=1, size=(16, 16))
    os.mkfifo(folder / "ok" / "pipe.jpg")
    with _Unblock(folder / "ok" / "pipe.jpg") as blocker:
        report = project.import_folder(folder, progress=False)
    assert not blocker.needed, "the import opened the FIFO and waited for a writer"
    assert len(report.added) == 1
    assert "not a regular file" in _reasons(report)["pipe.jpg"]
    assert "FIFO" in _reasons(report)["pipe.jpg"]


def test_fifos_in_detection_imports_are_rejected_at_once(tmp_path):
    name = f"hi-det-fifo-{os.getpid()}"
    p = wb.Project.create(name, task="detection", classes=["dent"], overwrite=True)
    try:
        write_image(tmp_path / "img" / "good.png", seed=2, size=(32, 32))
        os.mkfifo(tmp_path / "img" / "pipe.jpg")
        coco = {"images": [{"id": 1, "file_name": "good.png", "width": 32, "height": 32},
                           {"id": 2, "file_name": "pipe.jpg", "width": 32, "height": 32}],
                "annotations": [], "categories": [{"id": 1, "name": "dent"}]}
        (tmp_path / "img" / "coco.json").write_text(json.dumps(coco))
        (tmp_path / "xml").mkdir()
        os.mkfifo(tmp_path / "xml" / "pipe.xml")
        with (_Unblock(tmp_path / "img" / "pipe.jpg") as image,
              _Unblock(tmp_path / "xml" / "pipe.xml") as xml):
            report = p.import_coco(tmp_path / "img" / "coco.json", progress=False)
            voc = p.import_voc(tmp_path / "img", tmp_path / "xml", progress=False)
        assert not image.needed and not xml.needed, "an import waited for a FIFO's writer"
        assert len(report.added) == 1
        assert "not a regular file" in _reasons(report)["pipe.jpg"]
        assert "not a regular file" in _reasons(voc)["pipe.xml"]
    finally:
        wb.delete_project(name)


def test_a_huge_file_is_rejected_before_it_is_read(project, tmp_path):
    folder = tmp_path / "in" / "ok"
    write_image(folder / "good.png", seed=3, size=(16, 16))
    with (folder / "huge.jpg").open("wb") as sparse:  # 2 GiB, no disk blocks
        sparse.truncate(2 * 1024**3)
    before = _bytes_read()
    report = project.import_folder(folder.parent, progress=False)
    assert _bytes_read() - before < 64 * 2**20  # the 2 GiB were never read
    reason = _reasons(report)["huge.jpg"]
    assert "file too large: 2,048.0 MiB exceeds the limit of 128.0 MiB" in reason
    assert "workbench.store.ingest.images.MAX_FILE_BYTES" in reason
    assert len(report.added) == 1
    with pytest.raises(images.ImageRejectedError, match=r"exceeds the limit of 0\.0 MiB"):
        images.read_bytes(folder / "good.png", max_bytes=10)  # the limit is a parameter too


def test_a_link_to_a_device_is_never_read_even_when_following_links(project, tmp_path):
    folder = tmp_path / "in" / "ok"
    write_image(folder / "good.png", seed=4, size=(16, 16))
    (folder / "zero.jpg").symlink_to("/dev/zero")
    (folder / "null.png").symlink_to("/dev/null")
    report = project.import_folder(folder.parent, follow_symlinks=True, progress=False)
    reasons = _reasons(report)
    assert len(report.added) == 1
    assert "not a regular file (FIFO/device/socket): a character device" in reasons["zero.jpg"]
    assert "character device" in reasons["null.png"]
    with pytest.raises(images.ImageReadError, match="character device"):
        images.read_rgb(folder / "zero.jpg")
    # a CSV someone sent, naming devices by absolute path (read where they are, so checked)
    (tmp_path / "labels.csv").write_text("filepath,label\n/dev/zero,ok\n/dev/urandom,ok\n")
    from_csv = project.import_csv(tmp_path / "labels.csv", progress=False)
    assert not from_csv.added and len(from_csv.rejected) == 2
    assert all("character device" in reason for _, reason in from_csv.rejected)


def test_every_skipped_entry_is_reported_with_its_reason(project, tmp_path):
    outside = tmp_path / "outside"
    write_image(outside / "secret.png", seed=10, size=(16, 16))
    write_image(outside / "dir" / "x.png", seed=11, size=(16, 16))
    root = tmp_path / "root"
    write_image(root / "ok" / "good.png", seed=12, size=(16, 16))
    write_image(root / "ok" / ".hidden.png", seed=13, size=(16, 16))
    write_image(root / "ok" / ".cache" / "cached.png", seed=14, size=(16, 16))
    (root / "ok" / "link.png").symlink_to(outside / "secret.png")
    (root / "ok" / "linked_dir").symlink_to(outside / "dir", target_is_directory=True)
    (root / "ok" / "alias").symlink_to(root / "ok", target_is_directory=True)  # a cycle
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "ok" / "sock.png"))
        report = project.import_folder(root, progress=False)
        followed = project.import_folder(root, follow_symlinks=True, progress=False)
    reasons = _reasons(report)
    assert set(reasons) == {".hidden.png", ".cache", "link.png", "linked_dir", "alias",
                            "sock.png"}
    assert reasons[".hidden.png"].startswith("hidden file")
    assert reasons[".cache"].startswith("hidden folder")
    assert "symbolic link pointing outside the import folder" in reasons["link.png"]
    assert "symbolic link pointing outside the import folder" in reasons["linked_dir"]
    assert "symbolic link to a folder inside the import folder" in reasons["alias"]
    assert "not a regular file (FIFO/device/socket): a socket" in reasons["sock.png"]
    assert len(report.added) == 1
    # following links: the outside file and folder come in; the cycle is entered no more
    assert {Path(project.dataset[s].filepath).name for s in followed.added} == {"link.png",
                                                                                "x.png"}
    again = _reasons(followed)
    assert set(again) == {".hidden.png", ".cache", "alias", "sock.png"}
    assert "not entered again" in again["alias"]


IMPORT_SCRIPT = r"""
import sys, time
import workbench as wb
from workbench.store.ingest import write as importer

importer.BATCH_SIZE = 5  # insert in small batches, so a kill lands between two of them
importer.CHUNK = 2
real_check = importer.check_image
def slow_check(*args, **kwargs):
    time.sleep(0.1)
    return real_check(*args, **kwargs)
importer.check_image = slow_check
wb.Project.open(sys.argv[1]).import_folder(sys.argv[2], progress=False)
"""


@pytest.mark.slow
def test_an_import_killed_halfway_leaves_labels_annotate_accepts(project, tmp_path):
    """Row 14: classes are registered before samples, so a kill -9 between two batches
    leaves no sample whose label is not a class."""
    folder = tmp_path / "batch"
    names = ["scratch", "dent", "pit_mark"]
    for i in range(30):
        write_image(folder / names[i % 3] / f"n{i:02d}.png", seed=900 + i, size=(16, 16))
    assert project.classes == []
    process = subprocess.Popen([sys.executable, "-c", IMPORT_SCRIPT, project.name, str(folder)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    collection = project.dataset._sample_collection
    deadline = time.monotonic() + 300
    while collection.count_documents({}) < 10:
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "no 10 samples within 300 s"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    landed = collection.count_documents({})
    assert 10 <= landed < 30, landed  # really halfway

    frame = wb.Project.open(project.name).to_pandas()
    assert set(frame.label) <= set(project.classes)
    for sid, label in zip(frame.sample_id, frame.label, strict=True):
        project.annotate(sid, label, annotator="erin")  # its own label: accepted
    assert project.to_pandas().label.tolist() == frame.label.tolist()
    rerun = project.import_folder(folder, progress=False)
    assert len(rerun.added) == 30 - landed and not rerun.rejected
