"""`sparseprune shrink`: remove dead units and filters, write smaller layers (no TensorFlow)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sparseprune.cli.common import exit_codes, stdout
from sparseprune.errors import CheckFailed, InputError
from sparseprune.numeric.stats import DEFAULT_THRESHOLD
from sparseprune.render import shrink_output
from sparseprune.shrink.shrinking import shrink_model
from sparseprune.streams import STDOUT, input_path

# Removing only dead or unused units changes outputs by float rounding, nothing more.
DEFAULT_TOLERANCE = 1e-5


def shrink(
    model: Annotated[str, typer.Argument(help="Model file (.keras, Keras 3 .h5); - for stdin.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output file, in the same format as MODEL.")
    ],
    threshold: Annotated[
        float, typer.Option("--threshold", "-t", min=0.0, help="|w| <= T counts as zero.")
    ] = DEFAULT_THRESHOLD,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable summary.")] = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="Compare input and output predictions with Keras.")
    ] = False,
    data: Annotated[
        Path | None, typer.Option(help="Inputs for --verify (.npz: x_val, x_test, x, x_train).")
    ] = None,
    tolerance: Annotated[
        float, typer.Option(min=0.0, help="--verify fails above this max |Δ|.")
    ] = DEFAULT_TOLERANCE,
    unsafe: Annotated[
        bool, typer.Option("--unsafe", help="Let --verify load Lambda/custom layers.")
    ] = False,
) -> None:
    """Remove units and filters that pruning left dead; fold their constants into consumers."""
    with exit_codes():
        if str(output) == STDOUT:
            raise InputError("shrink writes a model file; give -o a .keras or .h5 path.")
        with input_path(model) as (path, label):
            if verify:  # refuse before writing anything, without importing Keras
                from sparseprune.keras_ops.loading import check_loadable

                check_loadable(path, unsafe)
            result = shrink_model(path, output, threshold, force, label)
            if verify:
                from sparseprune.keras_ops.verify import verify_outputs

                result.verification = verify_outputs(path, str(output), data, unsafe)
                worst = result.verification["max_abs_diff"]
                if not worst <= tolerance:
                    result.failures.append(f"max |Δ| {worst:.3g} is above --tolerance {tolerance}")
        if as_json:
            typer.echo(shrink_output.to_json(result))
        else:
            shrink_output.print_result(stdout, result)
        if result.failures:
            raise CheckFailed(f"{len(result.failures)} check(s) failed on the written file.")
