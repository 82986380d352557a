"""Write a shrunk model: the input's own HDF5 tree and zip members, with new shapes and config.

The tree is copied group by group (formats/writer.py's `TreeCopier`), so every layout the reader
understands is written back as it was: Keras 3 and tf_keras `.keras`, Keras 3 and tf_keras `.h5`,
sub-object layers (RNN cells, Bidirectional, attention) and assets untouched. Only the layers
shrink changed get new values (of new shapes); the config is replaced; optimizer state and
compile settings are dropped, since the saved slots would no longer match the shapes.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from sparseprune.formats import archive as zipped
from sparseprune.formats.model import FORMAT_KERAS, TensorInfo
from sparseprune.formats.reader import ModelFile
from sparseprune.formats.writer import Member, TreeCopier, dataset_options, new_h5, write_zip

OPTIMIZER_GROUPS = frozenset({"/optimizer", "/optimizer_weights"})
DROPPED_ATTRS = frozenset({"training_config"})


class _ShapeCopier(TreeCopier):
    """A TreeCopier whose datasets take the shape of the new values; optimizer groups dropped."""

    def copy_group(self, source: h5py.Group, dest: h5py.Group) -> None:
        if source.name in OPTIMIZER_GROUPS:
            return
        super().copy_group(source, dest)

    def _layout(self, source: h5py.Dataset, values: np.ndarray | None) -> dict:
        shape = source.shape if values is None else values.shape
        return dataset_options(shape, source.dtype, values, self.compress)


def write_shrunk(
    model: ModelFile,
    config: dict,
    values: Callable[[TensorInfo], np.ndarray | None],
    target: Path,
) -> None:
    """Write `model` to `target` with `config` and each tensor's new values (None: as it was)."""
    copier = _ShapeCopier(
        {t.path: t for t in model.tensors}, lambda t, _: values(t), True, None, str(model.path)
    )
    text = json.dumps(config)
    if model.format == FORMAT_KERAS:
        _write_archive(model, copier, text, target)
        return
    with new_h5(target) as out:
        copier.compress = True
        copier.copy_group(model.weights, out)
        for key in DROPPED_ATTRS & set(out.attrs):
            del out.attrs[key]
        out.attrs["model_config"] = text


def _write_archive(model: ModelFile, copier: TreeCopier, config: str, target: Path) -> None:
    assert model.archive is not None  # every .keras model is read from its archive
    with tempfile.TemporaryDirectory(prefix="sparseprune-") as scratch:
        weights_path = Path(scratch) / zipped.WEIGHTS_MEMBER
        with new_h5(weights_path) as out:
            copier.copy_group(model.weights, out)
        members: list[Member] = []
        for info in model.archive.infolist():
            if info.filename == zipped.WEIGHTS_MEMBER:
                members.append(Member(info.filename, weights_path, info.external_attr))
            elif info.filename == zipped.CONFIG_MEMBER:
                members.append(Member(info.filename, config.encode(), info.external_attr))
            else:
                data = zipped.read_member(model.archive, info, model.path)
                members.append(Member(info.filename, data, info.external_attr))
        write_zip(target, members)
