"""The ``loupe`` command as a user runs it: ``cli.main([...])`` in this process (what the
console script calls), and once as a real subprocess; one-line errors."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import traceback

import pytest
from images_factory import write_image

from workbench import cli


def loupe(*args: str) -> subprocess.CompletedProcess:
    """Run ``loupe ARGS`` through :func:`workbench.cli.main`, as the console script does."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(args))
        except SystemExit as stop:  # argparse usage errors
            code = stop.code if isinstance(stop.code, int) else 2
        except Exception:  # --debug lets the error through, as the real command does
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(["loupe", *args], code, out.getvalue(), err.getvalue())


def loupe_process(*args: str) -> subprocess.CompletedProcess:
    """Run ``loupe ARGS`` in a fresh interpreter (what a terminal starts)."""
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


@pytest.mark.slow
def test_db_check_reports_the_database_from_a_fresh_process():
    done = loupe_process("db-check")
    assert done.returncode == 0, done.stderr
    assert "database ok: FiftyOne 1.22.1" in done.stdout
    bad = loupe_process("import", "/nowhere-at-all", "--project", "cli-err")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith("loupe: error: import folder not found")


@pytest.mark.slow
def test_issues_and_datasheet_commands_on_a_trained_project(tmp_path):
    import workbench as wb
    from workbench.demo import create_demo_project

    p = create_demo_project("cli-issues", n_per_class=6, seed=4, overwrite=True)
    before = loupe("issues", "cli-issues")
    assert before.returncode == 2 and "no model version" in before.stderr
    wb.train(p, mode="probe", folds=3, image_size=64, progress=False)
    done = loupe("issues", "cli-issues", "--quiet", "--top", "3", "--csv",
                 str(tmp_path / "issues.csv"))
    assert done.returncode == 0, done.stderr
    assert "labels look wrong (stored as run label_issues_v1)" in done.stdout
    assert (tmp_path / "issues.csv").read_text().startswith("sample_id,filepath,given")
    assert "label_issues_v1" in set(p.analysis_runs()["key"])
    card = loupe("datasheet", "cli-issues", "--out", str(tmp_path / "card.md"))
    assert card.returncode == 0, card.stderr
    assert "cli-issues" in (tmp_path / "card.md").read_text()


def test_printed_names_cannot_drive_the_terminal(tmp_path):
    """A file name carrying terminal escape sequences (set the title, clear the screen) is
    printed as text: the report names the file, the sequences never reach the terminal."""
    write_image(tmp_path / "imgs" / "ok" / "0.png", seed=210)
    hostile = tmp_path / "imgs" / "ok" / "\x1b]0;pwned\x07\x1b[2Jbad.png"
    hostile.write_bytes(b"not an image")
    done = loupe("import", str(tmp_path / "imgs"), "--project", "cli-escape")
    assert done.returncode == 0, done.stderr
    assert "rejected 1" in done.stdout
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout
    assert "\ufffd]0;pwned\ufffd\ufffd[2Jbad.png" in done.stdout
