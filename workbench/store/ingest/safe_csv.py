"""CSV files that are safe to open in a spreadsheet: no cell is run as a formula.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read by
Excel, LibreOffice and Google Sheets as a formula (``=cmd|' /C calc'!A0`` runs a program,
``=HYPERLINK(...)`` leaks data). Labels, annotator names, file paths and slice values come
from whoever labelled or named the files, so every CSV Loupe writes goes through
:func:`write_csv`, which prefixes such text cells (and column names) with ``'`` as OWASP
recommends. Numbers are left alone: a negative number is not text.
"""

from __future__ import annotations

import csv
import numbers
import os
from pathlib import Path
from typing import Any

import pandas as pd

#: First characters that make a spreadsheet treat a cell as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: Any) -> Any:
    """``value`` with a leading ``'`` when it is text starting like a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def escape_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells and column names cannot run as formulas.

    Lists and other objects in a cell (``tags``) are written as their text, escaped too.
    """
    out = frame.copy()
    for column in out.columns:
        values = out[column]
        if values.dtype == object or pd.api.types.is_string_dtype(values):
            out[column] = values.map(
                lambda v: escape_cell(v if v is None or isinstance(v, str | numbers.Number)
                                      else str(v)))
    out.columns = [escape_cell(str(c)) for c in out.columns]
    return out


def write_csv(frame: pd.DataFrame, path: str | os.PathLike[str], *, index: bool = False,
              **options: Any) -> Path:
    """Write ``frame`` to ``path`` as CSV with formula-like cells escaped; returns the path.

    ``options`` go to :meth:`pandas.DataFrame.to_csv`. Rows end in ``\r\n`` (RFC 4180), so
    the csv writer quotes every cell holding a delimiter, a quote, a ``\r`` or a ``\n``
    (``csv.QUOTE_MINIMAL``): a carriage return inside a cell never splits a row, and the
    header stays plain.
    """
    path = Path(path)
    options.setdefault("quoting", csv.QUOTE_MINIMAL)
    options.setdefault("lineterminator", "\r\n")
    escape_formulas(frame).to_csv(path, index=index, **options)
    return path


__all__ = ["FORMULA_PREFIXES", "escape_cell", "escape_formulas", "write_csv"]
