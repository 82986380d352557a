"""Shrink one channel group: find its dead and unused channels, fold constants, delete them.

A dead unit (whole incoming kernel slice near zero) outputs the constant act(bias). That constant
is pushed through the group's per-channel layers (shrink/constants.py; NaN = "varies") and, where it
reaches a consumer as a constant, folded into what the consumer adds per output unit: its bias,
or the moving mean of a BatchNormalization that alone reads a bias-free consumer. Folding is exact
only where the consumer sees the constant at every position: a window that pads its input reads
zeros at the border, so there only channels whose constant is exactly 0 go. Everything kept
carries its reason in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from sparseprune.shrink.constants import channel_constants
from sparseprune.shrink.graph import Graph, Group, Node, channel_slots
from sparseprune.shrink.layer_rules import activation_fn, layer_problem
from sparseprune.shrink.shapes import pads

if TYPE_CHECKING:
    from sparseprune.shrink.shrinking import LayerShrink

Arrays = dict[str, dict[str, np.ndarray]]  # layer -> role -> values (float64 while working)
VARIES = "a coupled layer's channel is not constant"
LAST_UNIT = "a layer keeps at least one unit"


@dataclass
class Context:
    """What every group needs: the graph, the arrays being edited, shapes, the threshold."""

    graph: Graph
    arrays: Arrays
    shapes: dict[str, list]
    threshold: float
    report: dict[str, LayerShrink]
    first: bool = True
    touched: set[str] = field(default_factory=set)

    def shape_in(self, name: str) -> list | None:
        shapes = self.shapes.get(name) or [None]
        return shapes[0]

    def input_channels(self) -> dict[str, int | None]:
        return {n: (s[0][-1] if s and s[0] else None) for n, s in self.shapes.items()}


def unit_role(node: Node) -> str:
    return node.facts.kernel


def units_of(node: Node, arrays: Arrays) -> int | None:
    kernel = arrays.get(node.name, {}).get(unit_role(node))
    return None if kernel is None else kernel.shape[node.facts.out_axis]


def shrink_group(group: Group, ctx: Context) -> int:
    """Remove the group's channels that are constant or unread everywhere; note why others stay."""
    arrays = ctx.arrays
    missing = _missing_weights(group, arrays)
    dead = {m.name: _dead(m, arrays, ctx.threshold) for m in group.members if not missing}
    units = {m.name: units_of(m, arrays) or 0 for m in group.members}
    slots, flat, problem = channel_slots(group, units, ctx.input_channels())
    reason = group.reason or missing or problem or _group_problem(group, slots, arrays)
    if reason:
        _note(ctx, dead, slots, None, reason)
        return 0
    values, lost = channel_constants(group, ctx, dead, slots)
    kept: dict[int, str] = {}
    plans = []
    for consumer, source in dict.fromkeys(group.uses):
        plan = _consumer_plan(consumer, source, slots[source], flat[source], values[source], ctx)
        if isinstance(plan, str):
            _note(ctx, dead, slots, None, plan)
            return 0
        for slot, why in plan.keeps(slots[source], lost).items():
            kept.setdefault(slot, why)
        plans.append(plan)
    for member in group.members:
        ids = slots[member.name].tolist()
        if ids and not any(i in kept for i in ids):
            kept[ids[0]] = LAST_UNIT
    for reason_text in dict.fromkeys(kept.values()):
        _note(ctx, dead, slots, {s for s, r in kept.items() if r == reason_text}, reason_text)
    remove = {name: ~np.isin(ids, list(kept)) for name, ids in slots.items()}
    removed = sum(int(remove[m.name].sum()) for m in group.members)
    if removed:
        _apply(group, plans, values, remove, ctx)
        for name, mask in dead.items():
            ctx.report[name].dead += int((mask & remove[name]).sum())
            ctx.report[name].unused += int((~mask & remove[name]).sum())
    return removed


def _missing_weights(group: Group, arrays: Arrays) -> str | None:
    for layer in [*group.members, *(consumer for consumer, _ in group.uses)]:
        if unit_role(layer) not in arrays.get(layer.name, {}):
            return f"'{layer.name}' saves no '{unit_role(layer)}' variable where shrink looks"
    return None


def _dead(member: Node, arrays: Arrays, threshold: float) -> np.ndarray:
    kernel = np.moveaxis(arrays[member.name][unit_role(member)], member.facts.out_axis, -1)
    return np.asarray((np.abs(kernel) <= threshold).reshape(-1, kernel.shape[-1]).all(0))


def _group_problem(group: Group, slots: dict[str, np.ndarray], arrays: Arrays) -> str | None:
    """What the graph walk cannot see: activations and per-channel weight sizes."""
    for member in group.members:
        act = activation_fn(member)
        if isinstance(act, str):
            return act
    for node in group.inner:
        for role, value in arrays.get(node.name, {}).items():
            axis = _channel_axis(node, value)
            if node.facts.channel_roles and value.shape[axis] != len(slots[node.name]):
                return f"the per-channel weight '{role}' of '{node.name}' does not match"
    return None


def _channel_axis(node: Node, value: np.ndarray) -> int:
    """Per-channel weights: vectors along their only axis, kernels where the row says
    (depthwise (..., C, multiplier), grouped depthwise (..., 1, C))."""
    return -1 if value.ndim == 1 else node.facts.channel_axis


def _note(
    ctx: Context,
    dead: dict[str, np.ndarray],
    slots: dict[str, np.ndarray],
    kept: set[int] | None,
    reason: str,
) -> None:
    """Record, in the first pass, how many dead units each member keeps for `reason` (every
    dead unit when `kept` is None)."""
    for name in slots.keys() & dead.keys() if ctx.first else ():
        held = dead[name] & (True if kept is None else np.isin(slots[name], list(kept)))
        if held.any():
            skipped = ctx.report[name].skipped
            skipped[reason] = skipped.get(reason, 0) + int(held.sum())


@dataclass
class ConsumerPlan:
    """How one consumer reads the group tensor `source`: per-channel rows, which channels it
    really reads, where a constant can be folded, and the reason where it cannot."""

    consumer: Node
    source: str
    rows: list[np.ndarray]
    read: np.ndarray
    constant: np.ndarray
    foldable: np.ndarray
    why_not: str

    def keeps(self, ids: np.ndarray, lost: dict[int, str]) -> dict[int, str]:
        """Slots this consumer needs kept, each with the reason."""
        keep: dict[int, str] = {}
        for slot in ids[self.read & ~self.constant].tolist():
            keep[slot] = lost.get(slot, VARIES)
        for slot in ids[self.read & self.constant & ~self.foldable].tolist():
            keep.setdefault(slot, self.why_not)
        return keep


def _consumer_plan(
    consumer: Node, source: str, ids: np.ndarray, flat: bool, value: np.ndarray, ctx: Context
) -> ConsumerPlan | str:
    weights = ctx.arrays[consumer.name]
    handler = consumer.facts.handler
    axis = consumer.facts.in_axis
    kernel = weights[consumer.facts.kernel]
    rows = _rows(kernel.shape[axis], len(ids), flat, _multiplier(consumer, weights))
    if rows is None:
        return f"'{consumer.name}' input size is not a multiple of the channels"
    read = np.array([_reads(consumer, weights, r, j, ctx.threshold) for j, r in enumerate(rows)])
    constant = np.isfinite(value)
    foldable, why_not = _foldable(consumer, handler, value, ctx)
    return ConsumerPlan(consumer, source, rows, read, constant, foldable, why_not)


def _multiplier(consumer: Node, weights: dict) -> int:
    if consumer.facts.handler != "separable":
        return 1
    return int(weights["depthwise_kernel"].shape[-1])


def _rows(size: int, units: int, flattened: bool, multiplier: int) -> list[np.ndarray] | None:
    """For each channel, its indices on the consumer's input axis (many after a Flatten, or one
    per depth multiplier for a separable convolution's pointwise kernel)."""
    if multiplier > 1:
        if size != units * multiplier:
            return None
        return [np.arange(j * multiplier, (j + 1) * multiplier) for j in range(units)]
    if not flattened:
        return [np.array([j]) for j in range(units)] if size == units else None
    if size % units:
        return None
    positions = np.arange(size // units) * units
    return [positions + j for j in range(units)]


def _reads(consumer: Node, weights: dict, rows: np.ndarray, j: int, threshold: float) -> bool:
    """Whether the consumer's weights for this channel are not all near zero."""
    kernel = weights[consumer.facts.kernel]
    part = np.take(kernel, rows, axis=consumer.facts.in_axis)
    if not (np.abs(part) > threshold).any():
        return False
    if consumer.facts.handler == "separable":
        return bool((np.abs(weights["depthwise_kernel"][..., j, :]) > threshold).any())
    return True


def _foldable(
    consumer: Node, handler: str, value: np.ndarray, ctx: Context
) -> tuple[np.ndarray, str]:
    """Where adding the constant's contribution to a per-output term is exact (zeros always)."""
    zero = value == 0
    if handler == "transpose":
        return zero, f"'{consumer.name}' (transposed) adds a constant unevenly over positions"
    padded = handler != "recurrent" and pads(consumer, ctx.shape_in(consumer.name)) is not False
    if padded:
        return zero, f"'{consumer.name}' pads its input: a nonzero constant varies at the border"
    if bias_sink(consumer, ctx) is None:
        return (
            zero,
            f"'{consumer.name}' has no bias (nor a BatchNormalization after it) to absorb it",
        )
    return np.ones_like(zero), ""


def bias_sink(consumer: Node, ctx: Context) -> tuple[str, str, float] | None:
    """Where a per-output-unit constant can be added: (layer, role, sign). The consumer's own
    bias; or, without one, the moving mean of a BatchNormalization that alone reads it
    (BN(x + d) with mean m is BN(x) with mean m - d)."""
    if "bias" in ctx.arrays[consumer.name]:
        return consumer.name, "bias", 1.0
    readers = ctx.graph.consumers.get(consumer.name, [])
    if len(readers) != 1 or consumer.name in ctx.graph.outputs:
        return None
    after = ctx.graph.nodes[readers[0]]
    normal = after.class_name == "BatchNormalization" and layer_problem(after) is None
    if normal and "moving_mean" in ctx.arrays.get(after.name, {}):
        return after.name, "moving_mean", -1.0
    return None


def _contribution(plan: ConsumerPlan, j: int | np.integer, weights: dict) -> np.ndarray:
    """What channel j at a constant 1 adds to each output unit of the consumer."""
    consumer = plan.consumer
    kernel = weights[consumer.facts.kernel]
    part = np.take(kernel, plan.rows[j], axis=consumer.facts.in_axis)
    if consumer.facts.handler == "separable":
        depth = weights["depthwise_kernel"][..., j, :].reshape(-1, part.shape[-2]).sum(axis=0)
        return np.einsum("m,mo->o", depth, part.reshape(-1, part.shape[-2], part.shape[-1])[0])
    return part.reshape(-1, kernel.shape[-1]).sum(axis=0)


def _apply(
    group: Group, plans: list[ConsumerPlan], values: dict, remove: dict, ctx: Context
) -> None:
    """Fold constants into consumers, then delete the channels from every tensor."""
    arrays = ctx.arrays
    for plan in plans:
        weights = arrays[plan.consumer.name]
        value, gone = values[plan.source], remove[plan.source]
        sink = bias_sink(plan.consumer, ctx)
        for j in np.flatnonzero(gone & np.isfinite(value) & (value != 0) & plan.read):
            assert sink is not None, "_foldable keeps constants without a sink"
            layer, role, sign = sink
            target = arrays[layer][role]
            delta = value[j] * _contribution(plan, j, weights)
            if target.ndim == 2:  # GRU with reset_after: input bias is row 0
                target[0] += sign * delta
            else:
                arrays[layer][role] = target + sign * delta
            ctx.touched.add(layer)
        _delete_rows(plan, gone, weights)
        ctx.touched.add(plan.consumer.name)
    for node in group.inner:
        for role, value in arrays.get(node.name, {}).items() if node.facts.channel_roles else ():
            keep = ~remove[node.name]
            arrays[node.name][role] = np.compress(keep, value, axis=_channel_axis(node, value))
            ctx.touched.add(node.name)
    for member in group.members:
        keep = ~remove[member.name]
        weights = arrays[member.name]
        role = unit_role(member)
        weights[role] = np.compress(keep, weights[role], axis=member.facts.out_axis)
        if "bias" in weights:
            weights["bias"] = weights["bias"][..., keep]
        ctx.touched.add(member.name)


def _delete_rows(plan: ConsumerPlan, gone: np.ndarray, weights: dict) -> None:
    consumer = plan.consumer
    drop = np.concatenate([plan.rows[j] for j in np.flatnonzero(gone)] or [np.array([], int)])
    role = consumer.facts.kernel
    weights[role] = np.delete(weights[role], drop, axis=consumer.facts.in_axis)
    if consumer.facts.handler == "separable":
        weights["depthwise_kernel"] = np.delete(
            weights["depthwise_kernel"], np.flatnonzero(gone), axis=-2
        )
