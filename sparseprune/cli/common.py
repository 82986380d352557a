"""What every command shares: the error-to-exit-code rule and the two consoles."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from sparseprune.errors import SparsePruneError

# Options several commands share, declared once so their names and help stay identical.
UnsafeOption = Annotated[
    bool, typer.Option("--unsafe", help="Allow loading Lambda/custom layers (runs code).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable result.")]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class State:
    debug: bool = False
    last_error: str = ""


state = State()
# emoji=False: names read from files (":x:") must print as they are.
stdout = Console(highlight=False, soft_wrap=False, emoji=False)
stderr = Console(stderr=True, highlight=False, emoji=False)
for _console in (stdout, stderr):
    if not _console.is_terminal:
        _console.width = 160  # piped tables stay readable instead of wrapping at 80 columns


def last_error() -> str:
    return state.last_error


def one_line(message: str) -> str:
    """Escape control characters (names from a file may hold newlines) so errors stay one line."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], message)


def fail(message: str, code: int = 2) -> typer.Exit:
    message = one_line(message)
    state.last_error = message
    stderr.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def exit_codes() -> Iterator[None]:
    """Turn library errors into one stderr line and their exit code (tracebacks with --debug)."""
    try:
        yield
    except SparsePruneError as error:
        if state.debug:
            raise
        raise fail(str(error), error.exit_code) from None
    except KeyboardInterrupt:
        raise fail("interrupted.", 130) from None
