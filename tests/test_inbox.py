"""The server's inbox: batches listed by name, confined to the allowed roots, and imported
with their batch name on every new sample."""

from __future__ import annotations

import os
from datetime import date

import pytest
from images_factory import write_image

import workbench as wb
from workbench import cli
from workbench.demo import INBOX_IMAGES, write_demo_inbox
from workbench.store.inbox import INBOX_ENV, inbox_roots, project_inbox


def _batch(root, name, n, seed=0):
    for i in range(n):
        write_image(root / name / f"{i}.png", seed=seed + i)
    return root / name


def test_an_empty_or_missing_inbox_lists_no_batches(project):
    frame = wb.inbox_batches(project, environ={})
    assert frame.empty and list(frame.columns) == ["batch", "path", "n_images", "modified",
                                                   "root"]
    (project_inbox(project) / "nothing-yet").mkdir(parents=True)  # a folder without images
    (project_inbox(project) / "nothing-yet" / "notes.txt").write_text("later")
    assert wb.inbox_batches(project, environ={}).empty


def test_batches_of_every_root_newest_first_with_their_image_counts(project, tmp_path):
    inbox = project_inbox(project)
    old = _batch(inbox, "monday", 3)
    new = _batch(inbox, "tuesday", 2, seed=10)
    (new / "scan.txt").write_text("not an image")
    _batch(inbox, ".hidden", 2)
    shared = _batch(tmp_path / "line-share", "line-b", 4, seed=20)
    for path in old.iterdir():
        os.utime(path, (1_700_000_000, 1_700_000_000))
    os.utime(old, (1_700_000_000, 1_700_000_000))
    frame = wb.inbox_batches(project, environ={INBOX_ENV: str(tmp_path / "line-share")})
    assert list(frame["n_images"]) == [2, 4, 3] or list(frame["n_images"]) == [4, 2, 3]
    assert frame["batch"].iloc[-1] == "monday"  # the oldest last
    assert dict(zip(frame["batch"], frame["path"], strict=True)) == {
        "monday": str(old.resolve()), "tuesday": str(new.resolve()),
        "line-b": str(shared.resolve())}
    assert frame["modified"].is_monotonic_decreasing
    assert wb.inbox_batch(project, "line-b", environ={INBOX_ENV: str(shared.parent)}) == \
        shared.resolve()


def test_a_missing_root_in_the_environment_is_named(project, tmp_path):
    with pytest.raises(wb.ProjectError, match=f"LOUPE_INBOX.*{tmp_path.name}.*not a folder"):
        inbox_roots(project, environ={INBOX_ENV: str(tmp_path / "gone")})


def test_links_and_dotdot_leaving_the_inbox_are_refused(project, tmp_path):
    inbox = project_inbox(project)
    _batch(inbox, "fine", 2)
    outside = _batch(tmp_path, "secrets", 2)
    (inbox / "sneaky").symlink_to(outside, target_is_directory=True)
    frame = wb.inbox_batches(project, environ={})
    assert list(frame["batch"]) == ["fine"]
    refused = dict(frame.attrs["refused"])
    assert "outside" in refused[str(inbox / "sneaky")]
    for bad in ("sneaky", f"../../{tmp_path.name}/secrets", str(outside)):
        with pytest.raises(wb.UnsafePathError, match="outside the inbox folders"):
            wb.inbox_batch(project, bad, environ={})
    with pytest.raises(wb.ProjectError, match="no inbox batch 'absent'"):
        wb.inbox_batch(project, "absent", environ={})


def test_import_tags_new_samples_with_the_batch_and_keeps_earlier_ones(project, tmp_path):
    first = _batch(tmp_path, "first", 3)
    project.import_folder(first, layout="unlabeled", progress=False)
    inbox_folder = _batch(project_inbox(project), "night-1", 3, seed=1)  # shares 2 images
    write_image(inbox_folder / "broken.png", seed=99)
    (inbox_folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    report = project.import_folder(wb.inbox_batch(project, "night-1", environ={}),
                                   layout="unlabeled", annotator="erin", batch="night-1",
                                   progress=False)
    assert (len(report.added), len(report.duplicates), len(report.rejected)) == (1, 2, 1)
    batches = dict(zip(*project.dataset.values(["id", "batch"]), strict=True))
    assert batches[report.added[0]] == "night-1"
    assert sum(b == "night-1" for b in batches.values()) == 1  # duplicates keep theirs (None)
    assert project.dataset.match({"batch": "night-1"}).count() == 1
    with pytest.raises(ValueError, match="batch must be a short non-empty name"):
        project.import_folder(first, layout="unlabeled", batch="  ", progress=False)


def test_the_demo_inbox_holds_one_dark_batch_and_the_cli_adds_it_once(project):
    folder = write_demo_inbox(project, n=6, day=date(2026, 11, 26))
    assert folder.name == "night-2026-11-26" and len(list(folder.glob("*.png"))) == 6
    frame = wb.inbox_batches(project, environ={})
    assert list(frame["batch"]) == ["night-2026-11-26"] and frame["n_images"].iloc[0] == 6
    cli._demo_inbox(project.name)  # a batch is there: nothing added
    assert len(wb.inbox_batches(project, environ={})) == 1
    (folder.parent.parent / "inbox").rename(folder.parent.parent / "old-inbox")
    cli._demo_inbox(project.name)
    assert wb.inbox_batches(project, environ={})["n_images"].tolist() == [INBOX_IMAGES]
    with pytest.raises(ValueError, match="n must be a positive number"):
        write_demo_inbox(project, n=0)
