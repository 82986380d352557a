"""`strip_model`: remove TFMOT pruning wrappers from a saved model, without TFMOT or Keras.

A model saved in the middle of (or after) TFMOT pruning holds `PruneLowMagnitude` layers, which
only load inside `prune_scope()` ("Unknown layer: PruneLowMagnitude" otherwise). Stripping does on
the file what `tfmot.sparsity.keras.strip_pruning` does on a live model: each wrapper's config is
replaced by the layer it wraps, references to the wrapper's name in a Functional model follow the
inner layer's name, each mask is folded into its weight and the `mask`, `threshold` and
`pruning_step` variables are dropped. Every figure in the result is measured by reading the
written file back.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparseprune.errors import InputError
from sparseprune.formats import ModelFile, open_model
from sparseprune.formats.atomic import atomic_path, check_output_path
from sparseprune.formats.h5safe import read_array
from sparseprune.formats.model import FORMAT_H5, FORMAT_KERAS
from sparseprune.formats.tfmot_fold import WRAPPER_CLASS, Fold, Wrapper, fold_mask
from sparseprune.formats.tfmot_unwrap import write_stripped
from sparseprune.schema import JsonResult

SUFFIXES = {FORMAT_KERAS: (".keras",), FORMAT_H5: (".h5", ".hdf5")}


@dataclass
class FoldedWeight:
    """A weight its mask was folded into, as the written file holds it."""

    name: str  # layer/role as sparseprune reads the written file (`hidden/kernel`)
    shape: tuple[int, ...]
    masked: int  # weights the mask set to zero
    zeros: int = 0  # exact zeros in the written weight (masked ones and any zero before)

    @property
    def params(self) -> int:
        return math.prod(self.shape)


@dataclass
class UnwrappedLayer:
    wrapper: str  # `prune_low_magnitude_hidden`; inside a nested model `block/prune_...`
    layer: str  # `hidden`; inside a nested model `block/inner`
    layer_class: str | None
    weights: list[FoldedWeight] = field(default_factory=list)


@dataclass
class StripResult(JsonResult):
    DOCUMENT = "sparseprune.render.strip_output"

    input: str
    output: str
    format: str
    input_size: int
    output_size: int = 0
    layers: list[UnwrappedLayer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def dropped_variables(self) -> int:
        """mask + threshold per folded weight, and one pruning_step per wrapper."""
        return sum(2 * len(layer.weights) + 1 for layer in self.layers)


def strip_model(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    force: bool = False,
    label: str | None = None,
    out_label: str | None = None,
) -> StripResult:
    """Write `source` without its pruning wrappers to `output` (same format, written atomically).

    A file without wrappers raises InputError ("has no pruning wrappers") rather than being
    copied, so a pipeline that expects a TFMOT checkpoint notices when it gets something else.
    Optimizer state, metrics and compile settings are kept. Failed checks on the written file
    are listed in `result.failures` (the CLI exits 1).
    """
    source, target = Path(source), Path(output)
    check_output_path(target, force, (source,))
    with open_model(source, label) as model:
        _check_strippable(model, target)
        config, wrappers = unwrap_config(model.config or {}, model.path)
        if not wrappers:
            raise InputError(
                f"{model.path} has no pruning wrappers (PruneLowMagnitude layers); "
                "nothing to strip."
            )
        with atomic_path(target, force=force, inputs=(source,)) as temp:
            folds = write_stripped(model, temp, config, wrappers)
        result = StripResult(
            str(label or source), str(out_label or target), model.format, model.size
        )
        _measure(model, target, wrappers, folds, result)
    return result


def _check_strippable(model: ModelFile, target: Path) -> None:
    if model.format not in SUFFIXES or model.config is None:
        raise InputError(
            f"{model.path} holds weights only, without the architecture that names the pruning "
            "wrappers; strip the full model file (model.save) instead."
        )
    if not target.name.lower().endswith(SUFFIXES[model.format]):
        raise InputError(
            f"{model.path} is a '{model.format}' file and strip keeps the format: give -o a "
            f"name ending in {' or '.join(SUFFIXES[model.format])}."
        )


# --------------------------------------------------------------------------- the config


def unwrap_config(config: dict, label: str) -> tuple[dict, list[Wrapper]]:
    """A copy of the architecture with each PruneLowMagnitude replaced by the layer it wraps."""
    unwrapped = copy.deepcopy(config)
    wrappers: list[Wrapper] = []
    _unwrap_container(unwrapped, (), wrappers, label)
    return unwrapped, wrappers


def _unwrap_container(
    entry: dict, scope: tuple[str, ...], wrappers: list[Wrapper], label: str
) -> None:
    config = entry.get("config")
    layers = config.get("layers") if isinstance(config, dict) else None
    if not isinstance(config, dict) or not isinstance(layers, list):
        return
    renames: dict[str, str] = {}
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            continue
        if layer.get("class_name") == WRAPPER_CLASS:
            wrapper, layers[i] = _unwrap_layer(layer, scope, label)
            renames[wrapper.name] = wrapper.inner_name
            wrappers.append(wrapper)
        elif (name := _layer_name(layer)) is not None:
            _unwrap_container(layer, (*scope, name), wrappers, label)
    if renames:
        _check_unique_names(layers, scope, label)
        for layer in layers:
            if isinstance(layer, dict) and "inbound_nodes" in layer:
                layer["inbound_nodes"] = _renamed(layer["inbound_nodes"], renames)
        for key in ("input_layers", "output_layers"):
            if key in config:
                config[key] = _renamed(config[key], renames)


def _unwrap_layer(entry: dict, scope: tuple[str, ...], label: str) -> tuple[Wrapper, dict]:
    """The inner layer's entry, taking the wrapper's place (its node links, input shape)."""
    config = entry.get("config")
    config = config if isinstance(config, dict) else {}
    inner = config.get("layer")
    name = _layer_name(entry) or "(unnamed)"
    inner_name = _layer_name(inner) if isinstance(inner, dict) else None
    if not isinstance(inner, dict) or not inner_name or "/" in inner_name:
        raise InputError(f"{label}: pruning wrapper '{name}' does not hold a named layer config.")
    inner_config = inner["config"]
    # As strip_pruning does: the first layer of a Sequential keeps the model's input shape.
    if "batch_input_shape" in config:
        inner_config.setdefault("batch_input_shape", config["batch_input_shape"])
    for key in ("build_config", "name", "inbound_nodes"):
        if key in entry and key not in inner:
            inner[key] = inner_name if key == "name" else entry[key]
    inner_class = inner.get("class_name")
    wrapper = Wrapper(
        scope, name, inner_name, inner_class if isinstance(inner_class, str) else None
    )
    return wrapper, inner


def _layer_name(entry: dict) -> str | None:
    config = entry.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    return name if isinstance(name, str) else None


def _check_unique_names(layers: list, scope: tuple[str, ...], label: str) -> None:
    seen: set[str] = set()
    for layer in layers:
        name = _layer_name(layer) if isinstance(layer, dict) else None
        if name in seen:
            where = f" in '{'/'.join(scope)}'" if scope else ""
            raise InputError(
                f"{label}: unwrapping would leave two layers named '{name}'{where}; "
                "rename one before pruning."
            )
        if name is not None:
            seen.add(name)


def _renamed(value: Any, renames: dict[str, str]) -> Any:
    """Node references `[layer_name, node_index, tensor_index, ...]` to wrappers, renamed."""
    if isinstance(value, dict):
        return {key: _renamed(item, renames) for key, item in value.items()}
    if not isinstance(value, list):
        return value
    items = [_renamed(item, renames) for item in value]
    is_reference = (
        len(items) >= 3
        and isinstance(items[0], str)
        and all(isinstance(i, int) and not isinstance(i, bool) for i in items[1:3])
    )
    if is_reference and items[0] in renames:
        items[0] = renames[items[0]]
    return items


# --------------------------------------------------------------------------- measuring


def _measure(
    model: ModelFile,
    target: Path,
    wrappers: list[Wrapper],
    folds: list[Fold],
    result: StripResult,
) -> None:
    """Re-read the written file: no wrapper left, each folded weight equal to weight * mask."""
    layers = {w.path: UnwrappedLayer(w.path, w.layer, w.inner_class) for w in wrappers}
    result.layers = list(layers.values())
    with open_model(target, result.output) as written:
        result.output_size = written.size
        left = [layer.name for layer in written.layers if layer.class_name == WRAPPER_CLASS]
        if left:
            result.failures.append(f"the written file still has wrappers: {', '.join(left)}.")
        tensors = {t.path: t for t in written.tensors}
        for fold in folds:
            tensor = tensors.get(fold.output_path)
            if tensor is None:
                result.failures.append(f"{fold.wrapper.layer}: a folded weight was not written.")
                continue
            values = written.read(tensor)
            expected = fold_mask(
                read_array(model.weights[fold.source_path]),
                read_array(model.weights[fold.mask_path]),
            )
            if not np.array_equal(values, expected, equal_nan=True):
                result.failures.append(f"{tensor.name} does not equal weight * mask.")
            weight = FoldedWeight(tensor.name, tensor.shape, fold.masked)
            weight.zeros = int(np.count_nonzero(values == 0))
            layers[fold.wrapper.path].weights.append(weight)
