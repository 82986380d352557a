"""A command's main table as data (columns + rows), written as CSV or a Markdown table.

Each `render/<command>_output.py` defines `rows(result) -> Rows`; these two writers turn that
into `--format csv` and `--format markdown`, so every command's formats agree with each other.
Numbers are written as they are (full precision, no thousands separators); None is empty.
"""

from __future__ import annotations

import csv
import io
import math
import re
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
    """A GitHub-flavoured Markdown table; names are escaped (`markdown_text`)."""
    lines = [f"### {markdown_text(title)}", ""] if title else []
    lines.append(markdown_row(table.columns))
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    lines += [markdown_row([cell(value) for value in row]) for row in table.rows]
    return "\n".join(lines)


def markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(markdown_text(text) for text in cells) + " |"


# What Markdown would read as structure or markup: `|` splits a cell, `\` escapes the next
# character (a delimiter too), backticks open code spans, `*` `[` `]` `<` `>` `&` emphasis,
# links, HTML and entities; `_` only where it can open or close emphasis (not in `dense_1`).
_MARKUP = re.compile(r"[\\|`*\[\]<>&]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
_LINE_BREAK = re.compile(r"\r\n|[\r\n]")


def markdown_text(text: str) -> str:
    """`text` (a name read from a file) shown literally in Markdown, on one line."""
    return _MARKUP.sub(lambda m: "\\" + m.group(), _LINE_BREAK.sub(" ", text))


def code_span(text: str) -> str:
    """`text` as inline code, fenced with more backticks than any run inside it."""
    text = _LINE_BREAK.sub(" ", text)
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
