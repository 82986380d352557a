"""What every command shares: the error-to-exit-code rule and the two consoles."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import typer
from rich.console import Console
from rich.markup import escape

from sparseprune.errors import SparsePruneError


@dataclass
class State:
    debug: bool = False
    last_error: str = ""


state = State()
stdout = Console(highlight=False, soft_wrap=False)
stderr = Console(stderr=True, highlight=False)
for _console in (stdout, stderr):
    if not _console.is_terminal:
        _console.width = 160  # piped tables stay readable instead of wrapping at 80 columns


def last_error() -> str:
    return state.last_error


def fail(message: str, code: int = 2) -> typer.Exit:
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
