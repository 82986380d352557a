"""`sparseprune export`: Keras -> TFLite with the converter's sparsity encoding (loads TF)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sparseprune.choices import Quantize
from sparseprune.cli.common import UnsafeOption, end_on_failures, exit_codes
from sparseprune.cli.output import Output, OutputOptions, Renderer, emit, output_options


@output_options
def export(
    model: Annotated[str, typer.Argument(help="Model file (.keras or full-model .h5).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output .tflite file.")],
    quantize: Annotated[
        Quantize | None,
        typer.Option(help="int8 (needs --data to calibrate) or float16 weights."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help=".npz with x_train (or x): int8 calibration and the |Δ| check."),
    ] = None,
    sparsity: Annotated[
        bool,
        typer.Option(help="Encode zero-heavy tensors sparsely (Optimize.EXPERIMENTAL_SPARSITY)."),
    ] = True,
    require_sparse: Annotated[
        bool,
        typer.Option(
            "--require-sparse", help="Exit 1 if a pruned kernel would run dense in LiteRT."
        ),
    ] = False,
    pruned_at: Annotated[
        float,
        typer.Option(
            "--pruned-at",
            help="Share of zeros from which --require-sparse treats a kernel as pruned.",
        ),
    ] = 0.1,
    unsafe: UnsafeOption = False,
    *,
    out: OutputOptions,
) -> None:
    """Convert a Keras model to TFLite (written atomically); with --data, compare the outputs."""
    with exit_codes():
        report = Output.of(out, inputs=(model, output))
        from sparseprune.keras_ops.export import export_model

        result = export_model(
            model,
            output,
            quantize=quantize,
            data=data,
            sparsity=sparsity,
            force=out.force,
            unsafe=unsafe,
            require_sparse=require_sparse,
            pruned_at=pruned_at,
        )
        from sparseprune.render import bench_output

        emit(result, Renderer(bench_output.print_export, bench_output.export_rows), report)
    end_on_failures(result.failures)
