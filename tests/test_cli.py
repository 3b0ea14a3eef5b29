"""The ``loupe`` command as a user runs it: real subprocesses, one-line errors."""

from __future__ import annotations

import subprocess
import sys

from images_factory import write_image


def loupe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_import_then_list_projects(tmp_path):
    for i in range(3):
        write_image(tmp_path / "imgs" / "ok" / f"{i}.png", seed=200 + i)
    done = loupe("import", str(tmp_path / "imgs"), "--project", "cli-made")
    assert done.returncode == 0, done.stderr
    assert "cli-made: added 3, duplicates 0, rejected 0" in done.stdout
    listed = loupe("projects")
    assert "cli-made" in listed.stdout.split()


def test_errors_are_one_line_without_traceback(tmp_path):
    done = loupe("import", str(tmp_path / "nowhere"), "--project", "cli-err")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("loupe: error: import folder not found")
    assert "Traceback" not in done.stderr
    debug = loupe("--debug", "import", str(tmp_path / "nowhere"), "--project", "cli-err")
    assert "Traceback" in debug.stderr


def test_db_check_reports_the_database():
    done = loupe("db-check")
    assert done.returncode == 0, done.stderr
    assert "database ok: FiftyOne 1.22.1" in done.stdout
