"""Rich table of an inspect report, for people at a terminal."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sparseprune.inspection import ModelReport
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
    )
    return table
