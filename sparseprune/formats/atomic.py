"""Every file a command writes is published here, under the same rules as `-o`.

Checked before any work (`check_output_path`), written to a temp file beside the target, fsynced,
then published (`atomic_path`, `write_text_output`): never onto an input (same device and inode,
so hard links, symlinks and bind mounts count), never onto an existing file without --force, not
even one that appeared while the command ran (rename without replace). An interrupted or failed
run leaves the old file or nothing, and no temp file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from sparseprune.errors import InputError, describe

AT_FDCWD = -100
RENAME_NOREPLACE = 1
# errno values meaning "this kernel or filesystem cannot rename without replacing".
_NO_RENAMEAT2 = frozenset({errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM})
_HDF5_ERRNO = re.compile(r"errno = (\d+)")


def file_identity(path: Path | str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of an existing file, following symlinks; None if there is none."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def place_identity(path: Path) -> tuple:
    """Where a path points: the file's inode if it exists, else its folder's inode and name."""
    found = file_identity(path)
    if found is not None:
        return found
    return ("new", file_identity(path.parent), path.name)


def check_output_path(
    target: Path,
    force: bool,
    inputs: Iterable[Path | str] = (),
    others: Iterable[tuple[str, Path]] = (),
) -> None:
    """Refuse before any work: an input, another output of this command, a missing or
    unwritable folder, a directory, or an existing file without --force."""
    target = Path(target)
    if str(target) in ("", "."):
        raise InputError(f"the output path '{target}' is empty or a folder; give a file name.")
    _refuse_inputs(target, inputs)
    for what, other in others:
        if other is not None and place_identity(target) == place_identity(Path(other)):
            raise InputError(f"{target} is also the {what}; give each output its own path.")
    if target.is_dir():
        raise InputError(f"the output {target} is a directory; give a file name.")
    if not target.parent.is_dir():
        raise InputError(f"the output folder {target.parent} does not exist.")
    if target.exists() and not force:
        raise InputError(f"{target} already exists; pass --force to overwrite it.")
    _probe_folder(target)


def _refuse_inputs(target: Path, inputs: Iterable[Path | str]) -> None:
    written = file_identity(target)
    if written is None:
        return
    for source in inputs:
        if file_identity(source) == written:
            raise InputError(
                f"the output {target} is the input file {source}; choose another path."
            )


def _probe_folder(target: Path) -> None:
    """Fail now, not after the work, when the folder cannot take a new file (read-only, ...)."""
    try:
        handle, probe = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
        )
    except OSError as error:
        raise write_error(target, error) from None
    os.close(handle)
    os.unlink(probe)


def write_error(target: Path, error: OSError) -> InputError:
    """One line naming the file the user asked for (never the temp file) and the OS reason."""
    code = error.errno
    if code is None:  # h5py folds the errno into its message
        found = _HDF5_ERRNO.search(str(error))
        code = int(found.group(1)) if found else None
    reason = os.strerror(code) if code else describe(error)
    return InputError(f"cannot write {target}: {reason}.")


@contextlib.contextmanager
def atomic_path(target: Path, *, force: bool, inputs: Iterable[Path | str] = ()) -> Iterator[Path]:
    """Yield a temp path beside `target`; on success publish it there (see `publish`)."""
    target = Path(target)
    inputs = tuple(inputs)
    try:
        handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise write_error(target, error) from None
    os.close(handle)
    temp_path = Path(temp)
    try:
        try:
            yield temp_path
            _fsync(temp_path)
            os.chmod(temp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs follow the umask
        except OSError as error:
            raise write_error(target, error) from error
        publish(temp_path, target, force, inputs)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp_path.unlink()


def write_text_output(
    target: Path, text: str, *, force: bool, inputs: Iterable[Path | str] = ()
) -> None:
    """A text output (--json-file, reports), written and published like a model."""
    with atomic_path(target, force=force, inputs=inputs) as temp:
        temp.write_text(text, encoding="utf-8")


def publish(temp: Path, target: Path, force: bool, inputs: Iterable[Path | str] = ()) -> None:
    """Move `temp` onto `target`: never onto an input; without force never onto any file."""
    _refuse_inputs(target, inputs)
    try:
        if force:
            os.replace(temp, target)
            return
        if not _rename_noreplace(temp, target):
            raise InputError(
                f"{target} appeared while this command ran; it was left as it is "
                "(pass --force to replace it)."
            )
    except OSError as error:
        raise write_error(target, error) from error


def _rename_noreplace(temp: Path, target: Path) -> bool:
    """Atomically move without replacing: renameat2(RENAME_NOREPLACE), else link + unlink."""
    done = _renameat2(temp, target)
    if done is not None:
        return done
    try:
        os.link(temp, target)
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in _NO_RENAMEAT2:
            raise
        return _claim_then_replace(temp, target)  # filesystems without hard links
    os.unlink(temp)
    return True


def _renameat2(temp: Path, target: Path) -> bool | None:
    """True moved, False target exists, None when this system has no renameat2 for it."""
    function = _libc_renameat2()
    if function is None:
        return None
    result = function(AT_FDCWD, os.fsencode(temp), AT_FDCWD, os.fsencode(target), RENAME_NOREPLACE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code == errno.EEXIST:
        return False
    if code in _NO_RENAMEAT2:
        return None
    raise OSError(code, os.strerror(code), str(target))


def _claim_then_replace(temp: Path, target: Path) -> bool:
    """Last resort: create the target exclusively (so a rival loses), then rename over it."""
    try:
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    os.replace(temp, target)
    return True


_RENAMEAT2: list = []


def _libc_renameat2():
    if not _RENAMEAT2:
        try:
            function = ctypes.CDLL(None, use_errno=True).renameat2
            function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
            function.argtypes += [ctypes.c_uint]
            function.restype = ctypes.c_int
        except (OSError, AttributeError):
            function = None
        _RENAMEAT2.append(function)
    return _RENAMEAT2[0]


def _fsync(path: Path) -> None:
    with open(path, "rb") as written:
        os.fsync(written.fileno())


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
