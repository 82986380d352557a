"""`--verify`: run input and output models on the same inputs and measure the difference."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparseprune.errors import InputError
from sparseprune.formats.npz import npz_keys, read_npz
from sparseprune.keras_ops.inputs import synthetic_inputs
from sparseprune.keras_ops.loading import load_keras_model

SAMPLES = 64
SEED = 0
DATA_KEYS = ("x_val", "x_test", "x", "x_train")


def verify_outputs(
    source: str, written: str, data: Path | None = None, unsafe: bool = False
) -> dict:
    """Max and mean |Δ| of the two models' outputs (seeded inputs built from the model's own
    input specs, or `data`)."""
    before = load_keras_model(source, unsafe)
    after = load_keras_model(written, unsafe)
    inputs, kind = verification_inputs(before, data)
    expected = as_array(before.predict(inputs, verbose=0))
    actual = as_array(after.predict(inputs, verbose=0))
    return difference_summary(expected, actual, kind)


def difference_summary(expected: np.ndarray, actual: np.ndarray, kind: str) -> dict:
    """Max and mean |Δ| of two models' outputs on the same inputs (`kind` says which inputs)."""
    if expected.shape != actual.shape:
        raise InputError(
            f"the models' outputs have different shapes {expected.shape[1:]} and "
            f"{actual.shape[1:]}; they cannot be compared."
        )
    difference = np.abs(expected.astype(np.float64) - actual.astype(np.float64))
    return {
        "max_abs_diff": float(difference.max()) if difference.size else 0.0,
        "mean_abs_diff": float(difference.mean()) if difference.size else 0.0,
        "samples": len(expected),
        "inputs": kind,
    }


def verification_data(data: Path) -> tuple[np.ndarray, str]:
    """The first SAMPLES inputs of --data (checked without Keras, so callers can refuse early)."""
    key = next((k for k in DATA_KEYS if k in npz_keys(data)), None)
    if key is None:
        raise InputError(f"{data} has none of the arrays {', '.join(DATA_KEYS)}.")
    return read_npz(data, keys=[key])[key][:SAMPLES], f"{data}:{key}"


def verification_inputs(model, data: Path | None):
    if data is not None:
        return verification_data(data)
    return synthetic_inputs(model, SAMPLES, SEED), "random"


def as_array(output) -> np.ndarray:
    if isinstance(output, (list, tuple)):
        return np.concatenate([np.asarray(o).reshape(len(o), -1) for o in output], axis=1)
    if isinstance(output, dict):
        return as_array([output[k] for k in sorted(output)])
    return np.asarray(output)
