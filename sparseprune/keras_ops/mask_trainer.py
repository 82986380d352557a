"""`--method mask` with training: gradual magnitude pruning in native Keras, no TFMOT.

Masks come from magnitudes at each schedule step (the same schedule TFMOT uses) and are reapplied
after every optimizer update, so pruned weights stay exactly zero. Works with any model Keras can
train; variables are read and assigned through Keras's own API, not TensorFlow's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparseprune.datasets import load_dataset, validation_metrics
from sparseprune.errors import InputError
from sparseprune.keras_ops.compile import compile_for_training
from sparseprune.keras_ops.loading import load_keras_model
from sparseprune.keras_ops.naming import weights_by_file_name
from sparseprune.numeric.schedule import (
    MaskRules,
    ScheduleSteps,
    TrainSpec,
    pruned_positions,
    resolve_steps,
    should_update,
    sparsity_at,
)

Progress = Callable[[dict], None]


@dataclass
class FinetuneResult:
    weights: dict[str, np.ndarray]
    before: dict[str, float]
    after: dict[str, float]
    seconds_per_epoch: list[float] = field(default_factory=list)
    steps: ScheduleSteps | None = None


def finetune_with_masks(
    model_path: str,
    rules: MaskRules,
    train: TrainSpec,
    unsafe: bool = False,
    progress: Progress | None = None,
) -> FinetuneResult:
    """Train `model_path` on `train.data` while pruning to `rules`; return all final weights."""
    data = load_dataset(train.data)
    steps = resolve_steps(train, len(data.x))
    with _strategy_scope(train.strategy):
        model = load_keras_model(model_path, unsafe)
        compile_for_training(model, model_path, train, data)
    variables = weights_by_file_name(model)
    _check_rules(rules, variables)
    before = validation_metrics(model, data)
    callback = _mask_callback(model, variables, rules, train, steps, progress)
    _seed(model, train.seed)
    model.fit(
        data.x,
        data.y,
        batch_size=train.batch_size,
        epochs=train.epochs,
        verbose=0,
        callbacks=[callback],
        shuffle=True,
    )
    after = validation_metrics(model, data)
    weights = {name: np.asarray(variable.numpy()) for name, variable in variables.items()}
    return FinetuneResult(weights, before, after, callback.seconds_per_epoch, steps)


def _check_rules(rules: MaskRules, variables: dict[str, Any]) -> None:
    missing = [r.name for r in rules.rules if r.name not in variables]
    if missing:
        raise InputError(
            f"the loaded model has no weight named {missing[0]}; its weights are: "
            f"{', '.join(list(variables)[:12])}."
        )


def _mask_callback(model, variables, rules, train, steps, progress):
    """A Callback of the model's own Keras library (Keras 3 or tf_keras)."""
    library = __import__(type(model).__module__.split(".")[0])
    to_tensor = _tensor_converter(library)

    class MaskCallback(library.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.step = 0
            self.keep: dict[str, Any] = {}
            self.pruned = self.total = 0
            self.seconds_per_epoch: list[float] = []
            self.started = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_train_batch_begin(self, batch, logs=None):
            # Like TFMOT: nothing is masked before begin_step, masks change only on update steps.
            if should_update(self.step, steps):
                self.update(lambda target: sparsity_at(self.step, target, train, steps))

        def on_train_batch_end(self, batch, logs=None):
            self.apply()
            self.step += 1

        def on_epoch_end(self, epoch, logs=None):
            self.seconds_per_epoch.append(time.perf_counter() - self.started)
            if progress is not None:
                progress(
                    {
                        "epoch": epoch + 1,
                        "epochs": train.epochs,
                        "logs": dict(logs or {}),
                        "sparsity": self.sparsity(),
                    }
                )

        def on_train_end(self, logs=None):
            self.update(lambda target: target)  # end exactly at the final targets

        def update(self, schedule: Callable[[float], float]) -> None:
            values = {r.name: np.asarray(variables[r.name].numpy()) for r in rules.rules}
            positions = pruned_positions(values, rules, schedule)
            self.pruned = sum(int(np.count_nonzero(p)) for p in positions.values())
            self.total = sum(p.size for p in positions.values())
            # Backend tensors, built once per update: the per-batch multiply stays in the backend.
            self.keep = {
                name: to_tensor((~chosen).astype(values[name].dtype))
                for name, chosen in positions.items()
            }
            self.apply()

        def apply(self) -> None:
            for name, keep in self.keep.items():
                variables[name].assign(variables[name] * keep)

        def sparsity(self) -> float:
            return self.pruned / self.total if self.total else 0.0

    return MaskCallback()


def _tensor_converter(library: Any) -> Callable[[np.ndarray], Any]:
    """Keras 3's backend-neutral `ops.convert_to_tensor`; tf_keras models live on TensorFlow."""
    if hasattr(library, "ops"):
        return library.ops.convert_to_tensor
    import tensorflow as tf

    return tf.convert_to_tensor


def _seed(model: Any, seed: int) -> None:
    library = __import__(type(model).__module__.split(".")[0])
    with contextlib.suppress(AttributeError):
        library.utils.set_random_seed(seed)


def _strategy_scope(strategy: str):
    """`tf.distribute` strategies for multi-device or multi-worker fine-tuning."""
    if strategy == "none":
        return contextlib.nullcontext()
    import tensorflow as tf

    if strategy == "mirrored":
        return tf.distribute.MirroredStrategy().scope()
    if strategy == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy().scope()
    raise InputError(f"--strategy must be none, mirrored or multiworker, got {strategy!r}.")
