"""Packaging promises: environment.yml and pyproject.toml name the same packages, the two
README commands exist, CI runs the README's test command."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower()


def _pip_section(text: str) -> list[str]:
    lines = text.split("- pip:", 1)[1].splitlines()
    return [ln.strip()[2:] for ln in lines if ln.strip().startswith("- ")]


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    section = _pip_section((ROOT / "environment.yml").read_text())
    pip = [r for r in section if not r.startswith("-e")]
    assert "-e ./edge" in section  # loupe-edge, from this repository
    pip.append("loupe-edge")
    assert {_name(r) for r in pip} == {_name(r) for r in wanted}
    pins = {_name(r): r for r in wanted if "==" in r}
    for requirement in pip:
        if _name(requirement) in pins:
            assert requirement == pins[_name(requirement)]
    assert "python=3.11" in (ROOT / "environment.yml").read_text()


def test_torch_is_pinned_exactly():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps


def test_readme_shows_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_console_script_is_declared():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"loupe": "workbench.cli:main"}
