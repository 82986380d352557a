"""`sparseprune prune`: one-shot magnitude pruning on the file, written smaller and verified."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn

from sparseprune.cli.common import exit_codes, stderr, stdout
from sparseprune.errors import CheckFailed, InputError
from sparseprune.pruning import PruneResult, default_output, output_suffix, prune_model
from sparseprune.recipes import PruneSpec, load_recipe, merge, parse_pattern
from sparseprune.render import prune_output
from sparseprune.streams import STDIN_LABEL, STDOUT, input_path


class Scope(str, Enum):
    layer = "layer"
    global_ = "global"


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
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable summary.")] = False,
    json_file: Annotated[Path | None, typer.Option(help="Write the JSON summary here.")] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Compare input and output predictions with Keras.")
    ] = False,
    data: Annotated[Path | None, typer.Option(help="Inputs for --verify (.npz with x).")] = None,
    unsafe: Annotated[
        bool, typer.Option("--unsafe", help="Let --verify load Lambda/custom layers.")
    ] = False,
) -> None:
    """Zero the smallest weights of a saved model and write a smaller file (no TensorFlow)."""
    with exit_codes():
        spec = merge(
            load_recipe(config) if config else PruneSpec(),
            {
                "target": target,
                "threshold": threshold,
                "scope": scope.value if scope else None,
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
        to_stdout = output == STDOUT
        with (
            input_path(model) as (path, label),
            output_target(path, label, output) as (target, out_label),
        ):
            if verify:  # refuse before writing anything, without importing Keras
                from sparseprune.keras_ops.loading import check_loadable

                check_loadable(path, unsafe)
            result = _with_progress(path, target, spec, force or to_stdout, label, out_label)
            if verify:
                from sparseprune.keras_ops.verify import verify_outputs

                result.verification = verify_outputs(path, str(target), data, unsafe)
            if to_stdout:
                with open(target, "rb") as written:
                    shutil.copyfileobj(written, sys.stdout.buffer, 1 << 20)
                sys.stdout.buffer.flush()
        _report(result, as_json, json_file, to_stdout)
        if result.failures:
            raise CheckFailed(f"{len(result.failures)} check(s) failed on the written file.")


@contextlib.contextmanager
def output_target(path: str, label: str, output: str | None) -> Iterator[tuple[Path, str]]:
    """Where to write: -o, a scratch file for `-o -`, or `<stem>.pruned<suffix>` beside MODEL."""
    if output != STDOUT:
        if output is None and label == STDIN_LABEL:
            raise InputError("reading the model from stdin needs -o FILE or -o -.")
        target = Path(output) if output else default_output(Path(path))
        yield target, str(target)
        return
    with tempfile.TemporaryDirectory(prefix="sparseprune-") as scratch:
        yield Path(scratch) / f"out{output_suffix(path, label)}", "<stdout>"


def _with_progress(path, target, spec, force, label, out_label) -> PruneResult:
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed} tensors"),
    )
    with Progress(*columns, console=stderr, transient=True, disable=not stderr.is_terminal) as bar:
        task = bar.add_task("pruning", total=None)
        return prune_model(
            path, target, spec, force, label, out_label, on_tensor=lambda _: bar.advance(task)
        )


def _report(result: PruneResult, as_json: bool, json_file: Path | None, to_stdout: bool) -> None:
    """JSON to stdout (or stderr when stdout carries the model), or a table; --json-file too."""
    text = prune_output.to_json(result)
    if json_file is not None:
        json_file.write_text(text + "\n")
    if as_json and not to_stdout:
        typer.echo(text)
    elif as_json and json_file is None:
        typer.echo(text, err=True)
    elif not as_json:
        prune_output.print_result(stderr if to_stdout else stdout, result)
