"""Backup: ``p.export_archive`` / ``Project.import_archive`` round-trip a whole project."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from images_factory import write_image

import workbench as wb
from workbench.config import projects_dir
from workbench.store import _db as store
from workbench.store.archive import ArchiveError
from workbench.store.labelbook import define_label, label_book
from workbench.store.project import Project, ProjectError

NAME = f"arch-src-{os.getpid()}"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A demo project plus external images, reviews, tags, a label book entry, a drift
    file and one trained version; and its archive."""
    from workbench.demo import create_demo_project

    p = create_demo_project(NAME, n_per_class=4, seed=3, overwrite=True)
    outside = tmp_path_factory.mktemp("outside")
    for i in range(3):
        write_image(outside / "scratch" / f"ext_{i}.jpg", seed=500 + i, fmt="JPEG")
    report = p.import_folder(outside, annotator="dora", progress=False)
    assert len(report.added) == 3
    ids = p.dataset.values("id")
    p.annotate(ids[:3], "dent", annotator="erin")
    p.annotate(ids[3], "ok", annotator="rita", review=True)
    p.withdraw(ids[4], annotator="alice")
    p.dataset.select(ids[5:7]).tag_samples("checked")
    define_label(p, "dent", "A dent: a smooth depression.", author="rita")
    (p.folder / "drift").mkdir(exist_ok=True)
    (p.folder / "drift" / "checks.jsonl").write_text('{"check_id": "c1"}\n')
    wb.train(p, mode="probe", folds=2, image_size=64, progress=False)
    archive = p.export_archive(tmp_path_factory.mktemp("backup") / "proj.tar")
    yield p, archive
    wb.delete_project(NAME)


def _by_hash(project: Project) -> pd.DataFrame:
    frame = project.to_pandas()
    frame["content_hash"] = project.dataset.values("content_hash")
    return frame.set_index("sample_id").sort_index()


def test_round_trip_restores_everything_under_a_new_name(source):
    p, archive = source
    restored = Project.import_archive(archive, name=f"arch-copy-{os.getpid()}")
    try:
        assert len(restored) == len(p)
        assert restored.classes == p.classes and restored.slice_fields == p.slice_fields
        before, after = _by_hash(p), _by_hash(restored)
        assert before.index.equals(after.index)  # sample ids are kept
        columns = ["label", "split", *p.slice_fields, "tags", "content_hash"]
        pd.testing.assert_frame_equal(before[columns], after[columns])
        ids = list(before.index)
        assert store.histories(p.dataset, ids) == store.histories(restored.dataset, ids)
        assert any(len(h) >= 4 for h in store.histories(restored.dataset, ids).values())
        # every image is there, outside ones copied under the restored project's folder
        for path in after.filepath:
            assert Path(path).is_file() and Path(path).is_relative_to(restored.folder)
        assert ([_digest(f) for f in after.filepath]
                == [_digest(f) for f in before.filepath])
        # model versions, their metrics and checkpoints
        assert restored.models().name.tolist() == p.models().name.tolist() == ["v1"]
        assert restored.models().metrics.tolist() == p.models().metrics.tolist()
        old, new = p.model("v1"), restored.model("v1")
        assert new.checkpoint_path.read_bytes() == old.checkpoint_path.read_bytes()
        a = old.predict(list(before.filepath[:4]), progress=False)
        b = new.predict(list(after.filepath[:4]), progress=False)
        np.testing.assert_allclose(a[old.classes].to_numpy(), b[new.classes].to_numpy(),
                                   atol=1e-6)
        assert (restored.dataset.values("pred_v1.probabilities")
                == p.dataset.values("pred_v1.probabilities"))
        # label book, drift folder, analysis bookkeeping
        pd.testing.assert_frame_equal(label_book(restored), label_book(p))
        assert (restored.folder / "drift" / "checks.jsonl").read_text() == '{"check_id": "c1"}\n'
        assert store.project_info(restored.dataset) == store.project_info(p.dataset)
        # FiftyOne loads the restored samples like its own
        first = restored.dataset.first()
        assert first.ground_truth is None or isinstance(first.ground_truth.label, str)
    finally:
        wb.delete_project(restored.name)


def _digest(path: str) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _state() -> tuple[list[str], list[str]]:
    return wb.list_projects(), sorted(p.name for p in projects_dir().iterdir())


def _tar_with(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("case", ["not_a_tar", "truncated", "no_manifest", "traversal",
                                  "bad_checksum", "empty"])
def test_bad_archives_are_refused_and_create_nothing(source, tmp_path, case):
    _, archive = source
    bad = tmp_path / "bad.tar"
    data = archive.read_bytes()
    if case == "not_a_tar":
        bad.write_text("filepath,label\nx.png,ok\n")
        expected = "not a readable Loupe archive"
    elif case == "truncated":
        bad.write_bytes(data[: len(data) // 2])
        expected = "cut short|no manifest.json|not a readable"
    elif case == "no_manifest":
        _tar_with(bad, {"dataset.json": b"{}", "samples.jsonl": b""})
        expected = "no manifest.json"
    elif case == "traversal":
        _tar_with(bad, {"../../evil.txt": b"x", "manifest.json": b"{}"})
        expected = "never hold: '../../evil.txt'"
    elif case == "bad_checksum":
        with tarfile.open(archive) as source_tar, tarfile.open(bad, "w") as tar:
            for member in source_tar.getmembers():
                payload = source_tar.extractfile(member).read()
                if member.name == "samples.jsonl":
                    payload = payload.replace(b'"dent"', b'"ok"')
                    member.size = len(payload)
                tar.addfile(member, io.BytesIO(payload))
        expected = "samples.jsonl does not match its checksum"
    else:
        bad.write_bytes(b"")
        expected = "not a readable Loupe archive"
    before = _state()
    with pytest.raises(ArchiveError, match=expected):
        Project.import_archive(bad, name=f"arch-bad-{os.getpid()}")
    assert _state() == before
    assert issubclass(ArchiveError, ProjectError)


def test_export_refuses_a_bad_path(source, tmp_path):
    p, _ = source
    with pytest.raises(ValueError, match=r"ends with \.tar"):
        p.export_archive(tmp_path / "backup.zip")
    with pytest.raises(ValueError, match="does not exist"):
        p.export_archive(tmp_path / "nowhere" / "backup.tar")
    assert list(tmp_path.iterdir()) == []


def test_restore_under_the_same_name_needs_overwrite(source, tmp_path):
    p, archive = source
    with pytest.raises(ProjectError, match="already exists"):
        Project.import_archive(archive)
    p.annotate(p.dataset.first().id, "scratch", annotator="late")  # after the backup
    entries = len(p.history(p.dataset.first().id))
    n_samples = len(p)
    restored = Project.import_archive(archive, overwrite=True)
    assert restored.name == NAME and len(restored) == n_samples
    assert len(restored.history(restored.dataset.first().id)) == entries - 1
