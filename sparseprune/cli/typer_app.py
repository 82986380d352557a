"""The Typer app. Each command parses options, calls one library function, renders, exits.

Exit codes: 0 ok, 1 a check failed, 2 bad input or usage. `sparseprune.cli.main` runs this app
unless `cli/fast.py` takes the call (inspect --json, without importing Typer).
"""

from __future__ import annotations

import importlib
import os

import typer
import typer.main
from typer.core import TyperOption

try:  # Typer >= 0.20 vendors Click
    from typer import _click as click
except ImportError:  # pragma: no cover - older Typer on real Click
    import click  # type: ignore[no-redef]

from sparseprune import __version__
from sparseprune.cli.common import OneLineErrors, state
from sparseprune.errors import DEBUG_ENV

# command -> (module, function). A command's module (and what it imports) is loaded only when
# that command runs, so `inspect` does not pay for prune's or bench's imports.
COMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("sparseprune.cli.inspect_cmd", "inspect"),
    "prune": ("sparseprune.cli.prune_cmd", "prune"),
    "evaluate": ("sparseprune.cli.evaluate_cmd", "evaluate"),
    "compare": ("sparseprune.cli.compare_cmd", "compare"),
    "strip": ("sparseprune.cli.strip_cmd", "strip"),
    "bench": ("sparseprune.cli.bench_cmd", "bench"),
    "export": ("sparseprune.cli.export_cmd", "export"),
    "shrink": ("sparseprune.cli.shrink_cmd", "shrink"),
}


# --help panels: options grouped by what they are for (the rest stay under "Options").
OUTPUT_PANEL = ("Output", ("--output", "--format", "--json", "--json-file", "--force"))
PANELS: dict[str, dict[str, tuple[str, ...]]] = {
    "prune": {
        "Selection": (
            *("--target", "--threshold", "--scope", "--structure", "--block", "--block-pooling"),
            *("--layers", "--exclude", "--set", "--pattern", "--mask", "--include-bias"),
            *("--include-unknown", "--config", "--method"),
        ),
        "Output": (*OUTPUT_PANEL[1], "--keep-optimizer"),
        "Verification and data": (
            *("--verify", "--data", "--label", "--validation-split", "--unsafe"),
            "--custom-objects",
        ),
        "Fine-tuning (--epochs)": (
            *("--epochs", "--schedule", "--initial-sparsity", "--begin-step"),
            *("--end-step", "--frequency", "--power", "--batch-size", "--lr", "--optimizer"),
            *("--loss", "--metrics", "--strategy", "--seed", "--restore-best"),
        ),
    },
}
_BUILT: dict[str, click.Command] = {}


def arrange_help(command: str, params: list[click.Parameter]) -> list[click.Parameter]:
    """Put options in their panel and drop the type shown after flags (`--force <bool>`)."""
    panels = PANELS.get(command, dict([OUTPUT_PANEL]))
    panel_of = {opt: panel for panel, opts in panels.items() for opt in opts}
    for param in params:
        if isinstance(param, TyperOption):
            if param.is_flag and param.metavar is None:
                param.metavar = ""
            panel = next((panel_of[o] for o in param.opts if o in panel_of), None)
            if panel is not None:
                param.rich_help_panel = panel  # type: ignore[attr-defined]
    return params


class LazyCommands(OneLineErrors):
    """The app's group, with each command built from its module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        if cmd_name not in _BUILT:
            module, function = COMMANDS[cmd_name]
            single = typer.Typer(
                rich_markup_mode="rich", pretty_exceptions_enable=False, add_completion=False
            )
            single.command(cmd_name)(getattr(importlib.import_module(module), function))
            command = typer.main.get_command(single)
            arrange_help(cmd_name, command.get_params(ctx))
            _BUILT[cmd_name] = command
        return _BUILT[cmd_name]

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return arrange_help("", super().get_params(ctx))


app = typer.Typer(
    name="sparseprune",
    help="Inspect and prune saved Keras models (.keras, .h5) safely, without loading them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    cls=LazyCommands,
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


def run(argv: list[str] | None = None) -> None:
    """Parse `argv` (default sys.argv[1:]) with Typer and run the command; exits the process."""
    app(args=argv, prog_name="sparseprune")
