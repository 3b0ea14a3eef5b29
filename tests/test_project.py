"""The project store on a real FiftyOne database: create/open, import, history, duplicates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from images_factory import png_with_declared_size, truncated_copy, write_image

import workbench as wb


def class_folder(root, counts, *, seed=0):
    """Write ``root/<label>/img_i.png`` with distinct content; returns the paths."""
    paths = []
    for label, n in counts.items():
        for i in range(n):
            seed += 1
            paths.append(write_image(root / label / f"img_{i}.png", seed=seed))
    return paths


def test_create_open_list_and_errors(project):
    assert project.name in wb.list_projects()
    assert wb.list_projects(search=project.name.upper()[2:]) == [project.name]
    assert wb.list_projects(search="no-such-project-anywhere") == []
    assert wb.Project.open(project.name).name == project.name
    assert project.dataset.persistent
    with pytest.raises(wb.ProjectError, match="already exists"):
        wb.Project.create(project.name)
    with pytest.raises(wb.ProjectError, match="'no-such-project' not found"):
        wb.Project.open("no-such-project")
    with pytest.raises(wb.ProjectError, match=f"did you mean '{project.name}'"):
        wb.Project.open(project.name + "s")  # a typo: the close names, not all of them
    with pytest.raises(wb.ProjectError, match="invalid project name"):
        wb.Project.create("../etc")


def test_import_class_folders_gives_labels_history_and_classes(project, tmp_path):
    class_folder(tmp_path / "imgs", {"scratch": 3, "ok": 2})
    report = project.import_folder(tmp_path / "imgs", annotator="import", progress=False)
    assert len(report.added) == 5 and not report.rejected and not report.duplicates
    assert project.classes == ["ok", "scratch"]  # sorted folder walk: stable order
    frame = project.to_pandas()
    assert sorted(frame.label) == ["ok", "ok", "scratch", "scratch", "scratch"]
    assert set(frame.split) <= {"train", "val"}
    assert {"sample_id", "id", "filepath", "label", "split", "tags"} <= set(frame.columns)
    history = project.history(report.added[0])
    assert list(history.columns) == ["annotator", "label", "time", "review"]
    assert history.annotator.tolist() == ["import"]


def test_bad_files_are_rejected_with_reasons_and_nothing_stored_is_lost(project, tmp_path):
    good = tmp_path / "good"
    class_folder(good, {"ok": 2})
    project.import_folder(good, progress=False)
    before = project.to_pandas()

    bad = tmp_path / "bad" / "ok"
    bad.mkdir(parents=True)
    (bad / "empty.png").write_bytes(b"")
    (bad / "readme.txt").write_text("hello")
    truncated_copy(write_image(tmp_path / "full.jpg", seed=99, size=(128, 128), fmt="JPEG"),
                   bad / "cut.jpg")
    png_with_declared_size(bad / "bomb.png", 50_000, 50_000)
    (bad / "dangling.png").symlink_to(bad / "deleted-since.png")
    (bad / "folder.png").mkdir()
    (bad / "folder.png" / "inner.txt").write_text("x")
    outside = write_image(tmp_path / "outside.png", seed=123)
    (bad / "link_out.png").symlink_to(outside)
    write_image(bad / "cmyk.jpg", seed=7, mode="CMYK", fmt="JPEG")
    write_image(bad / "deep16.png", seed=8, mode="I;16")
    write_image(bad / "palette.png", seed=9, mode="P")
    write_image(bad / "wrong_extension.jpg", seed=10, fmt="PNG")
    (tmp_path / "bad" / "loose.png").write_bytes(b"")

    report = project.import_folder(tmp_path / "bad", progress=False)
    reasons = {Path(p).name: r for p, r in report.rejected}
    assert "empty file" in reasons["empty.png"]
    assert "not an image" in reasons["readme.txt"]
    assert "truncated" in reasons["cut.jpg"] or "corrupt" in reasons["cut.jpg"]
    assert "decompression bomb" in reasons["bomb.png"]
    assert "not found" in reasons["dangling.png"]
    assert "not an image" in reasons["inner.txt"]
    assert "outside the import folder" in reasons["link_out.png"]
    assert "class folder" in reasons["loose.png"]
    converted = {Path(p).name: r for p, r in report.converted}
    assert set(converted) == {"cmyk.jpg", "deep16.png", "palette.png"}
    assert len(report.added) == 4  # three converted + the PNG named .jpg
    stored = project.to_pandas().set_index("sample_id")
    for path in stored.loc[report.added].filepath:
        assert Path(path).exists()
    kept = stored.loc[before.sample_id]
    assert kept.filepath.tolist() == before.filepath.tolist()
    assert kept.label.tolist() == before.label.tolist()


def test_followed_symlink_is_imported_when_asked(project, tmp_path):
    outside = write_image(tmp_path / "outside.png", seed=5)
    (tmp_path / "in" / "ok").mkdir(parents=True)
    (tmp_path / "in" / "ok" / "link.png").symlink_to(outside)
    report = project.import_folder(tmp_path / "in", follow_symlinks=True, progress=False)
    assert len(report.added) == 1


def test_non_utf8_file_name_is_imported_as_a_copy(project, tmp_path):
    folder = tmp_path / "raw" / "ok"
    folder.mkdir(parents=True)
    name = folder / os.fsdecode(b"caf\xe9.png")  # a Latin-1 name, not valid UTF-8
    name.write_bytes(write_image(tmp_path / "source.png", seed=3).read_bytes())
    report = project.import_folder(tmp_path / "raw", progress=False)
    assert len(report.added) == 1
    assert "not valid UTF-8" in report.converted[0][1]
    assert "\\xe9" in report.converted[0][0]
    assert Path(project.to_pandas().filepath[0]).exists()


def test_duplicates_are_reported_and_reimport_is_idempotent(project, tmp_path):
    paths = class_folder(tmp_path / "imgs", {"dent": 3})
    (tmp_path / "imgs" / "dent" / "copy.png").write_bytes(paths[0].read_bytes())
    first = project.import_folder(tmp_path / "imgs", progress=False)
    assert len(first.added) == 3 and len(first.duplicates) == 1
    again = project.import_folder(tmp_path / "imgs", progress=False)
    assert again.added == [] and len(again.duplicates) == 4
    assert again.annotations_added == 0
    assert len(project) == 3
    assert all(len(project.history(s)) == 1 for s in first.added)


def test_a_copy_filed_under_another_class_in_the_same_import_keeps_its_label(project,
                                                                             tmp_path):
    paths = class_folder(tmp_path / "imgs", {"dent": 2})
    (tmp_path / "imgs" / "scratch").mkdir()
    (tmp_path / "imgs" / "scratch" / "copy.png").write_bytes(paths[0].read_bytes())
    report = project.import_folder(tmp_path / "imgs", progress=False)
    assert len(report.added) == 2 and len(report.duplicates) == 1
    sid = project.dataset.select_by("filepath", [str(paths[0].absolute())]).first().id
    assert sorted(project.history(sid).label) == ["dent", "scratch"]


def test_import_csv_with_annotators_and_slices_and_disputes(project, tmp_path):
    for i in range(3):
        write_image(tmp_path / "img" / f"{i}.png", seed=40 + i)
    rows = ["filepath,label,annotator,line,lighting",
            "img/0.png,dent,alice,A,dim", "img/0.png,dent,bob,A,dim",
            "img/0.png,discoloration,carol,A,dim",
            "img/1.png,scratch,alice,B,bright", "img/1.png,ok,bob,B,bright",
            "img/2.png,ok,alice,C,bright", "missing.png,ok,alice,C,bright"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    report = project.import_csv(tmp_path / "labels.csv", progress=False)
    assert len(report.added) == 3 and report.annotations_added == 6
    assert [Path(p).name for p, _ in report.rejected] == ["missing.png"]
    assert project.slice_fields == ["line", "lighting"]
    frame = project.to_pandas().sort_values("filepath").reset_index(drop=True)
    assert frame.label.tolist() == ["dent", "scratch", "ok"]
    assert frame.line.tolist() == ["A", "B", "C"]
    assert ["disputed" in t for t in frame.tags] == [False, True, False]
    # a second labeller's CSV adds history to stored images, once
    (tmp_path / "more.csv").write_text("filepath,label,annotator\nimg/1.png,scratch,dave\n")
    assert project.import_csv(tmp_path / "more.csv", progress=False).annotations_added == 1
    assert project.import_csv(tmp_path / "more.csv", progress=False).annotations_added == 0
    settled = project.to_pandas().set_index("filepath").loc[str(tmp_path / "img" / "1.png")]
    assert settled.label == "scratch" and "disputed" not in settled.tags


def test_csv_missing_column_is_a_clear_error_and_changes_nothing(project, tmp_path):
    (tmp_path / "bad.csv").write_text("path,label\na.png,ok\n")
    with pytest.raises(ValueError, match=r"bad\.csv: missing column\(s\) filepath"):
        project.import_csv(tmp_path / "bad.csv")
    assert len(project) == 0


def test_metadata_csv_adds_slice_fields_joined_on_file_name(project, tmp_path):
    class_folder(tmp_path / "imgs", {"ok": 2})
    (tmp_path / "meta.csv").write_text("filename,camera\nimg_0.png,cam2\nimg_1.png,cam1\n")
    project.import_folder(tmp_path / "imgs", metadata_csv=tmp_path / "meta.csv",
                          progress=False)
    frame = project.to_pandas().sort_values("filepath")
    assert frame.camera.tolist() == ["cam2", "cam1"]
    assert project.slice_fields == ["camera"]


def test_annotate_appends_history_and_updates_consensus(project, tmp_path):
    report = project.import_folder(class_folder_root(tmp_path), progress=False)
    sid = report.added[0]
    project.add_class("dent")
    project.annotate(sid, "dent", annotator="alice")
    project.annotate(sid, "dent", annotator="bob")
    history = project.history(sid)
    assert history.label.tolist() == ["ok", "dent", "dent"]
    assert project.to_pandas().set_index("sample_id").label[sid] == "dent"
    with pytest.raises(wb.ProjectError, match="'bogus' is not a class"):
        project.annotate(sid, "bogus", annotator="alice")
    with pytest.raises(wb.ProjectError, match="not in project"):
        project.annotate(["0123456789abcdef01234567"], "dent", annotator="alice")
    assert len(project.history(sid)) == 3


def class_folder_root(tmp_path):
    class_folder(tmp_path / "imgs", {"ok": 2})
    return tmp_path / "imgs"


@pytest.mark.slow
def test_history_survives_reopen_in_a_new_process(project, tmp_path):
    report = project.import_folder(class_folder_root(tmp_path), progress=False)
    project.add_class("scratch")
    project.annotate(report.added, "scratch", annotator="alice")
    script = (
        "import json, sys, workbench as wb\n"
        f"p = wb.Project.open({project.name!r})\n"
        "p.annotate(sys.argv[1], 'ok', annotator='bob')\n"
        "h = p.history(sys.argv[1])\n"
        "print(json.dumps({'who': h.annotator.tolist(), 'labels': h.label.tolist(),"
        " 'classes': p.classes}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, report.added[0]], check=True,
                         capture_output=True, text=True, timeout=180)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"who": ["import", "alice", "bob"], "labels": ["ok", "scratch", "ok"],
                    "classes": ["ok", "scratch"]}
    assert project.history(report.added[0]).annotator.tolist() == ["import", "alice", "bob"]


def test_exclude_patterns_skip_sidecar_files_silently(project, tmp_path):
    class_folder(tmp_path / "imgs", {"ok": 2})
    (tmp_path / "imgs" / "annotations").mkdir()
    (tmp_path / "imgs" / "annotations" / "a.xml").write_text("<x/>")
    (tmp_path / "imgs" / "manifest.csv").write_text("a,b\n")
    report = project.import_folder(tmp_path / "imgs", exclude=["annotations", "*.csv"],
                                   progress=False)
    assert len(report.added) == 2 and report.rejected == []
    assert project.classes == ["ok"]


def test_fiftyone_reads_loupe_samples_like_its_own(project, tmp_path):
    project.import_folder(class_folder_root(tmp_path), progress=False)
    dataset = project.dataset
    sample = dataset.first()
    assert sample.ground_truth.label == "ok"
    assert sample.metadata.width == 64 and sample.metadata.height == 48
    assert sample.annotations[0].annotator == "import"
    assert dataset.count_values("ground_truth.label") == {"ok": 2}
    assert len(dataset.take(1, seed=0)) == 1
    assert dataset.get_field("annotations") is not None
    sample["split"] = "val"  # an edit through FiftyOne's own API keeps the history
    sample.save()
    assert project.history(sample.id).label.tolist() == ["ok"]


def test_review_decides_and_withdraw_undoes_without_deleting_history(project, tmp_path):
    report = project.import_folder(class_folder_root(tmp_path), progress=False)
    sid = report.added[0]
    project.add_class("dent")
    project.annotate(sid, "dent", annotator="alice", review=True)
    assert project.to_pandas().set_index("sample_id").label[sid] == "dent"
    project.withdraw(sid, annotator="alice", review=True)
    frame = project.to_pandas().set_index("sample_id")
    assert frame.label[sid] == "ok"  # back to the import's vote
    history = project.history(sid)
    assert history.label.tolist() == ["ok", "dent", None]
    assert history.review.tolist() == [False, True, True]
