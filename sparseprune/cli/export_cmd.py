"""`sparseprune export`: Keras -> TFLite with the converter's sparsity encoding (loads TF)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from sparseprune.cli.common import JsonOption, UnsafeOption, exit_codes, stdout
from sparseprune.errors import CheckFailed


class Quantize(str, Enum):
    int8 = "int8"
    float16 = "float16"


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
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")] = False,
    unsafe: UnsafeOption = False,
    as_json: JsonOption = False,
) -> None:
    """Convert a Keras model to TFLite (written atomically); with --data, compare the outputs."""
    with exit_codes():
        from sparseprune.keras_ops.export import export_tflite

        level = quantize.value if quantize is not None else None
        result = export_tflite(model, output, level, data, force, sparsity, unsafe, require_sparse)
        from sparseprune.render import bench_output

        if as_json:
            typer.echo(bench_output.to_json(result))
        else:
            bench_output.print_export(stdout, result)
        if result["failures"]:
            raise CheckFailed(f"{len(result['failures'])} pruned kernel(s) would run dense.")
