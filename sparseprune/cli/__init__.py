"""The Typer app. Each command parses options, calls one library function, renders, exits.

Exit codes: 0 ok, 1 a check failed, 2 bad input or usage.
"""

from __future__ import annotations

import os

import typer

from sparseprune import __version__
from sparseprune.cli import (
    bench_cmd,
    compare_cmd,
    evaluate_cmd,
    export_cmd,
    inspect_cmd,
    prune_cmd,
    shrink_cmd,
    strip_cmd,
)
from sparseprune.cli.common import OneLineErrors, install_signal_handlers, state
from sparseprune.errors import DEBUG_ENV

app = typer.Typer(
    name="sparseprune",
    help="Inspect and prune saved Keras models (.keras, .h5) safely, without loading them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    cls=OneLineErrors,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"sparseprune {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    """Inspect and prune saved Keras models (.keras, .h5) safely, without loading them."""
    state.debug = debug
    if debug:  # heavy modules and worker processes read it (TensorFlow's noise is kept)
        os.environ[DEBUG_ENV] = "1"


app.command("inspect")(inspect_cmd.inspect)
app.command("prune")(prune_cmd.prune)
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("compare")(compare_cmd.compare)
app.command("strip")(strip_cmd.strip)
app.command("bench")(bench_cmd.bench)
app.command("export")(export_cmd.export)
app.command("shrink")(shrink_cmd.shrink)


def main() -> None:
    install_signal_handlers()
    app(prog_name="sparseprune")
