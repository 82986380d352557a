"""Read an architecture config (JSON) as data: layer names, classes, modules and flags.

Nothing here imports or calls Keras. Untrusted JSON is checked shape by shape, and Lambda layers or
classes from modules outside Keras are flagged, never deserialized.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sparseprune.errors import InputError, describe
from sparseprune.formats.model import LayerInfo, clean_text
from sparseprune.layers.table import MODEL_CLASSES, is_known

KERAS_MODULE_ROOTS = frozenset({"keras", "tf_keras", "tensorflow"})
KERAS_HUB_ROOTS = frozenset({"keras_hub"})  # the Keras team's model library: loaded, reported
_CLASS_TAIL = re.compile(r"[.>]")
_BASE64 = re.compile(r"[A-Za-z0-9+/=_\-\s]+")
MAX_NESTING = 32


class LayerTree:
    """One container's layers in config order, with nested containers as subtrees."""

    def __init__(self, info: LayerInfo, children: list[LayerTree] | None = None) -> None:
        self.info = info
        self.children = children or []

    def is_container(self) -> bool:
        return bool(self.children) or self.info.class_name in MODEL_CLASSES

    def flatten(self) -> list[LayerInfo]:
        """Every layer below this container, depth first, nested names joined with '/'."""
        out: list[LayerInfo] = []
        for child in self.children:
            out.append(child.info)
            out.extend(child.flatten())
        return out

    def child_named(self, name: str) -> LayerTree | None:
        return next((c for c in self.children if c.info.name.rsplit("/", 1)[-1] == name), None)


def load_json(text: str | bytes, label: str) -> dict:
    """The architecture config as plain data (a JSON object), or a clear error."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(
            f"{label}: the model config is not valid JSON ({describe(error)})."
        ) from error
    if not isinstance(data, dict):
        raise InputError(f"{label}: the model config is not a JSON object.")
    return data


def build_tree(entry: dict, label: str, prefix: str = "", depth: int = 0) -> LayerTree:
    if depth > MAX_NESTING:
        raise InputError(f"{label}: the model config nests models deeper than {MAX_NESTING}.")
    config = entry.get("config")
    if isinstance(config, list):  # Keras <= 2.2 Sequential: the config is the list of layers
        config = {"layers": config}
    config = config if isinstance(config, dict) else {}
    name = _string(config.get("name")) or _string(entry.get("name")) or "model"
    full_name = f"{prefix}/{name}" if prefix else name
    info = layer_info(entry, config, full_name)
    layers = config.get("layers")
    if not isinstance(layers, list):
        return LayerTree(info)
    child_prefix = full_name if depth else ""
    children = [
        build_tree(child, label, child_prefix, depth + 1)
        for child in layers
        if isinstance(child, dict)
    ]
    return LayerTree(info, children)


def layer_info(entry: dict, config: dict, name: str) -> LayerInfo:
    class_name = _string(entry.get("class_name"))
    return LayerInfo(
        name=name,
        class_name=class_name,
        module=_string(entry.get("module")),
        config=config,
        flags=layer_flags(entry, config, class_name),
    )


def layer_flags(entry: dict, config: dict, class_name: str | None) -> tuple[str, ...]:
    """This layer's warnings: `scan_config` over it (its own sublayers are children, not it),
    plus `unknown_class` for classes sparseprune has no table entry for."""
    own = {**entry, "config": {k: v for k, v in config.items() if k != "layers"}}
    flags = list(scan_config(own))
    if not flags and not is_known(class_name):
        flags.append("unknown_class")
    return tuple(flags)


def scan_config(document: Any) -> dict[str, list[str]]:
    """THE scan for code and foreign classes: every dict, list and string of a config, whatever
    key holds it (config, layer, layers, cell, cells, forward_layer, backward_layer, nested
    models, compile settings), iteratively so depth cannot overflow. Returns flag -> places
    (layer paths as `outer/inner`). Anything flagged `lambda` or `custom_module` is refused by
    the loader without --unsafe; `keras_hub` is allowed and reported."""
    found: dict[str, list[str]] = {}
    root = _place(document, "") if isinstance(document, dict) else ""
    stack: list[tuple[Any, str, bool]] = [(document, "", True)]
    while stack:
        value, where, top = stack.pop()
        if isinstance(value, dict):
            where = where if top else _place(value, where)
            for flag in object_flags(value):
                _note(found, flag, where or root)
            stack.extend((item, where, False) for item in reversed(list(value.values())))
        elif isinstance(value, list):
            stack.extend((item, where, False) for item in reversed(value))
        elif isinstance(value, str) and is_marshalled_code(value):
            _note(found, "lambda", where or root)
    return found


def object_flags(entry: dict) -> list[str]:
    """Flags for one serialized object or config dict, from a table of rules, not its key."""
    flags = []
    class_name = entry.get("class_name")
    tail = _CLASS_TAIL.split(class_name)[-1] if isinstance(class_name, str) else ""
    if tail.strip("_").lower().endswith("lambda"):
        flags.append("lambda")  # Lambda, TFOpLambda, SlicingOpLambda, __lambda__, x>Lambda
    if entry.get("function_type") == "lambda" or "__lambda__" in entry:
        flags.append("lambda")
    module, registered = entry.get("module"), entry.get("registered_name")
    origins = [module.split(".")[0]] if isinstance(module, str) else []
    if isinstance(registered, str) and ">" in registered:
        origins.append(registered.split(">")[0])
    for origin in origins:
        if origin == "builtins" and class_name == "function":
            continue  # Keras resolves these names among its own built-in functions
        if origin in KERAS_HUB_ROOTS:
            flags.append("keras_hub")
        elif origin not in KERAS_MODULE_ROOTS:
            flags.append("custom_module")
    return list(dict.fromkeys(flags))


def is_marshalled_code(text: str) -> bool:
    """A base64 (standard or URL-safe, any line breaks) Python code object: how Keras and
    tf_keras store a lambda's bytecode. Checked by its marshal header, never unmarshalled."""
    if len(text) < 32 or not _BASE64.fullmatch(text):
        return False
    import base64  # only for text that looks like base64 (start-up: most configs have none)

    packed = "".join(text.split())
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            raw = decode(packed + "=" * (-len(packed) % 4))
        except ValueError:  # binascii.Error is one
            continue
        if _looks_like_code(raw):
            return True
    return False


def _looks_like_code(raw: bytes) -> bool:
    """marshal TYPE_CODE ('c', maybe with FLAG_REF) then small argument counts (int32 LE)."""
    if len(raw) < 24 or raw[0] & 0x7F != ord("c"):
        return False
    counts = [int.from_bytes(raw[i : i + 4], "little") for i in (1, 5, 9)]
    return all(count < 256 for count in counts)


def _place(entry: dict, outer: str) -> str:
    config = entry.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    name = name if isinstance(name, str) else entry.get("name")
    if not isinstance(name, str) or "class_name" not in entry:
        return outer
    name = clean_text(name)
    return f"{outer}/{name}" if outer else name


def _note(found: dict[str, list[str]], flag: str, where: str) -> None:
    places = found.setdefault(flag, [])
    where = where or "model"
    if where not in places:
        places.append(where)


def _string(value: Any) -> str | None:
    return clean_text(value) if isinstance(value, str) else None
