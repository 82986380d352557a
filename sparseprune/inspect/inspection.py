"""`inspect_model`: per-layer near-zero statistics of a model file, the library behind `inspect`."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from sparseprune.errors import InputError
from sparseprune.formats import ModelFile, TensorInfo, open_model
from sparseprune.layers.table import has_output_units
from sparseprune.numeric.stats import DEFAULT_THRESHOLD, TensorStats, tensor_stats
from sparseprune.schema import JsonResult


@dataclass
class WeightReport:
    """One tensor's statistics; `shown`: listed in the output (prunable, or --all)."""

    tensor: TensorInfo
    stats: TensorStats
    shown: bool = True


@dataclass
class LayerReport:
    """The weights of one layer, in file order."""

    name: str
    class_name: str | None
    weights: list[WeightReport] = field(default_factory=list)

    @property
    def prunable_sparsity(self) -> float | None:
        """Near-zero fraction over this layer's prunable weights; None if it has none."""
        prunable = [w.stats for w in self.weights if w.tensor.prunable]
        params = sum(s.params for s in prunable)
        return sum(s.near_zero for s in prunable) / params if params else None


@dataclass
class Totals:
    """Parameter and near-zero counts over all weights and over the prunable ones."""

    params: int = 0
    near_zero: int = 0
    prunable_params: int = 0
    prunable_near_zero: int = 0

    @property
    def sparsity(self) -> float:
        return self.near_zero / self.params if self.params else 0.0

    @property
    def prunable_sparsity(self) -> float:
        return self.prunable_near_zero / self.prunable_params if self.prunable_params else 0.0


@dataclass
class ModelReport(JsonResult):
    """One model's statistics; `failures` holds the sentences of the CI gates that failed."""

    DOCUMENT = "sparseprune.render.inspect_output"

    path: str
    format: str
    writer: str | None
    file_size: int
    threshold: float
    layers: list[LayerReport]
    flags: dict[str, list[str]]
    optimizer_tensors: int = 0
    optimizer_params: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def weights(self) -> list[WeightReport]:
        return [w for layer in self.layers for w in layer.weights]

    @property
    def totals(self) -> Totals:
        totals = Totals()
        for weight in self.weights:
            totals.params += weight.stats.params
            totals.near_zero += weight.stats.near_zero
            if weight.tensor.prunable:
                totals.prunable_params += weight.stats.params
                totals.prunable_near_zero += weight.stats.near_zero
        return totals


def inspect_model(
    path: str | os.PathLike[str],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    layers: str | None = None,
    show_all: bool = False,
    histograms: bool = False,
    min_sparsity: float | None = None,
    max_sparsity: float | None = None,
    label: str | None = None,
) -> ModelReport:
    """Read a model file and count near-zero weights per layer (|w| <= threshold).

    `layers` keeps layers whose name matches the regex; `show_all` marks every tensor shown,
    not only prunable ones; `histograms` keeps log10|w| histograms (for plots). The CI gates
    `min_sparsity` (prunable total) and `max_sparsity` (any layer) fill `report.failures`.
    """
    if not threshold >= 0:
        raise InputError(f"--threshold must be a number >= 0, got {threshold}.")
    for name, bound in (("min_sparsity", min_sparsity), ("max_sparsity", max_sparsity)):
        if bound is not None and not 0 <= bound <= 1:
            raise InputError(f"--{name.replace('_', '-')} must be in [0, 1], got {bound}.")
    with open_model(os.fspath(path), label) as model:
        selected = select_tensors(model, layers)
        report = _report(model, selected, threshold, show_all, histograms)
    report.failures = gate_failures(report, min_sparsity, max_sparsity)
    return report


def select_tensors(model: ModelFile, pattern: str | None) -> list[TensorInfo]:
    """Model weights whose layer name matches `pattern` (re.search); an empty match is an error."""
    tensors = model.model_tensors
    if pattern is None:
        return tensors
    regex = compile_layer_regex(pattern)
    chosen = [t for t in tensors if regex.search(t.layer)]
    if not chosen:
        names = sorted({t.layer for t in tensors})
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise InputError(
            f"--layers '{pattern}' matches no layer with weights in {model.path}; "
            f"its layers are: {shown}."
        )
    return chosen


def compile_layer_regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise InputError(f"'{pattern}' is not a valid regular expression ({error}).") from error


def _report(
    model: ModelFile,
    tensors: list[TensorInfo],
    threshold: float,
    show_all: bool,
    histograms: bool,
) -> ModelReport:
    layers: dict[str, LayerReport] = {}
    for tensor in tensors:
        stats = tensor_stats(
            model.slabs(tensor),
            tensor.shape,
            threshold,
            count_dead_units=has_output_units(tensor.layer_class, tensor.role),
            histogram=histograms,
            count_blocks=runs_as_fully_connected(tensor),
        )
        layer = layers.setdefault(tensor.layer, LayerReport(tensor.layer, tensor.layer_class))
        layer.weights.append(WeightReport(tensor, stats, shown=show_all or tensor.prunable))
    optimizer = model.optimizer_tensors
    return ModelReport(
        path=model.path,
        format=model.format,
        writer=model.writer,
        file_size=model.size,
        threshold=threshold,
        layers=list(layers.values()),
        flags=model.flags(),
        optimizer_tensors=len(optimizer),
        optimizer_params=sum(t.params for t in optimizer),
    )


def runs_as_fully_connected(tensor: TensorInfo) -> bool:
    """Dense kernels become LiteRT FULLY_CONNECTED weights (the one op that runs zeros sparse)."""
    return tensor.layer_class == "Dense" and tensor.role == "kernel" and len(tensor.shape) == 2


def gate_failures(
    report: ModelReport, min_sparsity: float | None, max_sparsity: float | None
) -> list[str]:
    """CI gates: one sentence per failed check, naming the model and (for max) the layer."""
    failures = []
    totals = report.totals
    if min_sparsity is not None and totals.prunable_sparsity < min_sparsity:
        failures.append(
            f"{report.path}: prunable sparsity {totals.prunable_sparsity:.4f} is below "
            f"--min-sparsity {min_sparsity}."
        )
    if max_sparsity is not None:
        for layer in report.layers:
            sparsity = layer.prunable_sparsity
            if sparsity is not None and sparsity > max_sparsity:
                failures.append(
                    f"{report.path}: layer '{layer.name}' has sparsity {sparsity:.4f}, above "
                    f"--max-sparsity {max_sparsity}."
                )
    return failures
