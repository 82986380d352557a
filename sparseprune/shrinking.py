"""Shrink a saved model: remove the units and filters pruning left dead, exactly, on the file.

A unit whose whole incoming kernel slice is near zero outputs the constant act(bias): that constant
is pushed through the per-channel layers between it and its consumers and folded into the
consumers' biases, then the unit and its input rows are removed. A unit that every consumer ignores
(zero outgoing rows) is removed without folding. Passes repeat until nothing changes, because one
removal can leave another unit dead or unused. Layer tables and graph walks live in `graph.py`;
anything the tables do not cover is skipped with its reason. No TensorFlow import.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sparseprune.errors import InputError
from sparseprune.formats import archive as zipped
from sparseprune.formats import open_model
from sparseprune.formats.atomic import atomic_path, check_output_path
from sparseprune.formats.convert import subpath, write_h5, write_keras
from sparseprune.formats.model import FORMAT_H5, FORMAT_KERAS
from sparseprune.formats.reader import ModelFile
from sparseprune.graph import (
    AFFINE,
    ELEMENTWISE,
    MERGES,
    PRODUCERS,
    Graph,
    Group,
    Node,
    activation_fn,
    build_graph,
    build_groups,
    channel_slots,
)
from sparseprune.layer_slots import mac_count
from sparseprune.registry import MODEL_CLASSES
from sparseprune.shapes import conv_output, input_shapes, resize_config
from sparseprune.stats import DEFAULT_THRESHOLD

MAX_PASSES = 16
CORE_MEMBERS = {zipped.CONFIG_MEMBER, zipped.METADATA_MEMBER, zipped.WEIGHTS_MEMBER}
SUFFIXES = {FORMAT_KERAS: (".keras",), FORMAT_H5: (".h5", ".hdf5")}
Arrays = dict[str, dict[str, np.ndarray]]  # layer -> role -> values (float64 while working)


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
class ShrinkResult:
    """Everything `shrink` reports; figures are from the arrays written and re-read."""

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
    source: str,
    target: Path,
    threshold: float = DEFAULT_THRESHOLD,
    force: bool = False,
    label: str | None = None,
) -> ShrinkResult:
    """Plan and apply the shrink, write `target` in the input's format, re-read and check it."""
    label = label or source
    check_output_path(target, force, (Path(source),))
    with open_model(source, label) as model:
        _check_supported(model, target)
        graph = build_graph(model.config or {})
        arrays = _load_arrays(model)
        report = _new_report(graph, arrays)
        groups = build_groups(graph)
        before = _channel_counts(groups, arrays)
        passes = _run_passes(groups, arrays, report, threshold)
        after = _channel_counts(groups, arrays)
        changes = {name: (before[name], after[name]) for name in before}
        config = resize_config(model.config or {}, graph, changes)
        _finish_report(graph, arrays, report)
        with atomic_path(target, force=force, inputs=(source,)) as scratch:
            _write(model, config, arrays, scratch)
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
    result.failures = _check_written(target, arrays, graph)
    return result


def _unit_counts(graph: Graph, arrays: Arrays) -> dict[str, int]:
    return {n: arrays[n]["kernel"].shape[-1] for n in graph.nodes if "kernel" in arrays.get(n, {})}


def _check_supported(model: ModelFile, target: Path) -> None:
    if model.format not in SUFFIXES or model.config is None:
        raise InputError(f"{model.path} holds weights only; shrinking needs the architecture.")
    if not target.name.lower().endswith(SUFFIXES[model.format]):
        raise InputError(
            f"shrink writes the input's format ({model.format}); give -o a "
            f"{SUFFIXES[model.format][0]} path."
        )
    if not (model.writer or "").startswith("3."):
        raise InputError(
            f"{model.path} was written by Keras {model.writer or '(unknown)'}; shrink rewrites "
            "files written by Keras 3 only."
        )
    extra = sorted(set(model.archive.namelist()) - CORE_MEMBERS) if model.archive else []
    if extra:
        raise InputError(
            f"{model.path} holds '{extra[0]}' besides config and weights (assets); shrink "
            "writes config and weights only, so it refuses rather than drop it."
        )
    nested = sorted({t.layer for t in model.model_tensors if subpath(t) is None})
    if nested:
        raise InputError(
            f"layer '{nested[0]}' keeps weights in sub-objects (attention); shrink cannot lay "
            "those out yet."
        )


def _load_arrays(model: ModelFile) -> Arrays:
    arrays: Arrays = {}
    for tensor in model.model_tensors:
        arrays.setdefault(tensor.layer, {})[tensor.role] = model.read(tensor).astype(np.float64)
    return arrays


def _new_report(graph: Graph, arrays: Arrays) -> dict[str, LayerShrink]:
    """One entry per layer with weights (and per nested model), in graph order."""
    report: dict[str, LayerShrink] = {}
    shapes = input_shapes(graph)
    for name, node in graph.nodes.items():
        nested = node.class_name in MODEL_CLASSES
        if name not in arrays and not nested:
            continue
        entry = LayerShrink(name, node.class_name)
        entry.params_before = _params(name, arrays)
        entry.macs_before = _macs(node, arrays, shapes.get(name))
        if node.class_name in PRODUCERS and "kernel" in arrays[name]:
            entry.units_before = arrays[name]["kernel"].shape[-1]
        if nested:
            entry.skipped["nested model: its layers are not shrunk"] = 0
        report[name] = entry
    return report


def _params(name: str, arrays: Arrays) -> int:
    """Values held by a layer (or by every layer of a nested model)."""
    return sum(
        a.size
        for layer, weights in arrays.items()
        if layer == name or layer.startswith(f"{name}/")
        for a in weights.values()
    )


def _run_passes(
    groups: list[Group], arrays: Arrays, report: dict[str, LayerShrink], threshold: float
) -> int:
    """Remove what is removable, again and again, until a pass removes nothing."""
    for number in range(1, MAX_PASSES + 1):
        if not sum(_shrink_group(g, arrays, report, threshold, number == 1) for g in groups):
            return number
    return MAX_PASSES


def _channel_counts(groups: list[Group], arrays: Arrays) -> dict[str, int]:
    """Channels of every tensor of every group that can change (for the config's shapes)."""
    counts: dict[str, int] = {}
    for group in groups:
        units = {m.name: arrays.get(m.name, {}).get("kernel", np.empty(0)).shape[-1] for m in
                 group.members}  # fmt: skip
        slots, _, problem = channel_slots(group, units)
        if group.reason is None and problem is None:
            counts.update({name: len(ids) for name, ids in slots.items()})
    return counts


def _shrink_group(
    group: Group, arrays: Arrays, report: dict[str, LayerShrink], threshold: float, first: bool
) -> int:
    """Remove the group's channels that are constant or unread everywhere; note why others stay."""
    layers = [*group.members, *(consumer for consumer, _ in group.uses)]
    if any("kernel" not in arrays.get(layer.name, {}) for layer in layers):
        return 0  # variables saved in a layout the registry does not name
    dead = {}
    for member in group.members:
        kernel = arrays[member.name]["kernel"]
        dead[member.name] = (np.abs(kernel) <= threshold).reshape(-1, kernel.shape[-1]).all(0)
    slots, flat, problem = channel_slots(group, {n: len(m) for n, m in dead.items()})
    reason = group.reason or problem or _group_problem(group, slots, arrays)
    if reason:
        _note(report, dead, slots, set(), reason, first, everything=True)
        return 0
    values = _constants(group, arrays, dead)
    varies: set[int] = set()
    unabsorbed: set[int] = set()
    plans = []
    for consumer, source in dict.fromkeys(group.uses):
        kernel = arrays[consumer.name]["kernel"]
        rows = _rows(kernel, len(slots[source]), flat[source])
        if rows is None:
            reason = f"'{consumer.name}' input size is not a multiple of the channels"
            _note(report, dead, slots, set(), reason, first, everything=True)
            return 0
        read = ~np.array([(np.abs(kernel[..., r, :]) <= threshold).all() for r in rows])
        constant = np.isfinite(values[source])
        varies.update(slots[source][read & ~constant].tolist())
        foldable = _foldable(consumer, values[source], arrays)
        unabsorbed.update(slots[source][read & constant & ~foldable].tolist())
        plans.append((consumer, source, rows))
    _note(report, dead, slots, varies, "a coupled layer's channel is not constant", first)
    reason = "a 'same'-padded or bias-free consumer cannot absorb it"
    _note(report, dead, slots, unabsorbed - varies, reason, first)
    keep = varies | unabsorbed
    for member in group.members:
        if not keep & set(slots[member.name].tolist()):
            keep.add(int(slots[member.name][0]))
            _note(report, dead, {member.name: slots[member.name][:1]}, keep, _LAST_UNIT, first)
    remove = {name: ~np.isin(ids, list(keep)) for name, ids in slots.items()}
    removed = sum(int(remove[m.name].sum()) for m in group.members)
    if removed:
        _apply(group, plans, values, arrays, remove)
        for name, mask in dead.items():
            report[name].dead += int((mask & remove[name]).sum())
            report[name].unused += int((~mask & remove[name]).sum())
    return removed


_LAST_UNIT = "a layer keeps at least one unit"


def _group_problem(group: Group, slots: dict[str, np.ndarray], arrays: Arrays) -> str | None:
    """What the graph walk cannot see: activations and per-channel weight sizes."""
    for member in group.members:
        act = activation_fn(member)
        if isinstance(act, str):
            return act
    for node in group.inner:
        weights = arrays.get(node.name, {}).values() if node.class_name in AFFINE else ()
        if any(v.shape != slots[node.name].shape for v in weights):
            return f"the per-channel weights of '{node.name}' do not match the channels"
    return None


def _note(
    report: dict[str, LayerShrink],
    dead: dict[str, np.ndarray],
    slots: dict[str, np.ndarray],
    kept: set[int],
    reason: str,
    first: bool,
    everything: bool = False,
) -> None:
    """Record, in the first pass, how many dead units each member keeps for `reason`."""
    for name in slots.keys() & dead.keys() if first else ():
        held = dead[name][: len(slots[name])] & (everything | np.isin(slots[name], list(kept)))
        if held.any():
            report[name].skipped[reason] = report[name].skipped.get(reason, 0) + int(held.sum())


def _constants(group: Group, arrays: Arrays, dead: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each group tensor's per-channel constant value (NaN where the channel varies)."""
    values: dict[str, np.ndarray] = {}
    for member in group.members:
        act = activation_fn(member)
        assert callable(act), "_group_problem refuses unknown activations"
        bias = arrays[member.name].get("bias", np.zeros(len(dead[member.name])))
        values[member.name] = _elementwise(act, np.where(dead[member.name], bias, np.nan))
    for node in group.inner:
        inputs = [values[name] for name in node.inputs]
        if node.class_name in MERGES:
            values[node.name] = MERGES[node.class_name](inputs)
        elif node.class_name in AFFINE:
            values[node.name] = _batchnorm(node, arrays[node.name], inputs[0])
        elif node.class_name in ELEMENTWISE:
            values[node.name] = _elementwise(activation_fn(node), inputs[0])
        else:
            values[node.name] = inputs[0]
    return values


def _elementwise(fn, values: np.ndarray) -> np.ndarray:
    return np.array([fn(float(v)) if np.isfinite(v) else np.nan for v in values])


def _rows(kernel: np.ndarray, units: int, flattened: bool) -> list[np.ndarray] | None:
    """For each unit, its row indices in the consumer's kernel (many after a Flatten)."""
    size = kernel.shape[-2]
    if not flattened:
        return [np.array([j]) for j in range(units)] if size == units else None
    if size % units:
        return None
    positions = np.arange(size // units) * units
    return [positions + j for j in range(units)]


def _batchnorm(node: Node, weights: dict[str, np.ndarray], values: np.ndarray) -> np.ndarray:
    epsilon = float(node.config.get("epsilon", 1e-3))
    variance = weights["moving_variance"] + epsilon
    scale = weights.get("gamma", np.ones_like(values)) / np.sqrt(variance)
    return (values - weights["moving_mean"]) * scale + weights.get("beta", 0.0)


def _foldable(consumer: Node, values: np.ndarray, arrays: Arrays) -> np.ndarray:
    """Where adding value x row weights to the consumer's bias is exact ('same' padding is not:
    the border sees zeros instead of the constant)."""
    exact = consumer.class_name == "Dense" or consumer.config.get("padding") == "valid"
    return (values == 0) | (exact and "bias" in arrays[consumer.name])


def _apply(
    group: Group, plans: list, values: dict[str, np.ndarray], arrays: Arrays, remove: dict
) -> None:
    """Fold constants into consumer biases, then delete the channels from every tensor."""
    for consumer, source, rows in plans:
        weights = arrays[consumer.name]
        kernel = weights["kernel"]
        value, gone = values[source], remove[source]
        for j in np.flatnonzero(gone & np.isfinite(value) & (value != 0)):
            if "bias" in weights:
                block = kernel[..., rows[j], :].reshape(-1, kernel.shape[-1]).sum(axis=0)
                weights["bias"] = weights["bias"] + value[j] * block
        drop = np.concatenate([rows[j] for j in np.flatnonzero(gone)] or [np.array([], int)])
        weights["kernel"] = np.delete(kernel, drop, axis=-2)
    for node in group.inner:
        if node.class_name in AFFINE:
            for role, vector in arrays[node.name].items():
                arrays[node.name][role] = vector[~remove[node.name]]
    for member in group.members:
        for role, vector in arrays[member.name].items():
            arrays[member.name][role] = vector[..., ~remove[member.name]]


def _macs(node: Node, arrays: Arrays, shape: list | None) -> int | None:
    """Multiply-accumulates per sample: output positions x kernel size (Dense and convolutions)."""
    kernel = arrays.get(node.name, {}).get("kernel")
    if node.class_name not in PRODUCERS or kernel is None or shape is None or None in shape[1:]:
        return None
    if node.class_name == "Dense":
        positions = math.prod(shape[1:-1])
    else:
        positions = math.prod(conv_output(node.config, shape[1:-1], kernel.shape[:-2]))
    sizes = {role: values.size for role, values in arrays[node.name].items()}
    return mac_count(node.class_name, sizes, positions)


def _finish_report(graph: Graph, arrays: Arrays, report: dict[str, LayerShrink]) -> None:
    shapes = input_shapes(graph)  # shapes as built: MACs count the same positions before/after
    for name, entry in report.items():
        node = graph.nodes[name]
        entry.params_after = _params(name, arrays)
        entry.macs_after = _macs(node, arrays, shapes.get(name))
        if entry.units_before is not None:
            entry.units_after = arrays[name]["kernel"].shape[-1]


def _write(model: ModelFile, config: dict, arrays: Arrays, target: Path) -> None:
    """Reuse the converter's writers: it lays out weights from scratch, shapes from the values."""
    edited = dataclasses.replace(model, config=config)

    def values(tensor) -> np.ndarray:
        return arrays[tensor.layer][tensor.role].astype(np.dtype(tensor.dtype))

    if model.format == FORMAT_KERAS:
        write_keras(edited, target, values)
    else:
        write_h5(edited, target, values)


def _check_written(target: Path, arrays: Arrays, graph: Graph) -> list[str]:
    """Re-read the output: every tensor has the planned shape, every unit count matches."""
    failures = []
    with open_model(target) as written:
        for tensor in written.model_tensors:
            want = arrays.get(tensor.layer, {}).get(tensor.role)
            if want is None or tuple(want.shape) != tensor.shape:
                failures.append(f"{tensor.name}: written shape {tensor.shape} is not planned")
        layers = {info.name: info for info in written.layers}
        for name, units in _unit_counts(graph, arrays).items():
            key = PRODUCERS.get(graph.nodes[name].class_name)
            got = layers[name].config.get(key) if key else units
            if got != units:
                failures.append(f"{name}: the written config says {got} units, not {units}")
    return failures
