"""Evaluation results as JSON (schema_version 1) and as a rich table."""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

SCHEMA_VERSION = 1


def to_json(result: dict[str, Any]) -> str:
    document = {"schema_version": SCHEMA_VERSION, **result}
    return json.dumps(finite(document), indent=2, allow_nan=False)


def finite(value: Any) -> Any:
    """NaN/Inf (a diverged model's loss) become null: JSON has no spelling for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite(item) for item in value]
    return value


def print_result(console: Console, result: dict[str, Any]) -> None:
    heading = f"{escape(result['model'])} on {escape(result['data'])}"
    console.print(f"{heading}  [dim]({result['samples']:,} samples)[/]")
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("loss", f"{result['loss']:.4f}")
    for name, value in result["metrics"].items():
        table.add_row(escape(name), f"{value:.4f}")
    console.print(table)
    console.print(f"[dim]{escape(compile_sentence(result['compile']))}[/]")


def compile_sentence(settings: dict[str, Any]) -> str:
    """Where the loss and metrics came from: options, the file's compile settings, or inferred."""
    source = settings["source"]
    metrics = ", ".join(settings["metrics"]) or "none"
    return f"loss {settings['loss']} ({source['loss']}); metrics {metrics} ({source['metrics']})"
