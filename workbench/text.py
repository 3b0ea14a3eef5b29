"""Text a person typed, shown as text: the one escaping helper of every dashboard and widget.

Class names, annotator names, slice values, file names, label-book text and drift batch
names are typed by people (an inspector's name comes from a text box in a served page), so
they must never reach the browser as markup. Everything Loupe renders as HTML
(``ipywidgets.HTML``, ``IPython.display.HTML``) passes data through :func:`escape_html`;
everything rendered as Markdown (``IPython.display.Markdown``, the datasheet) through
:func:`escape_markdown`; labels of plotly charts through :func:`escape_plotly`. Loupe's
own markup around the data stays markup.

>>> escape_html('<img src=x onerror="alert(1)">')
'&lt;img src=x onerror=&quot;alert(1)&quot;&gt;'
>>> escape_markdown("[x](javascript:alert(1)) <b>")
'\\\\[x\\\\](javascript:alert(1)) &lt;b&gt;'
"""

from __future__ import annotations

import html
import re

__all__ = ["escape_html", "escape_markdown", "escape_plotly", "printable"]

#: Markdown punctuation that starts markup anywhere in a line: links and images (``[``,
#: ``]``), code spans, emphasis with ``*``, strikethrough, table cells, maths (Jupyter
#: typesets ``$…$``) and the backslash itself.
_MARKDOWN_INLINE = re.compile(r"([\\`*\[\]|~$])")
#: ``_`` opens or closes emphasis only at a word boundary (``pit_mark`` stays as it is).
_MARKDOWN_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
#: Control characters (C0, DEL, C1): a terminal would obey ``ESC`` sequences in a card
#: printed by ``loupe datasheet``; they become U+FFFD.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: The same, less newline and tab: what :func:`printable` replaces in terminal output.
_TERMINAL_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: What makes a line a heading or a list item when it starts one (a marker, then a space).
_MARKDOWN_LINE_START = re.compile(r"^(#{1,6}|[+-]|\d{1,9}(?=[.)]))(?=[.)]?(?:\s|$))")


def escape_html(value: object) -> str:
    """``value`` as HTML text: ``&``, ``<``, ``>``, ``"`` and ``'`` become entities.

    Safe in element content and in quoted attribute values. ``None`` becomes ``""``.
    """
    return "" if value is None else html.escape(str(value), quote=True)


def escape_markdown(value: object) -> str:
    """``value`` as Markdown text, for one line of a Markdown document or table cell.

    Neutralises HTML (as :func:`escape_html`) and the Markdown syntax a value could use to
    become markup: links and images (``[…](…)``), code spans, emphasis, strikethrough,
    table pipes, ``$`` maths, and a heading or list marker at its start. Whitespace
    runs (newlines included) become one space, so a value cannot start a new block;
    other control characters (``ESC`` …) become U+FFFD, so a printed card cannot drive a
    terminal. ``None`` becomes ``""``.
    """
    if value is None:
        return ""
    text = _CONTROL.sub("\ufffd", " ".join(str(value).split()))
    text = _MARKDOWN_INLINE.sub(r"\\\1", text)
    text = _MARKDOWN_UNDERSCORE.sub(r"\\_", text)
    text = _MARKDOWN_LINE_START.sub(_escape_line_start, text)
    # Last: the entities made here contain '#' and ';', which must not be escaped again.
    return html.escape(text, quote=True)


def escape_plotly(value: object) -> str:
    """``value`` as text of a plotly label (tick, legend, hover): ``&``, ``<`` and ``>``
    become entities.

    Plotly draws labels from its own HTML subset (``<b>``, ``<a href>``, ``<br>`` …) and
    reads only a few entities back (``&amp;``, ``&lt;``, ``&gt;``, numeric ones, not
    ``&quot;``), so quotes stay as they are: without ``<`` they cannot form a tag.
    ``None`` becomes ``""``.
    """
    return "" if value is None else html.escape(str(value), quote=False)


def printable(value: object) -> str:
    """``value`` as terminal text: control characters other than newline and tab become
    U+FFFD, so a class name, file name or annotator cannot move the cursor, rewrite earlier
    lines or set a terminal's title (``ESC`` sequences) when ``loupe`` prints it."""
    return "" if value is None else _TERMINAL_CONTROL.sub("\ufffd", str(value))


def _escape_line_start(match: re.Match[str]) -> str:
    marker = match.group(1)
    return marker + "\\" if marker.isdigit() else "\\" + marker
