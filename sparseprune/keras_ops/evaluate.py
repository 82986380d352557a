"""`evaluate`: loss and metrics of a saved model on the validation split of an `.npz`.

`load_split` needs no Keras, so light code (and training) can use it; everything else imports
Keras only through `load_keras_model`. The file's compile settings are read as plain names
(`compile.saved_settings`), never deserialized.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparseprune.errors import InputError, describe
from sparseprune.keras_ops.compile import infer_loss, saved_settings
from sparseprune.keras_ops.loading import check_loadable, load_keras_model
from sparseprune.keras_ops.verify import _as_array, _inputs

# Evaluation prefers held-out data: the first pair present wins.
SPLIT_KEYS = (("x_val", "y_val"), ("x_test", "y_test"), ("x", "y"))
DEFAULT_BATCH_SIZE = 32
NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


@dataclass(frozen=True)
class CompileSettings:
    """What the model is evaluated with, and where each part came from (options/file/inferred)."""

    loss: str
    metrics: tuple[str, ...]
    loss_source: str
    metrics_source: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "loss": self.loss,
            "metrics": list(self.metrics),
            "source": {"loss": self.loss_source, "metrics": self.metrics_source},
        }


def load_split(path: str | Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(x, y, "file:key") of the held-out split: x_val/y_val, else x_test/y_test, else x/y."""
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise InputError(f"data file {path} is a single .npy array, not an .npz archive.")
        with archive:
            x_key, y_key = _split_keys(path, archive.files)
            x, y = archive[x_key], archive[y_key]
    except FileNotFoundError:
        raise InputError(f"data file {path} does not exist.") from None
    except NPZ_ERRORS as error:
        raise InputError(f"data file {path} is not a readable .npz ({describe(error)}).") from None
    _check_pair(path, x_key, y_key, x, y)
    return x, y, f"{path}:{x_key}"


def _split_keys(path: str | Path, files: list[str]) -> tuple[str, str]:
    for x_key, y_key in SPLIT_KEYS:
        if x_key in files and y_key in files:
            return x_key, y_key
    expected = ", ".join(f"{x}/{y}" for x, y in SPLIT_KEYS)
    found = ", ".join(sorted(files)[:12]) or "nothing"
    raise InputError(f"data file {path} needs arrays {expected}; it has {found}.")


def _check_pair(path: str | Path, x_key: str, y_key: str, x: np.ndarray, y: np.ndarray) -> None:
    if x.ndim == 0 or y.ndim == 0 or len(x) == 0:
        raise InputError(f"data file {path}: '{x_key}' and '{y_key}' hold no samples.")
    if len(x) != len(y):
        raise InputError(
            f"data file {path}: '{x_key}' has {len(x)} samples but '{y_key}' has {len(y)}."
        )
    if not (np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.number)):
        raise InputError(f"data file {path}: '{x_key}' and '{y_key}' must be numeric arrays.")


def evaluate_model(
    path: str,
    data: str | Path,
    batch_size: int = DEFAULT_BATCH_SIZE,
    loss: str | None = None,
    metrics: list[str] | None = None,
    unsafe: bool = False,
) -> dict[str, Any]:
    """Loss and metrics of `path` on the held-out split of `data` (read before loading Keras)."""
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}.")
    x, y, label = load_split(data)
    model = load_keras_model(path, unsafe)
    settings = resolve_compile(model, path, y, loss, metrics)
    values = evaluate_loaded(model, settings, x, y, batch_size)
    return {
        "model": path,
        "data": label,
        "samples": len(x),
        "loss": values.pop("loss"),
        "metrics": values,
        "compile": settings.as_dict(),
    }


def resolve_compile(
    model: Any,
    path: str,
    y: np.ndarray,
    loss: str | None = None,
    metrics: list[str] | None = None,
) -> CompileSettings:
    """Per part: the option if given, else the file's setting if Keras knows it, else inferred."""
    library = keras_library(model)
    saved = saved_settings(path)
    if loss is not None:
        _require(_known_loss(library, loss), f"--loss '{loss}' is not a loss Keras knows.")
        loss_value, loss_source = loss, "options"
    elif saved.get("loss") and _known_loss(library, saved["loss"]):
        loss_value, loss_source = saved["loss"], "file"
    else:
        loss_value, loss_source = infer_loss(model, y), "inferred"
    if metrics is not None:
        unknown = [m for m in metrics if not _known_metric(library, m)]
        _require(not unknown, f"--metrics: {', '.join(unknown)} is not a metric Keras knows.")
        chosen, metrics_source = tuple(metrics), "options"
    elif saved.get("metrics") and all(_known_metric(library, m) for m in saved["metrics"]):
        chosen, metrics_source = tuple(saved["metrics"]), "file"
    else:
        chosen = ("accuracy",) if "crossentropy" in loss_value else ()
        metrics_source = "inferred"
    return CompileSettings(loss_value, chosen, loss_source, metrics_source)


def evaluate_loaded(
    model: Any, settings: CompileSettings, x: np.ndarray, y: np.ndarray, batch_size: int
) -> dict[str, float]:
    """{'loss': ..., metric: ...} from Keras's own evaluate, compiled with `settings`."""
    try:
        model.compile(loss=settings.loss, metrics=list(settings.metrics))
        results = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
    except Exception as error:  # shape or dtype mismatches surface as many TF/Keras types
        raise InputError(
            f"Keras could not evaluate the model with loss '{settings.loss}' on this data "
            f"({describe(error)})."
        ) from error
    return {str(key): float(value) for key, value in results.items()}


def keras_library(model: Any) -> Any:
    """The Keras package the model belongs to (Keras 3 or tf_keras)."""
    return __import__(type(model).__module__.split(".")[0])


def _known_loss(library: Any, name: str) -> bool:
    try:
        return not isinstance(library.losses.get(name), str)
    except (ValueError, TypeError):
        return False


def _known_metric(library: Any, name: str) -> bool:
    """tf_keras returns unknown names unchanged instead of raising, hence the str check."""
    if name in ("accuracy", "acc"):
        return True
    try:
        return not isinstance(library.metrics.get(name), str)
    except (ValueError, TypeError):
        return False


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)


@dataclass
class PairRun:
    """Both models run on the same inputs: output differences, and metrics when data was given."""

    outputs: dict[str, Any]
    metrics_a: dict[str, float] | None = None
    metrics_b: dict[str, float] | None = None
    settings: CompileSettings | None = None
    data: str | None = None


def run_pair(
    a: str,
    b: str,
    data: str | Path | None = None,
    unsafe: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> PairRun:
    """Load A and B once each; compare outputs and evaluate both with A's compile settings."""
    split = load_split(data) if data is not None else None
    for path in (a, b):  # refuse either file before Keras is imported for the other
        check_loadable(path, unsafe)
    model_a = load_keras_model(a, unsafe)
    model_b = load_keras_model(b, unsafe)
    inputs, kind = (split[0], split[2]) if split else _inputs(model_a, None)
    outputs = output_difference(model_a, model_b, inputs, kind, batch_size)
    if split is None:
        return PairRun(outputs)
    x, y, label = split
    settings = resolve_compile(model_a, a, y)
    metrics_a = evaluate_loaded(model_a, settings, x, y, batch_size)
    metrics_b = evaluate_loaded(model_b, settings, x, y, batch_size)
    return PairRun(outputs, metrics_a, metrics_b, settings, label)


def output_difference(
    model_a: Any, model_b: Any, inputs: Any, kind: str, batch_size: int
) -> dict[str, Any]:
    """Max and mean |Δ| between the two models' outputs, in float64 (same keys as --verify)."""
    expected = _as_array(_predict(model_a, inputs, batch_size))
    actual = _as_array(_predict(model_b, inputs, batch_size))
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


def _predict(model: Any, inputs: Any, batch_size: int) -> Any:
    try:
        return model.predict(inputs, batch_size=batch_size, verbose=0)
    except Exception as error:  # wrong input shape or dtype: many TF/Keras exception types
        raise InputError(
            f"Keras could not run the model on these inputs ({describe(error)})."
        ) from error
