"""Read `.keras` zip archives without extracting them or trusting their member names.

Stored (uncompressed) members are read in place through a window on the archive file; compressed
members are streamed to an anonymous temporary file first, so h5py never seeks in a zip stream.
"""

from __future__ import annotations

import io
import shutil
import struct
import tempfile
import zipfile
import zlib
from typing import IO, Protocol, cast

from sparseprune.errors import InputError, UnsafeModelError, describe

CONFIG_MEMBER = "config.json"
METADATA_MEMBER = "metadata.json"
WEIGHTS_MEMBER = "model.weights.h5"
NPZ_WEIGHTS_MEMBER = "model.weights.npz"
MAX_JSON_BYTES = 64 << 20
# Same per-member rule as Keras's own loader: big members may not expand over 100x.
BOMB_FLOOR_BYTES = 256 << 20
BOMB_MAX_EXPANSION = 100
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
# Keras writes stored members; sparseprune writes DEFLATE. Other decoders are never run.
ALLOWED_COMPRESSION = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
# What a corrupt or truncated archive raises while being read.
ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error)


def open_archive(source: IO[bytes], label: str) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(source)
    except ZIP_ERRORS as error:
        raise InputError(f"{label} is not a readable zip archive ({describe(error)}).") from error
    check_members(archive, label)
    return archive


def check_members(archive: zipfile.ZipFile, label: str) -> None:
    """Refuse duplicate, absolute or `..` member names and decompression bombs."""
    seen: set[str] = set()
    for info in archive.infolist():
        name = info.filename
        if name in seen:
            raise UnsafeModelError(
                f"{label} has two zip members named '{name}'; refusing an ambiguous archive."
            )
        seen.add(name)
        if info.compress_type not in ALLOWED_COMPRESSION:
            raise InputError(
                f"{label}: zip member '{name}' uses compression method {info.compress_type}; "
                "Keras archives are stored or DEFLATE-compressed."
            )
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
            raise UnsafeModelError(f"{label} has a zip member with an unsafe path '{name}'.")
        check_expansion(info, f"{label}: zip member '{name}'")


def check_expansion(info: zipfile.ZipInfo, what: str) -> None:
    """Refuse a member that is big and expands more than Keras's own loader allows."""
    if info.file_size > BOMB_FLOOR_BYTES and info.file_size > BOMB_MAX_EXPANSION * max(
        info.compress_size, 1
    ):
        raise UnsafeModelError(
            f"{what} expands from {info.compress_size:,} to {info.file_size:,} bytes; "
            "refusing a likely decompression bomb."
        )


def read_json_member(archive: zipfile.ZipFile, name: str, label: str) -> bytes:
    info = _member(archive, name, label)
    if info.file_size > MAX_JSON_BYTES:
        raise UnsafeModelError(f"{label}: '{name}' is {info.file_size:,} bytes; refusing it.")
    return read_member(archive, info, label)


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> bytes:
    """A member's bytes (checked against its CRC by zipfile), or one clear error."""
    try:
        return archive.read(info)
    except ZIP_ERRORS as error:
        raise InputError(
            f"{label}: member '{info.filename}' is corrupt ({describe(error)})."
        ) from error


class MemberStream(io.RawIOBase):
    """One member's bytes read in chunks (never all at once); corruption is one `InputError`."""

    def __init__(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> None:
        super().__init__()
        self._what = f"{label}: member '{info.filename}'"
        try:
            self._stream = archive.open(info)
        except ZIP_ERRORS as error:
            raise InputError(f"{self._what} is corrupt ({describe(error)}).") from error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        try:
            data = self._stream.read(len(buffer))
        except ZIP_ERRORS as error:
            raise InputError(f"{self._what} is corrupt ({describe(error)}).") from error
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._stream.close()
        super().close()


def open_member(
    archive: zipfile.ZipFile, name: str, label: str
) -> io.RawIOBase | io.BufferedIOBase:
    """A seekable binary stream of one member's bytes."""
    info = _member(archive, name, label)
    if info.compress_type == zipfile.ZIP_STORED and archive.fp is not None:
        # zipfile keeps the binary file it was opened on; typeshed's IO[bytes] omits readinto.
        fp = cast(ReadIntoFile, archive.fp)
        return _StoredWindow(fp, _data_offset(fp, info, label), info.file_size)
    spool = tempfile.TemporaryFile()  # noqa: SIM115 (returned to the caller, who closes it)
    try:
        with archive.open(info) as member:
            shutil.copyfileobj(member, spool, 1 << 20)
    except ZIP_ERRORS as error:
        spool.close()
        raise InputError(f"{label}: member '{name}' is corrupt ({describe(error)}).") from error
    spool.seek(0)
    return spool


def has_member(archive: zipfile.ZipFile, name: str) -> bool:
    return name in archive.NameToInfo


def _member(archive: zipfile.ZipFile, name: str, label: str) -> zipfile.ZipInfo:
    try:
        return archive.getinfo(name)
    except KeyError as error:
        raise InputError(
            f"{label} is a zip archive without '{name}', so it is not a Keras model."
        ) from error


class ReadIntoFile(Protocol):
    """A seekable binary file that can read into a caller's buffer (what zipfile reads from)."""

    def seek(self, offset: int, whence: int = ..., /) -> int: ...
    def read(self, size: int = ..., /) -> bytes: ...
    def readinto(self, buffer: memoryview, /) -> int: ...


def _data_offset(fp: ReadIntoFile, info: zipfile.ZipInfo, label: str) -> int:
    fp.seek(info.header_offset)
    header = fp.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise InputError(f"{label}: zip member '{info.filename}' has a broken local header.")
    fields = _LOCAL_HEADER.unpack(header)
    name_length, extra_length = fields[-2], fields[-1]
    return info.header_offset + _LOCAL_HEADER.size + name_length + extra_length


class _StoredWindow(io.RawIOBase):
    """Read-only, seekable view of `length` bytes at `offset` in `fp`."""

    def __init__(self, fp: ReadIntoFile, offset: int, length: int) -> None:
        super().__init__()
        self._fp, self._offset, self._length, self._pos = fp, offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, buffer) -> int:  # type: ignore[override]
        want = min(len(buffer), max(0, self._length - self._pos))
        if want == 0:
            return 0
        self._fp.seek(self._offset + self._pos)
        got = self._fp.readinto(memoryview(buffer)[:want])  # no intermediate copy
        self._pos += got
        return got
