"""THE layer table: one row per layer class, everything the tool knows about it. Data, not logic.

Like TFMOT's `prune_registry` and Torch-Pruning's pruner registry, every fact about a layer class
lives in its row, and every module that needs one reads it here (the file readers and writers, the
converter, inspect, prune, shrink's channel graph and shapes, bench's MAC count, the TFMOT bridge).
Adding a layer class is one row in `LAYERS` plus tests. A row (`Layer`) says:

- `variables`: the variables the class saves itself, in Keras's order, each `(role, flag)`: the
  config key that must be truthy for it to exist (`use_bias`), `!key` for one that must be unset
  (`!mean` on Normalization), or None. Keras 3 archives number variables (`vars/0`, `vars/1`).
- `parts`: sub-layers that keep their own variables (`.keras` saves them under
  `layers/<key>/<attribute>/vars`): attribute -> `Part` (its class, or the config key holding its
  class; the prefix its roles get, '' to flatten RNN cells and TimeDistributed's inner layer).
  Parts are listed in Keras's weight order (what a legacy `.h5` lists).
- `prunable`: roles TFMOT's defaults prune (exact class match; never biases). With `delegate`,
  a part's roles are prunable when the part's own row says so (wrappers, keras_hub blocks).
- `non_trainable`: roles Keras keeps out of `trainable_weights` (legacy `.h5` lists them last).
- `unit_kernel`: the kernel holding the layer's output units on axis `unit_axis` (the last axis,
  or -2 for transposed convolutions, whose kernels are (..., filters, input channels)): what
  `--structure units` zeroes and inspect's dead-unit count reads (last axis only).
- `channels`: how channels pass through it for `shrink` (`layers/channels.py`'s `ChannelFacts`:
  kind produce/consume/pass/merge/concat/flatten/reshape/stop, the unit-count config key, kernel
  axes, its shrink handler name, per-channel weights, the stop reason). Shrink's facts are kept
  in that file's `CHANNEL_FACTS` and joined into these rows below, so they are one table.
- `macs`: kernels whose size x output positions are the layer's multiply-accumulates.
- `twin`: how the TFMOT bridge rebuilds it in tf_keras (`Twin`), None if it cannot.
- `keras2_roles`: roles tf_keras (Keras 2) names differently.
- `pruning_wrapper`: TFMOT's PruneLowMagnitude: the inner layer's variables, then per prunable
  weight a `mask` and `threshold`, then `pruning_step`; tf_keras `.keras` files also save a copy
  of each prunable weight among the wrapper's own variables (not counted: Keras does not).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from sparseprune.layers.channels import CHANNEL_FACTS, ChannelFacts

# A variable is (role, config flag that must hold for it to exist, or None).
Variable = tuple[str, "str | None"]
# The rows are NamedTuples, not frozen dataclasses: equally immutable, and defining them costs
# no start-up time (a frozen dataclass compiles its methods at import, ~1 ms each, and every
# `inspect` imports this table). Mapping fields default to one shared read-only empty mapping.
_EMPTY: Mapping[str, Any] = MappingProxyType({})


class Twin(NamedTuple):
    """How one Keras 3 layer class becomes a tf_keras layer (TFMOT bridge).

    keys: config keys passed through unchanged (besides name/trainable/dtype and the generic
    `*_regularizer`, `*_constraint`, `activation` conversions); renames: Keras 3 key -> tf_keras
    key; neutral: Keras 3-only keys, accepted only at the value that means "off"; extra:
    tf_keras-only settings that make the twin compute exactly what Keras 3 computes.
    """

    keys: tuple[str, ...] = ()
    renames: Mapping[str, str] = _EMPTY
    neutral: Mapping[str, Any] = _EMPTY
    extra: Mapping[str, Any] = _EMPTY


class Part(NamedTuple):
    """A sub-layer with its own variables. `cls`: its class, or None to read it from the
    config entry at `config_key` (Bidirectional, TimeDistributed). `prefix`: what its roles are
    named under ('' flattens). `flags`: its own flag -> the parent's config key that decides it.
    `optional`: may be absent (built only for some calls)."""

    cls: str | None
    prefix: str
    config_key: str | None = None
    fallback_key: str | None = None
    flags: Mapping[str, str] = _EMPTY
    optional: bool = False


class Layer(NamedTuple):
    """One layer class's facts (see the module docstring)."""

    variables: tuple[Variable, ...] = ()
    parts: Mapping[str, Part] = _EMPTY
    prunable: frozenset[str] = frozenset()
    delegate: bool = False
    non_trainable: frozenset[str] = frozenset()
    unit_kernel: str | None = None
    unit_axis: int = -1
    channels: ChannelFacts | None = None
    macs: tuple[str, ...] = ()
    twin: Twin | None = None
    keras2_roles: Mapping[str, str] = _EMPTY
    pruning_wrapper: bool = False


# --- shared pieces of rows -------------------------------------------------------------------
_BIASED = (("kernel", None), ("bias", "use_bias"))
_CELL = (("kernel", None), ("recurrent_kernel", None), ("bias", "use_bias"))
_NORM = (("gamma", "scale"), ("beta", "center"))
_KERNEL = frozenset({"kernel"})
_RNN_KERNELS = frozenset({"kernel", "recurrent_kernel"})
_QUANT_OFF = {"quantization_config": None, "lora_rank": None, "lora_alpha": None}
_CONV_KEYS = ("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate")
_POOL_KEYS = ("pool_size", "strides", "padding", "data_format")
_NORM_KEYS: tuple[str, ...] = ("axis", "momentum", "epsilon", "center", "scale", "synchronized")
_NORM_KEYS += ("renorm", "renorm_clipping", "renorm_momentum")
_CONV_TWIN = Twin((*_CONV_KEYS, "groups", "activation", "use_bias"), neutral=_QUANT_OFF)
_SEPARABLE_TWIN = Twin((*_CONV_KEYS, "depth_multiplier", "activation", "use_bias"))
_POOL_TWIN = Twin(_POOL_KEYS)
_GLOBAL_POOL_TWIN = Twin(("data_format", "keepdims"))


def _conv(twin: Twin | None = _CONV_TWIN) -> Layer:
    return Layer(_BIASED, prunable=_KERNEL, unit_kernel="kernel", macs=("kernel",), twin=twin)


def _transpose(twin: Twin | None = None) -> Layer:
    return Layer(_BIASED, prunable=_KERNEL, unit_kernel="kernel", unit_axis=-2, twin=twin)


def _depthwise(twin: Twin | None = None) -> Layer:
    return Layer(_BIASED, macs=("kernel",), twin=twin, keras2_roles={"kernel": "depthwise_kernel"})


def _separable() -> Layer:
    return Layer(
        (("depthwise_kernel", None), ("pointwise_kernel", None), ("bias", "use_bias")),
        prunable=frozenset({"pointwise_kernel"}),
        unit_kernel="pointwise_kernel",
        macs=("depthwise_kernel", "pointwise_kernel"),
        twin=_SEPARABLE_TWIN,
    )


def _rnn(cell: str) -> Layer:
    return Layer(parts={"cell": Part(cell, "")}, prunable=_RNN_KERNELS, delegate=True)


def _mha(query: str = "query_dense") -> Layer:
    """MultiHeadAttention: four EinsumDense projections named query/key/value/attention_output."""
    names: tuple[tuple[str, str], ...] = (("query", "query_dense"), ("key", "key_dense"))
    names += (("value", "value_dense"),)
    names += (("attention_output", "output_dense"),)
    bias = {"bias_axes": "use_bias"}
    parts = {key: Part("EinsumDense", name, flags=bias) for name, key in names}
    parts |= {f"_{key}": Part("EinsumDense", name, flags=bias) for name, key in names}
    return Layer(parts=parts, prunable=frozenset(f"{name}/kernel" for name, _ in names))


def _weightless(twin: Twin | None = None) -> Layer:
    return Layer(twin=twin)


def _block(*parts: tuple[str, str, str], optional: tuple[str, ...] = ()) -> Layer:
    """A keras_hub block made of Keras layers: (attribute, class, name) in weight order."""
    return Layer(
        parts={key: Part(cls, name, optional=key in optional) for key, cls, name in parts},
        delegate=True,
    )


_SPATIAL = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
            "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
            "Identity", "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D",
            "UpSampling3D")  # fmt: skip
_POOLS = tuple(
    f"{kind}Pooling{d}D"
    for kind in ("Max", "Average", "GlobalAverage", "GlobalMax")
    for d in (1, 2, 3)
)
_OTHER_WEIGHTLESS = ("InputLayer", "Softmax", "ThresholdedReLU", "Lambda", "Masking", "Permute",
                     "RepeatVector", "Reshape", "Dot", "Rescaling", "ZeroPadding1D",
                     "ZeroPadding2D", "ZeroPadding3D")  # fmt: skip
_MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
_ELEMENTWISE_TWINS = {
    "Activation": Twin(("activation",)),
    "ReLU": Twin(("max_value", "negative_slope", "threshold")),
    "LeakyReLU": Twin(renames={"negative_slope": "alpha"}),
    "ELU": None,
}
_WEIGHTLESS_TWINS = {
    "Softmax": Twin(("axis",)),
    "Reshape": Twin(("target_shape",)),
    "Rescaling": Twin(("scale", "offset")),
    "ZeroPadding1D": Twin(("padding",), neutral={"data_format": "channels_last"}),
    "ZeroPadding2D": Twin(("padding", "data_format")),
    "Dropout": Twin(("rate", "noise_shape", "seed")),
}
_POOL_TWINS = {
    **{f"{k}Pooling{d}D": _POOL_TWIN for k in ("Max", "Average") for d in (1, 2)},
    **{f"Global{k}Pooling{d}D": _GLOBAL_POOL_TWIN for k in ("Max", "Average") for d in (1, 2)},
}

LAYERS: dict[str, Layer] = {
    # Weighted Keras layers.
    "Dense": Layer(
        _BIASED,
        prunable=_KERNEL,
        unit_kernel="kernel",
        macs=("kernel",),
        twin=Twin(("units", "activation", "use_bias"), neutral=_QUANT_OFF),
    ),
    "EinsumDense": Layer((("kernel", None), ("bias", "bias_axes"))),
    "Conv1D": _conv(),
    "Conv2D": _conv(),
    "Conv3D": _conv(),
    "Conv1DTranspose": Layer(_BIASED, unit_kernel="kernel", unit_axis=-2),
    "Conv2DTranspose": _transpose(
        Twin((*_CONV_KEYS, "output_padding", "activation", "use_bias"), neutral=_QUANT_OFF)
    ),
    "Conv3DTranspose": _transpose(),
    "DepthwiseConv1D": _depthwise(),
    "DepthwiseConv2D": _depthwise(
        Twin((*_CONV_KEYS[1:], "depth_multiplier", "activation", "use_bias"))
    ),
    "SeparableConv1D": _separable(),
    "SeparableConv2D": _separable(),
    "LocallyConnected1D": Layer(_BIASED, prunable=_KERNEL),
    "LocallyConnected2D": Layer(_BIASED, prunable=_KERNEL),
    "Embedding": Layer(
        (("embeddings", None),),
        prunable=frozenset({"embeddings"}),
        twin=Twin(("input_dim", "output_dim", "mask_zero"), neutral=_QUANT_OFF),
    ),
    # Keras 3 normalizes as x * inv + (beta - mean * inv); tf_keras's fused kernel rounds
    # differently, and through ResNet50's 53 BatchNormalizations outputs drift by ~1e-4. The
    # unfused path is bit-identical.
    "BatchNormalization": Layer(
        (*_NORM, ("moving_mean", None), ("moving_variance", None)),
        non_trainable=frozenset({"moving_mean", "moving_variance"}),
        twin=Twin(_NORM_KEYS, extra={"fused": False}),
    ),
    "LayerNormalization": Layer(_NORM),
    "GroupNormalization": Layer(_NORM),
    "UnitNormalization": Layer(),
    "Normalization": Layer(
        (("mean", "!mean"), ("variance", "!mean"), ("count", "!mean")),
        non_trainable=frozenset({"mean", "variance", "count"}),
    ),
    "LayerScale": Layer((("gamma", None),)),  # keras.applications.convnext
    "PReLU": Layer((("alpha", None),)),
    # Recurrent layers: the variables live in the cell (`layers/lstm/cell/vars`).
    "SimpleRNNCell": Layer(_CELL, prunable=_RNN_KERNELS),
    "GRUCell": Layer(_CELL, prunable=_RNN_KERNELS),
    "LSTMCell": Layer(_CELL, prunable=_RNN_KERNELS),
    "SimpleRNN": _rnn("SimpleRNNCell"),
    "GRU": _rnn("GRUCell"),
    "LSTM": _rnn("LSTMCell"),
    "MultiHeadAttention": _mha(),
    # Wrappers: the inner layer's roles, prunable as the inner class's row says.
    "Bidirectional": Layer(
        parts={
            "forward_layer": Part(None, "forward_layer", config_key="layer"),
            "backward_layer": Part(
                None, "backward_layer", config_key="backward_layer", fallback_key="layer"
            ),
        },
        delegate=True,
    ),
    "TimeDistributed": Layer(parts={"layer": Part(None, "", config_key="layer")}, delegate=True),
    # TFMOT's wrapper, as saved by tf_keras (a TFMOT-pruned model saved before strip_pruning).
    "PruneLowMagnitude": Layer(
        parts={"layer": Part(None, "", config_key="layer")}, delegate=True, pruning_wrapper=True
    ),
    # keras_hub layers (random-init backbones; presets need downloads).
    "ReversibleEmbedding": Layer((("embeddings", None),), prunable=frozenset({"embeddings"})),
    "PositionEmbedding": Layer((("embeddings", None),)),
    "CachedMultiHeadAttention": _mha(),
    "TransformerEncoder": _block(
        ("_self_attention_layer", "MultiHeadAttention", "self_attention_layer"),
        ("_self_attention_layer_norm", "LayerNormalization", "self_attention_layer_norm"),
        ("_feedforward_layer_norm", "LayerNormalization", "feedforward_layer_norm"),
        ("_feedforward_intermediate_dense", "Dense", "feedforward_intermediate_dense"),
        ("_feedforward_output_dense", "Dense", "feedforward_output_dense"),
    ),
    "TransformerDecoder": _block(
        ("_self_attention_layer", "CachedMultiHeadAttention", "self_attention"),
        ("_self_attention_layer_norm", "LayerNormalization", "self_attention_layer_norm"),
        ("_cross_attention_layer", "CachedMultiHeadAttention", "cross_attention"),
        ("_cross_attention_layer_norm", "LayerNormalization", "cross_attention_layer_norm"),
        ("_feedforward_intermediate_dense", "Dense", "feedforward_intermediate_dense"),
        ("_feedforward_output_dense", "Dense", "feedforward_output_dense"),
        ("_feedforward_layer_norm", "LayerNormalization", "feedforward_layer_norm"),
        optional=("_cross_attention_layer", "_cross_attention_layer_norm"),
    ),
    # Layers without weights.
    **{name: _weightless(_WEIGHTLESS_TWINS.get(name)) for name in _SPATIAL},
    **{name: _weightless(_POOL_TWINS.get(name)) for name in _POOLS},
    **{name: _weightless(_WEIGHTLESS_TWINS.get(name)) for name in _OTHER_WEIGHTLESS},
    **{name: _weightless(twin) for name, twin in _ELEMENTWISE_TWINS.items()},
    **{name: _weightless(Twin()) for name in _MERGES},
    "Concatenate": _weightless(Twin(("axis",))),
    "Flatten": _weightless(Twin(("data_format",))),
}
# Shrink's channel facts (layers/channels.py) joined into the rows: one table.
LAYERS = {c: row._replace(channels=CHANNEL_FACTS.get(c)) for c, row in LAYERS.items()}

# Containers whose layers are reported one by one rather than as a unit.
MODEL_CLASSES: frozenset[str] = frozenset({"Sequential", "Functional", "Model"})
KNOWN_CLASSES: frozenset[str] = frozenset(LAYERS) | MODEL_CLASSES

# --- views of the table kept for the modules that read them --------------------------------
NON_TRAINABLE_ROLES = frozenset(r for row in LAYERS.values() for r in row.non_trainable)
UNIT_KERNELS: dict[str, str] = {c: r.unit_kernel for c, r in LAYERS.items() if r.unit_kernel}
UNIT_AXES: dict[str, int] = {c: r.unit_axis for c, r in LAYERS.items() if r.unit_kernel}

# Files without an architecture (legacy `save_weights`) name roles but not classes: judge by role.
CLASSLESS_PRUNABLE = frozenset({"kernel", "pointwise_kernel", "embeddings", "recurrent_kernel"})
CLASSLESS_UNIT_KERNELS = frozenset({"kernel", "pointwise_kernel"})


def row(layer_class: str | None) -> Layer | None:
    return LAYERS.get(layer_class or "")


def has_output_units(layer_class: str | None, role: str) -> bool:
    """Whether the tensor's last axis is output units (what inspect's dead-unit count reads)."""
    if layer_class is None:
        return role in CLASSLESS_UNIT_KERNELS
    return UNIT_KERNELS.get(layer_class) == role and UNIT_AXES[layer_class] == -1


def unit_axis(layer_class: str | None) -> int:
    """The kernel axis of a layer's output units (-1 unless the table says otherwise)."""
    return UNIT_AXES.get(layer_class or "", -1)


def is_known(layer_class: str | None) -> bool:
    return layer_class is not None and layer_class in KNOWN_CLASSES


def to_snake_case(name: str) -> str:
    """Keras's own `naming.to_snake_case`, which names the groups in a weights file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


@functools.cache
def _class_by_snake() -> dict[str, str]:
    """Class by snake-case name, made on first use (files with a config never need it)."""
    return {to_snake_case(c): c for c in sorted(KNOWN_CLASSES)}


def class_from_storage_key(key: str) -> str | None:
    """Guess a class from a Keras 3 storage key (`dense_2` -> Dense), for files without a config."""
    base = re.sub(r"_\d+$", "", key)
    by_snake = _class_by_snake()
    return by_snake.get(base) or by_snake.get(key)


__all__ = [
    "LAYERS",
    "Layer",
    "Part",
    "Twin",
    "class_from_storage_key",
    "has_output_units",
    "is_known",
    "row",
    "to_snake_case",
    "unit_axis",
]
