"""`sparseprune compare`: two models side by side; optional accuracy-drop gate for CI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sparseprune.cli.common import ThresholdOption, UnsafeOption, end_on_failures, exit_codes
from sparseprune.cli.output import Output, OutputOptions, Renderer, emit, output_options
from sparseprune.numeric.stats import DEFAULT_THRESHOLD


@output_options
def compare(
    a: Annotated[str, typer.Argument(help="Reference model (e.g. the dense original).")],
    b: Annotated[str, typer.Argument(help="Model to compare with A (e.g. the pruned one).")],
    data: Annotated[
        Path | None,
        typer.Option(help=".npz: inputs for the output |Δ| and labels for metrics A, B, B−A."),
    ] = None,
    max_drop: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=1.0, help="Exit 1 if B's accuracy is more than X below A's (0.005)."
        ),
    ] = None,
    threshold: ThresholdOption = DEFAULT_THRESHOLD,
    unsafe: UnsafeOption = False,
    *,
    out: OutputOptions,
) -> None:
    """Compare per-layer sparsity, file size, outputs and metrics of two saved models."""
    with exit_codes():
        report = Output.of(out, inputs=(a, b))
        from sparseprune.compare.comparison import compare_models

        comparison = compare_models(
            a, b, data=data, threshold=threshold, max_drop=max_drop, unsafe=unsafe
        )
        from sparseprune.render import compare_output

        emit(comparison, Renderer(compare_output.print_comparison, compare_output.rows), report)
    end_on_failures(comparison.failures)
