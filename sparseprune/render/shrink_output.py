"""Shrink results as JSON (schema_version 1) and as a rich table. Computes nothing."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sparseprune.shrink.shrinking import LayerShrink, ShrinkResult

SCHEMA_VERSION = 1


def layer_dict(layer: LayerShrink) -> dict[str, Any]:
    return {
        "name": layer.name,
        "class": layer.class_name,
        "units_before": layer.units_before,
        "units_after": layer.units_after,
        "removed": {"dead": layer.dead, "unused": layer.unused},
        "params_before": layer.params_before,
        "params_after": layer.params_after,
        "macs_before": layer.macs_before,
        "macs_after": layer.macs_after,
        "skipped": [{"units": n, "reason": r} for r, n in layer.skipped.items()],
    }


def result_dict(result: ShrinkResult) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "input": {"path": result.input, "format": result.format, "size": result.input_size},
        "output": {"path": result.output, "size": result.output_size},
        "threshold": result.threshold,
        "changed": result.changed,
        "passes": result.passes,
        "layers": [layer_dict(layer) for layer in result.layers],
        "totals": result.totals(),
        "verification": result.verification,
        "checks": {"passed": not result.failures, "failures": result.failures},
    }


def to_json(result: ShrinkResult) -> str:
    return json.dumps(result_dict(result), indent=2)


def _pair(before: int | None, after: int | None) -> str:
    if before is None:
        return ""
    return f"{before:,}" if before == after else f"{before:,} -> {after:,}"


def print_result(console: Console, result: ShrinkResult) -> None:
    table = Table(title=escape(f"{result.input} -> {result.output}"), title_justify="left")
    table.add_column("layer")
    table.add_column("class")
    for column in ("units", "dead", "unused", "params", "MACs"):
        table.add_column(column, justify="right")
    table.add_column("kept because")
    for layer in result.layers:
        reasons = "; ".join(f"{n}: {r}" if n else r for r, n in layer.skipped.items())
        table.add_row(
            escape(layer.name),
            escape(layer.class_name),
            _pair(layer.units_before, layer.units_after),
            str(layer.dead or ""),
            str(layer.unused or ""),
            _pair(layer.params_before, layer.params_after),
            _pair(layer.macs_before, layer.macs_after),
            escape(reasons),
        )
    console.print(table)
    totals = result.totals()
    if not result.changed:
        console.print("no dead or unused units: every layer keeps its size")
    console.print(
        f"units {_pair(totals['units_before'], totals['units_after'])}, params "
        f"{_pair(totals['params_before'], totals['params_after'])}, MACs "
        f"{_pair(totals['macs_before'], totals['macs_after'])}; size {result.input_size:,} -> "
        f"{result.output_size:,} bytes; optimizer state and compile settings dropped"
    )
    if result.verification:
        v = result.verification
        console.print(
            f"verify: max |Δ| {v['max_abs_diff']:.3g}, mean |Δ| {v['mean_abs_diff']:.3g} "
            f"on {v['samples']} {escape(str(v['inputs']))} inputs"
        )
    for failure in result.failures:
        console.print(f"[bold red]check failed:[/] {escape(failure)}")
