"""Prune with TFMOT's own code, on the tf_keras twin of a model. Worker process only.

Importing this module imports TFMOT, which switches `tf.keras` to tf_keras for the whole process;
that is why it only ever runs in `tfmot.worker`, never in the parent.

The schedule is sparseprune's (`training.resolve_steps`/`sparsity_at`/`should_update`), expressed
as TFMOT schedules. TFMOT numbers steps from 1 (its step counter is incremented before the mask
update of the same batch), sparseprune from 0, so begin/end are passed shifted by one; and TFMOT
never prunes at `end` unless it falls on the frequency, so the schedules below also prune at
`end`, as `should_update` does. After training one more update at the final target makes the
result exact even when `end` lies beyond the last step (the native trainer does the same).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_schedule import (
    ConstantSparsity,
    PolynomialDecay,
    PruningSchedule,
)
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import (
    PruneLowMagnitude,  # not exported by TFMOT's public API (pinned to 0.8.x)
)

from sparseprune.datasets import Dataset, load_dataset, validation_metrics
from sparseprune.errors import InputError
from sparseprune.keras_ops.compile import compile_for_training
from sparseprune.keras_ops.loading import load_keras_model
from sparseprune.keras_ops.naming import named_weights
from sparseprune.keras_ops.tfmot.translate import (
    MASK_HINT,
    build_twin,
    compare_outputs,
    copy_weights,
    sample_inputs,
)
from sparseprune.numeric.schedule import ScheduleSteps, TrainSpec, resolve_steps

sparsity = tfmot.sparsity.keras
Progress = Callable[[dict], None]
CHECK_SAMPLES = 8
# The twin must reproduce the model before anything is pruned: |Δ| <= TOLERANCE * max(1, |y|).
TOLERANCE = 1e-4
TFMOT_STEP_OFFSET = 1


@dataclass(frozen=True)
class Request:
    model: str
    targets: dict[str, float]
    train: TrainSpec | None = None
    pattern: tuple[int, int] | None = None
    unsafe: bool = False
    block: tuple[int, int] | None = None  # TFMOT's block_size, (rows, columns) of the kernel
    block_pooling: str = "avg"  # TFMOT's block_pooling_type, lower case


@dataclass
class Outcome:
    weights: dict[str, np.ndarray]
    metrics: dict[str, Any]


class _EndAligned(PruningSchedule):
    """Mixin: also prune at `end_step`, as sparseprune's `should_update` does."""

    def _should_prune_in_step(
        self, step: Any, begin_step: int, end_step: int, frequency: int
    ) -> Any:
        regular = super()._should_prune_in_step(step, begin_step, end_step, frequency)
        return tf.math.logical_or(regular, tf.math.equal(step, end_step))


class AlignedPolynomialDecay(_EndAligned, PolynomialDecay):
    """TFMOT's PolynomialDecay that also prunes at its end step."""


class AlignedConstantSparsity(_EndAligned, ConstantSparsity):
    """TFMOT's ConstantSparsity that also prunes at its end step."""


def tfmot_schedule(target: float, train: TrainSpec, steps: ScheduleSteps) -> Any:
    """The TFMOT schedule whose sparsity at TFMOT step s+1 is `sparsity_at(s, target, ...)`."""
    begin, end = steps.begin + TFMOT_STEP_OFFSET, steps.end + TFMOT_STEP_OFFSET
    if train.schedule == "constant" or steps.end <= steps.begin:
        return AlignedConstantSparsity(target, begin, end, steps.frequency)
    initial = min(train.initial_sparsity, target)
    return AlignedPolynomialDecay(initial, target, begin, end, train.power, steps.frequency)


def one_shot_schedule(target: float) -> Any:
    return sparsity.ConstantSparsity(target, begin_step=0, frequency=1)


def prune_with_tfmot(request: Request, progress: Progress | None = None) -> Outcome:
    """Prune (and with `request.train`, fine-tune) the model; return all its weights by name."""
    strategy = make_strategy(request.train.strategy if request.train else "none")
    original = load_keras_model(request.model, request.unsafe)
    names = _weight_names(original)
    layer_targets = _layer_targets(request.targets, names)
    if request.pattern is not None:
        _check_pattern(original, request.targets, request.pattern)
    data = load_dataset(request.train.data) if request.train else None
    with strategy.scope() if strategy else contextlib.nullcontext():
        twin = build_twin(original)
        bridge = _check_twin(request.model, original, twin, data)
        wrapped, steps = _wrap(twin, layer_targets, request, data)
        _check_targets(twin, wrapped, _variable_names(twin, names), request.targets)
        if request.train is None or data is None:
            stripped, metrics = _one_shot(wrapped)
        else:
            stripped, metrics = _fine_tune(twin, wrapped, request, data, steps, progress)
    copy_weights(stripped, original)
    weights = {name: np.asarray(variable.numpy()) for name, variable in named_weights(original)}
    metrics["sparsity"] = {
        name: float(np.count_nonzero(weights[name] == 0) / weights[name].size)
        for name in request.targets
    }
    return Outcome(weights, {**metrics, "bridge": bridge})


def make_strategy(name: str) -> Any:
    """Created first thing: MultiWorkerMirroredStrategy must exist before any other TF op."""
    if name == "none":
        return None
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise InputError(f"--strategy must be none, mirrored or multiworker, got {name!r}.")


def _weight_names(model: Any) -> dict[str, list[str]]:
    """Layer name -> sparseprune names of its weights, in the layer's own weight order."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for name, _ in named_weights(model):
        layer, _, _ = name.rpartition("/")
        if "/" in layer:
            raise InputError(
                f"{name} belongs to a nested model; the TFMOT bridge needs a flat model; "
                f"{MASK_HINT}."
            )
        grouped[layer].append(name)
    return dict(grouped)


def _layer_targets(targets: dict[str, float], names: dict[str, list[str]]) -> dict[str, float]:
    """TFMOT wraps whole layers with one schedule: one target per layer."""
    known = {name for group in names.values() for name in group}
    by_layer: dict[str, float] = {}
    for name, target in targets.items():
        if name not in known:
            raise InputError(
                f"the model has no weight named {name}; its weights are: "
                f"{', '.join(sorted(known)[:12])}."
            )
        layer = name.rpartition("/")[0]
        if by_layer.setdefault(layer, target) != target:
            raise InputError(
                f"TFMOT prunes all weights of layer '{layer}' to one sparsity, but they were "
                f"given different targets; {MASK_HINT}."
            )
    return by_layer


def _check_pattern(model: Any, targets: dict[str, float], pattern: tuple[int, int]) -> None:
    """TFMOT's N:M takes rank-2/4 kernels and silently pads a short input axis; refuse both."""
    zeros, group = pattern
    shapes = {name: tuple(variable.shape) for name, variable in named_weights(model)}
    for name in targets:
        shape = shapes[name]
        if len(shape) not in (2, 4) or shape[-2] % group:
            raise InputError(
                f"TFMOT's {zeros}:{group} pattern needs a 2-D or 4-D kernel whose input axis is "
                f"a multiple of {group}; {name} has shape {shape}; {MASK_HINT}."
            )


def _variable_names(twin: Any, names: dict[str, list[str]]) -> dict[int, str]:
    """id(twin variable) -> sparseprune name (weights were copied by position, so they align)."""
    out = {}
    for layer, group in names.items():
        for variable, name in zip(twin.get_layer(layer).weights, group, strict=True):
            out[id(variable)] = name
    return out


def _check_twin(path: str, original: Any, twin: Any, data: Dataset | None) -> dict[str, Any]:
    """Refuse to prune a twin that does not compute what the model computes."""
    inputs = sample_inputs(original, CHECK_SAMPLES, data.x if data else None)
    comparison = compare_outputs(original, twin, inputs)
    if not comparison.max_abs_diff <= TOLERANCE * max(1.0, comparison.max_abs_output):
        raise InputError(
            f"the tf_keras rebuild of {path} does not reproduce it (max |difference| "
            f"{comparison.max_abs_diff:.3g} on {CHECK_SAMPLES} inputs); {MASK_HINT}."
        )
    return {"layers": len(twin.layers), "max_abs_diff": comparison.max_abs_diff}


def _wrap(
    twin: Any, layer_targets: dict[str, float], request: Request, data: Dataset | None
) -> tuple[Any, ScheduleSteps | None]:
    """TFMOT's recipe for pruning some layers: clone, wrapping only the targeted ones.

    Unwrapped layers (and the layers inside the wrappers) are the twin's own objects, so the twin
    sees every weight change. `pattern` is sparseprune's (zeros, group), which is exactly TFMOT's
    `sparsity_m_by_n` (m zeros in every n along the input-channel axis).
    """
    train, steps = request.train, None
    if train is not None and data is not None:
        steps = resolve_steps(train, len(data.x))

    def schedule(target: float) -> Any:
        if train is None or steps is None:
            return one_shot_schedule(target)
        return tfmot_schedule(target, train, steps)

    def clone(layer: Any) -> Any:
        target = layer_targets.get(layer.name)
        if target is None:
            return layer
        try:
            return sparsity.prune_low_magnitude(
                layer, pruning_schedule=schedule(target), **_structure_args(request)
            )
        except ValueError as error:
            raise InputError(
                f"TFMOT cannot prune layer '{layer.name}' ({type(layer).__name__}): "
                f"{str(error).splitlines()[0]}; {MASK_HINT}."
            ) from None

    return tf_keras.models.clone_model(twin, clone_function=clone), steps


def _structure_args(request: Request) -> dict[str, Any]:
    """N:M or blocks, in TFMOT's own arguments (it pads kernels that are not block multiples)."""
    if request.block is not None:
        return {
            "block_size": tuple(request.block),
            "block_pooling_type": request.block_pooling.upper(),
        }
    return {"sparsity_m_by_n": request.pattern}


def _wrappers(model: Any) -> Iterator[Any]:
    for layer in model.layers:
        if isinstance(layer, PruneLowMagnitude):
            yield layer


def _check_targets(
    twin: Any, wrapped: Any, variable_names: dict[int, str], targets: dict[str, float]
) -> None:
    """TFMOT prunes fixed weights per layer class, all together: targets must say the same."""
    pruned = {
        w.layer.name: [variable_names[id(v)] for v in w.prunable_weights]
        for w in _wrappers(wrapped)
    }
    prunable = {name for names in pruned.values() for name in names}
    for name in targets:
        if name not in prunable:
            kind = type(twin.get_layer(name.rpartition("/")[0])).__name__
            raise InputError(
                f"TFMOT does not prune {name} ({kind}): it prunes kernels of Dense and Conv "
                f"layers, SeparableConv pointwise kernels and embeddings; {MASK_HINT}."
            )
    for layer, names in pruned.items():
        missing = [name for name in names if name not in targets]
        if missing:
            raise InputError(
                f"TFMOT prunes {', '.join(names)} of layer '{layer}' together, but {missing[0]} "
                f"has no target; {MASK_HINT}."
            )


def _one_shot(wrapped: Any) -> tuple[Any, dict[str, Any]]:
    """TFMOT's own mask code, run once without training (TFMOT does not offer this itself).

    Step 1 is a pruning step for ConstantSparsity(begin 0, frequency 1) and the only step at
    which TFMOT computes N:M masks.
    """
    _update_masks(wrapped, step=1)
    metrics: dict[str, Any] = {"before": {}, "after": {}, "seconds_per_epoch": [], "steps": None}
    return sparsity.strip_pruning(wrapped), metrics


def _fine_tune(
    twin: Any,
    wrapped: Any,
    request: Request,
    data: Dataset,
    steps: ScheduleSteps | None,
    progress: Progress | None,
) -> tuple[Any, dict[str, Any]]:
    """Evaluate, fit with UpdatePruningStep, strip, evaluate again."""
    train = request.train
    assert train is not None and steps is not None
    compile_for_training(twin, request.model, train, data)
    before = validation_metrics(twin, data)
    compile_for_training(wrapped, request.model, train, data)
    timer = EpochTimer(wrapped, train.epochs, progress)
    tf_keras.utils.set_random_seed(train.seed)
    wrapped.fit(
        data.x,
        data.y,
        batch_size=train.batch_size,
        epochs=train.epochs,
        verbose=0,
        callbacks=[sparsity.UpdatePruningStep(), timer],
        shuffle=True,
    )
    if request.pattern is None:  # N:M masks are fixed at step 1
        _update_masks(wrapped, step=steps.end + TFMOT_STEP_OFFSET)
    stripped = sparsity.strip_pruning(wrapped)
    compile_for_training(stripped, request.model, train, data)
    return stripped, {
        "before": before,
        "after": validation_metrics(stripped, data),
        "seconds_per_epoch": timer.seconds_per_epoch,
        "steps": {"begin": steps.begin, "end": steps.end, "frequency": steps.frequency},
    }


def _update_masks(wrapped: Any, step: int) -> None:
    """Run TFMOT's mask update and masking eagerly as if at `step` (after training: one last
    update at the final target, exact even when `end` lies beyond the last step)."""
    for wrapper in _wrappers(wrapped):
        wrapper.pruning_step.assign(step)
        wrapper.pruning_obj.conditional_mask_update()
        wrapper.pruning_obj.weight_mask_op()


class EpochTimer(tf_keras.callbacks.Callback):
    """Seconds per epoch, and the native trainer's progress record after each epoch."""

    def __init__(self, wrapped: Any, epochs: int, progress: Progress | None) -> None:
        super().__init__()
        self.wrapped, self.epochs, self.progress = wrapped, epochs, progress
        self.seconds_per_epoch: list[float] = []
        self.started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds_per_epoch.append(time.perf_counter() - self.started)
        if self.progress is not None:
            self.progress(
                {
                    "epoch": epoch + 1,
                    "epochs": self.epochs,
                    "logs": {key: float(value) for key, value in (logs or {}).items()},
                    "sparsity": mask_sparsity(self.wrapped),
                }
            )


def mask_sparsity(wrapped: Any) -> float:
    """Fraction of the wrapped weights that TFMOT's masks currently prune."""
    masks = [np.asarray(mask.numpy()) for w in _wrappers(wrapped) for _, mask, _ in w.pruning_vars]
    total = sum(mask.size for mask in masks)
    return sum(int(np.count_nonzero(mask == 0)) for mask in masks) / total if total else 0.0
