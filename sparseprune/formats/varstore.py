"""Walk the Keras 3 weights layout: `layers/<key>/.../vars/<i>`, also used by tf_keras `.keras`.

Storage keys are not layer names (`dense_1` may be the layer `head`). The real name comes from the
`name` attribute Keras >= 3.6 writes on each `vars` group, else from the config: Keras numbers keys
per snake_case class name in layer order, which we replay. Variables are numbered, so their roles
come from the registry table for the layer's class.
"""

from __future__ import annotations

from collections.abc import Iterator

import h5py

from sparseprune.formats.config import LayerTree
from sparseprune.formats.model import LayerInfo, TensorInfo, TensorKind, clean_text
from sparseprune.layers.slots import Slot, slots, variable_roles
from sparseprune.layers.table import class_from_storage_key, to_snake_case

LAYER_LISTS = ("layers", "_layer_checkpoint_dependencies")


def read_varstore(
    root: h5py.Group, tree: LayerTree | None, keras2: bool = False
) -> list[TensorInfo]:
    """Describe every dataset under a `vars` group, in file order.

    `keras2` says the file was written by tf_keras, whose variable names differ in places.
    """
    tensors: list[TensorInfo] = []
    index = _ChildIndex()
    for group_path, vars_group in _vars_groups(root):
        tensors.extend(_describe_vars(root, group_path, vars_group, tree, keras2, index))
    return tensors


class _ChildIndex:
    """Each container's children by storage key and by name, built once per container.

    Recomputing them per layer made a file of n layers cost O(n^2) (4,000 layers: minutes).
    """

    def __init__(self) -> None:
        self._keys: dict[int, dict[str, LayerTree]] = {}
        self._names: dict[int, dict[str, LayerTree]] = {}

    def child(self, node: LayerTree | None, key: str, name: str | None) -> LayerTree | None:
        if node is None:
            return None
        if name is not None and (found := self._by_name(node).get(name)) is not None:
            return found
        if id(node) not in self._keys:
            self._keys[id(node)] = storage_keys(node)
        return self._keys[id(node)].get(key)

    def _by_name(self, node: LayerTree) -> dict[str, LayerTree]:
        if id(node) not in self._names:
            names: dict[str, LayerTree] = {}
            for child in node.children:  # the first child of a name wins, as in child_named
                names.setdefault(child.info.name.rsplit("/", 1)[-1], child)
            self._names[id(node)] = names
        return self._names[id(node)]


def _vars_groups(group: h5py.Group, path: tuple[str, ...] = ()) -> Iterator:
    if "vars" in group and isinstance(group["vars"], h5py.Group):
        yield path, group["vars"]
    for name in sorted(group, key=natural_key):
        child = group[name]
        if name != "vars" and isinstance(child, h5py.Group):
            yield from _vars_groups(child, (*path, name))


def _describe_vars(
    root: h5py.Group,
    path: tuple[str, ...],
    vars_group: h5py.Group,
    tree: LayerTree | None,
    keras2: bool,
    index: _ChildIndex,
) -> list[TensorInfo]:
    indices = sorted(
        (k for k in vars_group if isinstance(vars_group[k], h5py.Dataset)), key=natural_key
    )
    if not indices:
        return []
    kind, layer, subpath = _locate(root, path, tree, index)
    layer_class = layer.class_name if layer else None
    found = _slots(layer, subpath, len(indices), keras2) if kind == "weight" else None
    tensors = []
    for position, key in enumerate(indices):
        dataset = vars_group[key]
        slot = found[position] if found else None
        role = slot.role if slot else _fallback_role(subpath, key)
        tensor_kind: TensorKind = "state" if slot and slot.alias else kind
        tensors.append(
            TensorInfo(
                path=f"{'/'.join(path)}/vars/{key}".lstrip("/"),
                layer=layer.name if layer else _unowned_name(kind, path),
                layer_class=layer_class,
                role=role,
                shape=tuple(int(d) for d in dataset.shape),
                dtype=str(dataset.dtype),
                kind=tensor_kind,
                prunable=bool(slot and slot.prunable),
            )
        )
    return tensors


def _locate(
    root: h5py.Group, path: tuple[str, ...], tree: LayerTree | None, index: _ChildIndex
) -> tuple[TensorKind, LayerInfo | None, tuple[str, ...]]:
    """Split a group path into (kind, the layer it belongs to, the sub-object path within it)."""
    if not path or path[0] not in LAYER_LISTS:
        kind: TensorKind = "optimizer" if path[:1] == ("optimizer",) else "state"
        return kind, None, path
    layer: LayerInfo | None = None
    node = tree
    names: list[str] = []
    i = 0
    while i + 1 < len(path) and path[i] in LAYER_LISTS:
        key = path[i + 1]
        group_path = "/".join(path[: i + 2])
        name = _name_attr(root, group_path)
        child = index.child(node, key, name)
        node = child
        layer_name = name or (child.info.name.rsplit("/", 1)[-1] if child else key)
        names.append(layer_name)
        layer = _layer_info("/".join(names), key, child)
        i += 2
    return "weight", layer, path[i:]


def storage_keys(node: LayerTree) -> dict[str, LayerTree]:
    """Replay Keras's key assignment: snake_case class name, then `_1`, `_2`, ... per name."""
    keys: dict[str, LayerTree] = {}
    used: dict[str, int] = {}
    for child in node.children:
        # the class's own name: `.h5` configs spell registered classes `package>Class`
        base = to_snake_case((child.info.class_name or "layer").rsplit(">", 1)[-1])
        count = used.get(base, 0)
        used[base] = count + 1
        keys[base if count == 0 else f"{base}_{count}"] = child
    return keys


def _layer_info(name: str, key: str, node: LayerTree | None) -> LayerInfo:
    if node is not None:
        info = node.info
        return LayerInfo(name, info.class_name, info.module, info.config, info.flags)
    return LayerInfo(name, class_from_storage_key(key))


def _slots(
    layer: LayerInfo | None, subpath: tuple[str, ...], count: int, keras2: bool
) -> list[Slot] | None:
    """The table's slots for one `vars` group (a layer's own, or one part's), None if unsure."""
    if layer is None:
        return None
    everything = slots(layer.class_name, layer.config, keras2) or []
    for path in (subpath, tuple(p.lstrip("_") for p in subpath)):
        here = [s for s in everything if s.subpath == path]
        if len(here) == count:
            return here
    if subpath or layer.config:
        return None
    # Weights-only files have no config: tell optional variables by count (Dense without bias).
    roles = variable_roles(layer.class_name, layer.config, count, keras2)
    table_slots = slots(layer.class_name, None, keras2) or []
    prunable = {s.role for s in table_slots if s.prunable}
    return [Slot(r, (), i, True, r in prunable) for i, r in enumerate(roles)] if roles else None


def _unowned_name(kind: TensorKind, path: tuple[str, ...]) -> str:
    return "(optimizer)" if kind == "optimizer" else "/".join(path) or "(model)"


def _fallback_role(subpath: tuple[str, ...], index: str) -> str:
    return "/".join((*subpath, f"var{index}"))


def _name_attr(root: h5py.Group, group_path: str) -> str | None:
    vars_group = root.get(f"{group_path}/vars")
    if not isinstance(vars_group, h5py.Group):
        return None
    value = vars_group.attrs.get("name")
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return clean_text(value) if isinstance(value, str) and value else None


def natural_key(name: str) -> tuple:
    return (0, int(name), "") if name.isdigit() else (1, 0, name)
