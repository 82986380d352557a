"""Structured pruning (`structure = "units"`): zero whole output units, then shrink them away.

Zeroing a unit's incoming kernel slice leaves it outputting the constant act(bias); `shrink_model`
folds that constant into the consumers' biases and removes the unit, so the shrunk model predicts
exactly what the zeroed one does, with smaller layers. Ranking is pure numpy (`masks.py`); this
module adds the file-level steps around `run.py`'s writer: the global unit selection (one read
pass keeping only per-unit norms), the per-tensor transform, the re-read check and the shrink.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sparseprune.choices import UNIT_METHODS, TensorMethod, TrainMethod
from sparseprune.errors import InputError
from sparseprune.formats import ModelFile, TensorInfo, open_model
from sparseprune.formats.model import FORMAT_H5, FORMAT_KERAS
from sparseprune.formats.writer import information_bound_bytes
from sparseprune.layers.table import unit_axis
from sparseprune.numeric.masks import (
    GlobalCut,
    columns,
    global_positions,
    global_unit_cut,
    prune_count,
    smallest_positions,
    unit_norms,
    zero_units,
)
from sparseprune.numeric.tied import Tie, never_empties
from sparseprune.prune import coupled
from sparseprune.prune.plan import Plan, TensorPlan, unit_count
from sparseprune.shrink.shrinking import ShrinkResult, shrink_model

SHRINK_SUFFIXES = {FORMAT_KERAS: (".keras",), FORMAT_H5: (".h5", ".hdf5")}


def check_request(model: ModelFile, target: Path, method: TrainMethod) -> None:
    """Refuse, before any pruning or training, what the shrink step could not finish."""
    if method is not TrainMethod.MASK:
        raise InputError(
            "--structure units zeroes whole units with native masks; use --method mask "
            "(TFMOT prunes single weights only)."
        )
    suffixes = SHRINK_SUFFIXES.get(model.format)
    if suffixes is None or model.config is None:
        raise InputError(
            f"{model.path} holds weights only; --structure units shrinks the model, which "
            "needs the architecture (a full .keras or .h5 model)."
        )
    if not target.name.lower().endswith(suffixes):
        raise InputError(
            f"--structure units writes the input's format ({model.format}); give -o a "
            f"{suffixes[0]} path."
        )


class UnitPool:
    """The unit choices made before writing: per-unit norms of every pooled kernel (small) and
    one global cut; units of producers a merge ties, chosen together (`prune/coupled.py`), in
    layer scope per group and in global scope as one entry per tied class."""

    def __init__(self, model: ModelFile, plan: Plan) -> None:
        pooled = plan.unit_pooled
        self.index = {p.tensor.path: i for i, p in enumerate(pooled)}
        self.norms = [tensor_norms(model, p) for p in pooled]
        self.chosen: dict[str, np.ndarray] = {}  # kernel path -> chosen units
        for coupling in coupled.couplings(model, plan, TensorMethod.UNITS):
            norms = [tensor_norms(model, item) for item in coupling.items]
            picks = coupled.layer_choice(coupling, norms)
            self.chosen.update(
                {i.tensor.path: c for i, c in zip(coupling.items, picks, strict=True)}
            )
        self.selection: GlobalCut | None = None
        if pooled:
            self._global(model, plan)

    def _global(self, model: ModelFile, plan: Plan) -> None:
        count, caps = plan.global_unit_count(), plan.global_unit_caps()
        ties = coupled.couplings(model, plan, TensorMethod.GLOBAL_UNITS)
        if not ties:
            self.selection = global_unit_cut(self.norms, count, caps)
            return
        groups = [[self.index[item.tensor.path] for item in tie.items] for tie in ties]
        picks = coupled.global_choice(self.norms, groups, ties, count, caps)
        paths = list(self.index)
        self.chosen.update({paths[i]: pick for i, pick in enumerate(picks)})

    def choice(self, item: TensorPlan, view: np.ndarray) -> np.ndarray | None:
        """The tensor's chosen units (one flag per unit of `view`, units last)."""
        if item.tensor.path in self.chosen:
            return self.chosen[item.tensor.path]
        if item.method is TensorMethod.GLOBAL_UNITS and self.selection is not None:
            i = self.index[item.tensor.path]
            return global_positions(self.norms[i], i, self.selection)
        if item.method is TensorMethod.UNITS:
            count = prune_count(view.shape[-1], item.target or 0.0)
            return smallest_positions(unit_norms(view), count)
        return None


def unit_pool(model: ModelFile, plan: Plan) -> UnitPool | None:
    needed = any(p.method in UNIT_METHODS for p in plan.tensors)
    return UnitPool(model, plan) if needed else None


def unit_view(tensor: TensorInfo, values: np.ndarray) -> np.ndarray:
    """The kernel with its output units last (a view: writing it writes `values`)."""
    axis = unit_axis(tensor.layer_class)
    return values if axis == -1 else np.moveaxis(values, axis, -1)


def tensor_norms(model: ModelFile, item: TensorPlan) -> np.ndarray:
    return unit_norms(unit_view(item.tensor, model.read(item.tensor)))


def apply_units(item: TensorPlan, values: np.ndarray, pool: UnitPool | None) -> int:
    """Zero the tensor's chosen units in place; returns how many units were chosen."""
    view = unit_view(item.tensor, values)
    chosen = pool.choice(item, view) if pool is not None else None
    return 0 if chosen is None else zero_units(view, columns(view.shape, chosen))


@dataclass
class TrainingUnits:
    """Unit kernels a merge ties, by tensor name: `--epochs` ranks each group's members together
    at every pruning step (`ties`)."""

    ties: dict[str, Tie] = field(default_factory=dict)

    def group(self, group: int) -> list[np.ndarray]:
        """The class ids of every member of one tied group."""
        return [tie.classes for tie in self.ties.values() if tie.group == group]


def training_units(model: ModelFile, plan: Plan) -> TrainingUnits:
    """Units tied across kernels follow the schedule, ranked by class as `prune/coupled.py` ranks
    them one-shot: in layer scope per group (with its last-unit guard), in global scope as
    entries of the global unit pool (under its caps). Transposed convolutions are ranked on
    their axis -2 (the rules' `unit_axis`)."""
    ties: dict[str, Tie] = {}
    target = plan.spec.target or 0.0
    layer = coupled.couplings(model, plan, TensorMethod.UNITS)
    pooled = coupled.couplings(model, plan, TensorMethod.GLOBAL_UNITS)
    for group, coupling in enumerate([*layer, *pooled]):
        share = coupling.target if group < len(layer) else target
        for item, ids in zip(coupling.items, coupling.classes, strict=True):
            ties[item.tensor.name] = Tie(group, ids, coupling.count, coupling.blocked, share)
    return TrainingUnits(ties)


def trained_unit_count(item: TensorPlan, units: TrainingUnits) -> int | None:
    """Units the trained kernel must hold zeroed: a layer-scope tied group's share (where each
    class holds one unit of the kernel and the last-unit guard cannot bind; else unchecked), or
    the layer target's."""
    tie = units.ties.get(item.tensor.name)
    if tie is not None:
        if item.method is TensorMethod.GLOBAL_UNITS or not tie.one_per_class():
            return None  # the pool's count is checked by `check_pool`
        prune = prune_count(tie.count, tie.target)
        if not never_empties(units.group(tie.group), tie.blocked, prune):
            return None  # the last-unit guard may take fewer
        return min(prune, int((~tie.blocked).sum()))
    if item.method is TensorMethod.UNITS and item.target is not None:
        return prune_count(unit_count(item.tensor), item.target)
    return None


def zero_units_count(tensor: TensorInfo, values: np.ndarray) -> int:
    """Units whose whole incoming slice is exactly zero (what shrink will remove)."""
    view = unit_view(tensor, values)
    return int((view.reshape(-1, view.shape[-1]) == 0).all(axis=0).sum())


def check_units(tensor: TensorInfo, expected: int | None, values: np.ndarray) -> list[str]:
    """The written kernel holds at least the planned number of all-zero units."""
    if expected is None:
        return []
    name = tensor.name
    found = zero_units_count(tensor, values)
    if found < expected:
        return [f"{name}: expected {expected} zeroed units, found {found}."]
    return []


def check_pool(plan: Plan, chosen: dict[str, int | None], after: dict[str, int]) -> list[str]:
    """Global unit scope: the pool gave up the requested count, no layer beyond its cap.

    `chosen` is what the selection zeroed (None after training), `after` the all-zero units
    measured in the written file (it also counts units that were dead before pruning).
    """
    pooled = plan.unit_pooled
    wanted = min(plan.global_unit_count(), sum(plan.global_unit_caps())) if pooled else 0
    found = sum(after[p.tensor.path] for p in pooled)
    failures = []
    if found < wanted:
        failures.append(f"global units: expected at least {wanted} zeroed units, found {found}.")
    for item, cap in zip(pooled, plan.global_unit_caps(), strict=True):
        count = chosen[item.tensor.path]
        if count is not None and count > cap:
            failures.append(f"{item.tensor.name}: {count} units chosen exceed its cap of {cap}.")
    return failures


def bound_bytes(path: Path) -> float:
    """The information bound of the shrunk file (the zeroed file's would count removed units)."""
    total = 0.0
    with open_model(path) as written:
        for tensor in written.model_tensors:
            values = written.read(tensor)
            bits = values.dtype.itemsize * 8
            total += information_bound_bytes(values.size, int(np.count_nonzero(values)), bits)
    return total


def shrink_into(zeroed: Path, target: Path, force: bool, label: str) -> ShrinkResult:
    """Remove the zeroed units: `shrink_model` writes `target` atomically and re-reads it."""
    return shrink_model(str(zeroed), target, force=force, label=label)


def shrink_summary(result: ShrinkResult) -> dict:
    """Units/params/MACs before and after, overall and per layer, for the JSON and the table."""
    return {
        "totals": result.totals(),
        "layers": [
            {k: v for k, v in asdict(layer).items() if k != "skipped"}
            | {"skipped": dict(layer.skipped)}
            for layer in result.layers
        ],
        "passes": result.passes,
        "failures": list(result.failures),
    }
