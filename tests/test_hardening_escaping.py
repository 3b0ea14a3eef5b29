"""Everything a person typed is text, never markup: the escaping helper, the datasheet, the
dashboards' sources (fast; the browser check is ``test_hardening_escaping_browser.py``).

The Markdown checks render with mistune (a CommonMark parser installed with nbconvert) and
look at the HTML it makes: no tag, attribute or link comes from the data, and the data's
text survives.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import mistune
import pandas as pd
import pytest

from widgets._base import STATIC
from workbench.metrics.datasheet import render_datasheet
from workbench.text import escape_html, escape_markdown, escape_plotly

REPO = Path(__file__).resolve().parents[1]
HOSTILE = (
    '<img src=x onerror="window.__pwned=1">',
    "<script>window.__pwned=1</script>",
    "[x](javascript:window.__pwned=1)",
    "![x](http://evil.example/beacon.png)",
    '"><svg onload=window.__pwned=1>',
    "<http://evil.example>",
    "`code` *bold* _it_ ~~gone~~ $x^2$ a|b \\ back",
    "# heading\n- item\n1. numbered",
    "&lt;already&gt; &amp;",
)
_MARKDOWN = mistune.create_markdown(escape=False, plugins=["strikethrough", "table"])


def _visible_text(rendered: str) -> str:
    """The text a browser would show for ``rendered`` HTML (tags dropped, entities read)."""
    return html.unescape(re.sub(r"<[^>]+>", "", rendered))


def _tags(rendered: str) -> list[str]:
    return re.findall(r"<\s*([a-zA-Z][a-zA-Z0-9]*)", rendered)


@pytest.mark.parametrize("value", HOSTILE)
def test_escape_html_leaves_no_markup_and_keeps_the_text(value):
    escaped = escape_html(value)
    assert "<" not in escaped and ">" not in escaped and '"' not in escaped
    assert "'" not in escaped
    assert html.unescape(escaped) == value
    assert f'title="{escaped}"'.count('"') == 2  # safe inside a quoted attribute


@pytest.mark.parametrize("value", HOSTILE)
def test_escape_markdown_renders_as_the_same_text(value):
    rendered = _MARKDOWN(f"a {escape_markdown(value)} b")
    assert _tags(rendered) == ["p"], rendered  # no link, image, code, emphasis, heading …
    assert _visible_text(rendered).strip() == f"a {' '.join(value.split())} b"


@pytest.mark.parametrize("value", ["# heading", "- item", "+ item", "1. numbered", "2) x"])
def test_escape_markdown_at_the_start_of_a_line_makes_no_block(value):
    rendered = _MARKDOWN(escape_markdown(value))
    assert _tags(rendered) == ["p"], rendered
    assert _visible_text(rendered).strip() == value


def test_escapes_keep_ordinary_names_as_they_are():
    for value in ("pit_mark", "v1", "dim light", "cli-issues", "66.7%", "2025-03-02"):
        assert escape_markdown(value) == value
        assert escape_html(value) == value
    assert escape_html(None) == escape_markdown(None) == ""
    assert escape_html(3) == "3"


def test_escape_markdown_neutralises_terminal_control_sequences():
    # A class named like this, printed by `loupe datasheet`, would retitle the terminal.
    escaped = escape_markdown("ok\x1b]0;owned\x07\x9b31m")
    assert not re.search(r"[\x00-\x1f\x7f-\x9f]", escaped)
    assert escaped.startswith("ok\ufffd")


@pytest.mark.parametrize("value", HOSTILE)
def test_escape_plotly_leaves_no_tag_and_reads_back_as_the_text(value):
    escaped = escape_plotly(value)
    assert "<" not in escaped and ">" not in escaped
    # plotly reads back &amp; &lt; &gt; (not &quot;, so quotes stay as they are)
    entities = {"&amp;": "&", "&lt;": "<", "&gt;": ">"}
    assert re.sub(r"&(?:amp|lt|gt);", lambda m: entities[m.group()], escaped) == value


def _hostile_facts() -> dict:
    classes = list(HOSTILE[:5])
    return {
        "name": HOSTILE[2], "task": HOSTILE[0], "n_samples": 10, "n_labelled": 5,
        "class_counts": pd.DataFrame({"class": classes, "n": [1, 1, 1, 2, 0]}),
        "slices": {"lighting": pd.DataFrame({"value": list(HOSTILE[:3]), "n": [1, 2, 3]})},
        "sources": pd.DataFrame({"source": [f"/data/{HOSTILE[0]}"], "n": [10]}),
        "annotators": pd.DataFrame({"annotator": list(HOSTILE[3:5]), "n_labels": [3, 2]}),
        "issues": {HOSTILE[1]: 1},
        "versions": pd.DataFrame({"name": ["v1"], "backbone": [HOSTILE[5]]}),
    }


def test_datasheet_shows_hostile_facts_as_text():
    text = render_datasheet(_hostile_facts())
    rendered = _MARKDOWN(text)
    assert "<img" not in rendered and "<script" not in rendered and "<svg" not in rendered
    assert "<a " not in rendered
    allowed = {"h1", "h2", "h3", "p", "ul", "li", "strong", "em", "table", "thead", "tbody",
               "tr", "th", "td", "code"}
    assert set(_tags(rendered)) <= allowed, set(_tags(rendered)) - allowed
    shown = _visible_text(rendered)
    for value in HOSTILE[:6]:
        assert value in shown, value
    # The empty class is named in the balance line, as text too.
    assert f"no labelled images of {HOSTILE[4]}" in shown


def test_datasheet_of_a_project_escapes_its_class_and_annotator_names(project, tmp_path):
    from images_factory import write_image

    import workbench as wb

    paths = [write_image(tmp_path / f"{HOSTILE[0]}-{i}.png", seed=i) for i in range(2)]
    labels = [HOSTILE[1], HOSTILE[2]]
    csv = tmp_path / "labels.csv"
    pd.DataFrame({"filepath": [str(p) for p in paths], "label": labels,
                  "annotator": [HOSTILE[4], HOSTILE[4]]}).to_csv(csv, index=False)
    project.import_csv(csv, progress=False)
    shown = _visible_text(_MARKDOWN(wb.datasheet(project)))
    rendered = _MARKDOWN(wb.datasheet(project))
    assert "<script" not in rendered and "<a " not in rendered and "<svg" not in rendered
    for value in (*labels, HOSTILE[4]):
        assert value in shown, value


#: (dashboard, what it must contain) for each data sink the dashboards have.
SINKS = {
    "review.ipynb": ["<b>{escape_html(name)}</b>", "{escape_html(project.name)}"],
    "report.ipynb": ["escape_markdown, project.classes",
                     "Markdown(wb.datasheet(project, counts=counts))",
                     "{escape_html(last['summary'])}", "{escape_html(last['batch'])}",
                     "{escape_html(version.name)}", "{escape_markdown(error)}"],
    "main.ipynb": ["{escape_markdown(name)}"],
}


@pytest.mark.parametrize("notebook", sorted(SINKS))
def test_dashboards_pass_data_through_the_helper_and_keep_outputs_empty(notebook):
    cells = json.loads((REPO / "notebooks" / "dashboards" / notebook).read_text())["cells"]
    source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    for needle in SINKS[notebook]:
        assert needle in source, needle
    assert all(c.get("outputs", []) == [] for c in cells)
    # A name between backticks would be a code span, where entities are not read.
    assert not re.search(r"`\{[^}]*\}`", source)


def test_widgets_escape_with_the_one_helper():
    offenders = [str(p.relative_to(REPO)) for p in sorted((REPO / "widgets").rglob("*.py"))
                 if re.search(r"\bhtml\.escape\(|^import html$", p.read_text(), re.M)]
    assert offenders == [], f"use workbench.text.escape_html in {offenders}"
    scripts = [str(p.relative_to(REPO)) for p in sorted(STATIC.glob("*.js"))
               if re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write",
                            p.read_text())]
    assert scripts == [], f"front-ends must use textContent: {scripts}"
