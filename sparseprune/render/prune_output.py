"""Prune results: the JSON document, the rows of CSV/Markdown, and a rich table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sparseprune.prune import PruneResult
from sparseprune.render.sizes import size_change
from sparseprune.render.tabular import Rows


def document(result: PruneResult) -> dict[str, Any]:
    return {
        "input": {"path": result.input, "format": result.format, "size": result.input_size},
        "output": {"path": result.output, "size": result.output_size},
        "size_ratio": result.input_size / result.output_size if result.output_size else None,
        "information_bound_bytes": round(result.bound_bytes),
        "optimizer": result.optimizer,
        "tensors": [
            {
                "name": t.tensor.name,
                "layer": t.tensor.layer,
                "role": t.tensor.role,
                "shape": list(t.tensor.shape),
                "params": t.tensor.params,
                "method": t.method,
                "target": t.target,
                "zeros_before": t.zeros_before,
                "zeros_after": t.zeros_after,
                "sparsity": t.zeros_after / t.tensor.params if t.tensor.params else 0.0,
                "units_pruned": t.units_pruned,
                "units_zero_after": t.units_zero_after,
                "blocks_pruned": t.blocks_pruned,
                "blocks_zero_after": t.blocks_zero_after,
                "blocks_total": t.blocks_total,
            }
            for t in result.pruned
        ],
        "skipped": [
            {"name": t.tensor.name, "reason": t.skip_reason}
            for t in result.tensors
            if t.skip_reason
        ],
        "checks": {"passed": not result.failures, "failures": result.failures},
        "verification": result.verification,
        "training": result.training,
        "shrink": result.shrink,
    }


def rows(result: PruneResult) -> Rows:
    """One row per pruned tensor, the table's columns at full precision."""
    columns: tuple[str, ...] = ("tensor", "layer", "role", "method", "shape", "params", "target")
    columns += ("zeros_before", "zeros_after", "sparsity")
    return Rows(
        columns,
        [
            (
                t.tensor.name,
                t.tensor.layer,
                t.tensor.role,
                t.method,
                t.tensor.shape,
                t.tensor.params,
                t.target,
                t.zeros_before,
                t.zeros_after,
                t.zeros_after / t.tensor.params if t.tensor.params else 0.0,
            )
            for t in result.pruned
        ],
    )


def print_result(console: Console, result: PruneResult) -> None:
    table = Table(title=escape(f"{result.input} -> {result.output}"), title_justify="left")
    for column in ("tensor", "method", "shape"):
        table.add_column(column)
    for column in ("params", "target", "zeros before", "zeros after", "sparsity"):
        table.add_column(column, justify="right")
    for t in result.pruned:
        table.add_row(
            escape(t.tensor.name),
            t.method or "",
            "×".join(map(str, t.tensor.shape)),
            f"{t.tensor.params:,}",
            "" if t.target is None else f"{t.target:.0%}",
            f"{t.zeros_before:,}",
            f"{t.zeros_after:,}",
            f"{t.zeros_after / max(t.tensor.params, 1):.1%}",
        )
    console.print(table)
    skipped = [t for t in result.tensors if t.skip_reason and t.tensor.role != "bias"]
    for t in skipped:
        console.print(f"[dim]skipped {escape(t.tensor.name)}: {escape(t.skip_reason or '')}[/]")
    for t in result.pruned:
        if t.blocks_total:
            console.print(
                f"{escape(t.tensor.name)}: {t.blocks_zero_after:,} of {t.blocks_total:,} blocks "
                f"all zero ({(t.blocks_zero_after or 0) / t.blocks_total:.1%})"
            )
    console.print(
        f"size: {size_change(result.input_size, result.output_size)}; "
        f"information bound {round(result.bound_bytes):,} bytes; optimizer state {result.optimizer}"
    )
    if result.verification:
        v = result.verification
        console.print(
            f"verify: max |Δ| {v['max_abs_diff']:.3g}, mean |Δ| {v['mean_abs_diff']:.3g} "
            f"on {v['samples']} {v['inputs']} inputs"
        )
    if result.training:
        console.print(escape(training_line(result.training)))
    if result.shrink:
        console.print(shrink_line(result.shrink))


def shrink_line(shrink: dict) -> str:
    """'shrunk: units 202 -> 101, params 17,226 -> 6,000, MACs ...' (totals of shrink's report)."""
    totals = shrink["totals"]

    def pair(key: str) -> str:
        before, after = totals.get(f"{key}_before"), totals.get(f"{key}_after")
        return "?" if before is None or after is None else f"{before:,} -> {after:,}"

    return f"shrunk: units {pair('units')}, params {pair('params')}, MACs {pair('macs')}"


def training_line(training: dict) -> str:
    """'fine-tuned (mask, 30 epochs): accuracy 0.9722 -> 0.9750, loss ... on validation data'."""
    before, after = training.get("before", {}), training.get("after", {})
    changes = ", ".join(
        f"{key} {before[key]:.4f} -> {after[key]:.4f}" for key in sorted(after) if key in before
    )
    if not training.get("epochs"):
        return f"pruned one-shot through {training['method']} (no training)"
    run = f"{training['method']}, {training['epochs']} epochs"
    return f"fine-tuned ({run}): {changes} on validation data"
