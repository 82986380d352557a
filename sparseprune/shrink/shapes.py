"""Shapes in a saved model's config: propagate them through the layer graph and resize layers.

Used by `shrink` to resolve axes (legacy .h5 configs record no build config), to tell whether a
'same'-padded window really pads, to count multiply-accumulates before and after, and to write
the config of a model whose layers lost units. Config JSON is read and edited as data only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from typing import TypeGuard

from sparseprune.shrink.graph import Graph, Node, keras_tensors

Shape = list  # [None, d1, ..., channels]

# Classes that keep their input's shape (beyond the per-channel "pass" kinds).
_SAME_SHAPE = frozenset(
    {"LayerNormalization", "GroupNormalization", "UnitNormalization", "Softmax", "Masking",
     "BatchNormalization", "Activation", "ReLU", "LeakyReLU", "ELU", "Rescaling", "Dropout",
     "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
     "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity", "Normalization",
     "LayerScale"}
)  # fmt: skip


def _ints(value: int | Iterable[int] | None, count: int, default: int = 1) -> list[int]:
    if value is None:
        return [default] * count
    return [value] * count if isinstance(value, int) else list(value)


def _window_config(config: dict, count: int) -> tuple[list[int], list[int], list[int]]:
    """Window, strides and dilation of a convolution or pooling config (pooling strides default
    to the window, convolution strides to 1)."""
    pooling = "pool_size" in config
    window = _ints(config.get("kernel_size") or config.get("pool_size"), count)
    strides = config.get("strides")
    strides = window if strides is None and pooling else _ints(strides, count)
    return window, strides, _ints(config.get("dilation_rate"), count)


def conv_output(config: dict, sizes: list[int]) -> list[int]:
    """Spatial output sizes of a convolution or pooling window ('valid', 'same', 'causal')."""
    window, strides, dilation = _window_config(config, len(sizes))
    valid = config.get("padding", "valid") == "valid"
    return [
        (n - d * (k - 1) - 1) // s + 1 if valid else -(-n // s)
        for n, k, s, d in zip(sizes, window, strides, dilation, strict=False)
    ]


def pads(node: Node, shape: Shape | None) -> bool | None:
    """Whether the layer's window reads zeros beyond the input border (None: shape unknown).
    'same' with a 1x1 kernel, or sizes that divide evenly, pads nothing."""
    padding = node.config.get("padding", "valid")
    if padding == "valid":
        return False
    if shape is None or any(d is None for d in shape[1:-1]):
        return None
    sizes = shape[1:-1]
    window, strides, dilation = _window_config(node.config, len(sizes))
    out = conv_output(node.config, sizes)
    shape_rows = zip(out, sizes, window, strides, dilation, strict=False)
    extra = [(o - 1) * s + (k - 1) * d + 1 - n for o, n, k, s, d in shape_rows]
    return padding == "causal" or any(e > 0 for e in extra)


def input_shapes(graph: Graph) -> dict[str, list[Shape | None]]:
    """Each layer's input shapes (one per input tensor), propagated from the model inputs; a
    layer's build config is used where propagation cannot tell. Ranks are stored on the nodes."""
    outputs: dict[str, Shape | None] = {}
    inputs: dict[str, list[Shape | None]] = {}
    for name, node in graph.nodes.items():
        shapes = [outputs.get(source) for source in node.inputs]
        built = (node.entry.get("build_config") or {}).get("input_shape")
        if _is_shape(built) and (not shapes or shapes[0] is None):
            shapes = [list(built)]
        inputs[name] = shapes
        node.rank = len(shapes[0]) if shapes and shapes[0] is not None else _built_rank(built)
        first = shapes[0] if shapes and shapes[0] is not None else None
        node.channels = first[-1] if first and isinstance(first[-1], int) else None
        outputs[name] = _output_shape(node, shapes)
    return inputs


def _built_rank(built: object) -> int | None:
    if _is_shape(built):
        return len(built)
    if isinstance(built, list) and built and _is_shape(built[0]):
        return len(built[0])
    return None


def _is_shape(value: object) -> TypeGuard[list]:
    return isinstance(value, list) and len(value) >= 2 and not isinstance(value[0], list)


def _output_shape(node: Node, shapes: list[Shape | None]) -> Shape | None:
    config, cls = node.config, node.class_name
    if cls == "InputLayer":
        given = config.get("batch_shape") or config.get("batch_input_shape")
        return list(given) if _is_shape(given) else None
    known = [s for s in shapes if s is not None]
    if not known or len(known) < len(shapes) or any(d is None for s in known for d in s[1:]):
        return None
    rule = _RULES.get(cls) or _RULES.get(node.facts.kind)
    if rule is not None:
        return rule(config, known)
    return known[0] if cls in _SAME_SHAPE else None


def _windowed(config: dict, shapes: list[Shape]) -> Shape:
    shape = shapes[0]
    channels = config.get("filters") or shape[-1] * int(config.get("depth_multiplier", 1) or 1)
    return [None, *conv_output(config, shape[1:-1]), channels]


def _transposed(config: dict, shapes: list[Shape]) -> Shape:
    shape = shapes[0]
    window, strides, dilation = _window_config(config, len(shape) - 2)
    sizes = []
    for n, k, s, d in zip(shape[1:-1], window, strides, dilation, strict=False):
        k = k + (k - 1) * (d - 1)
        sizes.append(n * s + max(k - s, 0) if config.get("padding") == "valid" else n * s)
    return [None, *sizes, config.get("filters")]


def _padded(config: dict, shapes: list[Shape], sign: int, key: str) -> Shape:
    shape = shapes[0]
    amounts = config.get(key, 1)
    count = len(shape) - 2
    amounts = [amounts] * count if isinstance(amounts, int) else list(amounts)
    pairs = [[a, a] if isinstance(a, int) else list(a) for a in amounts]
    if count == 1 and len(pairs) == 2 and all(isinstance(a, int) for a in amounts):
        pairs = [list(amounts)]  # ZeroPadding1D/Cropping1D take one (left, right) pair
    return [None, *(n + sign * sum(p) for n, p in zip(shape[1:-1], pairs, strict=False)),
            shape[-1]]  # fmt: skip


def _merged(config: dict, shapes: list[Shape]) -> Shape:
    """Elementwise merges broadcast (Multiply of HxWxC by 1x1xC gives HxWxC)."""
    return [None, *(max(dims) for dims in zip(*(s[1:] for s in shapes), strict=False))]


def _concatenated(config: dict, shapes: list[Shape]) -> Shape:
    axis = config.get("axis", -1)
    axis = axis % len(shapes[0])
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    return out


def _reshaped(config: dict, shapes: list[Shape]) -> Shape | None:
    target = config.get("target_shape")
    if not isinstance(target, list):
        return None
    total = math.prod(shapes[0][1:])
    known = math.prod(d for d in target if d != -1)
    return [None, *(total // known if d == -1 else d for d in target)]


def _global(config: dict, shapes: list[Shape]) -> Shape:
    shape = shapes[0]
    return [None, *([1] * (len(shape) - 2)), shape[-1]] if config.get("keepdims") else [
        None, shape[-1]]  # fmt: skip


def _upsampled(config: dict, shapes: list[Shape]) -> Shape:
    shape = shapes[0]
    factors = _ints(config.get("size"), len(shape) - 2, 2)
    return [None, *(n * f for n, f in zip(shape[1:-1], factors, strict=False)), shape[-1]]


def _recurrent(config: dict, shapes: list[Shape]) -> Shape:
    units = config.get("units")
    return [None, shapes[0][1], units] if config.get("return_sequences") else [None, units]


_RULES: dict[str, Callable[[dict, list[Shape]], Shape | None]] = {
    "Dense": lambda c, s: [*s[0][:-1], c.get("units")],
    "produce": _windowed,
    **{f"Conv{d}D": _windowed for d in (1, 2, 3)},  # also when grouped (a "pass" node)
    "Conv1DTranspose": _transposed,
    "Conv2DTranspose": _transposed,
    "Conv3DTranspose": _transposed,
    "DepthwiseConv1D": _windowed,
    "DepthwiseConv2D": _windowed,
    **{f"{kind}Pooling{d}D": _windowed for kind in ("Max", "Average") for d in (1, 2, 3)},
    **{f"Global{kind}Pooling{d}D": _global for kind in ("Max", "Average") for d in (1, 2, 3)},
    **{f"ZeroPadding{d}D": lambda c, s: _padded(c, s, 1, "padding") for d in (1, 2, 3)},
    **{f"Cropping{d}D": lambda c, s: _padded(c, s, -1, "cropping") for d in (1, 2, 3)},
    **{f"UpSampling{d}D": _upsampled for d in (1, 2, 3)},
    **{cls: _recurrent for cls in ("SimpleRNN", "GRU", "LSTM")},
    "MultiHeadAttention": lambda c, s: s[0] if c.get("output_shape") is None else None,
    "RepeatVector": lambda c, s: [None, c.get("n"), s[0][-1]],
    "merge": _merged,
    "concat": _concatenated,
    "Flatten": lambda c, s: [None, math.prod(s[0][1:])],
    "Reshape": _reshaped,
}


def resize_config(config: dict, graph: Graph, channels: dict[str, tuple[int, int]]) -> dict:
    """A copy of the model config (edited as data) with new unit counts for producers and the
    channel sizes later layers record (build configs, call arguments, Reshape targets), from
    each tensor's (old, new) channels; no compile settings: the saved optimizer state would no
    longer match the shapes, and Keras would warn that it skipped it."""
    ratio = {name: change for name, change in channels.items() if change[0] != change[1]}
    for node in graph.nodes.values():
        row = node.facts
        keys = (row.units_key,) if row.kind == "produce" and row.units_key else row.channel_keys
        for key in keys if node.name in ratio else ():
            node.config[key] = ratio[node.name][1]
        if node.class_name == "Reshape" and node.inputs and node.inputs[0] in ratio:
            _scale_last(node.config.get("target_shape"), ratio[node.inputs[0]])
        _patch_shapes(node, ratio)
    edited = json.loads(json.dumps(config))
    edited.pop("compile_config", None)
    return edited


def _patch_shapes(node: Node, ratio: dict[str, tuple[int, int]]) -> None:
    """Last axis of the input shapes recorded for this layer, scaled as its source shrank."""
    build = node.entry.get("build_config") or {}
    shape = build.get("input_shape")
    shapes = shape if isinstance(shape, list) and shape and isinstance(shape[0], list) else [shape]
    for source, one in zip(node.inputs, shapes, strict=False):
        _scale_last(one, ratio.get(source))
    for tensor in keras_tensors(node.entry.get("inbound_nodes") or []):
        history = tensor.get("keras_history") or [None]
        _scale_last(tensor.get("shape"), ratio.get(history[0]))


def _scale_last(shape: object, change: tuple[int, int] | None) -> None:
    if change and isinstance(shape, list) and shape and isinstance(shape[-1], int):
        shape[-1] = shape[-1] * change[1] // change[0]
