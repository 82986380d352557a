"""`sparseprune prune`: one-shot magnitude pruning on the file, written smaller and verified.

The options; what happens around `prune_model` (output target, training spec, progress) is in
prune_run.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sparseprune.choices import BlockPooling, Schedule, Scope, Strategy, Structure, TrainMethod
from sparseprune.cli.common import UnsafeOption, VerifyOption, end_on_failures, exit_codes
from sparseprune.cli.output import Output, OutputOptions, Renderer, emit, output_options
from sparseprune.cli.prune_run import (
    copy_to_stdout,
    output_target,
    prune_with_progress,
    split_metrics,
    train_spec,
)
from sparseprune.prune.recipes import load_recipe, merge
from sparseprune.prune.spec import PruneSpec, parse_block, parse_pattern
from sparseprune.render import prune_output
from sparseprune.streams import STDOUT, input_path


@output_options
def prune(
    model: Annotated[
        str, typer.Argument(help="Model file (.keras, .h5, .weights.h5); - for stdin.")
    ],
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Output file; - for stdout.")
    ] = None,
    target: Annotated[
        float | None, typer.Option(min=0.0, help="Sparsity to reach, 0 <= S < 1.")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(min=0.0, help="Zero every prunable |w| <= T (applied first).")
    ] = None,
    scope: Annotated[
        Scope | None, typer.Option(help="layer: each tensor to --target; global: one threshold.")
    ] = None,
    structure: Annotated[
        Structure | None,
        typer.Option(
            help="weights: single weights; units: whole units/filters by L2 norm, then shrink."
        ),
    ] = None,
    block: Annotated[
        str | None,
        typer.Option(
            help="RxC, e.g. 4x1: zero whole blocks of 2-D kernels (rows x columns as Keras "
            "stores them; 4x1 runs sparse in LiteRT)."
        ),
    ] = None,
    block_pooling: Annotated[
        BlockPooling | None, typer.Option(help="Rank blocks by mean |w| (avg) or max |w|.")
    ] = None,
    layers: Annotated[str | None, typer.Option(help="Only layers matching this regex.")] = None,
    exclude: Annotated[str | None, typer.Option(help="Skip layers matching this regex.")] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="LAYER=S: per-layer target (layer scope) or cap (global)."),
    ] = None,
    pattern: Annotated[
        str | None, typer.Option(help="N:M, e.g. 2:4: N zeros in every M input weights.")
    ] = None,
    mask: Annotated[Path | None, typer.Option(help="0/1 arrays by layer name (.npz).")] = None,
    include_bias: Annotated[bool, typer.Option("--include-bias", help="Prune biases too.")] = False,
    include_unknown: Annotated[
        bool, typer.Option("--include-unknown", help="Prune rank>=2 tensors of unknown classes.")
    ] = False,
    config: Annotated[Path | None, typer.Option("--config", help="TOML recipe.")] = None,
    keep_optimizer: Annotated[
        bool, typer.Option("--keep-optimizer", help="Keep optimizer state as it was.")
    ] = False,
    verify: VerifyOption = False,
    data: Annotated[
        Path | None, typer.Option(help="Training data (x, y, x_val, y_val) and --verify inputs.")
    ] = None,
    unsafe: UnsafeOption = False,
    epochs: Annotated[
        int | None, typer.Option(help="Fine-tune while pruning for N epochs on --data.")
    ] = None,
    method: Annotated[
        TrainMethod,
        typer.Option(help="mask: native Keras masks; tfmot: TensorFlow Model Optimization."),
    ] = TrainMethod.MASK,
    schedule: Annotated[
        Schedule, typer.Option(help="Sparsity schedule while training.")
    ] = Schedule.POLYNOMIAL,
    initial_sparsity: Annotated[float, typer.Option(help="Polynomial schedule start.")] = 0.0,
    begin_step: Annotated[int, typer.Option(help="First pruning step.")] = 0,
    end_step: Annotated[
        int | None, typer.Option(help="Last pruning step (default: half of all steps).")
    ] = None,
    frequency: Annotated[
        int | None, typer.Option(help="Steps between mask updates (default: 4 per epoch).")
    ] = None,
    power: Annotated[float, typer.Option(help="Polynomial schedule exponent.")] = 3.0,
    batch_size: Annotated[int, typer.Option(help="Training batch size.")] = 32,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default: the file's).")] = None,
    optimizer: Annotated[str | None, typer.Option(help="Optimizer (default: the file's).")] = None,
    loss: Annotated[
        str | None, typer.Option(help="Loss (default: the file's, or inferred).")
    ] = None,
    metrics: Annotated[
        str | None, typer.Option(help="Comma-separated metrics (default: the file's).")
    ] = None,
    strategy: Annotated[
        Strategy, typer.Option(help="tf.distribute strategy for fine-tuning.")
    ] = Strategy.NONE,
    seed: Annotated[int, typer.Option(help="Random seed for training.")] = 0,
    label: Annotated[
        str | None, typer.Option(help="Label column when --data is a .csv file.")
    ] = None,
    validation_split: Annotated[
        float, typer.Option(help="Fraction held out for validation when --data has none.")
    ] = 0.2,
    restore_best: Annotated[
        bool,
        typer.Option(
            "--restore-best/--no-restore-best",
            help="Write the best validation weights at the final sparsity (one-shot included).",
        ),
    ] = True,
    custom_objects: Annotated[
        Path | None,
        typer.Option(help="Python file registering custom layers (runs code; needs --unsafe)."),
    ] = None,
    *,
    out: OutputOptions,
) -> None:
    """Zero the smallest weights of a saved model and write a smaller file (no TensorFlow)."""
    with exit_codes():
        spec = merge(
            load_recipe(config) if config else PruneSpec(),
            {
                "target": target,
                "threshold": threshold,
                "scope": scope,
                "structure": structure,
                "block": parse_block(block) if block else None,
                "block_pooling": block_pooling,
                "layers": layers,
                "exclude": exclude,
                "pattern": parse_pattern(pattern) if pattern else None,
                "mask": str(mask) if mask else None,
                "include_bias": include_bias or None,
                "include_unknown": include_unknown or None,
                "keep_optimizer": keep_optimizer or None,
            },
            sets or [],
        )
        train = train_spec(
            epochs,
            data,
            schedule=schedule,
            initial_sparsity=initial_sparsity,
            begin_step=begin_step,
            end_step=end_step,
            frequency=frequency,
            power=power,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer,
            loss=loss,
            metrics=split_metrics(metrics),
            strategy=strategy,
            seed=seed,
            label=label,
            validation_split=validation_split,
            restore_best=restore_best,
        )
        to_stdout = output == STDOUT
        with (
            input_path(model) as (path, in_label),
            output_target(path, in_label, output) as (destination, out_label),
        ):
            others = (("model output", destination),)
            report = Output.of(out, (path,), others)
            result = prune_with_progress(
                path,
                destination,
                spec,
                force=out.force or to_stdout,
                label=in_label,
                out_label=out_label,
                method=method,
                train=train,
                verify=verify,
                data=data,
                unsafe=unsafe,
                custom_objects=custom_objects,
            )
            if to_stdout:
                copy_to_stdout(destination)
        emit(result, RENDERER, report, to_stderr=to_stdout)
    end_on_failures(result.failures)


RENDERER = Renderer(prune_output.print_result, prune_output.rows)
