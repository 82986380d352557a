"""Open HDF5 files defensively: no links, no external or virtual storage, no shape bombs.

Every object in the file is checked once when it is opened, so the readers above can walk it freely.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator
from typing import IO

import h5py
import numpy as np

from sparseprune.errors import InputError, UnsafeModelError, describe

MAX_DEPTH = 64
MAX_OBJECTS = 1_000_000
# DEFLATE cannot expand more than ~1032:1, so a dataset declaring more than this over its stored
# bytes stores (almost) nothing: a shape bomb, not a real tensor.
BOMB_FLOOR_BYTES = 1 << 20
BOMB_MAX_EXPANSION = 1100
NUMERIC_KINDS = frozenset("biuf")
SLAB_BYTES = 16 << 20
# Tensors above this are pruned and written slab by slab (below it, whole, as before).
BLOCK_BYTES = 64 << 20
# What h5py raises while reading data, attributes or types that are corrupt or unsupported.
H5_READ_ERRORS = (OSError, ValueError, KeyError, RuntimeError, TypeError)


@contextlib.contextmanager
def reading(label: str, what: str) -> Iterator[None]:
    """Turn h5py's errors while reading `what` from the input into one `InputError`.

    Wrap reads only (never writes to an output), so a full disk is not reported as a corrupt input.
    """
    try:
        yield
    except InputError:
        raise
    except H5_READ_ERRORS as error:
        raise InputError(
            f"{label}: cannot read {what} ({describe(error)}); the file is corrupt or truncated."
        ) from error


def open_h5(source: str | IO[bytes] | io.IOBase, label: str) -> h5py.File:
    """Open read-only and validate the whole tree; raise `InputError` for anything unreadable."""
    try:
        handle = h5py.File(source, "r", locking=False)
    except (OSError, ValueError) as error:
        raise InputError(f"{label} is not a readable HDF5 file ({describe(error)}).") from error
    try:
        validate_tree(handle, label)
    except BaseException:
        handle.close()
        raise
    return handle


def validate_tree(root: h5py.Group, label: str) -> None:
    """Reject links, external/virtual datasets, shape bombs and non-numeric datasets."""
    for seen, (path, obj) in enumerate(_walk(root, label), start=1):
        if seen > MAX_OBJECTS:
            raise UnsafeModelError(f"{label} holds over {MAX_OBJECTS:,} HDF5 objects; refusing it.")
        if isinstance(obj, h5py.Dataset):
            check_dataset(obj, path, label)


def _walk(group: h5py.Group, label: str, prefix: str = "", depth: int = 0) -> Iterator:
    if depth > MAX_DEPTH:
        raise UnsafeModelError(f"{label} nests HDF5 groups deeper than {MAX_DEPTH}; refusing it.")
    for name in group:
        path = f"{prefix}/{name}"
        link = group.get(name, getlink=True)
        if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
            kind = "external link" if isinstance(link, h5py.ExternalLink) else "soft link"
            raise UnsafeModelError(
                f"{label} contains an HDF5 {kind} at '{path}'; sparseprune refuses links "
                "because they can point at other data or files."
            )
        obj = group[name]
        if not isinstance(obj, h5py.Datatype) and h5py.h5o.get_info(obj.id).rc > 1:
            # Keras links every object once; a second hard link makes the tree a DAG (or a
            # cycle) whose paths multiply with depth, so walking it would never end. (A committed
            # datatype also counts the datasets that use it, so it is not checked.)
            raise UnsafeModelError(
                f"{label}: the HDF5 object at '{path}' is linked from more than one place; "
                "sparseprune refuses files whose groups or datasets are shared."
            )
        yield path, obj
        if isinstance(obj, h5py.Group):
            yield from _walk(obj, label, path, depth + 1)


def check_dataset(dataset: h5py.Dataset, path: str, label: str) -> None:
    if dataset.is_virtual:
        raise UnsafeModelError(f"{label} has a virtual HDF5 dataset at '{path}'; refusing it.")
    if dataset.external:
        raise UnsafeModelError(
            f"{label} has a dataset at '{path}' stored in external files; refusing it."
        )
    if dataset.dtype.kind not in NUMERIC_KINDS and not _is_bfloat16(dataset):
        raise InputError(
            f"{label} has a non-numeric weight at '{path}' (dtype {dataset.dtype}); "
            "a Keras weight is a numeric array."
        )
    declared = math.prod(dataset.shape or ()) * dataset.dtype.itemsize
    stored = dataset.id.get_storage_size()
    if declared > BOMB_FLOOR_BYTES and declared > BOMB_MAX_EXPANSION * stored:
        raise UnsafeModelError(
            f"{label}: dataset '{path}' declares {declared:,} bytes but stores {stored:,}; "
            "refusing a likely shape bomb."
        )


def read_array(dataset: h5py.Dataset) -> np.ndarray:
    """Read a whole dataset; bfloat16 (stored by Keras as raw 16-bit words) becomes float32."""
    array = np.asarray(dataset[()])
    return _decode(dataset, array)


def slab_selections(shape: tuple[int, ...], itemsize: int) -> Iterator[tuple]:
    """Index tuples that cover an array in blocks of about `SLAB_BYTES`, whole last-axis rows.

    Blocks step along the first axis whose trailing block fits, so a (3, 3, 2048, 2048) conv
    kernel is read a few input channels at a time rather than a third of the tensor at once.
    """
    if not shape:
        yield ()
        return
    split = 0
    while split < len(shape) - 1 and math.prod(shape[split + 1 :]) * itemsize > SLAB_BYTES:
        split += 1
    block = max(1, math.prod(shape[split + 1 :]) * itemsize)
    step = max(1, SLAB_BYTES // block)
    for index in np.ndindex(*shape[:split]):
        for start in range(0, shape[split], step):
            yield (*index, slice(start, start + step))


def iter_slabs(dataset: h5py.Dataset, decode: bool = True) -> Iterator[np.ndarray]:
    """Yield a dataset block by block (see `slab_selections`): memory stays near `SLAB_BYTES`.

    Each block keeps whole rows of the last axis. With `decode=False` the stored representation
    is returned as is (for byte-exact copies).
    """
    for _, block in iter_blocks(dataset, decode):
        yield block


def dataset_selections(dataset: h5py.Dataset) -> Iterator[tuple]:
    """The selections `iter_blocks` reads: the whole dataset at once when it is small."""
    shape = dataset.shape or ()
    if not shape or dataset.nbytes <= SLAB_BYTES:
        return iter([()])
    return slab_selections(shape, dataset.dtype.itemsize)


def iter_blocks(dataset: h5py.Dataset, decode: bool = True) -> Iterator[tuple[tuple, np.ndarray]]:
    """(selection, block) pairs covering the dataset in C order, as `iter_slabs` reads them."""
    for selection in dataset_selections(dataset):
        array = np.asarray(dataset[selection])
        yield selection, (_decode(dataset, array) if decode else array)


def block_chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunk shape matching `slab_selections`, so each slab written fills whole chunks."""
    first = next(slab_selections(shape, itemsize))
    return tuple(
        len(range(*part.indices(size))) if isinstance(part, slice) else 1
        for part, size in zip(first, shape, strict=False)
    ) + tuple(shape[len(first) :])


def encode_like(dataset: h5py.Dataset, values: np.ndarray) -> np.ndarray:
    """Values in `dataset`'s stored representation (inverse of `read_array`'s decoding)."""
    if _is_bfloat16(dataset):
        words = (np.asarray(values, np.float32).view(np.uint32) >> 16).astype(np.uint16)
        return words.view(dataset.dtype)
    return np.asarray(values, dtype=dataset.dtype)


def _is_bfloat16(dataset: h5py.Dataset) -> bool:
    marker = dataset.attrs.get("dtype")
    return (
        isinstance(marker, (str, bytes))
        and marker in ("bfloat16", b"bfloat16")
        and (dataset.dtype.itemsize == 2)
    )


def _decode(dataset: h5py.Dataset, array: np.ndarray) -> np.ndarray:
    if _is_bfloat16(dataset):
        return (array.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return array
