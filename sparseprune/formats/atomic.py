"""Write outputs atomically: a temp file beside the target, fsync, rename. Never a partial file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sparseprune.errors import InputError


def check_output_path(target: Path, force: bool, inputs: tuple[Path, ...] = ()) -> None:
    """Refuse to write over an input, into a missing folder, or over a file without --force."""
    resolved = target.resolve()
    for source in inputs:
        if source.exists() and resolved == source.resolve():
            raise InputError(f"the output {target} is the input file; choose another -o path.")
    if target.is_dir():
        raise InputError(f"the output {target} is a directory; give a file name.")
    if not target.parent.is_dir():
        raise InputError(f"the output folder {target.parent} does not exist.")
    if target.exists() and not force:
        raise InputError(f"{target} already exists; pass --force to overwrite it.")


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path in `target`'s folder; rename it onto `target` only on success."""
    handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temp_path = Path(temp)
    try:
        yield temp_path
        with open(temp_path, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(temp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs follow the umask
        os.replace(temp_path, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp_path.unlink()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
