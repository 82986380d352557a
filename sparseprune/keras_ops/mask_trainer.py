"""`prune --epochs` with `--method mask`: the plan's rules trained with `sparseprune.keras`.

One implementation: the loaded model's layers are wrapped in `PruneLowMagnitude` with one
`WeightRule` per planned tensor, so masks are computed and applied inside the compiled train
step. Quality guard (`--restore-best`): the one-shot prune of the starting weights and every
epoch that ends at the final sparsity are candidates; the one with the best validation metric
is written, so fine-tuning never ends below the one-shot result on the validation data.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparseprune.data_sources import load_training_data
from sparseprune.datasets import Dataset
from sparseprune.errors import InputError
from sparseprune.keras_ops.compile import compile_for_training
from sparseprune.keras_ops.loading import load_keras_model
from sparseprune.keras_ops.naming import weights_by_file_name
from sparseprune.numeric.schedule import (
    MaskRules,
    ScheduleSteps,
    TensorRule,
    TrainSpec,
    pruned_positions,
    resolve_steps,
)

Progress = Callable[[dict], None]


@dataclass
class FinetuneResult:
    weights: dict[str, np.ndarray]
    before: dict[str, float]
    after: dict[str, float]
    seconds_per_epoch: list[float] = field(default_factory=list)
    steps: ScheduleSteps | None = None
    one_shot: dict[str, float] = field(default_factory=dict)
    restored: dict[str, Any] | None = None


def finetune_with_masks(
    model_path: str,
    rules: MaskRules,
    train: TrainSpec,
    unsafe: bool = False,
    progress: Progress | None = None,
) -> FinetuneResult:
    """Train `model_path` on `train.data` while pruning to `rules`; return all final weights."""
    with _strategy_scope(train.strategy):
        model = load_keras_model(model_path, unsafe)
        if not type(model).__module__.startswith("keras"):
            raise InputError(
                f"{model_path} loads only with tf_keras; --method mask trains Keras 3 models "
                "(use --method tfmot, or save the model with Keras 3)."
            )
        data = load_training_data(train, model)
        steps = resolve_steps(train, len(data.x))
        compile_for_training(model, model_path, train, data)
        variables = weights_by_file_name(model)
        _check_rules(rules, variables)
        before = _evaluate(model, data)
        start = {name: _numpy(v) for name, v in _unique(variables).items()}
        pruned = _wrapped(model, rules, variables, train, steps)
        compile_for_training(pruned, model_path, train, data)
    keeper = _BestKeeper(model, variables, rules, steps, data, train, start)
    timer = _EpochTimer(train, progress)
    _seed(train.seed)
    x_val, y_val = data.validation
    pruned.fit(
        data.x,
        data.y,
        batch_size=train.batch_size,
        epochs=train.epochs,
        verbose=0,
        callbacks=[timer, keeper],
        validation_data=(x_val, y_val),
        shuffle=True,
    )
    restored = keeper.finish(pruned)
    after = _evaluate(model, data)
    weights = {name: _numpy(variable) for name, variable in variables.items()}
    return FinetuneResult(
        weights, before, after, timer.seconds, steps, keeper.one_shot_metrics, restored
    )


def _wrapped(model: Any, rules: MaskRules, variables: dict, train: TrainSpec, steps) -> Any:
    """A clone of `model` whose layers holding planned tensors are PruneLowMagnitude wrappers."""
    import keras

    from sparseprune.keras.api import _is_graph_model
    from sparseprune.keras.rules import role
    from sparseprune.keras.wrapper import PruneLowMagnitude

    pools = {kind: f"{kind}-{uuid.uuid4().hex[:8]}" for kind in ("weights", "units", "blocks")}
    ties = {r.tie.group for r in rules.rules if r.tie is not None}
    pools.update({f"tie{group}": f"tie{group}-{uuid.uuid4().hex[:8]}" for group in ties})
    by_variable = {id(variables[r.name]): r for r in rules.rules}
    rules_by_layer: dict[int, dict[str, Any]] = {}
    for layer in _leaf_layers(model, _is_graph_model):
        chosen = {}
        for variable in layer.weights:
            rule = by_variable.get(id(variable))
            if rule is not None:
                if role(variable) in chosen:
                    raise InputError(
                        f"layer {layer.name} has two weights named {role(variable)}; "
                        "--method mask cannot tell them apart."
                    )
                chosen[role(variable)] = (rule, variable)
        if chosen:
            rules_by_layer[id(layer)] = chosen

    def wrap(layer):
        if isinstance(layer, keras.Model) and _is_graph_model(layer):
            return keras.models.clone_model(layer, clone_function=wrap)
        chosen = rules_by_layer.get(id(layer))
        if not chosen:
            return layer
        weight_rules = {
            name: _weight_rule(r, rules, train, steps, pools) for name, (r, _) in chosen.items()
        }
        fixed = {name: r.fixed for name, (r, _) in chosen.items() if r.method == "mask"}
        return PruneLowMagnitude(layer, rules=weight_rules, masks=fixed)

    if not _is_graph_model(model):
        raise InputError("--method mask trains Sequential and functional models.")
    return keras.models.clone_model(model, clone_function=wrap)


def _leaf_layers(model: Any, is_graph: Callable[[Any], bool]):
    for layer in model.layers:
        if is_graph(layer):
            yield from _leaf_layers(layer, is_graph)
        else:
            yield layer


def _weight_rule(rule: TensorRule, rules: MaskRules, train: TrainSpec, steps, pools):
    """The plan's rule for one tensor as a WeightRule with its own schedule."""
    from sparseprune.keras.rules import WeightRule

    pooling = rules.block_pooling.upper()
    target = rules.target if rule.method.startswith("global") else rule.target
    schedule = _schedule(target or 0.0, train, steps)
    common: dict[str, Any] = {"schedule": schedule, "threshold": rules.threshold}
    table: dict[str, dict[str, Any]] = {
        "target": {"method": "magnitude"},
        "units": {"method": "units", "unit_axis": rule.unit_axis},
        "blocks": {"method": "magnitude", "block": rules.block, "block_pooling": pooling},
        "pattern": {"method": "magnitude", "m_by_n": rules.pattern},
        "mask": {"method": "fixed"},
        "threshold": {"method": "threshold"},
        "global": {"method": "global", "pool": pools["weights"], "cap": rule.cap},
        "global_units": {"method": "global_units", "pool": pools["units"], "cap": rule.cap},
        "global_blocks": {
            "method": "global",
            "pool": pools["blocks"],
            "cap": rule.cap,
            "block": rules.block,
            "block_pooling": pooling,
        },
    }
    if rule.tie is not None:
        table["tied_units"] = {
            "method": "tied_units",
            "pool": pools[f"tie{rule.tie.group}"],
            "unit_axis": rule.unit_axis,
            "classes": tuple(int(c) for c in rule.tie.classes),
            "blocked": tuple(int(c) for c in np.flatnonzero(rule.tie.blocked)),
        }
    if rule.method not in table:
        raise InputError(f"--method mask cannot train rule {rule.method} for {rule.name}.")
    return WeightRule(**common, **table[rule.method])


def _schedule(target: float, train: TrainSpec, steps: ScheduleSteps):
    from sparseprune.keras.schedules import PolynomialDecayToEnd

    return PolynomialDecayToEnd(
        initial_sparsity=min(train.initial_sparsity, target),
        final_sparsity=target,
        begin_step=steps.begin,
        end_step=steps.end,
        power=train.power,
        frequency=steps.frequency,
        constant=train.schedule == "constant" or steps.end <= steps.begin,
    )


class _EpochTimer:
    """Seconds per epoch and the CLI's progress line (a Keras callback, built lazily)."""

    def __new__(cls, train: TrainSpec, progress: Progress | None) -> Any:  # a keras Callback
        import keras

        from sparseprune.keras.api import masked_fraction

        class EpochTimer(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.seconds: list[float] = []
                self.started = 0.0

            def on_epoch_begin(self, epoch, logs=None):
                self.started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self.started)
                if progress is not None:
                    progress(
                        {
                            "epoch": epoch + 1,
                            "epochs": train.epochs,
                            "logs": {k: float(v) for k, v in (logs or {}).items()},
                            "sparsity": masked_fraction(self.model),
                        }
                    )

        return EpochTimer()


class _BestKeeper:
    """Candidates at the final sparsity, ranked on validation data (`--restore-best`)."""

    def __new__(cls, model, variables, rules, steps, data, train, start) -> Any:  # a Callback
        import keras

        from sparseprune.keras.api import apply_masks

        unique = _unique(variables)
        one_shot = _one_shot(start, rules, variables)
        _assign(unique, one_shot)
        one_shot_metrics = _evaluate(model, data)
        _assign(unique, start)
        metric, sign = _ranking(one_shot_metrics)
        steps_per_epoch = max(1, -(-len(data.x) // train.batch_size))

        class BestKeeper(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.one_shot_metrics = one_shot_metrics
                self.best = (sign * one_shot_metrics[metric], 0, one_shot)
                self.final_seen = False

            def on_epoch_end(self, epoch, logs=None):
                if (epoch + 1) * steps_per_epoch <= steps.end:
                    return  # not yet at the final sparsity
                self.final_seen = True
                score = sign * float((logs or {}).get(f"val_{metric}", np.nan))
                if train.restore_best is not False and score > self.best[0]:
                    self.best = (score, epoch + 1, self.snapshot())

            def snapshot(self) -> dict[str, np.ndarray]:
                return {name: value.copy() for name, value in self.folded().items()}

            def folded(self) -> dict[str, np.ndarray]:
                return {name: _numpy(v) * self.keep.get(name, 1) for name, v in unique.items()}

            @property
            def keep(self) -> dict[str, np.ndarray]:
                from sparseprune.keras.wrapper import wrappers

                masks = {}
                by_id = {id(v): name for name, v in unique.items()}
                for wrapper in wrappers(self.model):
                    for weight, mask, _ in wrapper.pairs:
                        masks[by_id[id(weight)]] = _numpy(mask) != 0
                return masks

            def finish(self, pruned) -> dict[str, Any]:
                """Leave the chosen weights in the original model's variables."""
                apply_masks(pruned)  # folds the masks into the shared layers
                if not self.final_seen:  # the run ended before end_step: force the targets
                    current = {n: _numpy(v) for n, v in unique.items()}
                    final = _one_shot(current, rules, variables)
                    _assign(unique, final)
                    score = sign * _evaluate(model, data)[metric]
                    if train.restore_best is False or score > self.best[0]:
                        self.best = (score, train.epochs, final)
                if train.restore_best is False:
                    return {"epoch": train.epochs, "metric": metric, "restore_best": False}
                _assign(unique, self.best[2])
                return {
                    "epoch": self.best[1],
                    "metric": f"val_{metric}",
                    "value": sign * self.best[0],
                    "restore_best": True,
                }

        return BestKeeper()


def _ranking(metrics: dict[str, float]) -> tuple[str, int]:
    """Higher accuracy is better; without an accuracy metric, lower loss."""
    for name in metrics:
        if "accuracy" in name:
            return name, 1
    return "loss", -1


def _one_shot(
    values: dict[str, np.ndarray], rules: MaskRules, variables: dict[str, Any]
) -> dict[str, np.ndarray]:
    """The planned targets applied to `values` at once (the same rules, in numpy).

    `values` is keyed by each variable's first name; rules may use its `varN` alias.
    """
    first = {id(v): name for name, v in reversed(list(variables.items()))}
    name_of = {r.name: first[id(variables[r.name])] for r in rules.rules}
    planned = {r.name: values[name_of[r.name]] for r in rules.rules}
    positions = pruned_positions(planned, rules, lambda target: target)
    out = dict(values)
    for name, chosen in positions.items():
        real = name_of[name]
        out[real] = np.where(chosen, np.zeros((), values[real].dtype), values[real])
    return out


def _unique(variables: dict[str, Any]) -> dict[str, Any]:
    """One name per variable (weights_by_file_name also lists `varN` aliases)."""
    seen, out = set(), {}
    for name, variable in variables.items():
        if id(variable) not in seen:
            seen.add(id(variable))
            out[name] = variable
    return out


def _assign(variables: dict[str, Any], values: dict[str, np.ndarray]) -> None:
    for name, variable in variables.items():
        if name in values:
            variable.assign(values[name])


def _numpy(variable: Any) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(variable.value))


def _evaluate(model: Any, data: Dataset) -> dict[str, float]:
    x, y = data.validation
    results = model.evaluate(x, y, verbose=0, return_dict=True)
    return {key: float(value) for key, value in results.items()}


def _check_rules(rules: MaskRules, variables: dict[str, Any]) -> None:
    missing = [r.name for r in rules.rules if r.name not in variables]
    if missing:
        raise InputError(
            f"the loaded model has no weight named {missing[0]}; its weights are: "
            f"{', '.join(list(variables)[:12])}."
        )


def _seed(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(seed)


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
