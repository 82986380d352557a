"""Rewrite a TFMOT-pruned model file without its `PruneLowMagnitude` wrappers (h5py + zipfile only).

TFMOT 0.8 (tf_keras) saves a wrapper `prune_low_magnitude_dense` around `dense` as follows; the
stripped file is laid out as tf_keras writes `strip_pruning(model)`:

- `.h5`: the group `model_weights/prune_low_magnitude_dense` lists `weight_names` `dense/kernel:0`,
  `dense/bias:0` (the inner layer's), then the wrapper's own `prune_low_magnitude_dense/mask:0`,
  `.../threshold:0` per prunable weight and one `.../pruning_step:0`. Stripped: the group is
  `model_weights/dense` with the inner weights only. In a nested model's group, which mixes all
  its layers' weights, the wrapper's own are told apart by scope (the wrapper's name) and role.
- `.keras`: `layers/prune_low_magnitude/layer/...` holds the inner layer's variables, `.../vars`
  the wrapper's own: a copy of each of the n prunable weights, n (mask, threshold), pruning_step.
  Stripped: the inner tree moves to the key Keras gives its class (`layers/dense`); all keys of
  the container are replayed from the stripped config, as unwrapping renumbers them.

Each mask is folded into its weight (weight * mask, as TFMOT's `weight_mask_op` does; the
wrapper, the fold and the copier that applies it are formats/tfmot_fold.py). Every other
group, attribute and member (optimizer state, metrics, metadata) is copied unchanged: wrappers add
no trainable variables, so the optimizer's slots still match the stripped weights.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import h5py
import numpy as np

from sparseprune.errors import InputError
from sparseprune.formats import archive as zipped
from sparseprune.formats.config import LayerTree, build_tree
from sparseprune.formats.h5safe import read_array, reading
from sparseprune.formats.legacy_h5 import string_list_attr
from sparseprune.formats.model import FORMAT_KERAS
from sparseprune.formats.reader import ModelFile
from sparseprune.formats.tfmot_fold import (
    WRAPPER_CLASS,
    WRAPPER_ROLES,
    Fold,
    MaskFolder,
    Wrapper,
    pick_in_order,
)
from sparseprune.formats.varstore import LAYER_LISTS, natural_key, storage_keys
from sparseprune.formats.writer import (
    Member,
    copied_member,
    copy_attrs,
    create_group,
    new_h5,
    write_zip,
)
from sparseprune.layers.slots import is_prunable

# HDF5 keeps attributes in a 64 KiB object header; tf_keras splits longer name lists (name0, ...).
ATTR_LIMIT = 64512
_VAR_SUFFIX = re.compile(r":\d+$")


def write_stripped(
    model: ModelFile, target: Path, config: dict, wrappers: list[Wrapper]
) -> list[Fold]:
    """Write `model` with `config` (already unwrapped) and without `wrappers`' variables."""
    if model.format == FORMAT_KERAS:
        return _write_archive(model, target, config, wrappers)
    return _write_legacy(model, target, config, wrappers)


# --------------------------------------------------------------------------- legacy .h5


def _write_legacy(
    model: ModelFile, target: Path, config: dict, wrappers: list[Wrapper]
) -> list[Fold]:
    folder = MaskFolder(model.path, compress=True)
    with new_h5(target) as out:
        copy_attrs(model.weights, out, model.path)
        out.attrs["model_config"] = json.dumps(config)
        for name, item in model.weights.items():
            if name == "model_weights" and isinstance(item, h5py.Group):
                _strip_model_weights(item, create_group(out, name), wrappers, folder)
            else:
                folder.copy(item, out, name)
    return folder.folds


def _strip_model_weights(
    source: h5py.Group, dest: h5py.Group, wrappers: list[Wrapper], folder: MaskFolder
) -> None:
    """Rename top-level wrapper groups to their inner layer; strip wrappers in nested models."""
    copy_attrs(source, dest, folder.label)
    top = {w.name: w for w in wrappers if not w.scope}
    names = string_list_attr(source, "layer_names", folder.label)
    _set_names(dest, "layer_names", [top[n].inner_name if n in top else n for n in names])
    for name, item in source.items():
        inside = [top[name]] if name in top else [w for w in wrappers if w.scope[:1] == (name,)]
        if not inside or not isinstance(item, h5py.Group):
            folder.copy(item, dest, name)
            continue
        new_name = top[name].inner_name if name in top else name
        _strip_layer_group(item, create_group(dest, new_name), inside, name in top, folder)


def _strip_layer_group(
    source: h5py.Group,
    dest: h5py.Group,
    wrappers: list[Wrapper],
    is_wrapper: bool,
    folder: MaskFolder,
) -> None:
    """Copy one layer group's weights without the wrappers' own, masks folded in."""
    copy_attrs(source, dest, folder.label)
    names = string_list_attr(source, "weight_names", folder.label)
    owners = {w.name for w in wrappers}
    kept = [n for n in names if _scope(n) not in owners or _role(n) not in WRAPPER_ROLES]
    for wrapper in wrappers:
        own = [n for n in names if n not in kept and _scope(n) == wrapper.name]
        masks = _legacy_masks(own, wrapper, folder)
        scopes = (wrapper.inner_name, wrapper.name)
        inner = kept if is_wrapper else [n for n in kept if _scope(n) in scopes]
        picks = _pair_legacy(source, inner, [source[m] for m in masks], wrapper, folder.label)
        for mask, weight in zip(masks, picks, strict=True):
            output = f"{dest.name}/{weight}".lstrip("/")
            folder.add(wrapper, source[weight], source[mask], output)
    _set_names(dest, "weight_names", kept)
    for name in kept:
        parent = _parent_group(source, dest, name, folder.label)
        folder.copier.copy_dataset(source[name], parent, name.rsplit("/", 1)[-1])


def _legacy_masks(own: list[str], wrapper: Wrapper, folder: MaskFolder) -> list[str]:
    """The mask names among a wrapper's own: (mask, threshold) per prunable weight, then step."""
    roles = [_role(n) for n in own]
    pairs = (len(roles) - 1) // 2
    if roles != ["mask", "threshold"] * pairs + ["pruning_step"]:
        raise InputError(
            f"{folder.label}: pruning wrapper '{wrapper.path}' stores {roles or 'no variables'}; "
            "expected (mask, threshold) pairs and a pruning_step."
        )
    return own[0 : 2 * pairs : 2]


def _pair_legacy(
    source: h5py.Group, inner: list[str], masks: list[h5py.Dataset], wrapper: Wrapper, label: str
) -> list[str]:
    """Masks follow the inner layer's prunable weights in order (TFMOT's registry); a layer the
    registry does not know (a custom PrunableLayer) pairs each mask with the next weight of its
    shape."""
    shapes = [source[n].shape for n in inner]
    prunable = [i for i, n in enumerate(inner) if is_prunable(wrapper.inner_class, _role(n))]
    if [shapes[i] for i in prunable] != [m.shape for m in masks]:
        tests = [lambda i, s=m.shape: shapes[i] == s for m in masks]
        prunable = pick_in_order(len(inner), tests, wrapper, label)
    return [inner[i] for i in prunable]


def _parent_group(source: h5py.Group, dest: h5py.Group, name: str, label: str) -> h5py.Group:
    """The group `name` (a path relative to `source`) goes in under `dest`, made as needed."""
    group, origin = dest, source
    for part in name.split("/")[:-1]:
        origin = origin[part]
        if part not in group:
            copy_attrs(origin, create_group(group, part), label)
        group = group[part]
    return group


def _set_names(obj: h5py.HLObject, name: str, values: list[str]) -> None:
    """A list-of-names attribute, split as tf_keras does (`name0`, `name1`, ...) past 64 KiB."""
    for key in [k for k in obj.attrs if re.fullmatch(rf"{re.escape(name)}\d*", k)]:
        del obj.attrs[key]
    chunks = _chunks(values)
    for i, chunk in enumerate(chunks):
        key = name if len(chunks) == 1 else f"{name}{i}"
        obj.attrs.create(key, chunk, dtype=h5py.string_dtype())


def _chunks(values: list[str]) -> list[list[str]]:
    for count in range(1, len(values) + 1):
        chunks = [list(c) for c in np.array_split(np.asarray(values, dtype=object), count)]
        if all(sum(len(v.encode()) + 16 for v in c) <= ATTR_LIMIT for c in chunks):
            return chunks
    return [[v] for v in values] or [[]]


def _scope(weight_name: str) -> str:
    return weight_name.split("/", 1)[0]


def _role(weight_name: str) -> str:
    return _VAR_SUFFIX.sub("", weight_name.rsplit("/", 1)[-1])


# --------------------------------------------------------------------------- .keras


def _write_archive(
    model: ModelFile, target: Path, config: dict, wrappers: list[Wrapper]
) -> list[Fold]:
    assert model.archive is not None and model.tree is not None  # a .keras file has both
    folder = MaskFolder(model.path, compress=False)
    by_path = {w.path: w for w in wrappers}
    new_tree = build_tree(config, model.path)
    with tempfile.TemporaryDirectory(prefix="sparseprune-") as scratch:
        weights_path = Path(scratch) / zipped.WEIGHTS_MEMBER
        with new_h5(weights_path) as out:
            _copy_container(model.weights, out, model.tree, new_tree, by_path, folder)
        members = []
        for info in model.archive.infolist():
            if info.filename == zipped.WEIGHTS_MEMBER:
                members.append(Member(info.filename, weights_path, info.external_attr))
            elif info.filename == zipped.CONFIG_MEMBER:
                config_bytes = json.dumps(config).encode()
                members.append(Member(info.filename, config_bytes, info.external_attr))
            else:
                members.append(copied_member(model, info))
        write_zip(target, members)
    return folder.folds


def _copy_container(
    source: h5py.Group,
    dest: h5py.Group,
    old: LayerTree,
    new: LayerTree,
    wrappers: dict[str, Wrapper],
    folder: MaskFolder,
) -> None:
    """Copy a model's (or a layer's) group; its `layers` list is rebuilt under new keys."""
    copy_attrs(source, dest, folder.label)
    for name, item in source.items():
        if name in LAYER_LISTS and isinstance(item, h5py.Group) and old.children:
            _copy_layers(item, create_group(dest, name), old, new, wrappers, folder)
        else:
            folder.copy(item, dest, name)


def _copy_layers(
    source: h5py.Group,
    dest: h5py.Group,
    old: LayerTree,
    new: LayerTree,
    wrappers: dict[str, Wrapper],
    folder: MaskFolder,
) -> None:
    """Each layer's group moves from its old key to the key Keras gives it after unwrapping."""
    copy_attrs(source, dest, folder.label)
    old_keys = {key: i for i, key in enumerate(storage_keys(old))}
    new_keys = list(storage_keys(new))
    for name, item in source.items():
        index = old_keys.get(name)
        if index is None or not isinstance(item, h5py.Group):
            folder.copy(item, dest, name)
            continue
        old_child, new_child = old.children[index], new.children[index]
        group = create_group(dest, new_keys[index])
        wrapper = wrappers.get(old_child.info.name)
        if wrapper is not None and old_child.info.class_name == WRAPPER_CLASS:
            _unwrap_group(item, group, wrapper, folder)
        else:
            _copy_container(item, group, old_child, new_child, wrappers, folder)


def _unwrap_group(
    source: h5py.Group, dest: h5py.Group, wrapper: Wrapper, folder: MaskFolder
) -> None:
    """`<key>/layer/...` becomes the group itself, masks folded; `<key>/vars` is dropped."""
    inner, own = source.get("layer"), source.get("vars")
    if not isinstance(inner, h5py.Group) or not isinstance(own, h5py.Group) or len(source) != 2:
        raise InputError(
            f"{folder.label}: pruning wrapper '{wrapper.path}' is not stored as 'layer' and "
            "'vars'; unsupported wrapper layout."
        )
    copies, masks = _keras_wrapper_vars(own, wrapper, folder.label)
    candidates = _datasets(inner)
    tests = [lambda i, c=copy: _same_values(candidates[i], c, folder.label) for copy in copies]
    picks = pick_in_order(len(candidates), tests, wrapper, folder.label)
    for mask, index in zip(masks, picks, strict=True):
        relative = candidates[index].name[len(inner.name) :]
        folder.add(wrapper, candidates[index], mask, f"{dest.name}{relative}".lstrip("/"))
    folder.copier.copy_group(inner, dest)


def _keras_wrapper_vars(
    own: h5py.Group, wrapper: Wrapper, label: str
) -> tuple[list[h5py.Dataset], list[h5py.Dataset]]:
    """Split the wrapper's `vars` (n weight copies, n (mask, threshold), pruning_step)."""
    names = sorted(own, key=natural_key)
    values = [own[n] for n in names]
    count = (len(values) - 1) // 3
    copies, rest = values[:count], values[count:]
    valid = (
        len(values) == 3 * count + 1
        and all(isinstance(v, h5py.Dataset) for v in values)
        and rest[-1].shape == ()
        and rest[-1].dtype.kind in "iu"
        and all(rest[2 * i].shape == c.shape for i, c in enumerate(copies))
        and all(rest[2 * i + 1].shape == () for i in range(count))
    )
    if not valid:
        raise InputError(
            f"{label}: pruning wrapper '{wrapper.path}' stores {len(values)} variables in an "
            "unrecognized order; cannot tell its masks apart."
        )
    return copies, rest[0 : 2 * count : 2]


def _datasets(group: h5py.Group) -> list[h5py.Dataset]:
    """Every dataset under `group` in variable order (`vars/0`, `vars/1`, ..., then sub-objects)."""
    found: list[h5py.Dataset] = []
    for name in sorted(group, key=lambda n: (n != "vars", natural_key(n))):
        item = group[name]
        found.extend(_datasets(item) if isinstance(item, h5py.Group) else [item])
    return found


def _same_values(a: h5py.Dataset, b: h5py.Dataset, label: str) -> bool:
    """The wrapper's copy of a weight is the same variable saved twice: bit-identical."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    with reading(label, f"datasets '{a.name}' and '{b.name}'"):
        return np.array_equal(read_array(a), read_array(b), equal_nan=True)
