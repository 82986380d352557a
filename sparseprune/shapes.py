"""Shapes in a saved model's config: propagate them through the layer graph and resize layers.

Used by `shrink` to count multiply-accumulates before and after, and to write the config of a
model whose layers lost units. Config JSON is read and edited as data only.
"""

from __future__ import annotations

import json
import math

from sparseprune.graph import AFFINE, ELEMENTWISE, PRODUCERS, SPATIAL, Graph, Node, keras_tensors


def conv_output(config: dict, sizes: list[int], window: tuple[int, ...] | list[int]) -> list[int]:
    """Spatial output sizes of a convolution or pooling window ('valid' or 'same' padding)."""
    strides = config.get("strides") or window
    strides = [strides] * len(sizes) if isinstance(strides, int) else strides
    dilation = config.get("dilation_rate") or [1] * len(sizes)
    dilation = [dilation] * len(sizes) if isinstance(dilation, int) else dilation
    out = []
    for n, k, s, d in zip(sizes, window, strides, dilation, strict=False):
        valid = config.get("padding", "valid") == "valid"
        out.append((n - d * (k - 1) - 1) // s + 1 if valid else -(-n // s))
    return out


def input_shapes(graph: Graph) -> dict[str, list | None]:
    """Each layer's input shape: its build config, else propagated from the inputs (legacy .h5
    configs record no build config). None where a shape cannot be told."""
    outputs: dict[str, list | None] = {}
    inputs: dict[str, list | None] = {}
    for name, node in graph.nodes.items():
        built = (node.entry.get("build_config") or {}).get("input_shape")
        upstream = outputs.get(node.inputs[0]) if len(node.inputs) == 1 else None
        shape = built if _is_shape(built) else upstream
        inputs[name] = shape
        outputs[name] = _output_shape(node, shape)
    return inputs


def _is_shape(value: object) -> bool:
    return isinstance(value, list) and len(value) >= 2 and not isinstance(value[0], list)


def _output_shape(node: Node, shape: list | None) -> list | None:
    config, cls = node.config, node.class_name
    if cls == "InputLayer":
        given = config.get("batch_shape") or config.get("batch_input_shape")
        return list(given) if _is_shape(given) else None
    if shape is None or any(d is None for d in shape[1:]):
        return None
    if cls == "Dense":
        return [*shape[:-1], config.get("units")]
    if cls in PRODUCERS or cls.startswith(("MaxPooling", "AveragePooling")):
        window = config.get("kernel_size") or config.get("pool_size")
        window = [window] * (len(shape) - 2) if isinstance(window, int) else window
        channels = config.get("filters", shape[-1])
        return [None, *conv_output(config, shape[1:-1], window), channels]
    if cls in ELEMENTWISE or cls in AFFINE or (cls in SPATIAL and "Pooling" not in cls):
        return shape if not cls.startswith(("Cropping", "UpSampling")) else None
    if cls.startswith("Global"):
        return [None, shape[-1]]
    if cls == "Flatten":
        return [None, math.prod(shape[1:])]
    if cls == "Reshape" and isinstance(config.get("target_shape"), list):
        return [None, *config["target_shape"]]
    return None


def resize_config(config: dict, graph: Graph, channels: dict[str, tuple[int, int]]) -> dict:
    """A copy of the model config (edited as data) with new unit counts for producers and the
    channel sizes later layers record (build configs, call arguments), from each tensor's
    (old, new) channels; no compile settings: the saved optimizer state would no longer match
    the shapes, and Keras would warn that it skipped it."""
    ratio = {name: change for name, change in channels.items() if change[0] != change[1]}
    for node in graph.nodes.values():
        key = PRODUCERS.get(node.class_name)
        if key and node.name in ratio:
            node.config[key] = ratio[node.name][1]
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
