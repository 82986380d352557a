"""Structured pruning (`structure = "units"`): zero whole output units, then shrink them away.

Zeroing a unit's incoming kernel slice leaves it outputting the constant act(bias); `shrink_model`
folds that constant into the consumers' biases and removes the unit, so the shrunk model predicts
exactly what the zeroed one does, with smaller layers. Ranking is pure numpy (`masks.py`); this
module adds the file-level steps around `run.py`'s writer: the global unit selection (one read
pass keeping only per-unit norms), the per-tensor transform, the re-read check and the shrink.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from sparseprune.choices import UNIT_METHODS, TensorMethod, TrainMethod
from sparseprune.errors import InputError
from sparseprune.formats import ModelFile, open_model
from sparseprune.formats.model import FORMAT_H5, FORMAT_KERAS
from sparseprune.formats.writer import information_bound_bytes
from sparseprune.numeric.masks import (
    GlobalCut,
    columns,
    global_unit_cut,
    global_unit_positions,
    prune_count,
    smallest_positions,
    unit_norms,
    unit_positions,
    zero_units,
)
from sparseprune.prune.plan import Plan, TensorPlan
from sparseprune.shrink.graph import Group, build_graph, build_groups, channel_slots
from sparseprune.shrink.shapes import input_shapes
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
    """The global unit ranking: per-unit norms of every pooled kernel (small), then one cut;
    and, in layer scope, the units of coupled producers chosen together (`coupled_units`)."""

    def __init__(self, model: ModelFile, plan: Plan) -> None:
        pooled = plan.unit_pooled
        self.index = {p.tensor.path: i for i, p in enumerate(pooled)}
        self.norms = [unit_norms(model.read(p.tensor)) for p in pooled]
        self.selection: GlobalCut | None = (
            global_unit_cut(self.norms, plan.global_unit_count(), plan.global_unit_caps())
            if pooled
            else None
        )
        self.coupled = coupled_units(model, plan)

    def positions(self, item: TensorPlan, values: np.ndarray) -> np.ndarray:
        assert self.selection is not None, "only pooled tensors are asked for"
        i = self.index[item.tensor.path]
        return global_unit_positions(values, self.norms[i], i, self.selection)


def unit_pool(model: ModelFile, plan: Plan) -> UnitPool | None:
    needed = any(p.method in UNIT_METHODS for p in plan.tensors)
    return UnitPool(model, plan) if needed else None


def coupled_units(model: ModelFile, plan: Plan) -> dict[str, np.ndarray]:
    """Units to zero per kernel path for producers whose channels a merge ties together (a
    residual Add): ranked by the summed squared norms of each tied channel and zeroed in every
    member at once, as Torch-Pruning prunes a dependency group. Chosen one layer at a time, the
    members would lose different channels, every tied channel would stay alive in some member,
    and shrink could remove none of them."""
    items = {p.tensor.layer: p for p in plan.tensors if p.method is TensorMethod.UNITS}
    if len(items) < 2 or model.config is None:
        return {}
    try:
        graph = build_graph(model.config)
    except InputError:
        return {}
    shapes = input_shapes(graph)
    channels = {n: (s[0][-1] if s and s[0] else None) for n, s in shapes.items()}
    chosen: dict[str, np.ndarray] = {}
    for group in build_groups(graph):
        planned = [m.name for m in group.members if m.name in items]
        if group.reason is None and len(planned) > 1:
            chosen.update(_group_choice(model, group, planned, items, channels))
    return chosen


def _group_choice(
    model: ModelFile, group: Group, planned: list[str], items: dict, channels: dict
) -> dict[str, np.ndarray]:
    """One choice for members tied channel for channel; nothing if the ties are partial."""
    units = {m.name: _unit_count(model, m.name, items) for m in group.members}
    if None in units.values():
        return {}
    slots, _, problem = channel_slots(group, units, channels)  # type: ignore[arg-type]
    roots = [slots[name] for name in planned]
    classes = roots[0]
    tied = all(sorted(r.tolist()) == sorted(classes.tolist()) for r in roots)
    if problem or not tied or len(set(classes.tolist())) != len(classes):
        return {}
    joint = np.zeros(len(classes))
    where = {int(c): i for i, c in enumerate(classes)}
    for name, ids in zip(planned, roots, strict=True):
        norms = unit_norms(model.read(items[name].tensor)).astype(np.float64)
        joint[[where[int(c)] for c in ids]] += norms**2
    count = prune_count(len(classes), max(items[name].target or 0.0 for name in planned))
    gone = set(classes[smallest_positions(np.sqrt(joint).astype(np.float32), count)].tolist())
    return {
        items[name].tensor.path: np.isin(ids, list(gone))
        for name, ids in zip(planned, roots, strict=True)
    }


def _unit_count(model: ModelFile, layer: str, items: dict) -> int | None:
    if layer in items:
        return items[layer].tensor.shape[-1]
    kernels = [
        t
        for t in model.model_tensors
        if t.layer == layer and t.role in ("kernel", "pointwise_kernel")
    ]
    return kernels[0].shape[-1] if len(kernels) == 1 else None


def apply_units(item: TensorPlan, values: np.ndarray, pool: UnitPool | None) -> int:
    """Zero the tensor's chosen units in place; returns how many units were chosen."""
    if item.method is TensorMethod.UNITS and pool is not None and item.tensor.path in pool.coupled:
        return zero_units(values, columns(values.shape, pool.coupled[item.tensor.path]))
    if item.method is TensorMethod.UNITS:
        count = prune_count(values.shape[-1], item.target or 0.0)
        return zero_units(values, unit_positions(values, count))
    if item.method is TensorMethod.GLOBAL_UNITS and pool is not None:
        return zero_units(values, pool.positions(item, values))
    return 0


def zero_units_count(values: np.ndarray) -> int:
    """Units whose whole incoming slice is exactly zero (what shrink will remove)."""
    return int((values.reshape(-1, values.shape[-1]) == 0).all(axis=0).sum())


def check_units(name: str, expected: int | None, values: np.ndarray) -> list[str]:
    """The written kernel holds at least the planned number of all-zero units."""
    if expected is None:
        return []
    found = zero_units_count(values)
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
