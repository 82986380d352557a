"""Compile a loaded model for fine-tuning: the file's own settings, overridden by options.

Saved settings are read from the file as JSON data (`compile_config` in `.keras`,
`training_config` in legacy `.h5`); only plain names are used from them, nothing is deserialized
from the file. A fresh optimizer is always built: the saved moments belong to the dense weights.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from sparseprune.datasets import Dataset
from sparseprune.errors import InputError, describe
from sparseprune.formats import open_model
from sparseprune.numeric.schedule import TrainSpec

DEFAULT_OPTIMIZER = "adam"
DEFAULT_LR = 1e-3


def compile_for_training(
    model: Any, path: str, train: TrainSpec, data: Dataset, steps_per_execution: int = 1
) -> None:
    saved = saved_settings(path)
    loss = train.loss or saved.get("loss") or infer_loss(model, data.y)
    if train.metrics is not None:
        metrics = list(train.metrics)
    else:
        metrics = saved.get("metrics") or (["accuracy"] if "crossentropy" in loss else [])
    library = __import__(type(model).__module__.split(".")[0])
    try:
        optimizer = library.optimizers.get(
            train.optimizer or saved.get("optimizer") or DEFAULT_OPTIMIZER
        )
        optimizer.learning_rate = train.lr or saved.get("learning_rate") or DEFAULT_LR
        options = {"steps_per_execution": steps_per_execution} if steps_per_execution > 1 else {}
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics, **options)
    except (ValueError, TypeError) as error:
        raise InputError(f"cannot compile the model for training ({describe(error)}).") from error


def saved_settings(path: str) -> dict[str, Any]:
    """{'optimizer', 'learning_rate', 'loss', 'metrics'} as plain names, where the file has them."""
    with open_model(path) as model:
        config = (model.config or {}).get("compile_config")
        if config is None and "training_config" in model.weights.attrs:
            config = _json(model.weights.attrs["training_config"])
    if not isinstance(config, dict):
        return {}
    optimizer = config.get("optimizer") or config.get("optimizer_config")
    optimizer_config = optimizer.get("config", {}) if isinstance(optimizer, dict) else {}
    return {
        "optimizer": _optimizer_name(optimizer),
        "learning_rate": _number(optimizer_config.get("learning_rate")),
        "loss": config.get("loss") if isinstance(config.get("loss"), str) else None,
        "metrics": [m for m in _flatten(config.get("metrics")) if isinstance(m, str)] or None,
    }


def _optimizer_name(optimizer: Any) -> str | None:
    """'adam' from 'adam', {'class_name': 'Adam'} or tf_keras's {'class_name': 'Custom>Adam'}."""
    if isinstance(optimizer, str):
        return optimizer
    if isinstance(optimizer, dict) and isinstance(optimizer.get("class_name"), str):
        return optimizer["class_name"].split(">")[-1].lower()
    return None


def infer_loss(model: Any, labels: np.ndarray) -> str:
    """Integer labels with several outputs: sparse CE; one-hot: CE; anything else: MSE."""
    units = model.outputs[0].shape[-1] if getattr(model, "outputs", None) else None
    if np.issubdtype(labels.dtype, np.integer) and (units or 1) > 1:
        return "sparse_categorical_crossentropy"
    if labels.ndim == 2 and units == labels.shape[-1] and np.allclose(labels.sum(axis=1), 1):
        return "categorical_crossentropy"
    return "mse"


def _json(value: Any) -> Any:
    try:
        return json.loads(value.decode() if isinstance(value, bytes) else value)
    except (ValueError, TypeError, AttributeError):
        return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _flatten(value: Any) -> list:
    if isinstance(value, list):
        return [item for element in value for item in _flatten(element)]
    return [] if value is None else [value]
