"""`sparseprune bench`: latency, throughput, params and MACs of Keras/TFLite models (loads TF)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sparseprune.cli.common import UnsafeOption, exit_codes
from sparseprune.cli.output import Output, OutputOptions, Renderer, emit, output_options
from sparseprune.errors import InputError


@output_options
def bench(
    models: Annotated[
        list[str], typer.Argument(help="Model files (.keras, full-model .h5, .tflite).")
    ],
    batch_size: Annotated[
        str, typer.Option("--batch-size", help="Comma-separated batch sizes to time.")
    ] = "1,32",
    repeats: Annotated[int, typer.Option(min=2, help="Timed runs per batch size.")] = 50,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed runs first (tracing, caches).")] = 20,
    threads: Annotated[
        int, typer.Option(min=1, help="TF intra/inter-op threads and TFLite num_threads.")
    ] = 1,
    serving: Annotated[
        bool,
        typer.Option(
            "--serving",
            help="One Keras model through every serving path (predict, predict_on_batch, "
            "tf.function, LiteRT dense and sparse), interleaved, with ratios.",
        ),
    ] = False,
    unsafe: UnsafeOption = False,
    *,
    out: OutputOptions,
) -> None:
    """Time inference (median, p90) and count params, nonzeros, MACs and bytes; B/A ratios."""
    with exit_codes():
        report = Output.of(out, inputs=tuple(models))
        from sparseprune import BenchSpec, bench_models, bench_serving

        spec = BenchSpec(parse_sizes(batch_size), repeats, warmup, threads)
        result: Any
        if serving:
            if len(models) != 1:
                raise InputError("bench --serving takes one Keras model.")
            result = bench_serving(models[0], spec=spec, unsafe=unsafe)
        else:
            result = bench_models(models, spec=spec, unsafe=unsafe)
        from sparseprune.render import bench_output

        renderer = (
            Renderer(bench_output.print_serving, bench_output.serving_rows)
            if serving
            else Renderer(bench_output.print_bench, bench_output.rows)
        )
        emit(result, renderer, report)


def parse_sizes(text: str) -> tuple[int, ...]:
    """'1,32' -> (1, 32), duplicates dropped in order; anything else is a usage error."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--batch-size '{text}' must be comma-separated integers.") from None
    if not sizes or min(sizes) < 1:
        raise InputError(f"--batch-size '{text}' needs positive integers, e.g. 1,32.")
    return tuple(dict.fromkeys(sizes))
