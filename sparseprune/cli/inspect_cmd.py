"""`sparseprune inspect`: per-layer near-zero report, CI gates, plots."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sparseprune.cli.common import exit_codes, fail, last_error, stderr, stdout
from sparseprune.formats.atomic import atomic_path, check_output_path
from sparseprune.inspect.inspection import ModelReport, gate_failures, inspect_model
from sparseprune.numeric.stats import DEFAULT_THRESHOLD
from sparseprune.streams import STDIN, input_path


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


def inspect(
    models: Annotated[
        list[str], typer.Argument(help="Model files (.keras, .h5, .weights.h5); - reads stdin.")
    ],
    threshold: Annotated[
        float,
        typer.Option("--threshold", "-t", min=0.0, help="|w| <= threshold counts as near zero."),
    ] = DEFAULT_THRESHOLD,
    show_all: Annotated[
        bool, typer.Option("--all", help="Show every tensor, not only prunable ones.")
    ] = False,
    layers: Annotated[
        str | None, typer.Option(help="Only layers whose name matches this regex (re.search).")
    ] = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="Output format.")
    ] = OutputFormat.table,
    as_json: Annotated[bool, typer.Option("--json", help="Shortcut for --format json.")] = False,
    min_sparsity: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Exit 1 if the prunable near-zero fraction is below."),
    ] = None,
    max_sparsity: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Exit 1 if any selected layer's fraction is above."),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Write a PNG of |w| distributions and sparsity.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing plot.")] = False,
) -> None:
    """Report per-layer near-zero weights of saved Keras models (no TensorFlow import)."""
    fmt = OutputFormat.json if as_json else output_format
    plots = _plot_targets(plot, len(models))
    with exit_codes():
        for target in plots:
            check_output_path(target, force, [m for m in models if m != STDIN])
    reports: list[ModelReport] = []
    errors: list[dict[str, str]] = []
    for model in models:
        try:
            with exit_codes(), input_path(model) as (path, label):
                reports.append(
                    inspect_model(path, threshold, layers, show_all, plot is not None, label)
                )
        except typer.Exit:
            errors.append({"path": model, "error": last_error()})
    failures = {r.path: gate_failures(r, min_sparsity, max_sparsity) for r in reports}
    if reports or fmt is OutputFormat.json:
        _render(fmt, reports, failures, errors)
    if plots:
        _plots(reports, plots, force, models)
    if errors:
        raise typer.Exit(2)
    messages = [message for report_failures in failures.values() for message in report_failures]
    for message in messages:
        stderr.print(f"[bold red]check failed:[/] {escape(message)}", soft_wrap=True)
    if messages:
        raise typer.Exit(1)


def _render(fmt: OutputFormat, reports, failures, errors) -> None:
    from sparseprune.render import inspect_output

    if fmt is OutputFormat.json:
        typer.echo(inspect_output.to_json(reports, failures, errors))
    elif fmt is OutputFormat.csv:
        typer.echo(inspect_output.to_csv(reports), nl=False)
    elif fmt is OutputFormat.markdown:
        typer.echo(inspect_output.to_markdown(reports, failures))
    else:
        from sparseprune.render.inspect_table import print_tables

        print_tables(stdout, reports, {})


def _plot_targets(plot: Path | None, count: int) -> list[Path]:
    """One PNG per model: the --plot path itself, or `<stem>-<n>.png` for several models."""
    if plot is None:
        return []
    if plot.suffix.lower() != ".png":
        raise fail(f"--plot writes a PNG image; give a path ending in .png, not {plot}.")
    if count == 1:
        return [plot]
    return [plot.with_stem(f"{plot.stem}-{index + 1}") for index in range(count)]


def _plots(reports: list[ModelReport], targets: list[Path], force: bool, models) -> None:
    from sparseprune.render.plot import save_plot

    inputs = [m for m in models if m != STDIN]
    for report, target in zip(reports, targets, strict=False):
        with exit_codes(), atomic_path(target, force=force, inputs=inputs) as temp:
            save_plot(report, str(temp))
        stderr.print(f"plot written to {escape(str(target))}")
