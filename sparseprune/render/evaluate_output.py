"""Evaluation results: the JSON document, the rows of CSV/Markdown, and a rich table."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sparseprune.render.tabular import Rows

if TYPE_CHECKING:  # result types only: rendering never loads the Keras side
    from sparseprune.keras_ops.evaluate import EvaluateResult


def document(result: EvaluateResult) -> dict[str, Any]:
    return asdict(result)


def rows(result: EvaluateResult) -> Rows:
    """One row per value: the loss first, then each metric."""
    values = {"loss": result.loss, **result.metrics}
    return Rows(
        ("model", "data", "samples", "metric", "value"),
        [(result.model, result.data, result.samples, k, v) for k, v in values.items()],
    )


def print_result(console: Console, result: EvaluateResult) -> None:
    heading = f"{escape(result.model)} on {escape(result.data)}"
    console.print(f"{heading}  [dim]({result.samples:,} samples)[/]")
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("loss", f"{result.loss:.4f}")
    for name, value in result.metrics.items():
        table.add_row(escape(name), f"{value:.4f}")
    console.print(table)
    console.print(f"[dim]{escape(compile_sentence(result.compile))}[/]")


def compile_sentence(settings: dict[str, Any]) -> str:
    """Where the loss and metrics came from: options, the file's compile settings, or inferred."""
    source = settings["source"]
    metrics = ", ".join(settings["metrics"]) or "none"
    return f"loss {settings['loss']} ({source['loss']}); metrics {metrics} ({source['metrics']})"
