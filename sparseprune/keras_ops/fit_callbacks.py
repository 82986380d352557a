"""The mask trainer's Keras callbacks: the epoch timer and progress line, and `--restore-best`.

`BestKeeper` ranks the candidates at the final sparsity (the one-shot prune of the starting
weights, then every epoch that ends at the final sparsity) on the validation metric and leaves
the best in the model's variables, so fine-tuning never ends below the one-shot result on the
validation data. Both are built lazily: importing this module does not import Keras.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from sparseprune.datasets import validation_metrics
from sparseprune.numeric.schedule import MaskRules, TrainSpec, pruned_positions

Progress = Callable[[dict], None]


class EpochTimer:
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


class BestKeeper:
    """Candidates at the final sparsity, ranked on validation data (`--restore-best`)."""

    def __new__(cls, model, variables, rules, final_epochs, data, train, start) -> Any:  # Callback
        import keras

        from sparseprune.keras.api import apply_masks

        unique = unique_variables(variables)
        one_shot = _one_shot(start, rules, variables)
        assign_values(unique, one_shot)
        one_shot_metrics = validation_metrics(model, data)
        assign_values(unique, start)
        metric, sign = _ranking(one_shot_metrics)
        final = set(final_epochs)

        class BestKeeper(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.one_shot_metrics = one_shot_metrics
                self.best = (sign * one_shot_metrics[metric], 0, one_shot)
                self.final_seen = False

            def on_epoch_end(self, epoch, logs=None):
                if epoch + 1 not in final:
                    return  # not yet at the final sparsity
                self.final_seen = True
                score = sign * float((logs or {}).get(f"val_{metric}", np.nan))
                if train.restore_best is not False and score > self.best[0]:
                    self.best = (score, epoch + 1, self.snapshot())

            def snapshot(self) -> dict[str, np.ndarray]:
                return {name: value.copy() for name, value in self.folded().items()}

            def folded(self) -> dict[str, np.ndarray]:
                return {name: numpy_value(v) * self.keep.get(name, 1) for name, v in unique.items()}

            @property
            def keep(self) -> dict[str, np.ndarray]:
                from sparseprune.keras.wrapper import wrappers

                masks = {}
                by_id = {id(v): name for name, v in unique.items()}
                for wrapper in wrappers(self.model):
                    for weight, mask, _ in wrapper.pairs:
                        masks[by_id[id(weight)]] = numpy_value(mask) != 0
                return masks

            def finish(self, pruned) -> dict[str, Any]:
                """Leave the chosen weights in the original model's variables."""
                apply_masks(pruned)  # folds the masks into the shared layers
                if not self.final_seen:  # the run ended before end_step: force the targets
                    current = {n: numpy_value(v) for n, v in unique.items()}
                    forced = _one_shot(current, rules, variables)
                    assign_values(unique, forced)
                    score = sign * validation_metrics(model, data)[metric]
                    if train.restore_best is False or score > self.best[0]:
                        self.best = (score, train.epochs, forced)
                if train.restore_best is False:
                    return {"epoch": train.epochs, "metric": metric, "restore_best": False}
                assign_values(unique, self.best[2])
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


def unique_variables(variables: dict[str, Any]) -> dict[str, Any]:
    """One name per variable (weights_by_file_name also lists `varN` aliases)."""
    seen, out = set(), {}
    for name, variable in variables.items():
        if id(variable) not in seen:
            seen.add(id(variable))
            out[name] = variable
    return out


def assign_values(variables: dict[str, Any], values: dict[str, np.ndarray]) -> None:
    for name, variable in variables.items():
        if name in values:
            variable.assign(values[name])


def numpy_value(variable: Any) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(variable.value))
