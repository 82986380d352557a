"""Training-aware pruning: hand the plan to a trainer and collect the final weights.

`mask` trains in native Keras in this process; `tfmot` runs TFMOT in a worker process, because
importing TFMOT switches a process to legacy Keras. Both import Keras only when called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from sparseprune.choices import Structure, TensorMethod, TrainMethod
from sparseprune.errors import InputError
from sparseprune.numeric.schedule import TrainSpec
from sparseprune.prune.plan import Plan, mask_rules
from sparseprune.prune.structured import TrainingUnits


@dataclass
class Training:
    method: str
    weights: dict[str, np.ndarray]
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    seconds_per_epoch: list[float] = field(default_factory=list)
    epochs: int = 0
    steps: dict | None = None
    one_shot: dict[str, float] = field(default_factory=dict)
    restored: dict | None = None

    def summary(self) -> dict:
        summary = {
            "method": self.method,
            "epochs": self.epochs,
            "before": self.before,
            "after": self.after,
            "seconds_per_epoch": self.seconds_per_epoch,
            "schedule": self.steps,
        }
        if self.one_shot:
            summary["one_shot"] = self.one_shot  # validation metrics of the one-shot prune
        if self.restored is not None:
            summary["restored"] = self.restored  # which candidate was written (epoch 0: one-shot)
        return summary


def run_training(
    source: str,
    plan: Plan,
    method: TrainMethod | str,
    train: TrainSpec | None,
    unsafe: bool,
    on_epoch: Callable[[dict], None] | None,
    units: TrainingUnits | None = None,
) -> Training:
    """`units`: unit kernels ranked as tied groups (`structured.training_units`)."""
    method = TrainMethod.parse(method, "method")
    if method is TrainMethod.MASK:
        if train is None:
            raise InputError("training with --method mask needs --data and --epochs.")
        from sparseprune.keras_ops.mask_trainer import finetune_with_masks

        units = units or TrainingUnits()
        rules = mask_rules(plan, units.ties)
        result = finetune_with_masks(source, rules, train, unsafe, on_epoch)
        steps = asdict(result.steps) if result.steps else None
        return Training(
            method,
            result.weights,
            result.before,
            result.after,
            result.seconds_per_epoch,
            train.epochs,
            steps,
            result.one_shot,
            result.restored,
        )
    if train is not None and not train.data.endswith(".npz"):
        raise InputError(
            "--method tfmot trains on an .npz; image folders and CSV need --method mask."
        )
    return _run_tfmot(source, plan, train, unsafe, on_epoch)


def _run_tfmot(
    source: str,
    plan: Plan,
    train: TrainSpec | None,
    unsafe: bool,
    on_epoch: Callable[[dict], None] | None,
) -> Training:
    if plan.spec.structure is Structure.UNITS:
        raise InputError("--structure units needs --method mask (TFMOT prunes single weights).")
    if (
        plan.pooled
        or plan.block_pooled
        or any(p.method in (TensorMethod.MASK, TensorMethod.THRESHOLD) for p in plan.pruned)
    ):
        raise InputError(
            "--method tfmot prunes each tensor to its own target (layer scope, per-layer "
            "targets, N:M); use --method mask for global scope, --mask or --threshold."
        )
    import tempfile
    from pathlib import Path

    from sparseprune.keras_ops.tfmot.client import run_tfmot

    targets: dict[str, float] = {}
    for p in plan.pruned:
        if p.method in (TensorMethod.TARGET, TensorMethod.BLOCKS):
            assert p.target is not None  # plan._assign_target sets it with these methods
            targets[p.tensor.name] = p.target
    if plan.spec.pattern is not None:
        targets = {p.tensor.name: 0.0 for p in plan.pruned}
    with tempfile.TemporaryDirectory(prefix="sparseprune-tfmot-") as scratch:
        result = run_tfmot(
            source,
            targets,
            train,
            plan.spec.pattern,
            Path(scratch),
            unsafe=unsafe,
            progress=on_epoch,
            block=plan.spec.block,
            block_pooling=plan.spec.block_pooling,
        )
    metrics = result.metrics
    return Training(
        TrainMethod.TFMOT,
        result.weights,
        metrics.get("before", {}),
        metrics.get("after", {}),
        metrics.get("seconds_per_epoch", []),
        train.epochs if train else 0,
        metrics.get("steps"),
    )
