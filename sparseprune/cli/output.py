"""One output contract for every command: --format table|json|csv|markdown, --json, --json-file.

`@output_options` gives a command those options and --force, declared once here, and hands them
to it as one `OutputOptions`. The command hands its result (which has `to_json()`) and its
`Renderer` (the rich table and the rows of CSV/Markdown from `render/`) to `emit`, which prints
the chosen format and writes the JSON document to --json-file through the one publish path of
every output (`formats.atomic.write_text_output`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from sparseprune.choices import OutputFormat
from sparseprune.cli.common import (
    ForceOption,
    FormatOption,
    JsonFileOption,
    JsonOption,
    stderr,
    stdout,
)
from sparseprune.render.tabular import Rows, to_csv, to_markdown
from sparseprune.streams import STDIN

if TYPE_CHECKING:
    from rich.console import Console


@dataclass(frozen=True)
class Renderer:
    """How one command's result looks: a rich table, and its main table as rows."""

    table: Callable[[Console, Any], None]
    rows: Callable[[Any], Rows] | None = None
    csv: Callable[[Any], str] | None = None  # instead of rows, for a layout of its own
    markdown: Callable[[Any], str] | None = None

    def as_csv(self, result: Any) -> str:
        return self.csv(result) if self.csv else to_csv(self._rows(result))

    def as_markdown(self, result: Any) -> str:
        return self.markdown(result) if self.markdown else to_markdown(self._rows(result))

    def _rows(self, result: Any) -> Rows:
        assert self.rows is not None, "a renderer has rows or its own csv and markdown"
        return self.rows(result)


@dataclass(frozen=True)
class OutputOptions:
    """What every command takes, as given: --format, --json, --json-file and --force (which
    also lets the command's other outputs, a model or a plot, replace existing files)."""

    format: OutputFormat = OutputFormat.TABLE
    as_json: bool = False
    json_file: Path | None = None
    force: bool = False


# (parameter, its Typer option, default), added after each command's own options
SHARED_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    ("force", ForceOption, False),
    ("output_format", FormatOption, OutputFormat.TABLE),
    ("as_json", JsonOption, False),
    ("json_file", JsonFileOption, None),
)


def output_options(command: Callable[..., None]) -> Callable[..., None]:
    """`command(..., out: OutputOptions)` as a Typer command taking the shared options.

    Typer reads the returned function's signature: the command's own parameters without `out`,
    then SHARED_OPTIONS; the wrapper gathers those into the OutputOptions the command gets.
    """
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "out"]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
        for name, kind, default in SHARED_OPTIONS
    ]

    @functools.wraps(command)
    def run(
        *args: Any,
        force: bool = False,
        output_format: OutputFormat = OutputFormat.TABLE,
        as_json: bool = False,
        json_file: Path | None = None,
        **kwargs: Any,
    ) -> None:
        command(*args, out=OutputOptions(output_format, as_json, json_file, force), **kwargs)

    parameters = [*own, *shared]
    run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": None}
    return run


@dataclass(frozen=True)
class Output:
    """The output options as given: the format (--json wins) and the --json-file target."""

    format: OutputFormat = OutputFormat.TABLE
    json_file: Path | None = None
    force: bool = False
    inputs: tuple[str | Path, ...] = ()

    @classmethod
    def of(
        cls,
        options: OutputOptions,
        inputs: Iterable[str | Path] = (),
        others: Iterable[tuple[str, Path]] = (),
    ) -> Output:
        """The options, with a bad --json-file (an input, another output of the command, an
        existing file without --force, no folder) refused now, before any work is done."""
        inputs = tuple(str(p) for p in inputs if str(p) != STDIN)
        fmt = OutputFormat.JSON if options.as_json else options.format
        output = cls(fmt, options.json_file, options.force, inputs)
        if options.json_file is not None:
            from sparseprune.formats.atomic import check_output_path  # formats/ loads h5py

            check_output_path(options.json_file, options.force, inputs, others)
        return output


def emit(result: Any, renderer: Renderer, output: Output, to_stderr: bool = False) -> None:
    """Print `result` in the chosen format (on stderr when stdout carries a model file)."""
    if output.json_file is not None:
        from sparseprune.formats.atomic import write_text_output

        text = result.to_json() + "\n"
        write_text_output(output.json_file, text, force=output.force, inputs=output.inputs)
    console = stderr if to_stderr else stdout
    printers: dict[OutputFormat, Callable[[], None]] = {
        OutputFormat.JSON: lambda: typer.echo(result.to_json(), err=to_stderr),
        OutputFormat.CSV: lambda: typer.echo(renderer.as_csv(result), nl=False, err=to_stderr),
        OutputFormat.MARKDOWN: lambda: typer.echo(renderer.as_markdown(result), err=to_stderr),
        OutputFormat.TABLE: lambda: renderer.table(console, result),
    }
    printers[output.format]()
