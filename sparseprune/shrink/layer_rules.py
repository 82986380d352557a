"""Whether one layer on a channel group's path can be rewritten, and its elementwise activation.

shrink/graph.py stops a group at the first layer `layer_problem` refuses (shared, channels_first,
grouped, normalizing over the channels, a non-elementwise activation, ...), with that reason;
`activation_fn` is the function shrink/constants.py carries a dead unit's act(bias) through.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from sparseprune.layers.channels import ACTIVATIONS

if TYPE_CHECKING:
    from sparseprune.shrink.graph import Node


def activation_fn(node: Node) -> Callable[[float], float] | str:
    """The elementwise function a layer applies after its weights, or why it is not one."""
    config = node.config
    if node.class_name == "ReLU":
        top = config.get("max_value")
        return _relu(
            math.inf if top is None else float(top),
            float(config.get("negative_slope") or 0.0),
            float(config.get("threshold") or 0.0),
        )
    if node.class_name == "LeakyReLU":
        slope = float(config.get("negative_slope", config.get("alpha", 0.3)))
        return lambda x: x if x >= 0 else slope * x
    if node.class_name == "ELU":
        alpha = float(config.get("alpha", 1.0))
        return lambda x: x if x > 0 else alpha * math.expm1(x)
    name = config.get("activation", "linear")
    name = "linear" if name is None else name
    if isinstance(name, str) and name in ACTIVATIONS:
        return ACTIVATIONS[name]
    return f"activation {name!r} of '{node.name}' is not elementwise or not known"


def _relu(top: float, slope: float, cut: float) -> Callable[[float], float]:
    """Keras's ReLU layer: min(x, max_value) above the threshold, a slope below it."""
    return lambda x: min(x, top) if x >= cut else slope * (x - cut)


def _is_channel_axis(axis: object, rank: int | None) -> bool:
    """Whether a config `axis` (int, or a one-item list) is the last axis of a rank-`rank`
    input: -1 always; a positive axis needs the rank (legacy .h5 configs record no shapes, so
    the rank comes from the shapes propagated through the graph)."""
    if isinstance(axis, list) and len(axis) == 1:
        axis = axis[0]
    if axis == -1:
        return True
    return isinstance(axis, int) and rank is not None and axis in (rank - 1, -1)


def layer_problem(node: Node) -> str | None:
    """Why a layer on a group's path cannot be rewritten, or None."""
    config, row = node.config, node.facts
    if node.calls > 1:
        return f"'{node.name}' is shared (called {node.calls} times)"
    if config.get("data_format", "channels_last") != "channels_last":
        return f"'{node.name}' is channels_first"
    if node.groups != 1 and not node.depthwise_groups:
        return _grouped_problem(node)
    if int(config.get("depth_multiplier", 1) or 1) != 1:
        return f"'{node.name}' has depth_multiplier {config.get('depth_multiplier')}, not 1"
    if row.constant == "layernorm":
        return _layernorm_problem(node)
    if node.class_name in ("BatchNormalization", "Concatenate"):
        axis = config.get("axis", -1)
        if not _is_channel_axis(axis, node.rank):
            return f"'{node.name}' works on axis {axis} of a rank-{node.rank} tensor, not channels"
    if row.kind == "pass" and row.constant in ("activation", "depthwise"):
        fn = activation_fn(node)
        return fn if isinstance(fn, str) else None
    if row.kind == "pass" and row.constant == "rescale":
        scalar = all(isinstance(config.get(k, 0.0), (int, float)) for k in ("scale", "offset"))
        return None if scalar else f"'{node.name}' rescales per channel"
    return None


def _grouped_problem(node: Node) -> str:
    """Why a grouped convolution cannot lose a channel (only the depthwise kind can)."""
    groups, filters, channels = node.groups, node.config.get("filters"), node.channels
    where = f"'{node.name}' is a grouped convolution (groups={groups})"
    if channels is None:
        return f"{where} whose input channel count is unknown"
    if channels != groups:
        return (
            f"{where} with {channels // groups} input channels per group: removing one "
            "would leave its groups unequal"
        )
    per = filters // groups if isinstance(filters, int) else "several"
    return f"{where} with {filters} filters: each channel feeds {per} of them"


def _layernorm_problem(node: Node) -> str | None:
    """LayerNormalization over the channel axis mixes all channels (mean and variance), so no
    channel can go; over other axes each channel is normalized alone and passes through."""
    axis = node.config.get("axis", -1)
    axes = axis if isinstance(axis, list) else [axis]
    if node.rank is None and any(a != -1 for a in axes):
        return f"'{node.name}' normalizes over axis {axis} of a tensor of unknown rank"
    if any(_is_channel_axis(a, node.rank) for a in axes):
        return (
            f"'{node.name}' (LayerNormalization) normalizes over the channels: a removed "
            "channel's constant still enters the mean and variance that scale every other "
            "channel, so removing it cannot be exact"
        )
    if node.config.get("rms_scaling"):
        return f"'{node.name}' scales by the root mean square (rms_scaling)"
    return None
