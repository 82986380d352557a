"""What differs per Keras backend inside the pruning wrapper's step.

The wrapper's logic is backend-neutral; these are the places where one backend needs another
route to the same result: the masked weight (one torch multiply on PyTorch, where each
keras.ops call is a Python dispatch), assigning masks only on update steps (`tf.cond` on
TensorFlow; a select on JAX and inside a tf.distribute replica), and which built-in layers
PyTorch's eager step may call without `__call__`.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

# Layers whose call is all their __call__ would run once inputs are converted (see
# wrapper.PruneLowMagnitude._calls_directly); RNNs, Embedding (masks) and custom layers keep
# __call__.
DIRECT_CALL_CLASSES = tuple(
    getattr(keras.layers, name)
    for name in (
        "Dense",
        "EinsumDense",
        "Conv1D",
        "Conv2D",
        "Conv3D",
        "Conv1DTranspose",
        "Conv2DTranspose",
        "Conv3DTranspose",
        "DepthwiseConv1D",
        "DepthwiseConv2D",
        "SeparableConv1D",
        "SeparableConv2D",
    )
)


def masked_value(weight: Any, mask: Any) -> Any:
    """`w * mask` in the weight's dtype (one torch multiply on PyTorch, where every keras.ops
    call is a Python dispatch paid per layer and step)."""
    value, keep = weight.value, mask.value
    if keras.backend.backend() == "torch":
        return value * (keep if keep.dtype == value.dtype else keep.to(value.dtype))
    return ops.multiply(value, ops.cast(keep, weight.dtype))


def assign_if(should: Any, variables: list, compute: Any) -> None:
    """variables <- compute() where `should`; nothing is computed or written otherwise.

    TensorFlow assigns inside `tf.cond`, so steps without an update cost one predicate. JAX
    cannot assign inside `lax.cond` (a stateless trace), and a tf.distribute replica cannot
    synchronize a variable inside control flow, so those select the values to keep.
    """
    tf = tensorflow_without_strategy()
    if tf is not None:

        def update():
            for variable, value in zip(variables, compute(), strict=True):
                variable.assign(value)

        tf.cond(should, update, lambda: None)
        return
    current = [variable.value for variable in variables]
    chosen = ops.cond(should, compute, lambda: current)
    for variable, value in zip(variables, chosen, strict=True):
        variable.assign(value)


def tensorflow_without_strategy() -> Any:
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    return None if tf.distribute.has_strategy() else tf
