"""The one delete guard and the common error base (issue 20)."""

from __future__ import annotations

from pathlib import Path

import pytest

import workbench as wb
from workbench.store.safe_paths import inside, remove_inside


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "project", tmp_path / "outside"
    (root / "synthetic" / "r1").mkdir(parents=True)
    (root / "synthetic" / "r1" / "a.png").write_bytes(b"x")
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    (root / "link").symlink_to(outside)
    return root, outside


@pytest.mark.parametrize("path", ["/etc", "../outside", "link/keep.txt", ".", "synthetic/.."])
def test_a_delete_outside_the_folder_is_refused_and_deletes_nothing(folders, path):
    root, outside = folders
    with pytest.raises(wb.UnsafePathError, match=r"refused|nothing was deleted"):
        remove_inside(root, path, what="recipe id")
    assert (outside / "keep.txt").read_text() == "precious"
    assert (root / "synthetic" / "r1" / "a.png").exists()


def test_a_link_is_removed_itself_never_its_target(folders):
    root, outside = folders
    assert remove_inside(root, "link")
    assert not (root / "link").exists()
    assert (outside / "keep.txt").read_text() == "precious"


def test_a_folder_inside_is_removed(folders):
    root, _ = folders
    assert remove_inside(root, "synthetic/r1")
    assert not (root / "synthetic" / "r1").exists()
    assert not remove_inside(root, "synthetic/r1")  # already gone: nothing to do


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside/keep.txt", "link/keep.txt", "a\x00b"])
def test_inside_refuses_paths_that_leave_the_folder(folders, path):
    root, _ = folders
    with pytest.raises(wb.UnsafePathError, match="filepath"):
        inside(root, path, what="filepath")


def test_inside_resolves_paths_that_stay(folders):
    root, _ = folders
    assert inside(root, "synthetic/r1/a.png") == (root / "synthetic/r1/a.png").resolve()


def test_every_public_error_is_a_loupe_error():
    from workbench.deploy.export import ExportError
    from workbench.store._db import ConcurrentWriteError
    from workbench.store.archive import ArchiveError
    from workbench.store.ingest.images import ImageReadError, ImageRejectedError
    from workbench.store.ingest.voc_coco import BoxFileError
    from workbench.train.backbones import BackboneUnavailableError

    for error in (wb.ProjectError, ArchiveError, BackboneUnavailableError, BoxFileError,
                  ExportError, ImageReadError, ImageRejectedError, ConcurrentWriteError,
                  wb.TrainingCancelled, wb.DatabaseUnavailableError, wb.UnsafePathError):
        assert issubclass(error, wb.LoupeError), error
    # The built-in bases they had before are kept, so ``except ValueError`` still works.
    assert issubclass(wb.ProjectError, ValueError)
    assert issubclass(ExportError, RuntimeError)
