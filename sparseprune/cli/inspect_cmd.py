"""`sparseprune inspect`: per-layer near-zero report, CI gates, plots."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sparseprune.choices import OutputFormat
from sparseprune.cli.common import (
    ThresholdOption,
    end_on_failures,
    exit_codes,
    fail,
    last_error,
    stderr,
)
from sparseprune.cli.output import Output, OutputOptions, Renderer, emit, output_options
from sparseprune.extras import require
from sparseprune.formats.atomic import atomic_path, check_output_path
from sparseprune.inspect.inspection import ModelReport, inspect_model
from sparseprune.numeric.stats import DEFAULT_THRESHOLD
from sparseprune.streams import STDIN, input_path


@dataclass
class Inspection:
    """Every file given: the reports read, and one {path, error} per file that failed."""

    reports: list[ModelReport]
    errors: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> str:
        from sparseprune.render.inspect_output import to_json

        return to_json(self.reports, self.errors)


def _table(console, inspection: Inspection) -> None:
    from sparseprune.render.inspect_table import print_tables

    print_tables(console, inspection.reports, {})


def _csv(inspection: Inspection) -> str:
    from sparseprune.render.inspect_output import to_csv

    return to_csv(inspection.reports)


def _markdown(inspection: Inspection) -> str:
    from sparseprune.render.inspect_output import to_markdown

    return to_markdown(inspection.reports)


RENDERER = Renderer(_table, csv=_csv, markdown=_markdown)


@output_options
def inspect(
    models: Annotated[
        list[str], typer.Argument(help="Model files (.keras, .h5, .weights.h5); - reads stdin.")
    ],
    threshold: ThresholdOption = DEFAULT_THRESHOLD,
    show_all: Annotated[
        bool, typer.Option("--all", help="Show every tensor, not only prunable ones.")
    ] = False,
    layers: Annotated[
        str | None, typer.Option(help="Only layers whose name matches this regex (re.search).")
    ] = None,
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
    *,
    out: OutputOptions,
) -> None:
    """Report per-layer near-zero weights of saved Keras models (no TensorFlow import)."""
    inputs = [m for m in models if m != STDIN]
    plots = _plot_targets(plot, len(models))
    with exit_codes():
        if plots:
            require("plot", "--plot")
        others = [("plot", target) for target in plots]
        output = Output.of(out, inputs, others)
        for target in plots:
            check_output_path(target, out.force, inputs)
    inspection = Inspection([])
    for model in models:
        try:
            with exit_codes(), input_path(model) as (path, label):
                report = inspect_model(
                    path,
                    threshold=threshold,
                    layers=layers,
                    show_all=show_all,
                    histograms=plot is not None,
                    min_sparsity=min_sparsity,
                    max_sparsity=max_sparsity,
                    label=label,
                )
                inspection.reports.append(report)
        except typer.Exit:
            inspection.errors.append({"path": model, "error": last_error()})
    if inspection.reports or output.format is OutputFormat.JSON:
        with exit_codes():
            emit(inspection, RENDERER, output)
    if plots:
        _plots(inspection.reports, plots, out.force, inputs)
    if inspection.errors:
        raise typer.Exit(2)
    end_on_failures([failure for report in inspection.reports for failure in report.failures])


def _plot_targets(plot: Path | None, count: int) -> list[Path]:
    """One PNG per model: the --plot path itself, or `<stem>-<n>.png` for several models."""
    if plot is None:
        return []
    if plot.suffix.lower() != ".png":
        raise fail(f"--plot writes a PNG image; give a path ending in .png, not {plot}.")
    if count == 1:
        return [plot]
    return [plot.with_stem(f"{plot.stem}-{index + 1}") for index in range(count)]


def _plots(reports: list[ModelReport], targets: list[Path], force: bool, inputs) -> None:
    from sparseprune.render.plot import save_plot

    for report, target in zip(reports, targets, strict=False):
        with exit_codes(), atomic_path(target, force=force, inputs=inputs) as temp:
            save_plot(report, str(temp))
        stderr.print(f"plot written to {escape(str(target))}")
