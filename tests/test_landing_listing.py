"""The landing page's project list at scale: paged and searchable, reading only the page's
project folders (issue 28)."""

from __future__ import annotations

import pytest

from workbench.deploy import landing
from workbench.deploy.landing import PER_PAGE, project_page


@pytest.fixture
def many(tmp_path, monkeypatch):
    """1,000 project folders (folders only: the listing reads nothing else)."""
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    names = [f"casing-line{i % 7}-{i:04d}" for i in range(1000)]
    for name in names:
        (tmp_path / "projects" / name).mkdir(parents=True)
    return sorted(names)


def test_a_thousand_projects_are_listed_a_page_at_a_time(many, monkeypatch):
    read = []
    original = landing.project_state
    monkeypatch.setattr(landing, "project_state",
                        lambda folder: read.append(folder.name) or original(folder))
    first = project_page()
    assert (first.total, first.matching, first.pages, first.page) == (1000, 1000, 40, 0)
    assert [s.name for s in first.states] == many[:PER_PAGE]
    assert read == many[:PER_PAGE]  # only the page's folders are read
    last = project_page(page=99)  # past the end: the last page
    assert last.page == 39 and [s.name for s in last.states] == many[-PER_PAGE:]


def test_search_finds_by_part_of_the_name_and_the_served_project_comes_first(many):
    found = project_page("casing-line3-0997", search="LINE3-09")
    assert found.matching == sum("line3-09" in n for n in many) and found.search == "LINE3-09"
    assert found.states[0].name == "casing-line3-0997"
    assert all("line3-09" in s.name for s in found.states)
    assert project_page(search="no such project").states == []
    assert project_page(search="no such project").pages == 1
