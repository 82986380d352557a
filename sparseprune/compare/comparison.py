"""`compare_models`: two model files side by side, the library behind `compare`.

Per-layer sparsity and file sizes come from `inspect_model` (no Keras). Output differences and
metrics need both models live, so `keras_ops.evaluate` is imported only inside `compare_models`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from sparseprune.errors import InputError
from sparseprune.inspect.inspection import LayerReport, ModelReport, inspect_model
from sparseprune.numeric.stats import DEFAULT_THRESHOLD
from sparseprune.schema import JsonResult

# Preferred first: what `metrics=["accuracy"]` reports, then Keras's explicit variants.
ACCURACY_NAMES = (
    "accuracy",
    "acc",
    "sparse_categorical_accuracy",
    "categorical_accuracy",
    "binary_accuracy",
)

# 0.9 - 0.895 is 0.0050000000000000044 in floats: a drop of exactly --max-drop must pass.
DROP_TOLERANCE = 1e-9


@dataclass
class LayerPair:
    """One layer in A and/or B; a side is None when the layer exists only in the other model."""

    name: str
    class_name: str | None
    a: LayerReport | None
    b: LayerReport | None


def prunable_counts(layer: LayerReport | None) -> tuple[int, int] | None:
    """(prunable params, near-zero among them) of one side of a pair; None when absent."""
    if layer is None:
        return None
    prunable = [w.stats for w in layer.weights if w.tensor.prunable]
    return sum(s.params for s in prunable), sum(s.near_zero for s in prunable)


@dataclass
class MetricDiff:
    name: str
    a: float
    b: float

    @property
    def delta(self) -> float:
        """B - A: negative means B scores lower."""
        return self.b - self.a


@dataclass
class Comparison(JsonResult):
    """Two models side by side; `failures` holds the --max-drop gate's sentence, if it failed."""

    DOCUMENT = "sparseprune.render.compare_output"

    a: ModelReport
    b: ModelReport
    layers: list[LayerPair]
    outputs: dict[str, Any] = field(default_factory=dict)
    metrics: list[MetricDiff] = field(default_factory=list)
    data: str | None = None
    compile: dict[str, Any] | None = None
    max_drop: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def size_ratio(self) -> float | None:
        """How many times smaller B's file is than A's."""
        return self.a.file_size / self.b.file_size if self.b.file_size else None

    def metric(self, name: str) -> MetricDiff | None:
        return next((m for m in self.metrics if m.name == name), None)

    @property
    def accuracy(self) -> MetricDiff | None:
        """The accuracy metric the --max-drop gate uses, if the evaluation reported one."""
        for name in ACCURACY_NAMES:
            metric = self.metric(name)
            if metric is not None:
                return metric
        return None


def compare_models(
    a: str | os.PathLike[str],
    b: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    max_drop: float | None = None,
    unsafe: bool = False,
    batch_size: int = 32,
) -> Comparison:
    """Sparsity and sizes of A and B, their output |Δ|, and (with data) metrics A, B, B - A.

    With `max_drop`, B's accuracy may fall at most that far below A's; a larger drop is
    listed in `failures` (the CLI exits 1). It needs `data`, whose labels measure accuracy.
    """
    if max_drop is not None and data is None:
        raise InputError("--max-drop needs --data: accuracy is measured on its labels.")
    if max_drop is not None and not 0 <= max_drop <= 1:
        raise InputError(f"'max_drop' must be in [0, 1], got {max_drop}.")
    a, b = os.fspath(a), os.fspath(b)
    comparison = compare_sparsity(a, b, threshold)
    from sparseprune.keras_ops.evaluate import run_pair

    run = run_pair(a, b, data, unsafe, batch_size)
    comparison.outputs = run.outputs
    comparison.data = run.data
    if run.metrics_a is not None and run.metrics_b is not None:
        comparison.metrics = _metric_diffs(run.metrics_a, run.metrics_b)
        comparison.compile = run.settings.as_dict() if run.settings else None
    if max_drop is not None:
        comparison.max_drop = max_drop
        failure = accuracy_drop_failure(comparison, max_drop)
        comparison.failures = [failure] if failure else []
    return comparison


def compare_sparsity(a: str, b: str, threshold: float = DEFAULT_THRESHOLD) -> Comparison:
    """The Keras-free part: both files inspected, layers paired by name (A's order first)."""
    report_a = inspect_model(a, threshold=threshold)
    report_b = inspect_model(b, threshold=threshold)
    return Comparison(report_a, report_b, pair_layers(report_a, report_b))


def pair_layers(a: ModelReport, b: ModelReport) -> list[LayerPair]:
    """Layers with prunable weights in either model, matched by name."""
    in_a = {layer.name: layer for layer in a.layers if layer.prunable_sparsity is not None}
    in_b = {layer.name: layer for layer in b.layers if layer.prunable_sparsity is not None}
    names = list(in_a) + [name for name in in_b if name not in in_a]
    return [
        LayerPair(
            name,
            (in_a.get(name) or in_b[name]).class_name,
            in_a.get(name),
            in_b.get(name),
        )
        for name in names
    ]


def _metric_diffs(a: dict[str, float], b: dict[str, float]) -> list[MetricDiff]:
    """Loss first, then metrics in A's order; only names both evaluations reported."""
    names = ["loss"] + [name for name in a if name != "loss"]
    return [MetricDiff(name, a[name], b[name]) for name in names if name in a and name in b]


def accuracy_drop_failure(comparison: Comparison, max_drop: float) -> str | None:
    """The --max-drop gate: a sentence naming both accuracies when B falls more than max_drop."""
    accuracy = comparison.accuracy
    if accuracy is None:
        measured = ", ".join(m.name for m in comparison.metrics) or "nothing"
        raise InputError(
            f"--max-drop needs an accuracy metric, but the models were evaluated with: {measured}."
        )
    drop = accuracy.a - accuracy.b
    if drop <= max_drop + DROP_TOLERANCE:
        return None
    return (
        f"{accuracy.name} fell from {accuracy.a:.4f} ({comparison.a.path}) to {accuracy.b:.4f} "
        f"({comparison.b.path}), a drop of {drop:.4f} > --max-drop {max_drop:g}."
    )
