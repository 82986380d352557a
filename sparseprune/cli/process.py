"""Process-level endings shared by the Typer app and the fast path: signals and a closed stdout.

Nothing here imports Typer or rich, so `cli/fast.py` (inspect --json without Typer) ends the
process exactly as the app does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE


class StdoutClosed(Exception):
    """The reader of stdout went away (`| head`)."""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so cleanup runs as for Ctrl-C (not an Exception)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def install_signal_handlers() -> None:
    """SIGTERM cleans up like SIGINT. Only the CLI's own process does this, not the library."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def quiet_broken_pipe() -> int:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail, then exit 141."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_BROKEN_PIPE
