"""What each layer class stores, and what magnitude pruning touches by default. Data, not logic.

`VARIABLES` says, for each Keras layer class, which variables it saves and in what order (Keras 3's
`.keras`/`.weights.h5` files number variables instead of naming them). `PRUNABLE` follows TFMOT's
`prune_registry.py`: only the listed roles of exactly these classes are pruned by default;
classes in `NO_PRUNABLE_WEIGHTS` are known and deliberately left alone. Anything else is unknown.
"""

from __future__ import annotations

import re

# A variable is (role, config flag that must be true for it to exist, or None).
Variable = tuple[str, "str | None"]

_CONV = (("kernel", None), ("bias", "use_bias"))
_RNN_CELL = (("kernel", None), ("recurrent_kernel", None), ("bias", "use_bias"))
_NORM = (("gamma", "scale"), ("beta", "center"))

VARIABLES: dict[str, tuple[Variable, ...]] = {
    "Dense": _CONV,
    "EinsumDense": (("kernel", None), ("bias", "bias_axes")),
    "Conv1D": _CONV,
    "Conv2D": _CONV,
    "Conv3D": _CONV,
    "Conv1DTranspose": _CONV,
    "Conv2DTranspose": _CONV,
    "Conv3DTranspose": _CONV,
    "DepthwiseConv1D": _CONV,
    "DepthwiseConv2D": _CONV,
    "SeparableConv1D": (
        ("depthwise_kernel", None),
        ("pointwise_kernel", None),
        ("bias", "use_bias"),
    ),
    "SeparableConv2D": (
        ("depthwise_kernel", None),
        ("pointwise_kernel", None),
        ("bias", "use_bias"),
    ),
    "LocallyConnected1D": _CONV,
    "LocallyConnected2D": _CONV,
    "Embedding": (("embeddings", None),),
    "BatchNormalization": (*_NORM, ("moving_mean", None), ("moving_variance", None)),
    "LayerNormalization": _NORM,
    "GroupNormalization": _NORM,
    "UnitNormalization": (),
    "PReLU": (("alpha", None),),
    "SimpleRNNCell": _RNN_CELL,
    "GRUCell": _RNN_CELL,
    "LSTMCell": _RNN_CELL,
}

# Layers that keep their variables in a sub-object (Keras 3 saves `layers/lstm/cell/vars/0`).
SUBOBJECT_CLASSES: dict[tuple[str, str], str] = {
    ("SimpleRNN", "cell"): "SimpleRNNCell",
    ("GRU", "cell"): "GRUCell",
    ("LSTM", "cell"): "LSTMCell",
    ("MultiHeadAttention", "query_dense"): "EinsumDense",
    ("MultiHeadAttention", "key_dense"): "EinsumDense",
    ("MultiHeadAttention", "value_dense"): "EinsumDense",
    ("MultiHeadAttention", "output_dense"): "EinsumDense",
    ("MultiHeadAttention", "_query_dense"): "EinsumDense",
    ("MultiHeadAttention", "_key_dense"): "EinsumDense",
    ("MultiHeadAttention", "_value_dense"): "EinsumDense",
    ("MultiHeadAttention", "_output_dense"): "EinsumDense",
}

_KERNEL = frozenset({"kernel"})
_RNN = frozenset({"kernel", "recurrent_kernel"})
_MHA = frozenset(
    f"{prefix}{dense}/kernel"
    for prefix in ("", "_")
    for dense in ("query_dense", "key_dense", "value_dense", "output_dense")
) | frozenset({"query/kernel", "key/kernel", "value/kernel", "attention_output/kernel"})

PRUNABLE: dict[str, frozenset[str]] = {
    "Dense": _KERNEL,
    "Conv1D": _KERNEL,
    "Conv2D": _KERNEL,
    "Conv3D": _KERNEL,
    "Conv2DTranspose": _KERNEL,
    "Conv3DTranspose": _KERNEL,
    "SeparableConv1D": frozenset({"pointwise_kernel"}),
    "SeparableConv2D": frozenset({"pointwise_kernel"}),
    "Embedding": frozenset({"embeddings"}),
    "LocallyConnected1D": _KERNEL,
    "LocallyConnected2D": _KERNEL,
    "SimpleRNN": _RNN,
    "GRU": _RNN,
    "LSTM": _RNN,
    "MultiHeadAttention": _MHA,
}

NO_PRUNABLE_WEIGHTS: frozenset[str] = frozenset(
    [
        "InputLayer",
        "ELU",
        "LeakyReLU",
        "ReLU",
        "Softmax",
        "ThresholdedReLU",
        "PReLU",
        "Activation",
        "ActivityRegularization",
        "Cropping1D",
        "Cropping2D",
        "Cropping3D",
        "DepthwiseConv1D",
        "DepthwiseConv2D",
        "UpSampling1D",
        "UpSampling2D",
        "UpSampling3D",
        "ZeroPadding1D",
        "ZeroPadding2D",
        "ZeroPadding3D",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "AlphaDropout",
        "GaussianDropout",
        "GaussianNoise",
        "Flatten",
        "Lambda",
        "Masking",
        "Permute",
        "RepeatVector",
        "Reshape",
        "Add",
        "Average",
        "Concatenate",
        "Dot",
        "Maximum",
        "Minimum",
        "Multiply",
        "Subtract",
        "BatchNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "UnitNormalization",
        "Rescaling",
        "AveragePooling1D",
        "AveragePooling2D",
        "AveragePooling3D",
        "MaxPooling1D",
        "MaxPooling2D",
        "MaxPooling3D",
        "GlobalAveragePooling1D",
        "GlobalAveragePooling2D",
        "GlobalAveragePooling3D",
        "GlobalMaxPooling1D",
        "GlobalMaxPooling2D",
        "GlobalMaxPooling3D",
        "EinsumDense",
        "Identity",
    ]
)

# Containers whose layers are reported one by one rather than as a unit.
MODEL_CLASSES: frozenset[str] = frozenset({"Sequential", "Functional", "Model"})

KNOWN_CLASSES: frozenset[str] = frozenset(
    set(VARIABLES) | set(PRUNABLE) | NO_PRUNABLE_WEIGHTS | MODEL_CLASSES
)


# Variables Keras keeps out of `trainable_weights` (legacy .h5 files list them last).
NON_TRAINABLE_ROLES = frozenset({"moving_mean", "moving_variance"})

# Kernels whose last axis is the layer's output units or filters (for counting dead units).
UNIT_KERNELS: dict[str, str] = {
    "Dense": "kernel",
    "Conv1D": "kernel",
    "Conv2D": "kernel",
    "Conv3D": "kernel",
    "SeparableConv1D": "pointwise_kernel",
    "SeparableConv2D": "pointwise_kernel",
}


# Files without an architecture (legacy `save_weights`) name roles but not classes: judge by role.
CLASSLESS_PRUNABLE = frozenset({"kernel", "pointwise_kernel", "embeddings", "recurrent_kernel"})
CLASSLESS_UNIT_KERNELS = frozenset({"kernel", "pointwise_kernel"})

# tf_keras (Keras 2) names some variables differently from Keras 3.
KERAS2_ROLE_NAMES: dict[tuple[str, str], str] = {
    ("DepthwiseConv1D", "kernel"): "depthwise_kernel",
    ("DepthwiseConv2D", "kernel"): "depthwise_kernel",
}


def has_output_units(layer_class: str | None, role: str) -> bool:
    if layer_class is None:
        return role in CLASSLESS_UNIT_KERNELS
    return UNIT_KERNELS.get(layer_class) == role


def is_prunable(layer_class: str | None, role: str) -> bool:
    """True when TFMOT's defaults would prune this variable of this class."""
    if layer_class is None:
        return role in CLASSLESS_PRUNABLE
    return role in PRUNABLE.get(layer_class, frozenset())


def is_known(layer_class: str | None) -> bool:
    return layer_class is not None and layer_class in KNOWN_CLASSES


def to_snake_case(name: str) -> str:
    """Keras's own `naming.to_snake_case`, which names the groups in a weights file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


_CLASS_BY_SNAKE: dict[str, str] = {to_snake_case(c): c for c in sorted(KNOWN_CLASSES)}


def class_from_storage_key(key: str) -> str | None:
    """Guess a class from a Keras 3 storage key (`dense_2` -> Dense), for files without a config."""
    base = re.sub(r"_\d+$", "", key)
    return _CLASS_BY_SNAKE.get(base) or _CLASS_BY_SNAKE.get(key)


def variable_roles(
    layer_class: str | None, config: dict | None, count: int, keras2: bool = False
) -> list[str] | None:
    """The roles of a layer's `count` saved variables in order, or None if they can't be told.

    Without a config (weights-only files), optional variables are assumed present unless only
    the required ones match `count` (a Dense with use_bias=False saves one variable).
    """
    if layer_class not in VARIABLES:
        return None
    table = VARIABLES[layer_class]
    if config:
        roles = [
            r for r, flag in table if flag is None or config.get(flag, True) not in (False, None)
        ]
    else:
        roles = [r for r, _ in table]
        if len(roles) != count:
            roles = [r for r, flag in table if flag is None]
    if len(roles) != count:
        return None
    if keras2:
        roles = [KERAS2_ROLE_NAMES.get((layer_class, r), r) for r in roles]
    return roles
