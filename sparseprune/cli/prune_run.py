"""What `prune` does around `prune_model` on the command line: where the model goes (-o, -o -,
the default name), the training spec from the options, and the progress bars on stderr."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn

from sparseprune.cli.common import split_names, stderr
from sparseprune.errors import InputError
from sparseprune.numeric.schedule import TrainSpec
from sparseprune.prune import PruneResult, default_output, output_suffix, prune_model
from sparseprune.prune.spec import PruneSpec
from sparseprune.streams import STDIN_LABEL, STDOUT


@contextlib.contextmanager
def output_target(path: str, label: str, output: str | None) -> Iterator[tuple[Path, str]]:
    """Where to write: -o, a scratch file for `-o -`, or `<stem>.pruned<suffix>` beside MODEL."""
    if output != STDOUT:
        if output is None and label == STDIN_LABEL:
            raise InputError("reading the model from stdin needs -o FILE or -o -.")
        target = Path(output) if output is not None else default_output(Path(path))
        yield target, str(target)
        return
    with tempfile.TemporaryDirectory(prefix="sparseprune-") as scratch:
        yield Path(scratch) / f"out{output_suffix(path, label)}", "<stdout>"


def prune_with_progress(path: str, target: Path, spec: PruneSpec, **options) -> PruneResult:
    """Epochs (with loss, metric and sparsity) while training, then tensors while writing."""
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
    )
    with Progress(*columns, console=stderr, transient=True, disable=not stderr.is_terminal) as bar:
        train = options["train"]
        epochs = bar.add_task(
            "fine-tuning", total=train.epochs if train else 0, visible=bool(train)
        )
        tensors = bar.add_task("writing", total=None)

        def on_epoch(update: dict) -> None:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(update["logs"].items()))
            bar.update(
                epochs,
                completed=update["epoch"],
                description=escape(
                    f"epoch {update['epoch']}: {shown}, sparsity {update['sparsity']:.1%}"
                ),
            )

        return prune_model(
            path,
            target,
            spec,
            on_tensor=lambda _: bar.advance(tensors),
            on_epoch=on_epoch,
            **options,
        )


def copy_to_stdout(written: Path) -> None:
    """`-o -`: the finished file, streamed to stdout after every check passed."""
    with open(written, "rb") as source:
        shutil.copyfileobj(source, sys.stdout.buffer, 1 << 20)
    sys.stdout.buffer.flush()


def split_metrics(metrics: str | None) -> tuple[str, ...] | None:
    """--metrics 'accuracy, auc' -> ('accuracy', 'auc'); None or '' keeps the file's own."""
    return tuple(split_names(metrics) or ()) or None


def train_spec(epochs: int | None, data: Path | None, **options: Any) -> TrainSpec | None:
    """Training happens when --epochs is given; it needs --data. `options` are TrainSpec's."""
    if epochs is None:
        return None
    if data is None:
        raise InputError(
            "--epochs needs --data: an .npz with x and y, a folder of images in class "
            "sub-folders, or a .csv with --label COLUMN."
        )
    return TrainSpec(data=str(data), epochs=epochs, **options).validate()
