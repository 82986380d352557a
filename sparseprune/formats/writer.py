"""Rewrite a model file with new tensor values: same layout, compressed, deterministic.

Only weight values change (and optimizer state, which is reset unless kept). Groups, attributes,
config.json, metadata.json and assets are carried over as they are. `.keras` members are DEFLATEd
(zlib's default level) with fixed timestamps; legacy `.h5` datasets get shuffle + gzip in one
chunk. Where a stock Keras bomb guard would trip on the result, the member or dataset is stored
uncompressed instead.
"""

from __future__ import annotations

import io
import math
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import h5py
import numpy as np

from sparseprune.errors import InputError
from sparseprune.formats import archive as zipped
from sparseprune.formats.h5safe import (
    BLOCK_BYTES,
    SLAB_BYTES,
    block_chunks,
    encode_like,
    iter_blocks,
    read_array,
    reading,
    slab_selections,
)
from sparseprune.formats.model import FORMAT_H5, FORMAT_KERAS, TensorInfo
from sparseprune.formats.reader import ModelFile

# Returns the new values for a tensor, or None to copy it unchanged. A transform may also have
# `blocks(tensor, read) -> Blocks | None`: the values of a tensor above BLOCK_BYTES slab by slab
# (`read()` gives the input's (selection, slab) pairs afresh on each call).
Transform = Callable[[TensorInfo, np.ndarray], "np.ndarray | None"]
Blocks = Callable[[], Iterator[tuple[tuple, np.ndarray]]]

ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
GZIP_LEVEL = 4
# Below this, chunk bookkeeping costs more than gzip saves.
MIN_COMPRESS_BYTES = 2048
# Shuffle only tensors that are at least 75% nonzero (see `dataset_options`).
SHUFFLE_MIN_NONZERO = 0.75
# HDF5 1.10's file format (see `new_h5`) gives a one-chunk dataset a "single chunk" index
# instead of a B-tree, which matters for files of many small tensors.
MAX_CHUNK_BYTES = (1 << 32) - 1
# Stock Keras guards (keras/src/saving/saving_lib.py, see shared notes): stay below them.
KERAS_ZIP_FLOOR, KERAS_ZIP_RATIO = 256 << 20, 100
KERAS_H5_FLOOR, KERAS_H5_RATIO = 4 << 30, 1000


def write_model(
    model: ModelFile,
    target: Path,
    transform: Transform,
    reset_optimizer: bool,
    on_tensor: Callable[[TensorInfo], None] | None = None,
) -> None:
    """Write `model` to `target` (a fresh path) in the model's own format."""
    by_path = {t.path: t for t in model.tensors}
    copier = TreeCopier(by_path, transform, reset_optimizer, on_tensor, model.path)
    if model.format == FORMAT_KERAS:
        _write_archive(model, target, copier)
    else:
        with new_h5(target) as out:
            copier.compress = True
            copier.drop_optimizer = reset_optimizer and model.format == FORMAT_H5
            copier.copy_group(model.weights, out)


class TreeCopier:
    """Recreate an HDF5 tree group by group, passing each known tensor through `transform`."""

    def __init__(self, tensors, transform, reset_optimizer, on_tensor, label: str) -> None:
        self.label = label  # the input's name, for errors while reading it
        self.tensors: dict[str, TensorInfo] = tensors
        self.transform: Transform = transform
        self.reset_optimizer = reset_optimizer
        self.on_tensor = on_tensor
        self.compress = False
        self.drop_optimizer = False

    def copy_group(self, source: h5py.Group, dest: h5py.Group) -> None:
        copy_attrs(source, dest, self.label)
        with reading(self.label, f"group '{source.name}'"):
            names = list(source)
        for name in names:
            with reading(self.label, f"object '{source.name}/{name}'"):
                item = source[name]
            if not (self.drop_optimizer and item.name == "/optimizer_weights"):
                self.copy_item(item, dest, name)

    def copy_item(self, item: h5py.HLObject, dest: h5py.Group, name: str) -> None:
        """A group or dataset under `dest`; anything else (a committed datatype) is refused."""
        if isinstance(item, h5py.Group):
            self.copy_group(item, create_group(dest, name))
        elif isinstance(item, h5py.Dataset):
            self.copy_dataset(item, dest, name)
        else:
            raise InputError(
                f"{self.label}: '{item.name}' is a committed HDF5 datatype, which Keras never "
                "writes; sparseprune does not rewrite files that hold one."
            )

    def copy_dataset(self, source: h5py.Dataset, dest: h5py.Group, name: str) -> None:
        tensor = self.tensors.get(source.name.lstrip("/"))
        produce = self._streamed(tensor, source)
        if produce is not None:
            out = self._write_blocks(source, dest, name, produce)
        else:
            with reading(self.label, f"dataset '{source.name}'"):
                values = self._new_values(tensor, source)
            out = dest.create_dataset(name, **self._layout(source, values))
            if values is not None:
                if out.size:
                    out[...] = encode_like(source, values)
            else:
                self._copy_slabs(source, out)
        copy_attrs(source, out, self.label)
        if tensor is not None and self.on_tensor is not None:
            self.on_tensor(tensor)

    def _new_values(self, tensor: TensorInfo | None, source: h5py.Dataset) -> np.ndarray | None:
        if tensor is None:
            return None
        if tensor.kind == "optimizer" and self.reset_optimizer:
            return _reset_slot(read_array(source))
        if tensor.kind != "weight":
            return None
        return self.transform(tensor, read_array(source))

    def _streamed(self, tensor: TensorInfo | None, source: h5py.Dataset) -> Blocks | None:
        """Slab-by-slab values for a tensor too large to hold whole (None: the whole path)."""
        if tensor is None or source.nbytes <= BLOCK_BYTES:
            return None

        def read() -> Iterator[tuple[tuple, np.ndarray]]:
            return self._read_blocks(source)

        if tensor.kind == "optimizer" and self.reset_optimizer:
            return lambda: ((s, np.zeros_like(b)) for s, b in read())
        streamed = getattr(self.transform, "blocks", None)
        if tensor.kind != "weight" or streamed is None:
            return None
        return streamed(tensor, read)

    def _read_blocks(self, source: h5py.Dataset) -> Iterator[tuple[tuple, np.ndarray]]:
        blocks = iter_blocks(source)
        while True:
            with reading(self.label, f"dataset '{source.name}'"):
                item = next(blocks, None)
            if item is None:
                return
            yield item

    def _write_blocks(
        self, source: h5py.Dataset, dest: h5py.Group, name: str, produce: Blocks
    ) -> h5py.Dataset:
        """Two passes: count nonzeros (the layout depends on them), then write slab by slab."""
        nonzero = sum(int(np.count_nonzero(block)) for _, block in produce())
        options = dataset_options(source.shape, source.dtype, None, self.compress, nonzero)
        out = dest.create_dataset(name, **options)
        for selection, block in produce():
            out[selection] = encode_like(source, block)
        return out

    def _layout(self, source: h5py.Dataset, values: np.ndarray | None) -> dict:
        return dataset_options(source.shape, source.dtype, values, self.compress)

    def _copy_slabs(self, source: h5py.Dataset, out: h5py.Dataset) -> None:
        if not source.shape or source.nbytes <= SLAB_BYTES:
            selections: Iterator[tuple] = iter([()])
        else:
            selections = slab_selections(source.shape, source.dtype.itemsize)
        for selection in selections:
            with reading(self.label, f"dataset '{source.name}'"):
                block = source[selection]
            out[selection] = block


def encode_values(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Values as `dtype` for writing (the caller checked shapes; only zeros were introduced)."""
    return np.asarray(values, dtype=dtype)


def dataset_options(
    shape: tuple[int, ...],
    dtype: np.dtype,
    values: np.ndarray | None,
    compress: bool,
    nonzero: int | None = None,
) -> dict:
    """`create_dataset` keywords: gzip where it pays and no Keras guard would trip.

    One chunk per dataset, except above `BLOCK_BYTES`: chunks of one slab each, so a tensor is
    written (and later read) slab by slab. `nonzero` stands in for `values` when the values are
    written slab by slab.
    """
    options: dict = {"shape": shape, "dtype": dtype, "track_times": False}
    itemsize = np.dtype(dtype).itemsize
    nbytes = math.prod(shape) * itemsize
    chunked = nbytes > BLOCK_BYTES
    if not (compress and shape and nbytes >= MIN_COMPRESS_BYTES):
        return options
    if not chunked and nbytes > MAX_CHUNK_BYTES:
        return options
    if values is not None:
        nonzero = int(np.count_nonzero(values))
    if nonzero is not None and _too_compressible(nonzero * itemsize, nbytes):
        return options
    # Byte-shuffling helps gzip on dense floats but hurts once many values are zero
    # (measured: 1024x1024 float32 at 95% zeros, 505,662 bytes shuffled vs 303,055 not).
    dense = nonzero is None or nonzero >= SHUFFLE_MIN_NONZERO * math.prod(shape)
    chunks = block_chunks(shape, itemsize) if chunked else shape
    options.update(chunks=chunks, compression="gzip", compression_opts=GZIP_LEVEL, shuffle=dense)
    return options


def new_h5(path: Path) -> h5py.File:
    """A new HDF5 file that records no timestamps, so identical content gives identical bytes."""
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_LATEST)
    return h5py.File(h5py.h5f.create(str(path).encode(), h5py.h5f.ACC_TRUNC, fapl=fapl, fcpl=fcpl))


def create_group(parent: h5py.Group, name: str) -> h5py.Group:
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    return h5py.Group(h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl))


def _reset_slot(values: np.ndarray) -> np.ndarray:
    """A fresh optimizer's state: zero moments and step counter; scalar hyperparameters kept."""
    if values.ndim == 0 and np.issubdtype(values.dtype, np.floating):
        return values
    return np.zeros_like(values)


def _too_compressible(nonzero_bytes: int, nbytes: int) -> bool:
    """Would gzip shrink this past Keras's shape-bomb guard? (Only possible for huge tensors.)"""
    if nbytes <= KERAS_H5_FLOOR:
        return False
    return nbytes > KERAS_H5_RATIO * max(nonzero_bytes, 1)


def copy_attrs(source: h5py.HLObject, dest: h5py.HLObject, label: str = "the model file") -> None:
    """Copy every attribute with its stored type; an unreadable one is the input's fault."""
    with reading(label, f"the attributes of '{source.name}'"):
        keys = list(source.attrs)
    for key in keys:
        with reading(label, f"attribute '{key}' of '{source.name}'"):
            value, dtype = source.attrs[key], source.attrs.get_id(key).dtype
        dest.attrs.create(key, _stored_text(value), dtype=dtype)


def _stored_text(value: object) -> object:
    """Text attributes back to the bytes they were read from.

    h5py decodes bytes that are not valid text with `surrogateescape`; writing that str would
    fail to encode, so the original bytes are written instead (the copy stays exact).
    """
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, np.ndarray) and value.dtype == object:
        return np.array(
            [v.encode("utf-8", "surrogateescape") if isinstance(v, str) else v for v in value.flat],
            dtype=object,
        ).reshape(value.shape)
    return value


def _write_archive(model: ModelFile, target: Path, copier: TreeCopier) -> None:
    assert model.archive is not None  # every .keras model is read from its archive
    with tempfile.TemporaryDirectory(prefix="sparseprune-") as scratch:
        weights_path = Path(scratch) / zipped.WEIGHTS_MEMBER
        with new_h5(weights_path) as out:
            copier.copy_group(model.weights, out)
        members = [
            Member(info.filename, weights_path, info.external_attr)
            if info.filename == zipped.WEIGHTS_MEMBER
            else copied_member(model, info)
            for info in model.archive.infolist()
        ]
        write_zip(target, members)


@dataclass
class Member:
    """A zip member to write: its bytes, a file, or a member of the input to stream them from.

    Streams keep memory flat however many large members (assets) an archive holds.
    """

    name: str
    source: bytes | Path | InputMember
    external_attr: int = 0o600 << 16

    def size(self) -> int:
        if isinstance(self.source, bytes):
            return len(self.source)
        if isinstance(self.source, InputMember):
            return self.source.info.file_size
        return self.source.stat().st_size

    def open(self) -> IO[bytes] | io.RawIOBase:
        if isinstance(self.source, bytes):
            return io.BytesIO(self.source)
        if isinstance(self.source, InputMember):
            return zipped.MemberStream(self.source.archive, self.source.info, self.source.label)
        return open(self.source, "rb")


@dataclass(frozen=True)
class InputMember:
    """A member of the input archive, copied through in chunks."""

    archive: zipfile.ZipFile
    info: zipfile.ZipInfo
    label: str


def copied_member(model: ModelFile, info: zipfile.ZipInfo) -> Member:
    """`info` of the input archive, to be written unchanged (streamed, not read into memory)."""
    assert model.archive is not None
    return Member(info.filename, InputMember(model.archive, info, model.path), info.external_attr)


def write_zip(target: Path, members: list[Member]) -> None:
    """DEFLATE members in order with fixed timestamps; store those Keras would call bombs."""
    stored: set[str] = set()
    while True:
        with zipfile.ZipFile(target, "w") as out:
            for member in members:
                info = zipfile.ZipInfo(member.name, date_time=ZIP_TIMESTAMP)
                info.external_attr = member.external_attr
                info.compress_type = (
                    zipfile.ZIP_STORED if member.name in stored else zipfile.ZIP_DEFLATED
                )
                with (
                    out.open(info, "w", force_zip64=member.size() > (1 << 31)) as sink,
                    member.open() as data,
                ):
                    shutil.copyfileobj(data, sink, 1 << 20)
        tripped = _bomb_members(target)
        if not tripped - stored:
            return
        stored |= tripped


def _bomb_members(target: Path) -> set[str]:
    """Members that stock Keras would refuse as decompression bombs."""
    with zipfile.ZipFile(target) as archive:
        return {
            info.filename
            for info in archive.infolist()
            if info.file_size > KERAS_ZIP_FLOOR
            and info.file_size > KERAS_ZIP_RATIO * max(info.compress_size, 1)
        }


def information_bound_bytes(params: int, nonzero: int, bits_per_value: int) -> float:
    """Shannon bound for a sparse tensor: nonzero values verbatim + the zero/nonzero pattern."""
    if params == 0:
        return 0.0
    p = nonzero / params
    entropy = 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    return (nonzero * bits_per_value + params * entropy) / 8


__all__ = ["FORMAT_H5", "information_bound_bytes", "write_model"]
