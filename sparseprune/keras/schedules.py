"""Pruning schedules with TFMOT's semantics, written in `keras.ops` so they run on every backend.

`schedule(step)` returns `(should_prune, sparsity)` as backend tensors, exactly as TFMOT's
`PolynomialDecay` and `ConstantSparsity` do: masks change at `begin_step` and every `frequency`
steps until `end_step` (`-1`: forever, constant schedules only).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

PACKAGE = "sparseprune"


class PruningSchedule:
    """Base class: override `__call__(step) -> (should_prune, sparsity)` and `get_config()`."""

    def __call__(self, step: Any) -> tuple[Any, Any]:
        raise NotImplementedError("a PruningSchedule must implement __call__(step)")

    def should_prune(self, step: Any) -> Any:
        """The update predicate alone: the wrapper evaluates it every training step and the
        sparsity only inside the update branch (the built-in schedules split the two)."""
        return self(step)[0]

    def sparsity(self, step: Any) -> Any:
        """The sparsity alone, evaluated on update steps only."""
        return self(step)[1]

    def get_config(self) -> dict:
        raise NotImplementedError("a PruningSchedule must implement get_config()")

    @classmethod
    def from_config(cls, config: dict) -> PruningSchedule:
        return cls(**config)

    def at(self, step: int) -> tuple[bool, float]:
        """The schedule at a concrete step, as Python values (eager backends)."""
        should, sparsity = self(step)
        return bool(ops.convert_to_numpy(should)), float(ops.convert_to_numpy(sparsity))

    def update_at(self, step: int) -> float | None:
        """The sparsity to prune to at a concrete step, None when masks keep (eager backends:
        most steps are not update steps, so the built-in schedules skip the sparsity)."""
        if not self._updates_at(step):
            return None
        return self.at(step)[1]

    def _updates_at(self, step: int) -> bool:
        return self.at(step)[0]

    @staticmethod
    def _in_step(step: int, begin: int, end: int, frequency: int) -> bool:
        return step >= begin and (step <= end or end < 0) and (step - begin) % frequency == 0

    @staticmethod
    def _should_prune_in_step(step: Any, begin: int, end: int, frequency: int) -> Any:
        """begin <= step <= end (or forever) on the frequency grid, in as few ops as the
        bounds allow: it runs in every training step of every wrapped layer."""
        since = ops.cast(step, "int32")  # the step counter starts at 0 and only grows
        since = since - begin if begin else since
        checks = [ops.greater_equal(since, 0)] if begin else []
        if end >= 0:
            checks.append(ops.less_equal(since, end - begin))
        if frequency != 1:
            checks.append(ops.equal(ops.mod(since, frequency), 0))
        if not checks:
            return ops.greater_equal(since, 0)
        out = checks[0]
        for check in checks[1:]:
            out = ops.logical_and(out, check)
        return out

    @staticmethod
    def _validate_step(begin: int, end: int, frequency: int, allow_forever: bool) -> None:
        if begin < 0:
            raise ValueError("begin_step should be >= 0")
        if not allow_forever and end == -1:
            raise ValueError("end_step cannot be -1.")
        if end != -1 and end < begin:
            raise ValueError("begin_step should be <= end_step if end_step != -1")
        if frequency <= 0:
            raise ValueError("frequency should be > 0")

    @staticmethod
    def _validate_sparsity(sparsity: float, name: str) -> None:
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"{name} must be in range [0,1)")

    def final_sparsity(self) -> float:
        """The sparsity this schedule ends at (used for summaries and global pools)."""
        raise NotImplementedError


@keras.saving.register_keras_serializable(PACKAGE)
class ConstantSparsity(PruningSchedule):
    """The same sparsity at every pruning step in [begin_step, end_step]."""

    def __init__(
        self, target_sparsity: float, begin_step: int, end_step: int = -1, frequency: int = 100
    ) -> None:
        self.target_sparsity = float(target_sparsity)
        self.begin_step, self.end_step, self.frequency = int(begin_step), int(end_step), frequency
        self._validate_step(self.begin_step, self.end_step, self.frequency, True)
        self._validate_sparsity(self.target_sparsity, "target_sparsity")

    def __call__(self, step: Any) -> tuple[Any, Any]:
        return self.should_prune(step), self.sparsity(step)

    def should_prune(self, step: Any) -> Any:
        return self._should_prune_in_step(step, self.begin_step, self.end_step, self.frequency)

    def sparsity(self, step: Any) -> Any:
        return ops.convert_to_tensor(self.target_sparsity, "float32")

    def at(self, step: int) -> tuple[bool, float]:
        return self._updates_at(step), self.target_sparsity

    def _updates_at(self, step: int) -> bool:
        return self._in_step(step, self.begin_step, self.end_step, self.frequency)

    def final_sparsity(self) -> float:
        return self.target_sparsity

    def get_config(self) -> dict:
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(PACKAGE)
class PolynomialDecay(PruningSchedule):
    """Zhu & Gupta's schedule: s = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0)) ** power."""

    def __init__(
        self,
        initial_sparsity: float,
        final_sparsity: float,
        begin_step: int,
        end_step: int,
        power: float = 3,
        frequency: int = 100,
    ) -> None:
        self.initial_sparsity, self.final_sparsity_ = float(initial_sparsity), float(final_sparsity)
        self.power = power
        self.begin_step, self.end_step, self.frequency = int(begin_step), int(end_step), frequency
        self._validate_step(self.begin_step, self.end_step, self.frequency, False)
        self._validate_sparsity(self.initial_sparsity, "initial_sparsity")
        self._validate_sparsity(self.final_sparsity_, "final_sparsity")

    def __call__(self, step: Any) -> tuple[Any, Any]:
        return self.should_prune(step), self.sparsity(step)

    def should_prune(self, step: Any) -> Any:
        return self._should_prune_in_step(step, self.begin_step, self.end_step, self.frequency)

    def sparsity(self, step: Any) -> Any:
        span = max(1, self.end_step - self.begin_step)
        progress = ops.cast(step - self.begin_step, "float32") / float(span)
        progress = ops.clip(progress, 0.0, 1.0)
        scale = ops.power(1.0 - progress, float(self.power))
        return self.final_sparsity_ + (self.initial_sparsity - self.final_sparsity_) * scale

    def at(self, step: int) -> tuple[bool, float]:
        return self._updates_at(step), self._sparsity_value(step)

    def _updates_at(self, step: int) -> bool:
        return self._in_step(step, self.begin_step, self.end_step, self.frequency)

    def _sparsity_value(self, step: int) -> float:
        """The same float32 arithmetic as `_sparsity`, in numpy."""
        span = np.float32(max(1, self.end_step - self.begin_step))
        progress = np.clip(np.float32(step - self.begin_step) / span, 0, 1).astype(np.float32)
        scale = np.power(np.float32(1) - progress, np.float32(self.power))
        initial, final = np.float32(self.initial_sparsity), np.float32(self.final_sparsity_)
        return float(final + (initial - final) * scale)

    def final_sparsity(self) -> float:
        return self.final_sparsity_

    def get_config(self) -> dict:
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity_,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(PACKAGE)
class PolynomialDecayToEnd(PolynomialDecay):
    """PolynomialDecay that also updates once at `end_step` when it is off the frequency grid.

    TFMOT's schedule never reaches the final sparsity if `end_step - begin_step` is not a
    multiple of `frequency`; `prune --epochs` must end exactly at its targets. `constant=True`
    gives the final sparsity at every update (the CLI's `--schedule constant`).
    """

    def __init__(self, *args: Any, constant: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.constant = bool(constant)

    def should_prune(self, step: Any) -> Any:
        at_end = ops.equal(ops.cast(step, "int32"), self.end_step)
        return ops.logical_or(super().should_prune(step), at_end)

    def sparsity(self, step: Any) -> Any:
        if self.constant:
            return ops.convert_to_tensor(self.final_sparsity_, "float32")
        return super().sparsity(step)

    def at(self, step: int) -> tuple[bool, float]:
        should, sparsity = super().at(step)
        return should or step == self.end_step, self.final_sparsity_ if self.constant else sparsity

    def _updates_at(self, step: int) -> bool:
        return super()._updates_at(step) or step == self.end_step

    def get_config(self) -> dict:
        return {**super().get_config(), "constant": self.constant}


def deserialize(config: Any) -> PruningSchedule:
    if isinstance(config, PruningSchedule):
        return config
    return keras.saving.deserialize_keras_object(config)


def serialize(schedule: PruningSchedule) -> dict:
    return keras.saving.serialize_keras_object(schedule)
