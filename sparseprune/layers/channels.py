"""How each layer class treats the channels (last axis) of its input: one row per class.

Data, not logic: `shrink` (shrink/graph.py, shapes.py, groups.py) reads every per-class fact from
`CHANNEL_FACTS` and nothing else. A class that is not listed stops the channel walk with the
reason "shrink does not know class X" (never a guess). Rows are meant to move into the project's
one layer table (registry) unchanged.

Kinds:
- produce: new output units (removable) from a weighted kernel; also consumes its input channels.
- consume: reads channels through kernel rows but its own outputs are not removable (RNNs).
- pass:    channel j out is channel j in (per-channel weights, if any, follow the channels);
           `constant` names how a per-channel constant goes through (see shrink/groups.py).
- merge:   elementwise merge; ties channel j of every input to channel j of the output.
- concat:  Concatenate on the channel axis; inputs side by side.
- flatten: Flatten; a channel becomes every position-th row of the next kernel.
- reshape: keeps channels when the target's last axis is the channel count.
- stop:    channels cannot be removed through this layer; `reason` says why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple


class ChannelFacts(NamedTuple):
    """One layer class, as `shrink` sees it (a NamedTuple like layers/table.py's rows)."""

    kind: str
    units_key: str | None = None  # config key of the output unit count (producers)
    kernel: str = "kernel"  # role of the weight that reads input channels / makes units
    out_axis: int = -1  # kernel axis of the output units
    in_axis: int = -2  # kernel axis of the input channels
    handler: str = "dense"  # consumer handler: dense | separable | transpose | recurrent
    channel_roles: tuple[str, ...] = ()  # per-channel weights of a pass layer
    channel_axis: int = -2  # axis of the channels in a pass layer's kernel (vectors: their own)
    channel_keys: tuple[str, ...] = ()  # config keys of a pass layer that hold the channel count
    # pass: same | activation | batchnorm | depthwise | padding | rescale | scale | layernorm
    constant: str = "same"
    reason: str | None = None  # stop: why


_DENSE = ChannelFacts("produce", "units")
_CONV = ChannelFacts("produce", "filters")
_TRANSPOSE = ChannelFacts("produce", "filters", out_axis=-2, in_axis=-1, handler="transpose")
_SEPARABLE = ChannelFacts("produce", "filters", kernel="pointwise_kernel", handler="separable")
_DEPTHWISE = ChannelFacts("pass", channel_roles=("kernel", "bias"), constant="depthwise")
# A Conv with groups == filters == input channels is a depthwise convolution whose kernel is
# (..., 1, channels): ConvNeXt's 7x7. `graph.Node.facts` gives such a node this row.
GROUPED_DEPTHWISE = ChannelFacts(
    "pass",
    channel_roles=("kernel", "bias"),
    channel_axis=-1,
    channel_keys=("filters", "groups"),
    constant="depthwise",
)
_RECURRENT = ChannelFacts("consume", handler="recurrent")
_SAME = ChannelFacts("pass")
_ACTIVATION = ChannelFacts("pass", constant="activation")
_MERGE = ChannelFacts("merge")
_MIXES = (
    "normalizes over the channels: a removed channel's constant still enters the statistics "
    "that scale every other channel, so removing it cannot be exact"
)

CHANNEL_FACTS: dict[str, ChannelFacts] = {
    "Dense": _DENSE,
    "Conv1D": _CONV,
    "Conv2D": _CONV,
    "Conv3D": _CONV,
    "Conv1DTranspose": _TRANSPOSE,
    "Conv2DTranspose": _TRANSPOSE,
    "Conv3DTranspose": _TRANSPOSE,
    "SeparableConv1D": _SEPARABLE,
    "SeparableConv2D": _SEPARABLE,
    "DepthwiseConv1D": _DEPTHWISE,
    "DepthwiseConv2D": _DEPTHWISE,
    "SimpleRNN": _RECURRENT,
    "GRU": _RECURRENT,
    "LSTM": _RECURRENT,
    "BatchNormalization": ChannelFacts(
        "pass",
        channel_roles=("gamma", "beta", "moving_mean", "moving_variance"),
        constant="batchnorm",
    ),
    "Activation": _ACTIVATION,
    "ReLU": _ACTIVATION,
    "LeakyReLU": _ACTIVATION,
    "ELU": _ACTIVATION,
    "Rescaling": ChannelFacts("pass", constant="rescale"),
    "ZeroPadding1D": ChannelFacts("pass", constant="padding"),
    "ZeroPadding2D": ChannelFacts("pass", constant="padding"),
    "ZeroPadding3D": ChannelFacts("pass", constant="padding"),
    **{
        cls: _SAME
        for cls in (
            "Dropout",
            "SpatialDropout1D",
            "SpatialDropout2D",
            "SpatialDropout3D",
            "GaussianNoise",
            "GaussianDropout",
            "AlphaDropout",
            "ActivityRegularization",
            "Identity",
            "RepeatVector",
            # Max pooling ignores padding and Keras's average pooling excludes it from the
            # count, so a constant channel stays that constant with any padding.
            "MaxPooling1D",
            "MaxPooling2D",
            "MaxPooling3D",
            "AveragePooling1D",
            "AveragePooling2D",
            "AveragePooling3D",
            "GlobalAveragePooling1D",
            "GlobalAveragePooling2D",
            "GlobalAveragePooling3D",
            "GlobalMaxPooling1D",
            "GlobalMaxPooling2D",
            "GlobalMaxPooling3D",
            "Cropping1D",
            "Cropping2D",
            "Cropping3D",
            "UpSampling1D",
            "UpSampling2D",
            "UpSampling3D",
        )
    },
    **{cls: _MERGE for cls in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")},
    "Concatenate": ChannelFacts("concat"),
    "Flatten": ChannelFacts("flatten"),
    "Reshape": ChannelFacts("reshape"),
    # Over other axes (not the channels) each channel is normalized alone; over the channels,
    # `layer_rules.layer_problem` stops with the reason (mean and variance mix every channel).
    "LayerNormalization": ChannelFacts("pass", constant="layernorm"),
    "LayerScale": ChannelFacts(  # keras.applications.convnext: x * gamma per channel
        "pass", channel_roles=("gamma",), channel_keys=("projection_dim",), constant="scale"
    ),
    "GroupNormalization": ChannelFacts("stop", reason=_MIXES),
    "UnitNormalization": ChannelFacts("stop", reason=_MIXES),
    "Softmax": ChannelFacts("stop", reason="mixes the channels (softmax)"),
    "Masking": ChannelFacts("stop", reason="masks a step from all channels together"),
    "Permute": ChannelFacts("stop", reason="moves the channel axis"),
    "Bidirectional": ChannelFacts(
        "stop", reason="keeps its weights in sub-layers (forward_layer, backward_layer)"
    ),
    "TimeDistributed": ChannelFacts("stop", reason="keeps its weights in a wrapped sub-layer"),
    "MultiHeadAttention": ChannelFacts(
        "stop", reason="projects through EinsumDense sub-layers (query, key, value, output)"
    ),
    "EinsumDense": ChannelFacts("stop", reason="has axes set by an einsum equation"),
    "Embedding": ChannelFacts("stop", reason="is an input lookup"),
    "InputLayer": ChannelFacts("stop", reason="is a model input"),
    "Sequential": ChannelFacts("stop", reason="is a nested model (its layers are not shrunk)"),
    "Functional": ChannelFacts("stop", reason="is a nested model (its layers are not shrunk)"),
    "Model": ChannelFacts("stop", reason="is a nested model (its layers are not shrunk)"),
}

PRODUCERS = frozenset(c for c, f in CHANNEL_FACTS.items() if f.kind == "produce")
CONSUMERS = frozenset(c for c, f in CHANNEL_FACTS.items() if f.kind in ("produce", "consume"))
MERGE_KINDS = ("merge", "concat")


def facts(class_name: str) -> ChannelFacts:
    """The row for a class; unknown classes stop the walk with a reason naming the class."""
    row = CHANNEL_FACTS.get(class_name)
    return row or ChannelFacts("stop", reason=f"is a {class_name}, a class shrink does not know")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805
# Keras's elementwise activations by config name (float64 reference for one constant).
ACTIVATIONS: dict[str, Callable[[float], float]] = {
    "linear": lambda x: x,
    "relu": lambda x: max(x, 0.0),
    "relu6": lambda x: min(max(x, 0.0), 6.0),
    "sigmoid": _sigmoid,
    "tanh": math.tanh,
    "softplus": _softplus,
    "softsign": lambda x: x / (1.0 + abs(x)),
    "elu": lambda x: x if x > 0 else math.expm1(x),
    "selu": lambda x: _SELU_SCALE * (x if x > 0 else _SELU_ALPHA * math.expm1(x)),
    "gelu": lambda x: 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0))),
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "exponential": math.exp,
    "hard_sigmoid": lambda x: min(max(x + 3.0, 0.0), 6.0) / 6.0,
    "hard_silu": lambda x: x * min(max(x + 3.0, 0.0), 6.0) / 6.0,
    "hard_swish": lambda x: x * min(max(x + 3.0, 0.0), 6.0) / 6.0,
    "leaky_relu": lambda x: x if x >= 0 else 0.2 * x,
    "mish": lambda x: x * math.tanh(_softplus(x)),
}
