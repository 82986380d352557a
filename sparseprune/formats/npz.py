"""Read `.npz` archives (masks, data, worker results) without pickles and without trusting them.

`np.load` allocates whatever a member's `.npy` header declares before reading a byte, so an
archive of a few hundred bytes can ask for terabytes. Here every member's header is read first
and its declared size (shape x itemsize) is checked against the member's real, uncompressed size
in the zip directory (itself bounded by the archive guard's expansion rule) before any array is
allocated. Object arrays are refused (they would need pickles).
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, cast

import numpy as np

from sparseprune.errors import InputError, UnsafeModelError, describe
from sparseprune.formats.archive import ZIP_ERRORS, ReadIntoFile, check_expansion

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK"
MAX_HEADER_BYTES = 10_000
_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def read_npz(
    path: str | os.PathLike[str], what: str = "data file", keys: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """The arrays of an `.npz` (only `keys` if given), checked before allocation.

    `what` names the file in errors ("mask file", "data file", ...).
    """
    source = Path(path)
    _check_is_npz(source, what)
    try:
        with zipfile.ZipFile(source) as archive:
            members = _array_members(archive, source, what)
            wanted = members if keys is None else {k: members[k] for k in keys if k in members}
            return {key: _read_member(archive, info, source, what) for key, info in wanted.items()}
    except InputError:
        raise
    except (*ZIP_ERRORS, KeyError) as error:
        raise InputError(f"{what} {source} is not a readable .npz ({describe(error)}).") from None


def npz_keys(path: str | Path, what: str = "data file") -> list[str]:
    """The array names in an `.npz`, in archive order, without reading any array."""
    source = Path(path)
    _check_is_npz(source, what)
    try:
        with zipfile.ZipFile(source) as archive:
            return list(_array_members(archive, source, what))
    except InputError:
        raise
    except ZIP_ERRORS as error:
        raise InputError(f"{what} {source} is not a readable .npz ({describe(error)}).") from None


def _check_is_npz(source: Path, what: str) -> None:
    try:
        with open(source, "rb") as handle:
            head = handle.read(len(NPY_MAGIC))
    except FileNotFoundError:
        raise InputError(f"{what} {source} does not exist.") from None
    except IsADirectoryError:
        raise InputError(f"{what} {source} is a directory; give an .npz file.") from None
    except OSError as error:
        raise InputError(f"cannot read {what} {source} ({describe(error)}).") from None
    if head.startswith(NPY_MAGIC):
        raise InputError(
            f"{what} {source} is a single .npy array, not an .npz archive; save named arrays "
            "with numpy.savez (e.g. np.savez('data.npz', x=x, y=y))."
        )
    if not head.startswith(ZIP_MAGIC):
        raise InputError(f"{what} {source} is not an .npz archive (numpy.savez writes one).")


def _array_members(archive: zipfile.ZipFile, source: Path, what: str) -> dict[str, zipfile.ZipInfo]:
    """`name.npy` members by array name; duplicate names and bombs refused."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        if not info.filename.endswith(".npy") or info.is_dir():
            continue
        key = info.filename[: -len(".npy")]
        if key in members:
            raise UnsafeModelError(f"{what} {source} holds two arrays named '{key}'.")
        check_expansion(info, f"{what} {source}: array '{key}'")
        members[key] = info
    return members


def _read_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, source: Path, what: str
) -> np.ndarray:
    key = info.filename[: -len(".npy")]
    with archive.open(info) as stream:
        shape, fortran, dtype, header_bytes = _read_header(stream, source, what, key)
        declared = math.prod(shape) * dtype.itemsize
        available = info.file_size - header_bytes
        if declared > available:
            raise InputError(
                f"{what} {source}: array '{key}' declares {declared:,} bytes of data but holds "
                f"{max(available, 0):,}; the file is corrupt or hostile."
            )
        # A ZipExtFile, which typeshed types as IO[bytes] (no readinto).
        buffer = _read_exactly(cast(ReadIntoFile, stream), declared)
    if buffer is None:
        raise InputError(f"{what} {source}: array '{key}' is truncated.")
    array = np.frombuffer(buffer, dtype=dtype, count=math.prod(shape))
    return array.reshape(shape, order="F" if fortran else "C")


def _read_exactly(stream: ReadIntoFile, size: int) -> bytearray | None:
    """`size` bytes into one writable buffer (no second copy), or None if the stream ends early."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    done = 0
    while done < size:
        got = stream.readinto(view[done : done + (16 << 20)])
        if not got:
            return None
        done += got
    return buffer


def _read_header(
    stream: IO[bytes], source: Path, what: str, key: str
) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, bytes before the data) from a `.npy` header."""
    try:
        version = np.lib.format.read_magic(stream)
        reader = _HEADER_READERS.get(version)
        if reader is None:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, fortran, dtype = reader(stream, max_header_size=MAX_HEADER_BYTES)
    except (ValueError, SyntaxError, TypeError, EOFError) as error:
        raise InputError(
            f"{what} {source}: array '{key}' has an unreadable .npy header ({describe(error)})."
        ) from None
    if dtype.hasobject:
        raise InputError(
            f"{what} {source}: array '{key}' holds Python objects; sparseprune never unpickles, "
            "so save numeric arrays."
        )
    return tuple(int(d) for d in shape), bool(fortran), dtype, stream.tell()
