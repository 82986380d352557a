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
            shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
        yield spooled, STDIN_LABEL
    finally:
        os.unlink(spooled)
