"""Write a full model in the other format: `.keras` <-> legacy `.h5`, in the writer's own Keras.

A file written by Keras 3 becomes a Keras 3 file, one written by tf_keras (Keras 2) a tf_keras
file (its users load it with tf_keras, which cannot read Keras 3 files; Keras 3 also loads a
tf_keras `.h5`). Weights are re-laid out, the architecture is carried as JSON data (each Keras
reads the other format's layer configs):
- to `.h5`: `model_config` is the archive's config; `model_weights/<layer>` groups list
  `weight_names` in Keras's legacy order (a top-level layer's trainable weights, then the rest),
  because stock Keras matches layers by order and weights by position.
- to `.keras`: weights go to `layers/<key>/vars/<i>` with keys replayed from the config as Keras
  assigns them (snake_case class name, `_1`, `_2`, ... per container), sub-layers under the
  attribute that writer saves them by (`cell`, tf_keras's `_query_dense`), and the model's own
  (empty) `vars` at the root, which tf_keras requires.
A layer class the table does not know (a registered custom layer) converts when all its
variables are its own: both layouts keep them in the layer's variable order (`var0`, `var1`, ...).
TFMOT's wrappers convert too (tf_keras `.keras` also saves each pruned kernel among the
wrapper's own variables: written from the kernel, as it is the same variable).
Optimizer state and the compile settings are not carried over (they have no common layout).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np

from sparseprune.errors import InputError
from sparseprune.formats import archive as zipped
from sparseprune.formats.config import LayerTree
from sparseprune.formats.model import FORMAT_H5, FORMAT_KERAS, LayerInfo, TensorInfo
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
from sparseprune.layers.table import LAYERS, MODEL_CLASSES

# (module, registered_name) a `.keras` config gives its model class, per writer's major version.
MODEL_MODULES = {
    ("3", "Sequential"): ("keras", None),
    ("3", "Functional"): ("keras.src.models.functional", None),
    ("3", "Model"): ("keras.src.models.model", None),
    ("2", "Sequential"): ("keras", None),
    ("2", "Functional"): ("tf_keras.src.engine.functional", "Functional"),
}
WRITERS = ("2", "3")  # tf_keras (and Keras 2) and Keras 3
FIXED_DATE = "1980-01-01@00:00:00"  # metadata.json is ignored by the loader; keep output stable
_OWN_VARIABLE = re.compile(r"var(\d+)$")  # how both readers name a custom layer's variables


def writer_major(model: ModelFile) -> str | None:
    """'3' for Keras 3, '2' for tf_keras / Keras 2, None when the file does not say."""
    version = model.writer or ""
    return version.split(".", 1)[0] if version[:1].isdigit() else None


def check_convertible(model: ModelFile, target_format: str) -> None:
    """Refuse with one clear sentence what this converter cannot write faithfully."""
    if model.format not in (FORMAT_KERAS, FORMAT_H5) or model.config is None:
        raise InputError(
            f"{model.path} holds weights only; converting needs a full model, so give -o the "
            "input's suffix."
        )
    if writer_major(model) not in WRITERS:
        raise InputError(
            f"{model.path} was written by Keras {model.writer or '(version not recorded)'}; "
            "only files written by Keras 3 or tf_keras (Keras 2) are converted between .keras "
            "and .h5, so give -o the input's suffix (or re-save the model with one of them)."
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
            raise InputError(_unplaced(tensor))
    _ = target_format


def _unplaced(tensor: TensorInfo) -> str:
    known = tensor.layer_class in LAYERS
    why = (
        "its variables do not match its row in sparseprune's layer table"
        if known
        else "it is not in sparseprune's layer table and keeps variables in sub-layers, which "
        ".keras files store by attribute and .h5 files by sub-layer name (neither says which "
        "is which)"
    )
    return (
        f"layer '{tensor.layer}' ({tensor.layer_class or 'unknown class'}) cannot be placed in "
        f"the other format: {why}; nothing was written. Give -o the input's suffix."
    )


def _is_pruning_wrapper(layer: LayerInfo) -> bool:
    row = LAYERS.get(layer.class_name or "")
    return row is not None and row.pruning_wrapper


def convert_model(
    model: ModelFile,
    target: Path,
    target_format: str,
    transform: Transform,
    on_tensor: Callable[[TensorInfo], None] | None = None,
) -> None:
    """Write `model` to `target` in `target_format`, weights passed through `transform`."""
    check_convertible(model, target_format)

    copied = {tensor.name for _, _, tensor in _saved_copies(model)}
    kept: dict[str, np.ndarray] = {}  # a TFMOT wrapper's saved copy is written twice

    def values(tensor: TensorInfo) -> np.ndarray:
        if tensor.name in kept:
            return kept[tensor.name]
        original = model.read(tensor)
        new = transform(tensor, original)
        if on_tensor is not None:
            on_tensor(tensor)
        result = original if new is None else new
        if tensor.name in copied:
            kept[tensor.name] = result
        return result

    if target_format == FORMAT_H5:
        write_h5(model, target, values)
    else:
        write_keras(model, target, values)


def write_h5(model: ModelFile, target: Path, values: Callable) -> None:
    config = model.config or {}
    version = model.writer or "3"
    suffix = ":0" if writer_major(model) == "2" else ""  # tf_keras names variables `kernel:0`
    with new_h5(target) as out:
        legacy = {
            "class_name": config.get("class_name"),
            "config": legacy_names(config.get("config")),
        }
        _attrs(out, keras_version=version, backend="tensorflow", model_config=json.dumps(legacy))
        weights = create_group(out, "model_weights")
        groups = _by_top_layer(model)
        located = tensor_slots(model)
        _attrs(weights, keras_version=version, backend="tensorflow")
        weights.attrs["layer_names"] = np.array([name.encode() for name in groups])
        for top, tensors in groups.items():
            group = create_group(weights, top)
            ordered = _legacy_order(tensors, located)
            names = [f"{t.layer}/{t.role}{suffix}" for t in ordered]
            group.attrs["weight_names"] = np.array([n.encode() for n in names])
            for name, tensor in zip(names, ordered, strict=True):
                _write_dataset(group, name, tensor, values(tensor), compress=True)


def legacy_names(value: object) -> object:
    """A `.keras` config with its layer entries (the items of `layers` lists) naming a
    registered class as `.h5` configs do, by its registered name (`package>Class`): what the
    legacy loaders look up. `module` and the other archive keys stay: with them Keras 3 also
    finds classes it does not register (keras.applications' LayerScale), and tf_keras ignores
    them."""
    if isinstance(value, list):
        return [legacy_names(item) for item in value]
    if not isinstance(value, dict):
        return value
    return {
        key: [_legacy_entry(e) for e in item] if key == "layers" and isinstance(item, list)
        else legacy_names(item)
        for key, item in value.items()
    }  # fmt: skip


def _legacy_entry(entry: object) -> object:
    if not isinstance(entry, dict) or "class_name" not in entry:
        return legacy_names(entry)
    out = {key: legacy_names(item) for key, item in entry.items()}
    registered = entry.get("registered_name")
    if isinstance(registered, str):
        out["class_name"] = registered
    return out


def write_keras(model: ModelFile, target: Path, values: Callable) -> None:
    major = writer_major(model) or "3"
    with tempfile.TemporaryDirectory(prefix="sparseprune-") as scratch:
        weights_path = Path(scratch) / zipped.WEIGHTS_MEMBER
        with new_h5(weights_path) as out:
            _ensure_groups(out, "vars")  # the model's own variables (none); tf_keras reads it
            for path, name, tensors in _varstore_layout(model):
                vars_group = _ensure_groups(out, f"{path}/vars")
                if major == "3":
                    vars_group.attrs["name"] = name  # Keras >= 3.6 records it; tf_keras does not
                for index, tensor in enumerate(tensors):
                    _write_dataset(vars_group, str(index), tensor, values(tensor), compress=False)
        metadata = {"keras_version": model.writer, "date_saved": FIXED_DATE}
        config = dict(model.config or {})
        module, registered = MODEL_MODULES.get(
            (major, config.get("class_name", "")), ("keras", None)
        )
        config.setdefault("module", module)
        config.setdefault("registered_name", registered)
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
    keras2 = writer_major(model) == "2"
    by_layer: dict[str, list[TensorInfo]] = {}
    for tensor in model.model_tensors:
        by_layer.setdefault(tensor.layer, []).append(tensor)
    for info in model.tree.flatten() if model.tree else []:
        known = slots(info.class_name, info.config, keras2)
        if known is None and info.class_name not in MODEL_CLASSES:
            known = _own_slots(by_layer.get(info.name, []))
        for slot in known or []:
            found[f"{info.name}/{slot.role}"] = slot
    present = {t.name for t in model.model_tensors}
    return {name: slot for name, slot in found.items() if name in present}


def _own_slots(tensors: list[TensorInfo]) -> list[Slot] | None:
    """A layer class the table does not know, whose variables are all its own: the readers
    name them `var0`, `var1`, ... in the layer's variable order, which both layouts keep
    (`.keras` numbers them, `.h5` lists them: trainable first, as Keras orders them)."""
    indices = [_OWN_VARIABLE.fullmatch(t.role) for t in tensors]
    if not indices or [int(m.group(1)) if m else -1 for m in indices] != list(range(len(tensors))):
        return None
    return [Slot(t.role, (), i, True, False) for i, t in enumerate(tensors)]


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
    by_group: dict[tuple[str, tuple[str, ...]], list[tuple[int, TensorInfo]]] = {}
    for tensor in model.model_tensors:
        slot = located[tensor.name]
        by_group.setdefault((tensor.layer, slot.subpath), []).append((slot.index, tensor))
    for layer, slot, tensor in _saved_copies(model):
        by_group.setdefault((layer, slot.subpath), []).append((slot.index, tensor))
    keys = _storage_paths(model.tree) if model.tree else {}
    for (layer, sub), entries in by_group.items():
        if layer not in keys:
            raise InputError(f"layer '{layer}' is not in the model config; cannot convert.")
        name = layer.rsplit("/", 1)[-1] if not sub else sub[-1].lstrip("_")
        yield "/".join((keys[layer], *sub)), name, [t for _, t in sorted(entries)]


def _saved_copies(model: ModelFile) -> Iterator[tuple[str, Slot, TensorInfo]]:
    """tf_keras `.keras` files save each weight a TFMOT wrapper prunes a second time among the
    wrapper's own variables (the same variable, so the same values): (layer, slot, weight)."""
    by_name = {t.name: t for t in model.model_tensors}
    keras2 = writer_major(model) == "2"
    for info in model.tree.flatten() if model.tree else []:
        if _is_pruning_wrapper(info):
            for slot in slots(info.class_name, info.config, keras2) or []:
                if slot.alias is not None and f"{info.name}/{slot.alias}" in by_name:
                    yield info.name, slot, by_name[f"{info.name}/{slot.alias}"]


def _storage_paths(node: LayerTree, prefix: str = "") -> dict[str, str]:
    """Layer name -> `layers/<key>[/layers/<key>...]`, replaying Keras's key assignment."""
    paths: dict[str, str] = {}
    for key, child in storage_keys(node).items():
        path = f"{prefix}layers/{key}"
        paths[child.info.name] = path
        if child.children:
            paths.update(_storage_paths(child, f"{path}/"))
    return paths


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
