"""A comparison of two models: the JSON document, the rows of CSV/Markdown, rich tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sparseprune.compare.comparison import Comparison, LayerPair, prunable_counts
from sparseprune.inspect.inspection import LayerReport, ModelReport
from sparseprune.render.sizes import size_change
from sparseprune.render.tabular import Rows

ABSENT = "-"


def document(comparison: Comparison) -> dict[str, Any]:
    failures = comparison.failures
    return {
        "a": _model_dict(comparison.a),
        "b": _model_dict(comparison.b),
        "threshold": comparison.a.threshold,
        "size_ratio": comparison.size_ratio,
        "layers": [_layer_dict(pair) for pair in comparison.layers],
        "outputs": comparison.outputs,
        "data": comparison.data,
        "compile": comparison.compile,
        "metrics": {m.name: {"a": m.a, "b": m.b, "delta": m.delta} for m in comparison.metrics},
        "checks": {"max_drop": comparison.max_drop, "passed": not failures, "failures": failures},
    }


def rows(comparison: Comparison) -> Rows:
    """One row per layer with prunable weights in either model; a missing side is empty."""
    columns: tuple[str, ...] = ("layer", "class", "a_params", "a_near_zero", "a_sparsity")
    columns += ("b_params", "b_near_zero", "b_sparsity", "delta")
    table = []
    for pair in comparison.layers:
        a, b = _side_dict(pair.a), _side_dict(pair.b)
        sides = [(s["params"], s["near_zero"], s["sparsity"]) if s else (None,) * 3 for s in (a, b)]
        delta = b["sparsity"] - a["sparsity"] if a and b else None
        table.append((pair.name, pair.class_name, *sides[0], *sides[1], delta))
    return Rows(columns, table)


def _model_dict(report: ModelReport) -> dict[str, Any]:
    totals = report.totals
    return {
        "path": report.path,
        "format": report.format,
        "keras_version": report.writer,
        "file_size": report.file_size,
        "prunable_params": totals.prunable_params,
        "prunable_near_zero": totals.prunable_near_zero,
        "prunable_sparsity": totals.prunable_sparsity,
    }


def _layer_dict(pair: LayerPair) -> dict[str, Any]:
    return {
        "name": pair.name,
        "class": pair.class_name,
        "a": _side_dict(pair.a),
        "b": _side_dict(pair.b),
    }


def _side_dict(layer: LayerReport | None) -> dict[str, Any] | None:
    counts = prunable_counts(layer)
    if counts is None:
        return None
    params, near_zero = counts
    return {"params": params, "near_zero": near_zero, "sparsity": near_zero / params}


def print_comparison(console: Console, comparison: Comparison) -> None:
    console.print(sparsity_table(comparison))
    console.print(f"size: {size_change(comparison.a.file_size, comparison.b.file_size)}")
    console.print(escape(outputs_sentence(comparison.outputs)))
    if comparison.metrics:
        console.print(escape(f"metrics on {comparison.data}:"))
        console.print(metrics_table(comparison))


def sparsity_table(comparison: Comparison) -> Table:
    a, b = comparison.a, comparison.b
    title = f"A {escape(a.path)}  vs  B {escape(b.path)}  [dim](|w| <= {a.threshold:g})[/]"
    table = Table(title=title, title_justify="left")
    table.add_column("layer")
    table.add_column("class")
    for column in ("params", "A sparsity", "B sparsity", "B − A"):
        table.add_column(column, justify="right")
    for pair in comparison.layers:
        sparsity_a = pair.a.prunable_sparsity if pair.a else None
        sparsity_b = pair.b.prunable_sparsity if pair.b else None
        table.add_row(
            escape(pair.name),
            escape(pair.class_name or "?"),
            _params(prunable_counts(pair.a), prunable_counts(pair.b)),
            _percent(sparsity_a),
            _percent(sparsity_b),
            _points(sparsity_a, sparsity_b),
        )
    total_a, total_b = a.totals.prunable_sparsity, b.totals.prunable_sparsity
    table.add_section()
    table.add_row(
        "[bold]prunable total",
        "",
        _params((a.totals.prunable_params, 0), (b.totals.prunable_params, 0)),
        _percent(total_a),
        _percent(total_b),
        _points(total_a, total_b),
    )
    return table


def metrics_table(comparison: Comparison) -> Table:
    table = Table()
    table.add_column("metric")
    for column in ("A", "B", "B − A"):
        table.add_column(column, justify="right")
    for metric in comparison.metrics:
        table.add_row(
            escape(metric.name), f"{metric.a:.4f}", f"{metric.b:.4f}", f"{metric.delta:+.4f}"
        )
    return table


def outputs_sentence(outputs: dict[str, Any]) -> str:
    inputs = outputs["inputs"]
    source = f"{inputs} inputs" if inputs == "random" else f"inputs from {inputs}"
    return (
        f"outputs: max |Δ| {outputs['max_abs_diff']:.3g}, mean |Δ| {outputs['mean_abs_diff']:.3g} "
        f"on {outputs['samples']:,} {source}"
    )


def _params(a: tuple[int, int] | None, b: tuple[int, int] | None) -> str:
    """One count when both sides agree (or only one exists), else "A / B"."""
    counts = [side[0] for side in (a, b) if side is not None]
    if len(set(counts)) == 1:
        return f"{counts[0]:,}"
    return " / ".join(f"{count:,}" for count in counts)


def _percent(value: float | None) -> str:
    return ABSENT if value is None else f"{value:.1%}"


def _points(a: float | None, b: float | None) -> str:
    """Difference in percentage points, or a dash when either side is missing."""
    return ABSENT if a is None or b is None else f"{(b - a) * 100:+.1f} pt"
