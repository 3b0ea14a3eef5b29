"""RememberedName in the kernel: the browser's stored name fills an empty name box, a typed
name wins, and asking again makes the page hear the name again (a page built from a
preheated kernel misses what the kernel said while its widgets were being built)."""

from __future__ import annotations

import ipywidgets as w

from widgets import RememberedName
from widgets._base.name_memory import BOX_CLASS, MAX_NAME


def _ask(memory: RememberedName, stored: object) -> None:
    memory._restore(memory, {"restore": stored}, [])


def test_the_stored_name_fills_an_empty_box_and_the_page_hears_it_again_when_asked():
    box = w.Text()
    memory = RememberedName().bind(box)
    assert BOX_CLASS in box._dom_classes  # the browser finds the box by this class
    said: list[str] = []
    box.observe(lambda change: said.append(change["new"]), names="value")

    _ask(memory, "  erin  ")
    assert box.value == "erin" and memory.heard == "erin"
    _ask(memory, "erin")  # the page did not show it yet: the kernel says it again
    assert box.value == "erin" and said[-1] == "erin" and said.count("erin") == 2


def test_a_typed_name_wins_and_nonsense_is_ignored():
    box = w.Text()
    memory = RememberedName().bind(box)
    box.value = "frank"
    _ask(memory, "erin")
    assert box.value == "frank" and memory.name == "frank"

    empty = w.Text()
    other = RememberedName().bind(empty)
    for stored in ("", "   ", None, 7, ["erin"]):
        _ask(other, stored)
    assert empty.value == ""
    _ask(other, "x" * 500)
    assert empty.value == "x" * MAX_NAME
