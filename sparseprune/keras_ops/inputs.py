"""Seeded inputs built from a live model's own input specs (verify, evaluate, bench, TFMOT).

Names, structure (a keras_hub backbone takes a dict: `token_ids`, `padding_mask`,
`segment_ids`), dtypes (tf_keras gives `tf.DType`, Keras 3 a string) and valid values: integer
inputs that feed an Embedding draw ids below its `input_dim`, masks are all ones, other integer
inputs are 0/1. Free dimensions (None, other than the batch) become `FREE_DIMENSION`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FREE_DIMENSION = 8
SEED = 0
MASK_WORDS = ("mask",)


def dtype_name(dtype: Any) -> str:
    """'int32' from 'int32', tf.int32 or np.dtype('int32')."""
    name = getattr(dtype, "name", None)
    return str(name if isinstance(name, str) else dtype).split(".")[-1]


def input_tensors(model: Any) -> tuple[list[Any], list[str] | None]:
    """The model's input tensors and, when it takes a dict, their keys (in the same order)."""
    structure = getattr(model, "_inputs_struct", None)
    if structure is None:
        structure = getattr(model, "_nested_inputs", None)  # tf_keras
    if isinstance(structure, dict):
        keys = sorted(structure)
        return [structure[k] for k in keys], keys
    inputs = model.inputs
    return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs], None


def synthetic_inputs(model: Any, samples: int, seed: int = SEED) -> Any:
    """One array per input, packed as the model takes them (array, list or dict)."""
    rng = np.random.default_rng(seed)
    tensors, keys = input_tensors(model)
    limits = embedding_limits(model)
    arrays = [
        _array(rng, tensor, samples, limits.get(id(tensor)), _name(tensor, keys, i))
        for i, tensor in enumerate(tensors)
    ]
    if keys is not None:
        return dict(zip(keys, arrays, strict=True))
    return arrays[0] if len(arrays) == 1 else arrays


def _name(tensor: Any, keys: list[str] | None, index: int) -> str:
    if keys is not None:
        return keys[index]
    return str(getattr(tensor, "name", "") or "").split(":")[0]


def _array(
    rng: np.random.Generator, tensor: Any, samples: int, limit: int | None, name: str
) -> np.ndarray:
    shape = [samples] + [FREE_DIMENSION if d is None else int(d) for d in tuple(tensor.shape)[1:]]
    dtype = dtype_name(getattr(tensor, "dtype", "float32"))
    if dtype == "bool":
        return np.ones(shape, bool)
    if "int" in dtype:
        if limit is None and any(word in name for word in MASK_WORDS):
            return np.ones(shape, dtype)
        return rng.integers(0, limit or 2, size=shape).astype(dtype)
    return rng.normal(size=shape).astype(dtype if dtype.startswith("float") else "float32")


def embedding_limits(model: Any) -> dict[int, int]:
    """id(input tensor) -> the smallest `input_dim` of the Embedding layers reading it."""
    tensors, _ = input_tensors(model)
    ids = {id(t) for t in tensors}
    limits: dict[int, int] = {}
    for layer in getattr(model, "layers", []):
        size = getattr(layer, "input_dim", None)
        if not isinstance(size, int) or size < 1:
            continue
        for node in getattr(layer, "_inbound_nodes", None) or []:
            for tensor in _node_inputs(node):
                if id(tensor) in ids:
                    limits[id(tensor)] = min(size, limits.get(id(tensor), size))
    return limits


def _node_inputs(node: Any) -> list[Any]:
    try:
        found = node.input_tensors
    except (AttributeError, ValueError):
        return []
    return list(found) if isinstance(found, (list, tuple)) else [found]
