"""`sparseprune evaluate`: loss and metrics of a saved model on held-out data (loads Keras)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sparseprune.cli.common import UnsafeOption, exit_codes, split_names
from sparseprune.cli.output import Output, OutputOptions, Renderer, emit, output_options


@output_options
def evaluate(
    model: Annotated[str, typer.Argument(help="Model file (.keras or full-model .h5).")],
    data: Annotated[
        Path,
        typer.Option(help=".npz with x_val/y_val (else x_test/y_test, else x/y)."),
    ],
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size for evaluation.")] = 32,
    loss: Annotated[
        str | None, typer.Option(help="Loss name; default: the file's, else inferred.")
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(help="Comma-separated metric names; default: the file's, else inferred."),
    ] = None,
    unsafe: UnsafeOption = False,
    *,
    out: OutputOptions,
) -> None:
    """Evaluate a saved model's loss and metrics on the validation split of an .npz file."""
    with exit_codes():
        report = Output.of(out, inputs=(model, data))
        from sparseprune.keras_ops.evaluate import evaluate_model

        result = evaluate_model(
            model,
            data,
            batch_size=batch_size,
            loss=loss,
            metrics=split_names(metrics),
            unsafe=unsafe,
        )
        from sparseprune.render import evaluate_output

        emit(result, Renderer(evaluate_output.print_result, evaluate_output.rows), report)
