"""Walk the legacy HDF5 layout: `layer_names` -> layer groups -> `weight_names` -> datasets.

Dataset paths are never guessed from layer names: old Keras 2 files store `conv2d_1/conv2d_1_1/
kernel:0` under the layer `conv2d_1`. We follow `weight_names` (split into `weight_names0`,
`weight_names1`, ... when over 64 KiB) and take the role from the last path component.
"""

from __future__ import annotations

import re
from typing import Any

import h5py

from sparseprune.errors import InputError
from sparseprune.formats.config import LayerTree
from sparseprune.formats.model import LayerInfo, TensorInfo, clean_text
from sparseprune.layers.slots import is_prunable, legacy_slots, numbered_roles
from sparseprune.layers.table import class_from_storage_key, is_known

_SUFFIX = re.compile(r":\d+$")


def read_legacy_weights(
    group: h5py.Group, tree: LayerTree | None, label: str, keras2: bool = False
) -> list[TensorInfo]:
    """Describe every weight listed by `layer_names`/`weight_names` under `group`."""
    tensors: list[TensorInfo] = []
    for layer_name in string_list_attr(group, "layer_names", label):
        layer_group = group.get(layer_name)
        if not isinstance(layer_group, h5py.Group):
            raise InputError(f"{label}: layer '{layer_name}' is listed but has no weight group.")
        node = tree.child_named(layer_name) if tree else None
        owned: dict[str, tuple[LayerInfo, list[tuple[str, h5py.Dataset]]]] = {}
        for weight_name in string_list_attr(layer_group, "weight_names", label):
            dataset = layer_group.get(weight_name)
            if not isinstance(dataset, h5py.Dataset):
                raise InputError(
                    f"{label}: weight '{weight_name}' of layer '{layer_name}' is listed "
                    "but missing."
                )
            layer = _owner(layer_name, node, weight_name)
            owned.setdefault(layer.name, (layer, []))[1].append((weight_name, dataset))
        for layer, weights in owned.values():
            tensors.extend(_describe_layer(layer, weights, keras2, tree is not None))
    return tensors


def _describe_layer(
    layer: LayerInfo, weights: list[tuple[str, h5py.Dataset]], keras2: bool, in_config: bool
) -> list[TensorInfo]:
    """Roles by position from the layer table (Keras matches by position too), else by name.
    `in_config`: the file has an architecture (weights-only files name no classes at all)."""
    names = [w for w, _ in weights]
    leaf = layer.name.rsplit("/", 1)[-1]
    by_name = _roles_from_names(leaf, names)
    if in_config:
        layer = _with_named_class(layer, by_name, keras2)
    found = legacy_slots(layer.class_name, layer.config, len(weights), keras2)
    fallback = _own_roles(layer, leaf, names) or by_name
    return [
        TensorInfo(
            path=dataset.name.lstrip("/"),
            layer=layer.name,
            layer_class=layer.class_name,
            role=found[i].role if found else fallback[i],
            shape=tuple(int(d) for d in dataset.shape),
            dtype=str(dataset.dtype),
            prunable=found[i].prunable if found else is_prunable(layer.class_name, fallback[i]),
        )
        for i, (_, dataset) in enumerate(weights)
    ]


def _with_named_class(layer: LayerInfo, roles: list[str], keras2: bool) -> LayerInfo:
    """A layer the config does not list (keras_hub backbones build theirs in code) gets the
    class its name spells when that class saves exactly these variables (`position_embedding`
    holding `embeddings`): the class `.keras` files tell by their storage key."""
    if layer.class_name is not None:
        return layer
    guess = class_from_storage_key(layer.name.rsplit("/", 1)[-1])
    found = legacy_slots(guess, {}, len(roles), keras2) if guess else None
    if found is None or [s.role for s in found] != roles:
        return layer
    return LayerInfo(layer.name, guess, layer.module, layer.config, layer.flags)


def _own_roles(layer: LayerInfo, leaf: str, names: list[str]) -> list[str] | None:
    """For a class the table does not know, `var0`, `var1`, ... per sub-layer, as `.keras`
    files number them (`slots.numbered_roles`)."""
    if layer.class_name is None or is_known(layer.class_name):
        return None
    return numbered_roles(leaf, [_SUFFIX.sub("", name) for name in names])


def _roles_from_names(layer_name: str, names: list[str]) -> list[str]:
    """The last path component (`dense/kernel:0` -> kernel), or the path below the layer's own
    name where those repeat (a layer class the table does not know, made of sub-layers)."""
    leaves = [_SUFFIX.sub("", n.rsplit("/", 1)[-1]) for n in names]
    if len(set(leaves)) == len(leaves):
        return leaves
    paths = [_SUFFIX.sub("", n) for n in names]
    paths = [
        p.split("/", 1)[1] if p.split("/", 1)[0] == layer_name and "/" in p else p for p in paths
    ]
    if len(set(paths)) == len(paths):
        return paths
    return [f"{p}#{i}" for i, p in enumerate(paths)]


def read_optimizer_weights(group: h5py.Group) -> list[TensorInfo]:
    """Optimizer slots, reported apart from the model's weights."""
    found: list[TensorInfo] = []

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            found.append(
                TensorInfo(
                    path=obj.name.lstrip("/"),
                    layer="(optimizer)",
                    layer_class=None,
                    role=name,
                    shape=tuple(int(d) for d in obj.shape),
                    dtype=str(obj.dtype),
                    kind="optimizer",
                )
            )

    group.visititems(visit)
    return found


def _owner(layer_name: str, node: LayerTree | None, weight_name: str) -> LayerInfo:
    """The layer a weight belongs to; inside a nested model, the inner layer (`outer/inner`)."""
    if node is None:
        return LayerInfo(layer_name, None)
    if node.is_container():
        parts = weight_name.split("/")
        if parts[0] == layer_name and len(parts) > 2:
            parts = parts[1:]
        inner = _child_or_wrapper(node, parts[0]) if len(parts) > 1 else None
        if inner is not None:
            return inner.info
    return node.info


def _child_or_wrapper(node: LayerTree, name: str) -> LayerTree | None:
    """The child layer `name`, or the TFMOT wrapper around it (tf_keras scopes a wrapped
    layer's weights by the inner layer's name)."""
    found = node.child_named(name)
    if found is not None:
        return found
    for child in node.children:
        inner = child.info.config.get("layer")
        if isinstance(inner, dict) and (inner.get("config") or {}).get("name") == name:
            return child
    return None


def string_list_attr(group: h5py.Group, name: str, label: str) -> list[str]:
    """Read a list-of-strings attribute, joining `name0`, `name1`, ... chunks when split."""
    attrs = group.attrs
    if name in attrs:
        values = list(_as_list(attrs[name]))
    else:
        values = []
        chunk = 0
        while f"{name}{chunk}" in attrs:
            values.extend(_as_list(attrs[f"{name}{chunk}"]))
            chunk += 1
    out = []
    for value in values:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if not isinstance(value, str):
            raise InputError(f"{label}: attribute '{name}' of '{group.name}' is not text.")
        out.append(clean_text(value))
    return out


def _as_list(value: Any) -> list:  # an h5py attribute value (untyped)
    if isinstance(value, (str, bytes)):
        return [value]
    try:
        return list(value)  # numpy arrays of names
    except TypeError:
        return [value]
