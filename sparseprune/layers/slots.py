"""Walk the layer table: every variable a layer saves, with one name that all formats share.

A layer's variables are its own (`variables` in its row) followed by its parts' (recursively), in
Keras's weight order. Each becomes a `Slot`: its canonical role (`kernel`, `query/kernel`,
`forward_layer/recurrent_kernel`, `self_attention_layer/query/kernel`), where `.keras` stores it
(attribute path + variable index) and whether it is trainable and prunable. The `.keras` reader
maps `(subpath, index)` to a slot, the legacy `.h5` reader maps position to a slot, the converter
writes slots back either way, and a live model's weights are named by position: so
`mha/query/kernel` is one name in `.keras`, `.h5` and in Keras.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparseprune.layers.table import CLASSLESS_PRUNABLE, LAYERS, Layer, Part

MAX_DEPTH = 8  # parts nest a few levels at most (block -> attention -> projection)


@dataclass(frozen=True)
class Slot:
    """One saved variable of a layer, located in both layouts."""

    role: str  # canonical role, `/`-joined part prefixes + the variable's own role
    subpath: tuple[str, ...]  # `.keras` attribute path under the layer's group ('cell', ...)
    index: int  # position in that sub-object's `vars`
    trainable: bool
    prunable: bool
    optional: bool = False  # inside a part that may be absent
    alias: str | None = None  # a second saved copy of this role's variable (not a weight)


def _present(flag: str | None, config: dict) -> bool:
    if flag is None:
        return True
    if flag.startswith("!"):
        return config.get(flag[1:]) is None
    return config.get(flag, True) not in (False, None)


def own_roles(
    layer_class: str | None, config: dict | None, keras2: bool = False
) -> list[str] | None:
    """The roles of the variables a layer saves itself (not its parts), in order."""
    table = LAYERS.get(layer_class or "")
    if table is None:
        return None
    roles = [r for r, flag in table.variables if _present(flag, config or {})]
    return [table.keras2_roles.get(r, r) for r in roles] if keras2 else roles


def variable_roles(
    layer_class: str | None, config: dict | None, count: int, keras2: bool = False
) -> list[str] | None:
    """The roles of `count` variables a layer saves itself, or None if they can't be told.

    Without a config (weights-only files), optional variables are assumed present unless only
    the required ones match `count` (a Dense with use_bias=False saves one variable).
    """
    table = LAYERS.get(layer_class or "")
    if table is None:
        return None
    roles = own_roles(layer_class, config, keras2) or []
    if not config and len(roles) != count:
        roles = [
            table.keras2_roles.get(r, r) if keras2 else r for r, f in table.variables if f is None
        ]
    return roles if len(roles) == count else None


def slots(layer_class: str | None, config: dict | None, keras2: bool = False) -> list[Slot] | None:
    """Every variable of a layer in Keras's weight order, or None if any class is unknown."""
    return _walk(layer_class, config or {}, (), "", keras2, None, False, 0)


def _walk(
    layer_class: str | None,
    config: dict,
    subpath: tuple[str, ...],
    prefix: str,
    keras2: bool,
    prunable: frozenset[str] | None,
    optional: bool,
    depth: int,
) -> list[Slot] | None:
    table = LAYERS.get(layer_class or "")
    if table is None or depth > MAX_DEPTH:
        return None
    if table.pruning_wrapper:
        return _wrapper_slots(table, config, subpath, prefix, keras2, optional, depth)
    trainable = config.get("trainable", True) is not False
    mine = prunable if prunable is not None else table.prunable
    found = [
        Slot(
            prefix + role,
            subpath,
            index,
            trainable and role not in table.non_trainable,
            role in mine,
            optional,
        )
        for index, role in enumerate(own_roles(layer_class, config, keras2) or [])
    ]
    for key, part in table.parts.items():
        if key.startswith("_") and key[1:] in table.parts:
            continue  # the older attribute spelling of a part listed without the underscore
        located = _part(part, config)
        if located is None:
            return None
        sub_class, sub_config = located
        inner = _walk(
            sub_class,
            sub_config if trainable else {**sub_config, "trainable": False},
            (*subpath, _attribute(table, key, keras2)),
            prefix + (f"{part.prefix}/" if part.prefix else ""),
            keras2,
            None if table.delegate else _inner_prunable(table, part),
            optional or part.optional,
            depth + 1,
        )
        if inner is None:
            return None
        found.extend(inner)
    return found


def _attribute(table: Layer, key: str, keras2: bool) -> str:
    """The attribute a part is saved under in `.keras`: tf_keras keeps the older spelling the
    row lists beside it (MultiHeadAttention's `_query_dense`), Keras 3 the plain one."""
    return f"_{key}" if keras2 and f"_{key}" in table.parts else key


def _wrapper_slots(
    table: Layer,
    config: dict,
    subpath: tuple[str, ...],
    prefix: str,
    keras2: bool,
    optional: bool,
    depth: int,
) -> list[Slot] | None:
    """TFMOT's PruneLowMagnitude: the wrapped layer's variables (in `layer/`), then its own:
    a copy of each prunable weight (tf_keras `.keras` only), a mask and threshold for each,
    and `pruning_step`."""
    part = table.parts["layer"]
    located = _part(part, config)
    if located is None:
        return None
    inner = _walk(*located, (*subpath, "layer"), prefix, keras2, None, optional, depth + 1)
    if inner is None:
        return None
    pruned = [s for s in inner if s.prunable]
    own: list[Slot] = []
    for i, slot in enumerate(pruned):
        own.append(Slot(f"{slot.role}:copy", subpath, i, False, False, optional, slot.role))
    for i, _ in enumerate(pruned):
        suffix = "" if i == 0 else f"_{i}"
        for role in ("mask", "threshold"):
            own.append(Slot(prefix + role + suffix, subpath, len(own), False, False, optional))
    own.append(Slot(prefix + "pruning_step", subpath, len(own), False, False, optional))
    return inner + own


def _inner_prunable(table: Layer, part: Part) -> frozenset[str]:
    """A non-delegating layer names its parts' prunable roles itself (MHA: `query/kernel`)."""
    head = f"{part.prefix}/" if part.prefix else ""
    return frozenset(r[len(head) :] for r in table.prunable if r.startswith(head))


def _part(part: Part, config: dict) -> tuple[str | None, dict] | None:
    """(class, config) of a part: fixed by the row, or read from the parent's config."""
    if part.cls is not None:
        if part.flags:
            return part.cls, {flag: config.get(key, True) for flag, key in part.flags.items()}
        return part.cls, config
    entry = config.get(part.config_key or "") or config.get(part.fallback_key or "")
    if not isinstance(entry, dict):
        return None
    inner = entry.get("config")
    return entry.get("class_name"), inner if isinstance(inner, dict) else {}


def legacy_order(found: list[Slot]) -> list[Slot]:
    """Keras's legacy `.h5` order: trainable weights first, then the rest (each in order)."""
    return [s for s in found if s.trainable] + [s for s in found if not s.trainable]


def legacy_slots(
    layer_class: str | None, config: dict | None, count: int, keras2: bool = False
) -> list[Slot] | None:
    """The slots of a legacy `.h5` layer group listing `count` weights, or None if unsure."""
    found = slots(layer_class, config, keras2)
    if found is None:
        return None
    found = [s for s in found if s.alias is None]  # copies exist in tf_keras `.keras` only
    for candidate in (found, [s for s in found if not s.optional]):
        if len(candidate) == count:
            return legacy_order(candidate)
    return None


def numbered_roles(layer_name: str, paths: list[str]) -> list[str] | None:
    """Roles for the variables of a class the table does not know, from their paths in weight
    order (`block/inner/kernel`): `var0`, `var1`, ... per sub-layer below `layer_name`
    (`block/var0`, `block/inner/var0`). `.keras` files number them so, and both layouts (and a
    live layer's `weights`) keep each sub-layer's variables in its variable order, so the
    names agree wherever a sub-layer's attribute (`.keras`) is also its name (`.h5`, Keras).
    None when a path does not pass through `layer_name`."""
    roles = []
    counts: dict[tuple[str, ...], int] = {}
    for path in paths:
        parts = path.split("/")
        if layer_name not in parts[:-1]:
            return None
        below = tuple(parts[parts.index(layer_name) + 1 : -1])
        counts[below] = counts.get(below, -1) + 1
        roles.append("/".join((*below, f"var{counts[below]}")))
    return roles


def is_prunable(layer_class: str | None, role: str, config: dict | None = None) -> bool:
    """True when TFMOT's defaults would prune this variable (canonical role) of this class."""
    if layer_class is None:
        return role.rsplit("/", 1)[-1] in CLASSLESS_PRUNABLE
    found = slots(layer_class, config)
    if found:
        return any(s.role == role and s.prunable for s in found)
    table = LAYERS.get(layer_class)
    return table is not None and role in table.prunable


def mac_count(layer_class: str | None, kernel_sizes: dict[str, int], positions: int) -> int | None:
    """The layer table's one MAC formula: each counted kernel weight is used once per output
    position (groups, depth multipliers and strides are already in the kernel's and output's
    shapes). None for classes whose MACs are not counted. `kernel_sizes` may use tf_keras names."""
    table = LAYERS.get(layer_class or "")
    if table is None or not table.macs:
        return None
    sizes = [
        kernel_sizes.get(role, kernel_sizes.get(table.keras2_roles.get(role, role)))
        for role in table.macs
    ]
    if any(size is None for size in sizes):
        return None
    return sum(int(size) for size in sizes if size is not None) * positions
