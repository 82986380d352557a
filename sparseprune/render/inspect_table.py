"""Rich table of an inspect report, for people at a terminal."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sparseprune.inspect.inspection import ModelReport
from sparseprune.numeric.stats import TensorStats
from sparseprune.render.inspect_output import flag_sentences


def print_tables(console: Console, reports: list[ModelReport], failures: dict[str, list[str]]):
    for report in reports:
        console.print(model_table(report))
        for text in flag_sentences(report):
            console.print(f"[yellow]warning:[/] {escape(text)}")
        if report.optimizer_tensors:
            console.print(
                f"[dim]optimizer state: {report.optimizer_tensors} tensors, "
                f"{report.optimizer_params:,} values (not counted above)[/]"
            )
        for failure in failures.get(report.path, []):
            console.print(f"[bold red]FAIL[/] {escape(failure)}")


def model_table(report: ModelReport) -> Table:
    details = f"{report.format}, {report.file_size:,} bytes, |w| <= {report.threshold:g}"
    table = Table(
        title=f"{escape(report.path)}  [dim]({details})[/]",
        title_justify="left",
    )
    for column in ("layer", "class", "weight", "shape"):
        table.add_column(column)
    for column in ("params", "zeros", "near-zero", "fraction", "dead units"):
        table.add_column(column, justify="right")
    blocks = any(w.stats.litert is not None for w in report.weights if w.shown)
    if blocks:
        table.add_column("4x1 zero · LiteRT", justify="right")
    for layer in report.layers:
        for weight in (w for w in layer.weights if w.shown):
            t, s = weight.tensor, weight.stats
            nan = f" [red]{s.nan} NaN[/]" if s.nan else ""
            inf = f" [red]{s.inf} Inf[/]" if s.inf else ""
            table.add_row(
                escape(t.layer),
                escape(t.layer_class or "?"),
                t.role + ("" if t.prunable else " [dim]·[/]"),
                "×".join(map(str, t.shape)),
                f"{s.params:,}",
                f"{s.zeros:,}",
                f"{s.near_zero:,}{nan}{inf}",
                f"{s.sparsity:.1%}",
                str(s.dead_units) if s.dead_units else "",
                *([litert_cell(s)] if blocks else []),
            )
    totals = report.totals
    table.add_section()
    table.add_row(
        "[bold]prunable total",
        "",
        "",
        "",
        f"{totals.prunable_params:,}",
        "",
        f"{totals.prunable_near_zero:,}",
        f"{totals.prunable_sparsity:.1%}",
        "",
        *([""] if blocks else []),
    )
    table.add_row(
        "[bold]all weights",
        "",
        "",
        "",
        f"{totals.params:,}",
        "",
        f"{totals.near_zero:,}",
        f"{totals.sparsity:.1%}",
        "",
        *([""] if blocks else []),
    )
    return table


def litert_cell(stats: TensorStats) -> str:
    """'90.0% sparse' (green) when the converter would keep the kernel sparse, else 'dense'."""
    verdict, blocks = stats.litert, stats.blocks
    if verdict is None or blocks is None:
        return ""
    fraction = f"{blocks.zero_blocks / blocks.blocks:.1%}"
    return f"{fraction} [green]sparse[/]" if verdict.runs_sparse else f"{fraction} [dim]dense[/]"
