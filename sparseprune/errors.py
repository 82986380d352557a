"""Exceptions that carry the CLI's exit-code contract.

Library callers catch `SparsePruneError`; the CLI maps `exit_code` onto the process exit status
(0 ok, 1 a check failed, 2 bad input or usage) and prints `str(error)` as one line.
"""

from __future__ import annotations

import re

# `sparseprune --debug` sets it: tracebacks, and TensorFlow's start-up logs (also in workers).
DEBUG_ENV = "SPARSEPRUNE_DEBUG"


class SparsePruneError(Exception):
    """Base class: a problem the user can act on, reported without a traceback."""

    exit_code = 2


class InputError(SparsePruneError):
    """The model file, an option or a recipe is wrong, unreadable or unsupported."""


class UnsafeModelError(InputError):
    """The file contains something sparseprune refuses to follow (links, bombs, ...)."""


class CheckFailed(SparsePruneError):
    """The work was done, but a requested gate or verification did not pass."""

    exit_code = 1


# Terminal escape sequences (Keras styles its errors: "\x1b[1m"): CSI, OSC and 2-byte forms.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def strip_ansi(text: str) -> str:
    """`text` without terminal escape sequences, so a library's styling never reaches a message."""
    return ANSI_ESCAPE.sub("", text)


def describe(error: BaseException, limit: int = 120) -> str:
    """A short, single-line reason from a low-level exception, for embedding in our messages."""
    text = " ".join(strip_ansi(str(error)).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
