"""Read an architecture config (JSON) as data: layer names, classes, modules and flags.

Nothing here imports or calls Keras. Untrusted JSON is checked shape by shape, and Lambda layers or
classes from modules outside Keras are flagged, never deserialized.
"""

from __future__ import annotations

import json
from typing import Any

from sparseprune.errors import InputError, describe
from sparseprune.formats.model import LayerInfo, clean_text
from sparseprune.layers.table import MODEL_CLASSES, is_known

KERAS_MODULE_ROOTS = frozenset({"keras", "tf_keras", "tensorflow"})
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
    module = _string(entry.get("module"))
    return LayerInfo(
        name=name,
        class_name=class_name,
        module=module,
        config=config,
        flags=layer_flags(class_name, module, _string(entry.get("registered_name"))),
    )


def layer_flags(class_name: str | None, module: str | None, registered: str | None) -> tuple:
    """Why a layer deserves a warning: code in the file, or a class Keras does not ship."""
    flags = []
    if class_name in ("Lambda", "TFOpLambda"):
        flags.append("lambda")
    outside = module is not None and module.split(".")[0] not in KERAS_MODULE_ROOTS
    registered_outside = registered is not None and ">" in registered
    if outside or registered_outside:
        flags.append("custom_module")
    elif not is_known(class_name) and "lambda" not in flags:
        flags.append("unknown_class")
    return tuple(flags)


def _string(value: Any) -> str | None:
    return clean_text(value) if isinstance(value, str) else None
