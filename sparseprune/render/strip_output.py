"""Strip results as JSON (schema_version 1) and as a rich table."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sparseprune.strip.stripping import StripResult

SCHEMA_VERSION = 1


def result_dict(result: StripResult) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
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


def to_json(result: StripResult) -> str:
    return json.dumps(result_dict(result), indent=2)


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
        f"variables (mask, threshold, pruning_step); size: {result.input_size:,} -> "
        f"{result.output_size:,} bytes"
    )
    for failure in result.failures:
        console.print(f"[bold red]check failed:[/] {escape(failure)}")
