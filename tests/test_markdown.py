"""Names read from files are shown literally in every `--format markdown` table.

The output is parsed with markdown-it-py (an independent CommonMark + GFM-table parser, installed
with rich): each cell must come back as the name itself, as plain text (no emphasis, link, HTML
or code span made from the name), and each row must keep its number of cells.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from typer.testing import CliRunner

from handmade import CONFIG, weights_h5_bytes, write_keras
from sparseprune.cli import app
from sparseprune.render.tabular import Rows, code_span, markdown_text, to_markdown

PARSER = MarkdownIt("commonmark").enable("table")
HOSTILE = [
    "a|b",
    "a\\|b",
    "trailing\\",
    "*bold* and **strong**",
    "_private_",
    "dense_1",
    "<b>html</b> &amp; [link](http://x)",
    "`code` | ``more``",
    "two\nlines\r\nhere",
    "# not a heading",
]


def table_cells(markdown: str) -> list[list[tuple[str, set[str]]]]:
    """Each body row's cells as (plain text, token types other than text) from the parser."""
    rows: list[list[tuple[str, set[str]]]] = []
    tokens = PARSER.parse(markdown)
    for index, token in enumerate(tokens):
        if token.type == "tr_open":
            rows.append([])
        elif token.type == "inline" and tokens[index - 1].type in ("td_open", "th_open"):
            children = token.children or []
            text = "".join(c.content for c in children if c.type in ("text", "softbreak"))
            rows[-1].append((text, {c.type for c in children} - {"text"}))
    return rows[1:]  # the header row is not data


@pytest.mark.parametrize("name", HOSTILE)
def test_a_cell_reads_back_as_the_name(name: str) -> None:
    text = to_markdown(Rows(["name", "n"], [[name, 1], ["plain", 2]]))
    flat = name.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    assert table_cells(text) == [[(flat, set()), ("1", set())], [("plain", set()), ("2", set())]]


PRINTABLE = st.characters(codec="utf-8", exclude_categories=["Cs", "Cc", "Zl", "Zp"])


@given(st.text(PRINTABLE, min_size=1, max_size=30).filter(lambda s: s == s.strip()))
def test_any_printable_name_reads_back(name: str) -> None:
    """(Markdown itself trims whitespace at the ends of a cell, so names here have none.)"""
    (row,) = table_cells(to_markdown(Rows(["name", "n"], [[name, 1]])))
    assert row == [(name, set()), ("1", set())]


def test_underscores_inside_words_stay_readable() -> None:
    assert markdown_text("block1_conv1") == "block1_conv1"
    assert markdown_text("_x_") == "\\_x\\_"


@pytest.mark.parametrize("path", ["m.keras", "a`b.keras", "``x``.h5", "`y"])
def test_code_span_shows_the_path(path: str) -> None:
    (token,) = [t for t in PARSER.parse(code_span(path)) if t.type == "inline"]
    assert [(c.type, c.content) for c in token.children or []] == [("code_inline", path)]


def write_named(path: Path, name: str) -> Path:
    """The handmade Dense model (kernel 2x3 with 3 exact zeros) with its layer named `name`."""
    config = json.loads(json.dumps(CONFIG))
    config["config"]["layers"][1]["config"]["name"] = name

    def rename(f) -> None:
        f["layers/dense/vars"].attrs["name"] = name

    members = [
        ("metadata.json", b'{"keras_version": "3.15.1"}'),
        ("config.json", json.dumps(config).encode()),
        ("model.weights.h5", weights_h5_bytes(rename)),
    ]
    return write_keras(path, members)


@pytest.mark.parametrize("name", ["a|b", "x*y*|<i>z</i>", "back\\slash|", "`q`"])
def test_inspect_and_prune_markdown_show_hostile_layer_names(tmp_path: Path, name: str) -> None:
    model = write_named(tmp_path / "m.keras", name)
    runner = CliRunner()
    inspected = runner.invoke(app, ["inspect", str(model), "-f", "markdown"])
    assert inspected.exit_code == 0, inspected.output
    (row,) = table_cells(inspected.stdout.split("| **prunable total**")[0])
    assert [text for text, _ in row] == [name, "Dense", "kernel", "2x3", "6", "3", "4",
                                         "66.67%", "1"]  # fmt: skip (column 0 is all zero)
    assert all(not extra for _, extra in row)
    pruned = runner.invoke(
        app, ["prune", str(model), "-o", str(tmp_path / "p.keras"), "--target", "0.5",
              "-f", "markdown"],
    )  # fmt: skip
    assert pruned.exit_code == 0, pruned.output
    cells = table_cells(pruned.stdout)
    header = pruned.stdout.splitlines()[0]
    assert all(len(r) == header.count(" | ") + 1 for r in cells)
    assert cells[0][0] == (f"{name}/kernel", set())
