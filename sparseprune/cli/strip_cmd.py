"""`sparseprune strip`: remove TFMOT pruning wrappers from a saved model (no TFMOT, no Keras)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sparseprune.cli.common import exit_codes, stdout
from sparseprune.errors import CheckFailed, InputError
from sparseprune.render import strip_output
from sparseprune.streams import STDOUT, input_path
from sparseprune.strip.stripping import strip_model


def strip(
    model: Annotated[
        str,
        typer.Argument(help="Model saved with TFMOT pruning wrappers (.keras, .h5); - for stdin."),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output file, in the same format as MODEL.")
    ],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable summary.")] = False,
) -> None:
    """Remove TFMOT pruning wrappers: masks folded into weights, loadable without TFMOT."""
    with exit_codes():
        if str(output) == STDOUT:
            raise InputError("strip writes a model file; give -o a .keras or .h5 path.")
        with input_path(model) as (path, label):
            result = strip_model(path, output, force, label)
        if as_json:
            typer.echo(strip_output.to_json(result))
        else:
            strip_output.print_result(stdout, result)
        if result.failures:
            raise CheckFailed(f"{len(result.failures)} check(s) failed on the written file.")
