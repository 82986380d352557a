"""What every command shares: the error-to-exit-code rule and the two consoles."""

from __future__ import annotations

import contextlib
import errno
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from typer.core import TyperGroup

try:  # Typer >= 0.20 vendors Click; its exceptions are the ones raised
    from typer._click import exceptions as click
except ImportError:  # pragma: no cover - older Typer on real Click
    from click import exceptions as click  # type: ignore[no-redef]

from sparseprune.choices import OutputFormat
from sparseprune.cli.process import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    StdoutClosed,
    Terminated,
    quiet_broken_pipe,
)
from sparseprune.errors import SparsePruneError, strip_ansi
from sparseprune.extras import extra_for_module, install_hint

# Options several commands share, declared once so their names and help stay identical.
UnsafeOption = Annotated[
    bool, typer.Option("--unsafe", help="Allow loading Lambda/custom layers (runs code).")
]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Overwrite an existing output (never the input).")
]
ThresholdOption = Annotated[
    float, typer.Option("--threshold", "-t", min=0.0, help="|w| <= T counts as near zero.")
]
VerifyOption = Annotated[
    bool, typer.Option("--verify", help="Compare input and output predictions with Keras.")
]
FormatOption = Annotated[
    OutputFormat,
    typer.Option("--format", "-f", help="Output on stdout: table, json, csv or markdown."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Shortcut for --format json.")]
JsonFileOption = Annotated[
    Path | None,
    typer.Option("--json-file", help="Also write the JSON document to this file (atomically)."),
]

if TYPE_CHECKING:
    from rich.console import Console

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class State:
    debug: bool = False
    last_error: str = ""


state = State()


def _stdout_closed() -> None:
    raise StdoutClosed()


class LazyConsole:
    """A rich Console made on first use, so output that needs no table never imports rich."""

    def __init__(self, **options: Any) -> None:
        object.__setattr__(self, "_options", options)
        object.__setattr__(self, "_console", None)

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            console = Console(**self._options)
            if not console.is_terminal:
                console.width = 160  # piped tables stay readable instead of wrapping at 80
            console.on_broken_pipe = _stdout_closed  # type: ignore[method-assign] # rich would exit 1; we exit 141 quietly
            object.__setattr__(self, "_console", console)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.console, name, value)


# emoji=False: names read from files (":x:") must print as they are.
stdout = cast("Console", LazyConsole(highlight=False, soft_wrap=False, emoji=False))
stderr = cast("Console", LazyConsole(stderr=True, highlight=False, emoji=False))


def escape(text: str) -> str:
    """rich's markup escape (imported on first use, like the consoles)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def last_error() -> str:
    return state.last_error


def one_line(message: str) -> str:
    """Drop terminal escape sequences (Keras styles its errors), then escape the remaining
    control characters (names from a file may hold newlines) so errors stay one line."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], strip_ansi(message))


def fail(message: str, code: int = 2) -> typer.Exit:
    message = one_line(message)
    state.last_error = message
    stderr.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def exit_codes() -> Iterator[None]:
    """Turn library errors into one stderr line and their exit code (tracebacks with --debug).

    Interrupts end the whole command (SystemExit, which no per-model loop catches); the temp
    files of the work in progress are removed by the `finally` blocks they pass through.
    """
    try:
        yield
    except SparsePruneError as error:
        if state.debug:
            raise
        raise fail(str(error), error.exit_code) from None
    except ModuleNotFoundError as error:  # an optional dependency missing below a gate
        extra = extra_for_module(error.name)
        if extra is None or state.debug:
            raise
        raise fail(install_hint(extra, "this command", str(error.name)), 2) from None
    except KeyboardInterrupt:
        raise SystemExit(fail("interrupted.", EXIT_INTERRUPTED).exit_code) from None
    except Terminated:
        raise SystemExit(fail("terminated.", EXIT_TERMINATED).exit_code) from None


class OneLineErrors(TyperGroup):
    """The app's group: usage errors as one stderr line (exit 2), a closed stdout pipe as a
    quiet exit 141 (128 + SIGPIPE, what a shell reports for a writer killed by SIGPIPE)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            sys.stdout.flush()
        except click.NoArgsIsHelpError as error:
            error.show()
            code = error.exit_code
        except click.ClickException as error:
            code = usage_error(error)
        except typer.Abort:
            code = fail("interrupted.", EXIT_INTERRUPTED).exit_code
        except Terminated:
            code = fail("terminated.", EXIT_TERMINATED).exit_code
        except (StdoutClosed, BrokenPipeError):
            code = quiet_broken_pipe()
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: typer.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except OSError as error:
            if error.errno != errno.EPIPE:
                raise
            raise StdoutClosed() from error  # before Typer turns it into a silent exit 1


def usage_error(error: click.ClickException) -> int:
    """Click's multi-line usage box as one line, with where to look for the usage."""
    message = error.format_message().rstrip(".")
    context = getattr(error, "ctx", None)
    if context is not None:
        message += f"; see '{context.command_path} --help'"
    return fail(
        message + ".", 2 if isinstance(error, click.UsageError) else error.exit_code
    ).exit_code


def end_on_failures(failures: Sequence[str]) -> None:
    """The one ending for failed checks: each on stderr as `check failed: ...`, then exit 1."""
    for failure in failures:
        stderr.print(f"[bold red]check failed:[/] {escape(one_line(failure))}", soft_wrap=True)
    if failures:
        raise typer.Exit(1)


def split_names(text: str | None) -> list[str] | None:
    """'accuracy, mae' -> ['accuracy', 'mae']; None keeps the default (an empty string: none)."""
    if text is None:
        return None
    return [name.strip() for name in text.split(",") if name.strip()]
