"""Exceptions that carry the CLI's exit-code contract.

Library callers catch `SparsePruneError`; the CLI maps `exit_code` onto the process exit status
(0 ok, 1 a check failed, 2 bad input or usage) and prints `str(error)` as one line.
"""

from __future__ import annotations

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


def describe(error: BaseException, limit: int = 120) -> str:
    """A short, single-line reason from a low-level exception, for embedding in our messages."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
