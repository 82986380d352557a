"""`sparseprune compare`: two models side by side; optional accuracy-drop gate for CI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sparseprune.cli.common import JsonOption, UnsafeOption, exit_codes, stdout
from sparseprune.errors import CheckFailed, InputError
from sparseprune.numeric.stats import DEFAULT_THRESHOLD


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
    threshold: Annotated[
        float, typer.Option("--threshold", "-t", min=0.0, help="|w| <= T counts as near zero.")
    ] = DEFAULT_THRESHOLD,
    unsafe: UnsafeOption = False,
    as_json: JsonOption = False,
) -> None:
    """Compare per-layer sparsity, file size, outputs and metrics of two saved models."""
    with exit_codes():
        if max_drop is not None and data is None:
            raise InputError("--max-drop needs --data: accuracy is measured on its labels.")
        from sparseprune.compare.comparison import accuracy_drop_failure, compare_models

        comparison = compare_models(a, b, data, threshold, unsafe)
        failure = accuracy_drop_failure(comparison, max_drop) if max_drop is not None else None
        _render(comparison, max_drop, [failure] if failure else [], as_json)
        if failure:
            raise CheckFailed(failure)


def _render(comparison, max_drop: float | None, failures: list[str], as_json: bool) -> None:
    from sparseprune.render import compare_output

    if as_json:
        typer.echo(compare_output.to_json(comparison, max_drop, failures))
    else:
        compare_output.print_comparison(stdout, comparison)
