"""`sparseprune shrink`: remove dead units and filters, write smaller layers (no TensorFlow)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sparseprune.cli.common import (
    ThresholdOption,
    UnsafeOption,
    VerifyOption,
    end_on_failures,
    exit_codes,
)
from sparseprune.cli.output import Output, OutputOptions, Renderer, emit, output_options
from sparseprune.errors import InputError
from sparseprune.numeric.stats import DEFAULT_THRESHOLD
from sparseprune.render import shrink_output
from sparseprune.shrink.shrinking import DEFAULT_TOLERANCE, shrink_model
from sparseprune.streams import STDOUT, input_path

RENDERER = Renderer(shrink_output.print_result, shrink_output.rows)


@output_options
def shrink(
    model: Annotated[str, typer.Argument(help="Model file (.keras, Keras 3 .h5); - for stdin.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output file, in the same format as MODEL.")
    ],
    threshold: ThresholdOption = DEFAULT_THRESHOLD,
    verify: VerifyOption = False,
    data: Annotated[
        Path | None, typer.Option(help="Inputs for --verify (.npz: x_val, x_test, x, x_train).")
    ] = None,
    tolerance: Annotated[
        float, typer.Option(min=0.0, help="--verify fails above this max |Δ|.")
    ] = DEFAULT_TOLERANCE,
    unsafe: UnsafeOption = False,
    *,
    out: OutputOptions,
) -> None:
    """Remove units and filters that pruning left dead; fold their constants into consumers."""
    with exit_codes():
        if str(output) == STDOUT:
            raise InputError("shrink writes a model file; give -o a .keras or .h5 path.")
        report = Output.of(out, inputs=(model, output))
        with input_path(model) as (path, label):
            result = shrink_model(
                path,
                output,
                threshold=threshold,
                force=out.force,
                verify=verify,
                data=data,
                tolerance=tolerance,
                unsafe=unsafe,
                label=label,
            )
        emit(result, RENDERER, report)
    end_on_failures(result.failures)
