"""Carry a group's per-channel constants through its per-channel layers (NaN = "varies").

A dead unit outputs the constant act(bias); `channel_constants` pushes it through activations,
BatchNormalization, rescaling, padding, depthwise convolutions, LayerScale and LayerNormalization
and merges, one layer at a time (`_step`), and says where a layer turned a constant channel into
a varying one. shrink/groups.py then folds what still arrives constant into the consumers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sparseprune.shrink.graph import Group, Node
from sparseprune.shrink.layer_rules import activation_fn
from sparseprune.shrink.shapes import pads

if TYPE_CHECKING:
    from sparseprune.shrink.groups import Context


def channel_constants(
    group: Group, ctx: Context, dead: dict[str, np.ndarray], slots: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[int, str]]:
    """Each group tensor's per-channel constant value (NaN where the channel varies), and the
    slots that a padding layer turned from constant into varying, with that reason."""
    values: dict[str, np.ndarray] = {}
    lost: dict[int, str] = {}
    for member in group.members:
        act = activation_fn(member)
        assert callable(act), "groups._group_problem refuses unknown activations"
        bias = ctx.arrays[member.name].get("bias", np.zeros(len(dead[member.name])))
        values[member.name] = _elementwise(act, np.where(dead[member.name], bias, np.nan))
    for node in group.inner:
        inputs = [values[name] for name in node.inputs]
        out = _step(node, inputs, ctx)
        why = _LOST.get(node.facts.constant)
        if why is not None:
            turned = np.isfinite(inputs[0]) & ~np.isfinite(out)
            for slot in slots[node.name][turned].tolist():
                lost.setdefault(slot, why.format(name=node.name, axis=_axis_text(node)))
        values[node.name] = out
    return values, lost


# Why a layer turns a constant channel into a varying one (see `_step`).
_LOST = {
    "padding": "'{name}' pads with zeros: a nonzero constant varies",
    "depthwise": "'{name}' pads with zeros: a nonzero constant varies",
    "layernorm": (
        "'{name}' normalizes over axis {axis}: a constant channel comes out as its beta, "
        "which is not the same along that axis"
    ),
}


def _axis_text(node: Node) -> str:
    axis = node.config.get("axis")
    return str(axis[0] if isinstance(axis, list) and len(axis) == 1 else axis)


def _step(node: Node, inputs: list[np.ndarray], ctx: Context) -> np.ndarray:
    """One layer's per-channel constants out from its inputs' constants."""
    row, weights = node.facts, ctx.arrays.get(node.name, {})
    if row.kind == "merge":
        return _MERGE[node.class_name](np.array(inputs))
    if row.kind == "concat":
        return np.concatenate(inputs)
    x = inputs[0]
    if row.constant == "activation":
        return _elementwise(activation_fn(node), x)
    if row.constant == "batchnorm":
        return _batchnorm(node, weights, x)
    if row.constant == "rescale":
        return x * float(node.config.get("scale", 1.0)) + float(node.config.get("offset", 0.0))
    if row.constant == "padding":
        return np.where(x == 0, x, np.nan)
    if row.constant == "depthwise":
        return _elementwise(activation_fn(node), _depthwise(node, weights, x, ctx))
    if row.constant == "scale":
        return x * weights["gamma"]
    if row.constant == "layernorm":
        return _layernorm(weights, x)
    return x


def _multiply(xs: np.ndarray) -> np.ndarray:
    """A product is constant where any factor is exactly zero, whatever the others do."""
    return np.where((xs == 0).any(axis=0), 0.0, np.prod(xs, axis=0))


_MERGE = {
    "Add": lambda xs: np.sum(xs, axis=0),
    "Subtract": lambda xs: xs[0] - xs[1],
    "Multiply": _multiply,
    "Average": lambda xs: np.mean(xs, axis=0),
    "Maximum": lambda xs: np.max(xs, axis=0),
    "Minimum": lambda xs: np.min(xs, axis=0),
}


def _elementwise(fn, values: np.ndarray) -> np.ndarray:
    return np.array([fn(float(v)) if np.isfinite(v) else np.nan for v in values])


def _batchnorm(node: Node, weights: dict[str, np.ndarray], values: np.ndarray) -> np.ndarray:
    epsilon = float(node.config.get("epsilon", 1e-3))
    variance = weights["moving_variance"] + epsilon
    scale = weights.get("gamma", np.ones_like(values)) / np.sqrt(variance)
    return (values - weights["moving_mean"]) * scale + weights.get("beta", 0.0)


def _layernorm(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """LayerNormalization over other axes than the channels (`layer_rules._layernorm_problem`): a
    constant channel has mean c and variance 0 there, so it comes out as beta, which is one
    constant only when beta is the same at every position (absent: 0)."""
    beta = weights.get("beta")
    if beta is None or (beta == beta.flat[0]).all():
        return np.where(np.isfinite(x), 0.0 if beta is None else float(beta.flat[0]), np.nan)
    return np.full_like(x, np.nan)


def depthwise_kernel(weights: dict[str, np.ndarray]) -> np.ndarray:
    """Keras 3 saves it as 'kernel', tf_keras as 'depthwise_kernel': (..., C, multiplier)."""
    return weights["kernel"] if "kernel" in weights else weights["depthwise_kernel"]


def _depthwise(node: Node, weights: dict, x: np.ndarray, ctx: Context) -> np.ndarray:
    """A constant c in channel j gives c * sum(kernel_j) + bias_j where the window never pads;
    with padding only c = 0 stays constant (bias_j). A zero kernel slice outputs bias_j."""
    kernel = np.moveaxis(depthwise_kernel(weights), node.facts.channel_axis, -1)
    flat = kernel.reshape(-1, kernel.shape[-1])  # (window positions, channels): multiplier 1
    bias = weights.get("bias", np.zeros(flat.shape[-1]))
    zero_kernel = (np.abs(flat) <= ctx.threshold).all(axis=0)
    padded = pads(node, ctx.shape_in(node.name)) is not False
    out = x * flat.sum(axis=0) + bias
    if padded:
        out = np.where(x == 0, bias, np.nan)
    return np.where(zero_kernel, bias, out)
