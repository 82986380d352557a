"""Shrink a saved model: remove the units and filters pruning left dead, exactly, on the file.

A unit whose whole incoming kernel slice is near zero outputs the constant act(bias): that constant
is pushed through the per-channel layers between it and its consumers and folded into the
consumers' biases, then the unit and its input rows are removed. A unit that every consumer ignores
(zero outgoing rows) is removed without folding. Passes repeat until nothing changes, because one
removal can leave another unit dead or unused. Layer tables and graph walks live in `graph.py`;
anything the tables do not cover is skipped with its reason. No TensorFlow import.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sparseprune.errors import InputError
from sparseprune.formats import open_model
from sparseprune.formats.atomic import atomic_path, check_output_path
from sparseprune.formats.model import FORMAT_H5, FORMAT_KERAS, TensorInfo
from sparseprune.formats.reader import ModelFile
from sparseprune.layers.channels import CHANNEL_FACTS, PRODUCERS
from sparseprune.layers.slots import mac_count
from sparseprune.layers.table import MODEL_CLASSES
from sparseprune.numeric.stats import DEFAULT_THRESHOLD
from sparseprune.schema import JsonResult
from sparseprune.shrink.graph import (
    Graph,
    Group,
    Node,
    build_graph,
    build_groups,
    channel_slots,
)
from sparseprune.shrink.groups import Arrays, Context, shrink_group, units_of
from sparseprune.shrink.shapes import conv_output, input_shapes, resize_config
from sparseprune.shrink.write import write_shrunk

MAX_PASSES = 16
# Removing only dead or unused units changes outputs by float rounding, nothing more.
DEFAULT_TOLERANCE = 1e-5
SUFFIXES = {FORMAT_KERAS: (".keras",), FORMAT_H5: (".h5", ".hdf5")}


@dataclass
class LayerShrink:
    """What happened to one layer with weights."""

    name: str
    class_name: str
    units_before: int | None = None
    units_after: int | None = None
    dead: int = 0  # removed: no input (constant output, folded downstream)
    unused: int = 0  # removed: no consumer reads it
    params_before: int = 0
    params_after: int = 0
    macs_before: int | None = None
    macs_after: int | None = None
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> units kept for it


@dataclass
class ShrinkResult(JsonResult):
    """Everything `shrink` reports; figures are from the arrays written and re-read."""

    DOCUMENT = "sparseprune.render.shrink_output"

    input: str
    format: str
    input_size: int
    output: str
    output_size: int
    threshold: float
    layers: list[LayerShrink]
    passes: int
    verification: dict | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(layer.dead or layer.unused for layer in self.layers)

    def totals(self) -> dict[str, int | None]:
        def total(key: str) -> int | None:
            values = [getattr(layer, key) for layer in self.layers]
            known = [v for v in values if v is not None]
            return sum(known) if known else None

        keys = ("units_before", "units_after", "params_before", "params_after")
        return {k: total(k) for k in (*keys, "macs_before", "macs_after", "dead", "unused")}


def shrink_model(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    force: bool = False,
    verify: bool = False,
    data: str | os.PathLike[str] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    unsafe: bool = False,
    label: str | None = None,
) -> ShrinkResult:
    """Plan and apply the shrink, write `output` in the input's format, re-read and check it.

    `verify` runs both models in Keras on the same inputs (`data`, else random) and adds a
    failure when max |Δ| is above `tolerance`; a file Keras could only load by running its
    code is refused before anything is written unless `unsafe`.
    """
    source, target = os.fspath(source), Path(output)
    if not threshold >= 0:
        raise InputError(f"'threshold' must be a number >= 0, got {threshold}.")
    if not tolerance >= 0:
        raise InputError(f"'tolerance' must be a number >= 0, got {tolerance}.")
    if verify:  # refuse before writing anything, without importing Keras
        from sparseprune.keras_ops.loading import check_loadable

        check_loadable(source, unsafe)
    result = _shrink(source, target, threshold, force, label or source)
    if verify:
        _verify(result, source, target, data, tolerance, unsafe)
    return result


def _verify(
    result: ShrinkResult,
    source: str,
    target: Path,
    data: str | os.PathLike[str] | None,
    tolerance: float,
    unsafe: bool,
) -> None:
    from sparseprune.keras_ops.verify import verify_outputs

    inputs = None if data is None else Path(data)
    result.verification = verify_outputs(source, str(target), inputs, unsafe)
    worst = result.verification["max_abs_diff"]
    if not worst <= tolerance:
        result.failures.append(f"max |Δ| {worst:.3g} is above --tolerance {tolerance}")


def _shrink(source: str, target: Path, threshold: float, force: bool, label: str) -> ShrinkResult:
    check_output_path(target, force, (Path(source),))
    with open_model(source, label) as model:
        _check_supported(model, target)
        graph = build_graph(model.config or {})
        arrays = _load_arrays(model)
        shapes = input_shapes(graph)
        sizes = _tensor_sizes(model)
        report = _new_report(graph, arrays, shapes, sizes)
        ctx = Context(graph, arrays, shapes, threshold, report)
        groups = build_groups(graph)
        before = _channel_counts(groups, ctx)
        passes = _run_passes(groups, ctx)
        after = _channel_counts(groups, ctx)
        changes = {name: (before[name], after[name]) for name in before if name in after}
        config = resize_config(model.config or {}, graph, changes)
        _finish_report(graph, arrays, report, shapes, _resized(sizes, arrays, ctx.touched))
        with atomic_path(target, force=force, inputs=(source,)) as scratch:
            write_shrunk(model, config, _values(arrays, ctx.touched), scratch)
        result = ShrinkResult(
            input=label,
            format=model.format,
            input_size=model.size,
            output=str(target),
            output_size=0,
            threshold=threshold,
            layers=list(report.values()),
            passes=passes,
        )
    result.output_size = target.stat().st_size
    result.failures = _check_written(target, arrays, graph, ctx.touched)
    return result


def _check_supported(model: ModelFile, target: Path) -> None:
    if model.format not in SUFFIXES or model.config is None:
        raise InputError(f"{model.path} holds weights only; shrinking needs the architecture.")
    if not target.name.lower().endswith(SUFFIXES[model.format]):
        raise InputError(
            f"shrink writes the input's format ({model.format}); give -o a "
            f"{SUFFIXES[model.format][0]} path."
        )


def _load_arrays(model: ModelFile) -> Arrays:
    """Float64 copies of the weights of top-level layers; sub-object weights (RNN cells inside
    Bidirectional, attention projections) may repeat a layer/role name and are never changed,
    so they are not loaded (the writer copies them as they are)."""
    arrays: Arrays = {}
    for tensor in model.model_tensors:
        if tensor.layer_class in PRODUCERS or _rewritable(tensor):
            arrays.setdefault(tensor.layer, {})[tensor.role] = model.read(tensor).astype(np.float64)
    return arrays


def _rewritable(tensor: TensorInfo) -> bool:
    row = CHANNEL_FACTS.get(tensor.layer_class or "")
    return row is not None and row.kind in ("pass", "consume") and "/" not in tensor.role


def _values(arrays: Arrays, touched: set[str]):
    def values(tensor: TensorInfo) -> np.ndarray | None:
        if tensor.layer not in touched:
            return None
        return arrays[tensor.layer][tensor.role].astype(np.dtype(tensor.dtype))

    return values


def _tensor_sizes(model: ModelFile) -> dict[str, int]:
    """Values per layer as stored (sub-object and unknown layers included)."""
    sizes: dict[str, int] = {}
    for tensor in model.model_tensors:
        sizes[tensor.layer] = sizes.get(tensor.layer, 0) + math.prod(tensor.shape)
    return sizes


def _resized(sizes: dict[str, int], arrays: Arrays, touched: set[str]) -> dict[str, int]:
    return sizes | {name: sum(a.size for a in arrays[name].values()) for name in touched}


def _new_report(
    graph: Graph, arrays: Arrays, shapes: dict, sizes: dict[str, int]
) -> dict[str, LayerShrink]:
    """One entry per layer with weights (and per nested model), in graph order."""
    report: dict[str, LayerShrink] = {}
    for name, node in graph.nodes.items():
        nested = node.class_name in MODEL_CLASSES
        if name not in sizes and not nested:
            continue
        entry = LayerShrink(name, node.class_name)
        entry.params_before = _params(name, sizes)
        entry.macs_before = _macs(node, arrays, _first(shapes.get(name)))
        if node.kind == "produce":
            entry.units_before = units_of(node, arrays)
        if nested:
            entry.skipped["nested model: its layers are not shrunk"] = 0
        report[name] = entry
    return report


def _first(shapes: list | None) -> list | None:
    return shapes[0] if shapes else None


def _params(name: str, sizes: dict[str, int]) -> int:
    """Values held by a layer (or by every layer of a nested model)."""
    return sum(n for layer, n in sizes.items() if layer == name or layer.startswith(f"{name}/"))


def _run_passes(groups: list[Group], ctx: Context) -> int:
    """Remove what is removable, again and again, until a pass removes nothing."""
    for number in range(1, MAX_PASSES + 1):
        ctx.first = number == 1
        if not sum(shrink_group(group, ctx) for group in groups):
            return number
    return MAX_PASSES


def _channel_counts(groups: list[Group], ctx: Context) -> dict[str, int]:
    """Channels of every tensor of every group that can change (for the config's shapes)."""
    counts: dict[str, int] = {}
    for group in groups:
        units = {m.name: units_of(m, ctx.arrays) or 0 for m in group.members}
        slots, _, problem = channel_slots(group, units, ctx.input_channels())
        if group.reason is None and problem is None:
            counts.update({name: len(ids) for name, ids in slots.items()})
    return counts


def _macs(node: Node, arrays: Arrays, shape: list | None) -> int | None:
    """Multiply-accumulates per sample: the layer table's formula (`layer_slots.mac_count`)
    over the output positions this config gives."""
    weights = arrays.get(node.name, {})
    if shape is None or None in shape[1:] or not weights:
        return None
    if node.class_name == "Dense":
        positions = math.prod(shape[1:-1])
    elif "kernel_size" in node.config:
        positions = math.prod(conv_output(node.config, shape[1:-1]))
    else:
        return None
    sizes = {role: values.size for role, values in weights.items()}
    return mac_count(node.class_name, sizes, positions)


def _finish_report(
    graph: Graph, arrays: Arrays, report: dict[str, LayerShrink], shapes: dict, sizes: dict
) -> None:
    for name, entry in report.items():
        node = graph.nodes[name]
        entry.params_after = _params(name, sizes)
        entry.macs_after = _macs(node, arrays, _first(shapes.get(name)))
        if entry.units_before is not None:
            entry.units_after = units_of(node, arrays)


def _config_failures(node: Node, arrays: Arrays, written: dict) -> list[str]:
    """A resized layer's config holds its new unit (or channel) count."""
    row = node.facts
    keys: tuple[str, ...]
    if row.kind == "produce":
        keys, count = (row.units_key or "",), units_of(node, arrays)
    elif row.channel_keys:
        role = row.channel_roles[0]
        value = arrays[node.name][role]
        keys, count = row.channel_keys, value.shape[-1 if value.ndim == 1 else row.channel_axis]
    else:
        return []
    return [
        f"{node.name}: the written config says {key}={written.get(key)}, not {count}"
        for key in keys
        if written.get(key) != count
    ]


def _check_written(target: Path, arrays: Arrays, graph: Graph, touched: set[str]) -> list[str]:
    """Re-read the output: every changed tensor has the planned shape, every unit count the
    config says matches its kernel."""
    failures = []
    with open_model(target) as written:
        for tensor in written.model_tensors:
            if tensor.layer not in touched:
                continue
            want = arrays.get(tensor.layer, {}).get(tensor.role)
            if want is None or tuple(want.shape) != tensor.shape:
                failures.append(f"{tensor.name}: written shape {tensor.shape} is not planned")
        layers = {info.name: info for info in written.layers}
        for name in sorted(touched & set(graph.nodes)):
            failures += _config_failures(graph.nodes[name], arrays, layers[name].config)
    return failures
