"""The tutorials run top to bottom, and every notebook is stored without outputs.

Each tutorial executes in a fresh kernel (nbclient) with ``LOUPE_TUTORIAL_SCALE=small``
against the session's throwaway database (``conftest.py`` sets it in the environment the
kernel inherits); a cell that raises fails the test with the notebook and cell named.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # subprocesses, servers or notebooks

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TUTORIALS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_S = 600


def test_the_eight_tutorials_are_there():
    assert [path.name[:2] for path in TUTORIALS] == ["01", "02", "03", "04", "05", "06", "07",
                                                     "08"]


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.rglob("*.ipynb")),
                         ids=lambda path: str(path.relative_to(NOTEBOOKS)))
def test_notebook_is_stored_without_outputs(path):
    notebook = json.loads(path.read_text())
    dirty = [cell.get("id", i) for i, cell in enumerate(notebook["cells"])
             if cell["cell_type"] == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} hold outputs or execution counts; clear "
                       "them before committing (jupyter nbconvert --clear-output --inplace)")


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda path: path.stem)
def test_tutorial_runs_top_to_bottom(path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    monkeypatch.setenv("LOUPE_TUTORIAL_SCALE", "small")
    notebook = nbformat.read(path, as_version=4)
    cells = notebook.cells
    assert cells[0].cell_type == "markdown" and "Goal" in cells[0].source
    assert cells[-1].cell_type == "markdown" and "What you learned" in cells[-1].source
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(f"{path.name} raised:\n{str(error)[-3000:]}")
    errors = [output for cell in notebook.cells for output in cell.get("outputs", [])
              if output.get("output_type") == "error"]
    assert not errors


def test_serve_command_binds_localhost_with_preheated_pools():
    from workbench.deploy.serve import TEMPLATES, voila_command, voila_env

    command = voila_command(port=8899)
    assert str(NOTEBOOKS / "dashboards") in command
    assert "--Voila.ip=127.0.0.1" in command and "--port=8899" in command
    assert "--template=loupe" in command and "--preheat_kernel=True" in command
    pools = json.loads(next(arg for arg in command if "kernel_pools_config" in arg)
                       .split("=", 1)[1])
    assert pools["review.ipynb"]["pool_size"] >= 2 and pools["default"]["pool_size"] == 0
    # a used kernel is replaced once its page has loaded, not while it loads
    assert "--VoilaKernelManager.fill_delay=10.0" in command
    assert "--preheat_kernel=True" not in voila_command(preheat=False)
    env = voila_env("casing", environ={"JUPYTER_PATH": "/elsewhere"})
    assert env["LOUPE_PROJECT"] == "casing"
    assert env["JUPYTER_PATH"].split(":") == [str(TEMPLATES), "/elsewhere"]
    assert (TEMPLATES / "voila" / "templates" / "loupe" / "index.html.j2").is_file()


@pytest.mark.parametrize("kwargs, match", [
    ({"port": 0}, "port"),
    ({"pools": {"nope.ipynb": 1}}, "nope.ipynb"),
    ({"pools": {"review.ipynb": -1}}, "pool size"),
])
def test_serve_command_rejects_bad_arguments(kwargs, match):
    from workbench.deploy.serve import voila_command

    with pytest.raises(ValueError, match=match):
        voila_command(**kwargs)


def test_loupe_template_links_nothing_outside_the_server():
    import re

    folder = NOTEBOOKS / "share" / "voila" / "templates" / "loupe"
    for path in folder.iterdir():
        text = re.sub(r"\{#.*?#\}", "", path.read_text(), flags=re.S)  # Jinja comments
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", text), path.name


def test_loupe_serve_names_a_missing_project(capsys):
    from workbench.cli import main

    assert main(["serve", "--project", "no-such-project-here"]) == 2
    assert "no-such-project-here" in capsys.readouterr().err
