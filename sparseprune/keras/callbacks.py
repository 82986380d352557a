"""TFMOT's pruning callbacks for Keras 3.

The step counter lives in each wrapper and advances inside the compiled train step, so
`UpdatePruningStep` does no per-batch work: it is kept so ported code runs unchanged, and checks
that the model has something to prune. `PruningSummaries` logs sparsity per layer.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import keras

from sparseprune.keras.api import layer_sparsity
from sparseprune.keras.wrapper import wrappers


class UpdatePruningStep(keras.callbacks.Callback):
    """Required by TFMOT; here a check only (the step advances inside the train step)."""

    def on_train_begin(self, logs: dict | None = None) -> None:
        if not wrappers(self.model):
            raise ValueError(
                "the model has no pruning wrappers: wrap it with prune_low_magnitude first."
            )


class PruningSummaries(keras.callbacks.Callback):
    """Sparsity per wrapped layer at each epoch end: into `logs` (History, CSVLogger see it) as
    `sparsity/<layer>`, appended to `<log_dir>/sparsity.jsonl`, and as TensorBoard scalars when
    the backend is TensorFlow and tensorboard is installed."""

    def __init__(self, log_dir: str | Path | None = None, update_freq: str = "epoch") -> None:
        super().__init__()
        if update_freq != "epoch":
            raise ValueError("PruningSummaries logs once per epoch (update_freq='epoch').")
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self._writer: Any = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        sparsity = layer_sparsity(self.model)
        if logs is not None:
            logs.update({f"sparsity/{name}": value for name, value in sparsity.items()})
        if self.log_dir is None:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / "sparsity.jsonl", "a", encoding="utf-8") as out:
            out.write(json.dumps({"epoch": epoch, "sparsity": sparsity}, sort_keys=True) + "\n")
        self._tensorboard(epoch, sparsity)

    def _tensorboard(self, epoch: int, sparsity: dict[str, float]) -> None:
        if (
            keras.backend.backend() != "tensorflow"
            or importlib.util.find_spec("tensorboard") is None
        ):
            return
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir))
        with self._writer.as_default():
            for name, value in sparsity.items():
                tf.summary.scalar(f"{name}/sparsity", value, step=epoch)
        self._writer.flush()
