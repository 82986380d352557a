"""`evaluate`: loss and metrics of a saved model on the validation split of an `.npz`.

Data comes from `data.load_split` (no Keras needed); Keras is imported only through
`load_keras_model`. The file's compile settings are read as plain names
(`compile.saved_settings`), never deserialized.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparseprune.datasets import load_split
from sparseprune.errors import InputError, describe
from sparseprune.keras_ops.compile import infer_loss, saved_settings
from sparseprune.keras_ops.loading import check_loadable, load_keras_model
from sparseprune.keras_ops.verify import as_array, difference_summary, verification_inputs
from sparseprune.schema import JsonResult

# Evaluation prefers held-out data: the first pair present wins.
DEFAULT_BATCH_SIZE = 32


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


@dataclass
class EvaluateResult(JsonResult):
    """Loss and metrics of one model on one split; `compile` says where each setting came from."""

    DOCUMENT = "sparseprune.render.evaluate_output"

    model: str
    data: str
    samples: int
    loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    compile: dict[str, Any] = field(default_factory=dict)


def evaluate_model(
    path: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    loss: str | None = None,
    metrics: list[str] | None = None,
    unsafe: bool = False,
) -> EvaluateResult:
    """Loss and metrics of `path` on the held-out split of `data` (read before loading Keras).

    `loss` and `metrics` default to the file's compile settings, else are inferred from the
    labels; `metrics=[]` evaluates the loss only.
    """
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}.")
    path = os.fspath(path)
    x, y, label = load_split(data)
    model = load_keras_model(path, unsafe)
    settings = resolve_compile(model, path, y, loss, metrics)
    values = evaluate_loaded(model, settings, x, y, batch_size)
    return EvaluateResult(
        model=path,
        data=label,
        samples=len(x),
        loss=values.pop("loss"),
        metrics=values,
        compile=settings.as_dict(),
    )


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
    loss_value, loss_source = _resolve_loss(library, loss, saved.get("loss"))
    if loss_value is None:
        loss_value = infer_loss(model, y)
    chosen, metrics_source = _resolve_metrics(library, metrics, saved.get("metrics"))
    if chosen is None:
        chosen = ("accuracy",) if "crossentropy" in loss_value else ()
    return CompileSettings(loss_value, chosen, loss_source, metrics_source)


def _resolve_loss(library: Any, option: str | None, saved: str | None) -> tuple[str | None, str]:
    """An unknown --loss is an error; an unknown saved loss falls back to inference."""
    if option is not None:
        if not _known_loss(library, option):
            raise InputError(f"--loss '{option}' is not a loss Keras knows.")
        return option, "options"
    if saved and _known_loss(library, saved):
        return saved, "file"
    return None, "inferred"


def _resolve_metrics(
    library: Any, option: list[str] | None, saved: list[str] | None
) -> tuple[tuple[str, ...] | None, str]:
    """Unknown --metrics are an error; saved metrics are used only if Keras knows them all."""
    if option is not None:
        unknown = [name for name in option if not _known_metric(library, name)]
        if unknown:
            raise InputError(f"--metrics: {', '.join(unknown)} is not a metric Keras knows.")
        return tuple(option), "options"
    if saved and all(_known_metric(library, name) for name in saved):
        return tuple(saved), "file"
    return None, "inferred"


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
            f"({_reason(error)})."
        ) from error
    return {str(key): float(value) for key, value in results.items()}


def _reason(error: BaseException) -> str:
    """TensorFlow's graph errors put the cause last ("Incompatible shapes: ..."), not first."""
    text = str(error)
    if text.startswith("Graph execution error"):
        lines = [line.strip() for line in text.splitlines()]
        causes = [line for line in lines if line and not line.startswith("[[")]
        text = causes[-1] if causes else text
    return describe(Exception(text))


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
    data: str | os.PathLike[str] | None = None,
    unsafe: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> PairRun:
    """Load A and B once each; compare outputs and evaluate both with A's compile settings."""
    split = load_split(data) if data is not None else None
    for path in (a, b):  # refuse either file before Keras is imported for the other
        check_loadable(path, unsafe)
    model_a = load_keras_model(a, unsafe)
    model_b = load_keras_model(b, unsafe)
    inputs, kind = (split[0], split[2]) if split else verification_inputs(model_a, None)
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
    expected = as_array(_predict(model_a, inputs, batch_size))
    actual = as_array(_predict(model_b, inputs, batch_size))
    return difference_summary(expected, actual, kind)


def _predict(model: Any, inputs: Any, batch_size: int) -> Any:
    try:
        return model.predict(inputs, batch_size=batch_size, verbose=0)
    except Exception as error:  # wrong input shape or dtype: many TF/Keras exception types
        raise InputError(
            f"Keras could not run the model on these inputs ({_reason(error)})."
        ) from error
