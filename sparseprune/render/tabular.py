"""A command's main table as data (columns + rows), written as CSV or a Markdown table.

Each `render/<command>_output.py` defines `rows(result) -> Rows`; these two writers turn that
into `--format csv` and `--format markdown`, so every command's formats agree with each other.
Numbers are written as they are (full precision, no thousands separators); None is empty.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rows:
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]


def cell(value: Any) -> str:
    """One value as text: None, NaN and Inf are empty; floats keep every digit."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "x".join(cell(item) for item in value)
    return str(value)


def to_csv(table: Rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow([cell(value) for value in row])
    return buffer.getvalue()


def to_markdown(table: Rows, title: str | None = None) -> str:
    """A GitHub-flavoured Markdown table; `|` and newlines inside names are escaped."""
    lines = [f"### {_escape(title)}", ""] if title else []
    lines.append("| " + " | ".join(_escape(c) for c in table.columns) + " |")
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_escape(cell(value)) for value in row) + " |")
    return "\n".join(lines)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")
