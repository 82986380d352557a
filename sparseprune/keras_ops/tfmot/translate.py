"""Rebuild a Keras 3 model as an equivalent tf_keras model (its "twin"), for TFMOT.

TFMOT only wraps tf_keras layers, and tf_keras cannot load a Keras 3 file. So the twin is built
layer by layer from each layer's `get_config()`, translated through the table below, then called
on tf_keras tensors in the Keras 3 graph's own order, and given the same weights. Runs inside the
TFMOT worker process only (it imports Keras 3 and tf_keras).

The rules are the layer table's `twin` column (`registry.LAYERS`), strict on purpose: a Keras 3
option tf_keras has no equivalent for is refused unless it holds its neutral value, so a twin
never silently computes something else. Initializers are dropped (the weights are copied over);
regularizers and constraints are kept, because they change fine-tuning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sparseprune.errors import InputError, describe
from sparseprune.layers.table import LAYERS, Twin

MASK_HINT = "use --method mask, which trains the Keras 3 model itself"
BASE_KEYS = ("name", "trainable", "dtype")
LayerRule = Twin  # how one class becomes a tf_keras layer: the `twin` column of the layer table
SUPPORTED: dict[str, Twin] = {c: row.twin for c, row in LAYERS.items() if row.twin is not None}

# Keras 3 activation name -> tf_keras activation (a name, or a function when tf_keras has none).
# Names not listed (hard_sigmoid means something else in tf_keras; hard_silu, glu, ... are
# missing there) are refused.
SAME_ACTIVATIONS: tuple[str, ...] = ("linear", "relu", "sigmoid", "softmax", "tanh", "elu")
SAME_ACTIVATIONS += ("selu", "softplus")
SAME_ACTIVATIONS += ("softsign", "swish", "gelu", "exponential", "mish")
ACTIVATION_ALIASES = {"silu": "swish"}
REGULARIZERS = ("L1", "L2", "L1L2", "OrthogonalRegularizer")
CONSTRAINTS = ("MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm")


def translate_config(layer: Any) -> tuple[str, dict[str, Any]]:
    """(tf_keras class name, tf_keras config) for a Keras 3 layer, or a clear InputError."""
    kind = type(layer).__name__
    rule = SUPPORTED.get(kind)
    if rule is None or not type(layer).__module__.startswith("keras."):
        raise unsupported(layer, "is not supported by the TFMOT bridge")
    config, out = layer.get_config(), {}
    for key, value in config.items():
        if key.endswith("_initializer"):
            continue  # the weights are copied over
        if key in rule.neutral:
            if value != rule.neutral[key]:
                raise unsupported(layer, f"sets '{key}', which tf_keras cannot reproduce")
            continue
        if key not in (*BASE_KEYS, *rule.keys, *rule.renames) and not _generic(key):
            raise unsupported(layer, f"has option '{key}', which the TFMOT bridge does not know")
        out[rule.renames.get(key, key)] = _value(layer, key, value)
    return kind, {**out, **rule.extra}


def _generic(key: str) -> bool:
    return key.endswith(("_regularizer", "_constraint"))


def _value(layer: Any, key: str, value: Any) -> Any:
    if key == "dtype":
        return _dtype_name(layer, value)
    if key == "activation":
        return _activation(layer, value)
    if key.endswith("_regularizer"):
        return _serialized(layer, key, value, REGULARIZERS, "regularizers")
    if key.endswith("_constraint"):
        return _serialized(layer, key, value, CONSTRAINTS, "constraints")
    return value


def _dtype_name(layer: Any, value: Any) -> Any:
    """Keras 3 writes a DTypePolicy dict; tf_keras takes the policy name."""
    if not isinstance(value, dict):
        return value
    if value.get("class_name") not in ("DTypePolicy", "FloatDTypePolicy"):
        raise unsupported(layer, f"uses dtype policy {value.get('class_name')} (quantized)")
    return value["config"]["name"]


def _activation(layer: Any, value: Any) -> Any:
    name = value if isinstance(value, str) else None
    if name in SAME_ACTIVATIONS:
        return name
    if name in ACTIVATION_ALIASES:
        return ACTIVATION_ALIASES[name]
    if name == "relu6":
        import tensorflow as tf

        return tf.nn.relu6
    raise unsupported(layer, f"uses activation {value!r}, which tf_keras computes differently")


def _serialized(layer: Any, key: str, value: Any, known: tuple[str, ...], module: str) -> Any:
    """A Keras 3 regularizer/constraint dict as the matching tf_keras object."""
    if value is None:
        return None
    import tf_keras

    if not isinstance(value, dict) or value.get("class_name") not in known:
        raise unsupported(layer, f"has {key} {value!r}; the bridge knows {', '.join(known)}")
    return getattr(tf_keras, module).get(
        {"class_name": value["class_name"], "config": value.get("config", {})}
    )


def unsupported(layer: Any, why: str) -> InputError:
    return InputError(f"layer '{layer.name}' ({type(layer).__name__}) {why}; {MASK_HINT}.")


def twin_layer(layer: Any) -> Any:
    """A new tf_keras layer computing what the Keras 3 `layer` computes (weights not yet set)."""
    import tf_keras

    kind, config = translate_config(layer)
    try:
        return getattr(tf_keras.layers, kind)(**config)
    except (TypeError, ValueError) as error:
        raise unsupported(layer, f"could not be rebuilt in tf_keras ({describe(error)})") from None


def build_twin(model: Any) -> Any:
    """The tf_keras twin of a Keras 3 Sequential or Functional model, weights copied."""
    import keras
    import tf_keras

    if isinstance(model, tf_keras.Model):
        twin = tf_keras.models.clone_model(model)  # fresh variables (e.g. in a strategy scope)
        twin.set_weights(model.get_weights())
        return twin
    if not isinstance(model, keras.Model) or not hasattr(_graph(model), "_run_through_graph"):
        raise InputError(
            f"model '{model.name}' is a subclassed model; the TFMOT bridge needs a Sequential or "
            f"Functional model; {MASK_HINT}."
        )
    inputs = [_twin_input(layer) for layer in _input_layers(model)]
    outputs = _run_graph(model, inputs)
    twin = tf_keras.Model(inputs=_single(inputs), outputs=_single(outputs), name=model.name)
    copy_weights(model, twin)
    return twin


def _input_layers(model: Any) -> list[Any]:
    """The InputLayer behind each of `model.inputs`, in order."""
    import keras

    model = _graph(model)
    by_output = {
        id(layer.output): layer
        for layer in model.layers
        if isinstance(layer, keras.layers.InputLayer)
    }
    return [by_output[id(tensor)] for tensor in model.inputs]


def _twin_input(layer: Any) -> Any:
    import tf_keras

    config = layer.get_config()
    if config.get("optional") or config.get("sparse") or config.get("ragged"):
        raise unsupported(layer, "is optional, sparse or ragged")
    shape = tuple(config["batch_shape"])
    return tf_keras.Input(
        shape=shape[1:], batch_size=shape[0], dtype=config.get("dtype"), name=layer.name
    )


def _run_graph(model: Any, inputs: list[Any]) -> list[Any]:
    """Call the twin layers on tf_keras tensors in the Keras 3 graph's own order.

    Keras's `_run_through_graph` walks the nodes depth by depth and fills each node's recorded
    arguments (positional, keyword, nested lists) with the mapped tensors; `operation_fn` swaps
    each Keras 3 layer for its twin, created once so shared layers stay shared.
    """
    import keras

    graph = _graph(model)
    twins: dict[int, Any] = {}

    def swap(operation: Any) -> Callable[..., Any]:
        if not isinstance(operation, keras.layers.Layer):
            raise InputError(
                f"operation '{operation.name}' ({type(operation).__name__}) is not a layer; the "
                f"TFMOT bridge rebuilds layers only; {MASK_HINT}."
            )
        if isinstance(operation, keras.Model):
            raise unsupported(operation, "is a nested model; the bridge needs a flat model")
        if id(operation) not in twins:
            twins[id(operation)] = twin_layer(operation)
        return twins[id(operation)]

    outputs = graph._run_through_graph(inputs, operation_fn=swap)
    return list(keras.tree.flatten(outputs))


def _graph(model: Any) -> Any:
    """The Functional graph of a model (a built Sequential keeps one inside)."""
    import keras

    if not isinstance(model, keras.Sequential):
        return model
    graph = getattr(model, "_functional", None)
    if graph is None:
        raise InputError(f"model '{model.name}' has no input shape; the bridge cannot build it.")
    return graph


def _single(tensors: list[Any]) -> Any:
    return tensors[0] if len(tensors) == 1 else tensors


def copy_weights(source: Any, target: Any) -> None:
    """Copy every layer's weights from `source` to the same-named layer of `target`.

    Both libraries list a layer's weights as trainable then non-trainable, in creation order, so
    position matches; the receiving layer checks every shape.
    """
    for layer in source.layers:
        values = layer.get_weights()
        if not values:
            continue
        try:
            target.get_layer(layer.name).set_weights(values)
        except ValueError as error:
            raise InputError(
                f"weights of layer '{layer.name}' do not fit its tf_keras twin "
                f"({describe(error)}); {MASK_HINT}."
            ) from None


def sample_inputs(model: Any, count: int, data: np.ndarray | None, seed: int = 0) -> Any:
    """Inputs to compare the two models on: the first rows of `data`, else seeded noise."""
    if data is not None and len(model.inputs) == 1:
        return data[:count]
    from sparseprune.keras_ops.inputs import synthetic_inputs

    return synthetic_inputs(model, count, seed)


@dataclass(frozen=True)
class Comparison:
    max_abs_diff: float  # max |model - twin| over all outputs
    max_abs_output: float  # the outputs' scale
    output_std: float  # largest spread across samples: 0 means every input gives one output


def compare_outputs(model: Any, twin: Any, inputs: Any) -> Comparison:
    """Both models' outputs on `inputs` (inference mode), compared."""
    expected = flat_outputs(model.predict(inputs, verbose=0))
    actual = flat_outputs(twin.predict(inputs, verbose=0))
    if expected.shape != actual.shape:
        raise InputError(
            f"the tf_keras twin returns shape {actual.shape}, the model {expected.shape}; "
            f"{MASK_HINT}."
        )
    if not expected.size:
        return Comparison(0.0, 0.0, 0.0)
    return Comparison(
        float(np.max(np.abs(expected - actual))),
        float(np.max(np.abs(expected))),
        float(np.max(expected.std(axis=0))),
    )


def flat_outputs(output: Any) -> np.ndarray:
    if isinstance(output, dict):
        output = [output[key] for key in sorted(output)]
    if isinstance(output, (list, tuple)):
        return np.concatenate([np.asarray(o, np.float64).reshape(len(o), -1) for o in output], 1)
    return np.asarray(output, np.float64)
