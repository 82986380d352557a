"""Standard input as a model file: `-` is spooled to a private temporary file first.

HDF5 and zip readers need to seek, which a pipe cannot do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from sparseprune.errors import InputError, describe

STDIN = "-"
STDOUT = "-"
STDIN_LABEL = "<stdin>"


@contextlib.contextmanager
def input_path(path: str) -> Iterator[tuple[str, str]]:
    """Yield (a real path to read, a label for messages) for a path or `-`."""
    if path != STDIN:
        yield path, path
        return
    handle, spooled = tempfile.mkstemp(prefix="sparseprune-stdin-")
    try:
        with os.fdopen(handle, "wb") as out:
            _spool_stdin(out)
        yield spooled, STDIN_LABEL
    finally:
        os.unlink(spooled)


def _spool_stdin(out: BinaryIO) -> None:
    """Copy stdin to `out`; a closed or unreadable stdin is bad input, not a crash."""
    source = getattr(sys.stdin, "buffer", None)
    if source is None or source.closed:
        raise InputError("standard input is closed; pipe a model into '-' or give a file path.")
    try:
        shutil.copyfileobj(source, out, 1 << 20)
    except (OSError, ValueError) as error:
        raise InputError(
            f"cannot read the model from standard input ({describe(error)})."
        ) from None
