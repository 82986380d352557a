"""Write a full model in the other format: `.keras` <-> legacy `.h5`, for files Keras 3 wrote.

Weights are re-laid out, the architecture is carried as JSON data:
- to `.h5`: `model_config` is the archive's config; `model_weights/<layer>` groups list
  `weight_names` in Keras's legacy order (a top-level layer's trainable weights, then the rest),
  because stock Keras matches layers by order and weights by position.
- to `.keras`: weights go to `layers/<key>/vars/<i>` with keys replayed from the config as Keras
  assigns them (snake_case class name, `_1`, `_2`, ... per container), RNN cells under `cell`.
Optimizer state and the compile settings are not carried over (they have no common layout).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np

from sparseprune.errors import InputError
from sparseprune.formats import archive as zipped
from sparseprune.formats.config import LayerTree
from sparseprune.formats.model import FORMAT_H5, FORMAT_KERAS, TensorInfo
from sparseprune.formats.reader import ModelFile
from sparseprune.formats.varstore import storage_keys
from sparseprune.formats.writer import (
    Member,
    Transform,
    create_group,
    dataset_options,
    encode_values,
    new_h5,
    write_zip,
)
from sparseprune.layers.slots import Slot, slots
from sparseprune.layers.table import LAYERS

# Where Keras 3 finds its model classes when a `.keras` config names them.
MODEL_MODULES = {
    "Sequential": "keras",
    "Functional": "keras.src.models.functional",
    "Model": "keras.src.models.model",
}
FIXED_DATE = "1980-01-01@00:00:00"  # metadata.json is ignored by the loader; keep output stable


def check_convertible(model: ModelFile, target_format: str) -> None:
    """Refuse with one clear sentence what this converter cannot write faithfully."""
    if model.format not in (FORMAT_KERAS, FORMAT_H5) or model.config is None:
        raise InputError(
            f"{model.path} holds weights only; converting needs a full model, so give -o the "
            "input's suffix."
        )
    if not (model.writer or "").startswith("3."):
        raise InputError(
            f"{model.path} was written by Keras {model.writer or '(unknown)'} (tf_keras), whose "
            "layouts differ from Keras 3's; only files written by Keras 3 are converted between "
            ".keras and .h5 (load it with tf_keras and save it in the other format), so give -o "
            "the input's suffix."
        )
    if model.tree is not None and not model.tree.children and model.model_tensors:
        raise InputError(
            f"the config of {model.tree.info.class_name} in {model.path} lists no layers (it "
            "builds them in code, as keras_hub models do), so the other format's layer order "
            "cannot be told; nothing was written. Give -o the input's suffix."
        )
    located = tensor_slots(model)
    for tensor in model.model_tensors:
        if tensor.name not in located:
            raise InputError(
                f"layer '{tensor.layer}' ({tensor.layer_class or 'unknown class'}) is not in "
                "sparseprune's layer table, so where its variables go in the other format "
                "cannot be told; nothing was written. Give -o the input's suffix."
            )
    _ = target_format


def convert_model(
    model: ModelFile,
    target: Path,
    target_format: str,
    transform: Transform,
    on_tensor: Callable[[TensorInfo], None] | None = None,
) -> None:
    """Write `model` to `target` in `target_format`, weights passed through `transform`."""
    check_convertible(model, target_format)

    def values(tensor: TensorInfo) -> np.ndarray:
        original = model.read(tensor)
        new = transform(tensor, original)
        if on_tensor is not None:
            on_tensor(tensor)
        return original if new is None else new

    if target_format == FORMAT_H5:
        write_h5(model, target, values)
    else:
        write_keras(model, target, values)


def write_h5(model: ModelFile, target: Path, values: Callable) -> None:
    config = model.config or {}
    version = model.writer or "3"
    with new_h5(target) as out:
        legacy = {"class_name": config.get("class_name"), "config": config.get("config")}
        _attrs(out, keras_version=version, backend="tensorflow", model_config=json.dumps(legacy))
        weights = create_group(out, "model_weights")
        groups = _by_top_layer(model)
        located = tensor_slots(model)
        _attrs(weights, keras_version=version, backend="tensorflow")
        weights.attrs["layer_names"] = np.array([name.encode() for name in groups])
        for top, tensors in groups.items():
            group = create_group(weights, top)
            ordered = _legacy_order(tensors, located)
            names = [f"{t.layer}/{t.role}" for t in ordered]
            group.attrs["weight_names"] = np.array([n.encode() for n in names])
            for name, tensor in zip(names, ordered, strict=True):
                _write_dataset(group, name, tensor, values(tensor), compress=True)


def write_keras(model: ModelFile, target: Path, values: Callable) -> None:
    with tempfile.TemporaryDirectory(prefix="sparseprune-") as scratch:
        weights_path = Path(scratch) / zipped.WEIGHTS_MEMBER
        with new_h5(weights_path) as out:
            for path, name, tensors in _varstore_layout(model):
                vars_group = _ensure_groups(out, f"{path}/vars")
                vars_group.attrs["name"] = name
                for index, tensor in enumerate(tensors):
                    _write_dataset(vars_group, str(index), tensor, values(tensor), compress=False)
        metadata = {"keras_version": model.writer, "date_saved": FIXED_DATE}
        config = dict(model.config or {})
        config.setdefault("module", MODEL_MODULES.get(config.get("class_name", ""), "keras"))
        config.setdefault("registered_name", None)
        write_zip(
            target,
            [
                Member(zipped.METADATA_MEMBER, json.dumps(metadata).encode()),
                Member(zipped.CONFIG_MEMBER, json.dumps(config).encode()),
                Member(zipped.WEIGHTS_MEMBER, weights_path),
            ],
        )


def _by_top_layer(model: ModelFile) -> dict[str, list[TensorInfo]]:
    groups: dict[str, list[TensorInfo]] = {}
    for tensor in model.model_tensors:
        groups.setdefault(tensor.layer.split("/")[0], []).append(tensor)
    return groups


def tensor_slots(model: ModelFile) -> dict[str, Slot]:
    """Each model tensor's slot in the layer table (by `layer/role`), in the layers' weight
    order (config order, then slot order); tensors the table cannot place are absent."""
    found: dict[str, Slot] = {}
    keras2 = (model.writer or "").startswith("2.")
    for info in model.tree.flatten() if model.tree else []:
        for slot in slots(info.class_name, info.config, keras2) or []:
            found[f"{info.name}/{slot.role}"] = slot
    present = {t.name for t in model.model_tensors}
    return {name: slot for name, slot in found.items() if name in present}


def _legacy_order(tensors: list[TensorInfo], located: dict[str, Slot]) -> list[TensorInfo]:
    """Keras's legacy h5 order: a top-level layer's trainable weights first, then the rest,
    each in the layers' weight order."""
    rank = {name: i for i, name in enumerate(located)}
    ranked = sorted(tensors, key=lambda t: rank.get(t.name, len(rank)))
    trainable = [t for t in ranked if t.name in located and located[t.name].trainable]
    return trainable + [t for t in ranked if t not in trainable]


def _varstore_layout(model: ModelFile) -> Iterator[tuple[str, str, list[TensorInfo]]]:
    """(group path, name, tensors in variable order) for each layer or part with weights."""
    located = tensor_slots(model)
    by_group: dict[tuple[str, tuple[str, ...]], list[TensorInfo]] = {}
    for tensor in model.model_tensors:
        by_group.setdefault((tensor.layer, located[tensor.name].subpath), []).append(tensor)
    keys = _storage_paths(model.tree) if model.tree else {}
    for (layer, sub), tensors in by_group.items():
        if layer not in keys:
            raise InputError(f"layer '{layer}' is not in the model config; cannot convert.")
        tensors.sort(key=lambda t: located[t.name].index)
        name = layer.rsplit("/", 1)[-1] if not sub else sub[-1].lstrip("_")
        yield "/".join((keys[layer], *sub)), name, tensors


def _storage_paths(node: LayerTree, prefix: str = "") -> dict[str, str]:
    """Layer name -> `layers/<key>[/layers/<key>...]`, replaying Keras's key assignment."""
    paths: dict[str, str] = {}
    for key, child in storage_keys(node).items():
        path = f"{prefix}layers/{key}"
        paths[child.info.name] = path
        if child.children:
            paths.update(_storage_paths(child, f"{path}/"))
    return paths


def subpath(tensor: TensorInfo) -> str | None:
    """'' for variables on the layer itself, 'cell' for RNN cells, None for other sub-objects
    (shrink rewrites layers without sub-objects only)."""
    row = LAYERS.get(tensor.layer_class or "")
    if row is not None and set(row.parts) == {"cell"}:
        return "cell"
    if "/" in tensor.role:
        return None
    return ""


def _ensure_groups(root: h5py.Group, path: str) -> h5py.Group:
    group = root
    for part in path.split("/"):
        group = group[part] if part in group else create_group(group, part)
    return group


def _write_dataset(
    group: h5py.Group, name: str, tensor: TensorInfo, values: np.ndarray, compress: bool
) -> None:
    parent, _, leaf = name.rpartition("/")
    target = _ensure_groups(group, parent) if parent else group
    dtype = np.dtype(tensor.dtype) if tensor.dtype != "bfloat16" else values.dtype
    data = encode_values(values, dtype)
    options = dataset_options(tuple(data.shape), data.dtype, data, compress)
    dataset = target.create_dataset(leaf, **options)
    if data.size:
        dataset[...] = data


def _attrs(obj: h5py.HLObject, **values: str) -> None:
    for key, value in values.items():
        obj.attrs[key] = value
