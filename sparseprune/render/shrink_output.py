"""Shrink results: the JSON document, the rows of CSV/Markdown, a rich table. Computes nothing."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sparseprune.render.sizes import size_change
from sparseprune.render.tabular import Rows
from sparseprune.shrink.shrinking import LayerShrink, ShrinkResult


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


def document(result: ShrinkResult) -> dict[str, Any]:
    return {
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


def rows(result: ShrinkResult) -> Rows:
    """One row per layer with units; `kept_because` joins the skip reasons."""
    columns: tuple[str, ...] = ("layer", "class", "units_before", "units_after", "dead", "unused")
    columns += ("params_before", "params_after", "macs_before", "macs_after", "kept_because")
    return Rows(
        columns,
        [
            (
                layer.name,
                layer.class_name,
                layer.units_before,
                layer.units_after,
                layer.dead,
                layer.unused,
                layer.params_before,
                layer.params_after,
                layer.macs_before,
                layer.macs_after,
                _reasons(layer),
            )
            for layer in result.layers
        ],
    )


def _reasons(layer: LayerShrink) -> str:
    return "; ".join(f"{n}: {r}" if n else r for r, n in layer.skipped.items())


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
        reasons = _reasons(layer)
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
        f"{_pair(totals['macs_before'], totals['macs_after'])}; size "
        f"{size_change(result.input_size, result.output_size)}; optimizer state and compile "
        "settings dropped"
    )
    if result.verification:
        v = result.verification
        console.print(
            f"verify: max |Δ| {v['max_abs_diff']:.3g}, mean |Δ| {v['mean_abs_diff']:.3g} "
            f"on {v['samples']} {escape(str(v['inputs']))} inputs"
        )
