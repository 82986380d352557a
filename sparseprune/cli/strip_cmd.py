"""`sparseprune strip`: remove TFMOT pruning wrappers from a saved model (no TFMOT, no Keras)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sparseprune.cli.common import end_on_failures, exit_codes
from sparseprune.cli.output import Output, OutputOptions, Renderer, emit, output_options
from sparseprune.errors import InputError
from sparseprune.render import strip_output
from sparseprune.streams import STDOUT, input_path
from sparseprune.strip.stripping import strip_model

RENDERER = Renderer(strip_output.print_result, strip_output.rows)


@output_options
def strip(
    model: Annotated[
        str,
        typer.Argument(help="Model saved with TFMOT pruning wrappers (.keras, .h5); - for stdin."),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output file, in the same format as MODEL.")
    ],
    *,
    out: OutputOptions,
) -> None:
    """Remove TFMOT pruning wrappers: masks folded into weights, loadable without TFMOT."""
    with exit_codes():
        if str(output) == STDOUT:
            raise InputError("strip writes a model file; give -o a .keras or .h5 path.")
        report = Output.of(out, inputs=(model, output))
        with input_path(model) as (path, label):
            result = strip_model(path, output, force=out.force, label=label)
        emit(result, RENDERER, report)
    end_on_failures(result.failures)
