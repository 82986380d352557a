"""Open any supported model file and describe it: `open_model(path) -> ModelFile`.

The format is decided by the file's magic bytes, not its suffix. Only zipfile, json, h5py and numpy
are used: opening a file never imports TensorFlow or Keras and never runs code stored in it.
zipfile (formats/archive.py) and the Keras 3 variable store (formats/varstore.py) are imported
only for the files that need them, so a legacy `.h5` (`inspect --json` in a CI gate) does not pay
for them at start-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import h5py
import numpy as np

from sparseprune.errors import InputError, UnsafeModelError, describe
from sparseprune.formats.config import LayerTree, build_tree, load_json, scan_config
from sparseprune.formats.h5safe import iter_blocks, iter_slabs, open_h5, read_array
from sparseprune.formats.legacy_h5 import read_legacy_weights, read_optimizer_weights
from sparseprune.formats.model import (
    FORMAT_H5,
    FORMAT_H5_WEIGHTS,
    FORMAT_KERAS,
    FORMAT_WEIGHTS_H5,
    LayerInfo,
    TensorInfo,
)

if TYPE_CHECKING:
    import zipfile

ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# zipfile finds an archive only through its end-of-central-directory record, which sits in the
# last 22 bytes plus at most a 64 KiB comment (zipfile._EndRecData).
ZIP_END_MAGIC = b"PK\x05\x06"
ZIP_END_SEARCH = 22 + 0xFFFF
_H5_READ_ERRORS = (OSError, ValueError, KeyError, RuntimeError)


def read_errors(*more: type[Exception]) -> tuple[type[Exception], ...]:
    """What reading a corrupt or truncated file raises (and `more`): zip errors too once zipfile
    is in use (only archive.py's code can raise them, and it is imported only for zip archives).
    Called in the `except` clause, so it sees what was imported while the `try` ran."""
    archive = sys.modules.get("sparseprune.formats.archive")
    zipped = () if archive is None else archive.ZIP_ERRORS
    return (*_H5_READ_ERRORS, *zipped, *more)


@dataclass
class ModelFile:
    """An open, validated model file. Use as a context manager; read tensors one at a time."""

    path: str
    format: str
    size: int
    tree: LayerTree | None
    tensors: list[TensorInfo]
    weights: h5py.File
    writer: str | None = None
    archive: zipfile.ZipFile | None = None
    config: dict | None = None  # the architecture JSON as read (data only, never deserialized)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    @property
    def layers(self) -> list[LayerInfo]:
        return self.tree.flatten() if self.tree else []

    @property
    def model_tensors(self) -> list[TensorInfo]:
        return [t for t in self.tensors if t.kind == "weight"]

    @property
    def optimizer_tensors(self) -> list[TensorInfo]:
        return [t for t in self.tensors if t.kind == "optimizer"]

    def flags(self) -> dict[str, list[str]]:
        """Places by warning flag: `lambda`, `custom_module`, `keras_hub` from the scan of the
        whole config (`scan_config`, what the loader checks), `unknown_class` per layer."""
        out = scan_config(self.config) if self.config is not None else {}
        for layer in self.layers:
            if "unknown_class" in layer.flags:
                out.setdefault("unknown_class", []).append(layer.name)
        return out

    def read(self, tensor: TensorInfo) -> np.ndarray:
        with self._reading(tensor):
            return read_array(self.weights[tensor.path])

    def slabs(self, tensor: TensorInfo) -> Iterator[np.ndarray]:
        """The tensor in slabs along its first axis (bounded memory for huge tensors)."""
        with self._reading(tensor):
            yield from iter_slabs(self.weights[tensor.path])

    def blocks(self, tensor: TensorInfo) -> Iterator[tuple[tuple, np.ndarray]]:
        """(selection, slab) pairs, as `slabs` reads them: for writing slab by slab."""
        with self._reading(tensor):
            yield from iter_blocks(self.weights[tensor.path])

    @contextlib.contextmanager
    def _reading(self, tensor: TensorInfo) -> Iterator[None]:
        try:
            yield
        except read_errors() as error:
            raise InputError(
                f"{self.path}: cannot read weight '{tensor.name}' ({describe(error)}); "
                "the file is corrupt or truncated."
            ) from error

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> ModelFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_model(path: str | os.PathLike[str], label: str | None = None) -> ModelFile:
    """Open and validate a model file; raise `InputError` with one clear sentence if impossible."""
    label = label or str(path)
    source = Path(path)
    if not source.exists():
        raise InputError(f"{label} does not exist; check the path.")
    if source.is_dir():
        raise InputError(
            f"{label} is a directory; give a .keras or .h5 file (TensorFlow SavedModel "
            "folders are not supported)."
        )
    stack = contextlib.ExitStack()
    try:
        handle = stack.enter_context(open(source, "rb"))  # noqa: SIM115 (owned by stack)
        size = os.fstat(handle.fileno()).st_size
        model = _open_stream(handle, size, label, stack)
    except InputError:
        stack.close()
        raise
    except read_errors(UnicodeError, TypeError) as error:
        stack.close()
        raise InputError(
            f"{label} could not be read as a Keras model ({describe(error)}); "
            "the file is corrupt or truncated."
        ) from error
    except BaseException:
        stack.close()
        raise
    return model


def _open_stream(
    handle: IO[bytes], size: int, label: str, stack: contextlib.ExitStack
) -> ModelFile:
    if size == 0:
        raise InputError(f"{label} is empty; it is not a model file.")
    head = handle.read(8)
    hdf5 = _has_hdf5_magic(handle, size)
    if hdf5 and _reads_as_zip(handle, size):
        raise UnsafeModelError(
            f"{label} reads both as a zip archive and as an HDF5 file; Keras could load a "
            "different model from it than sparseprune checks, so it is refused."
        )
    if head.startswith(ZIP_MAGIC):
        handle.seek(0)
        return _open_keras_archive(handle, size, label, stack)
    if hdf5:
        handle.seek(0)
        weights = stack.enter_context(open_h5(handle, label))
        return _describe_h5(weights, size, label, stack)
    raise InputError(
        f"{label} is neither a Keras archive (.keras) nor an HDF5 file (.h5); "
        "give a file saved by Keras."
    )


def hdf5_magic_offsets(size: int) -> Iterator[int]:
    """Where the HDF5 library looks for a superblock: 0, then 512 doubling up to the size."""
    offset = 0
    while offset + len(HDF5_MAGIC) <= size:
        yield offset
        offset = max(512, offset * 2)


def _has_hdf5_magic(handle: IO[bytes], size: int) -> bool:
    for offset in hdf5_magic_offsets(size):
        handle.seek(offset)
        if handle.read(8) == HDF5_MAGIC:
            return True
    return False


def _reads_as_zip(handle: IO[bytes], size: int) -> bool:
    """True when Python's zipfile (what Keras uses for .keras) finds members in the file.

    A file without zipfile's end record in its tail cannot be one, and is decided without
    importing zipfile."""
    handle.seek(max(0, size - ZIP_END_SEARCH))
    if ZIP_END_MAGIC not in handle.read():
        handle.seek(0)
        return False
    import zipfile

    handle.seek(0)
    try:
        with zipfile.ZipFile(handle) as archive:
            return bool(archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False
    finally:
        handle.seek(0)


def _open_keras_archive(
    handle: IO[bytes], size: int, label: str, stack: contextlib.ExitStack
) -> ModelFile:
    from sparseprune.formats import archive as zipped
    from sparseprune.formats.varstore import read_varstore

    archive = stack.enter_context(zipped.open_archive(handle, label))
    if not zipped.has_member(archive, zipped.CONFIG_MEMBER):
        raise InputError(f"{label} is a zip archive without 'config.json'; not a Keras model.")
    if zipped.has_member(archive, zipped.NPZ_WEIGHTS_MEMBER) and not zipped.has_member(
        archive, zipped.WEIGHTS_MEMBER
    ):
        raise InputError(
            f"{label} stores its weights as model.weights.npz, which sparseprune does not "
            "read yet; re-save the model with model.save('model.keras')."
        )
    config = load_json(zipped.read_json_member(archive, zipped.CONFIG_MEMBER, label), label)
    tree = build_tree(config, label)
    writer = _keras_version(archive, label)
    member = stack.enter_context(zipped.open_member(archive, zipped.WEIGHTS_MEMBER, label))
    weights = stack.enter_context(open_h5(member, f"{label}:{zipped.WEIGHTS_MEMBER}"))
    keras2 = writer is not None and writer.startswith("2.")
    tensors = in_config_order(read_varstore(weights, tree, keras2), tree)
    return ModelFile(
        label, FORMAT_KERAS, size, tree, tensors, weights, writer, archive, config, stack
    )


def in_config_order(tensors: list[TensorInfo], tree: LayerTree | None) -> list[TensorInfo]:
    """Weights in the order the architecture lists their layers (files store them by key)."""
    if tree is None:
        return tensors
    rank = {layer.name: i for i, layer in enumerate(tree.flatten())}
    last = len(rank)
    return sorted(tensors, key=lambda t: (t.kind != "weight", rank.get(t.layer, last)))


def _keras_version(archive: zipfile.ZipFile, label: str) -> str | None:
    from sparseprune.formats import archive as zipped

    if not zipped.has_member(archive, zipped.METADATA_MEMBER):
        return None
    try:
        meta = json.loads(zipped.read_json_member(archive, zipped.METADATA_MEMBER, label))
    except ValueError:
        return None
    version = meta.get("keras_version") if isinstance(meta, dict) else None
    return version if isinstance(version, str) else None


def _describe_h5(
    weights: h5py.File, size: int, label: str, stack: contextlib.ExitStack
) -> ModelFile:
    attrs = weights.attrs
    writer = _text(attrs.get("keras_version"))
    if "model_weights" in weights and "model_config" in attrs:
        config = load_json(_text(attrs["model_config"]) or "", label)
        tree = build_tree(config, label)
        keras2 = writer is not None and writer.startswith("2.")
        tensors = read_legacy_weights(weights["model_weights"], tree, label, keras2)
        if isinstance(weights.get("optimizer_weights"), h5py.Group):
            tensors += read_optimizer_weights(weights["optimizer_weights"])
        return ModelFile(
            label, FORMAT_H5, size, tree, tensors, weights, writer, config=config, _stack=stack
        )
    if "layer_names" in attrs or "layer_names0" in attrs:
        tensors = read_legacy_weights(weights, None, label)
        return ModelFile(
            label, FORMAT_H5_WEIGHTS, size, None, tensors, weights, writer, _stack=stack
        )
    if "layers" in weights or "_layer_checkpoint_dependencies" in weights:
        from sparseprune.formats.varstore import read_varstore

        tensors = read_varstore(weights, None)
        return ModelFile(
            label, FORMAT_WEIGHTS_H5, size, None, tensors, weights, writer, _stack=stack
        )
    raise InputError(
        f"{label} is an HDF5 file but not a Keras model or weights file "
        "(no model_weights, layer_names or layers)."
    )


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


__all__ = ["ModelFile", "build_tree", "open_model"]
