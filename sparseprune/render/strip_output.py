"""Strip results: the JSON document, the rows of CSV/Markdown, and a rich table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sparseprune.render.sizes import size_change
from sparseprune.render.tabular import Rows
from sparseprune.strip.stripping import StripResult


def document(result: StripResult) -> dict[str, Any]:
    return {
        "input": {"path": result.input, "format": result.format, "size": result.input_size},
        "output": {"path": result.output, "size": result.output_size},
        "layers": [
            {
                "wrapper": layer.wrapper,
                "layer": layer.layer,
                "class": layer.layer_class,
                "weights": [
                    {
                        "name": w.name,
                        "shape": list(w.shape),
                        "params": w.params,
                        "masked": w.masked,
                        "zeros": w.zeros,
                        "sparsity": w.zeros / w.params if w.params else 0.0,
                    }
                    for w in layer.weights
                ],
            }
            for layer in result.layers
        ],
        "dropped_variables": result.dropped_variables,
        "checks": {"passed": not result.failures, "failures": result.failures},
    }


def rows(result: StripResult) -> Rows:
    """One row per folded weight (a wrapper without prunable weights gets none)."""
    columns = ("wrapper", "layer", "class", "weight", "shape", "params", "masked", "zeros")
    return Rows(
        (*columns, "sparsity"),
        [
            (
                layer.wrapper,
                layer.layer,
                layer.layer_class,
                w.name,
                w.shape,
                w.params,
                w.masked,
                w.zeros,
                w.zeros / w.params if w.params else 0.0,
            )
            for layer in result.layers
            for w in layer.weights
        ],
    )


def print_result(console: Console, result: StripResult) -> None:
    table = Table(title=escape(f"{result.input} -> {result.output}"), title_justify="left")
    for column in ("wrapper", "layer", "class", "weight", "shape"):
        table.add_column(column)
    for column in ("params", "masked", "zeros", "sparsity"):
        table.add_column(column, justify="right")
    for layer in result.layers:
        first = (escape(layer.wrapper), escape(layer.layer), escape(layer.layer_class or "?"))
        if not layer.weights:
            table.add_row(*first, "[dim](no prunable weight)[/]", "", "", "", "", "")
        for w in layer.weights:
            table.add_row(
                *first,
                escape(w.name),
                "×".join(map(str, w.shape)),
                f"{w.params:,}",
                f"{w.masked:,}",
                f"{w.zeros:,}",
                f"{w.zeros / max(w.params, 1):.1%}",
            )
    console.print(table)
    console.print(
        f"unwrapped {len(result.layers)} layers, dropped {result.dropped_variables} wrapper "
        f"variables (mask, threshold, pruning_step); size: "
        f"{size_change(result.input_size, result.output_size)}"
    )
