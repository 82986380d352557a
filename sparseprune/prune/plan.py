"""Decide, per tensor, what pruning does to it. No I/O beyond reading the optional mask file."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparseprune.choices import Scope, Structure, TensorMethod
from sparseprune.errors import InputError
from sparseprune.formats import ModelFile, TensorInfo
from sparseprune.formats.npz import read_npz
from sparseprune.inspect.inspection import compile_layer_regex
from sparseprune.layers.table import UNIT_KERNELS, is_known, unit_axis
from sparseprune.numeric.masks import prune_count
from sparseprune.numeric.schedule import MaskRules, TensorRule
from sparseprune.numeric.tied import Tie
from sparseprune.prune.blocks import block_count, not_block_prunable
from sparseprune.prune.spec import PruneSpec
from sparseprune.shrink.graph import build_graph


@dataclass
class TensorPlan:
    """What happens to one tensor. `method` is None for tensors left exactly as they are."""

    tensor: TensorInfo
    method: TensorMethod | None = None
    target: float | None = None
    cap: float | None = None
    mask: np.ndarray | None = None
    skip_reason: str | None = None


@dataclass
class Plan:
    spec: PruneSpec
    tensors: list[TensorPlan]

    @property
    def pruned(self) -> list[TensorPlan]:
        return [p for p in self.tensors if p.method is not None]

    @property
    def pooled(self) -> list[TensorPlan]:
        """Tensors that share one global threshold."""
        return [p for p in self.tensors if p.method is TensorMethod.GLOBAL]

    def pool_index(self) -> dict[str, int]:
        """Each pooled tensor's position in the pool, by storage path."""
        return {p.tensor.path: i for i, p in enumerate(self.pooled)}

    def global_prune_count(self) -> int:
        total = sum(p.tensor.params for p in self.pooled)
        return prune_count(total, self.spec.target or 0.0)

    def global_caps(self) -> list[int]:
        return [
            prune_count(p.tensor.params, p.cap) if p.cap is not None else p.tensor.params
            for p in self.pooled
        ]

    @property
    def unit_pooled(self) -> list[TensorPlan]:
        """Unit kernels ranked together (global scope, structure units)."""
        return [p for p in self.tensors if p.method is TensorMethod.GLOBAL_UNITS]

    def global_unit_count(self) -> int:
        """Units to remove over the pool: TFMOT's round rule on the pooled unit count."""
        total = sum(unit_count(p.tensor) for p in self.unit_pooled)
        return prune_count(total, self.spec.target or 0.0)

    def global_unit_caps(self) -> list[int]:
        """Per-layer caps (`--set` / max_sparsity) as counts of units."""
        return [
            prune_count(unit_count(p.tensor), p.cap) if p.cap is not None else unit_count(p.tensor)
            for p in self.unit_pooled
        ]

    @property
    def block_pooled(self) -> list[TensorPlan]:
        """Kernels whose blocks are ranked together (global scope, --block)."""
        return [p for p in self.tensors if p.method is TensorMethod.GLOBAL_BLOCKS]

    def global_block_count(self) -> int:
        """Blocks to zero over the pool: TFMOT's round rule on the pooled block count."""
        total = sum(self.blocks_of(p) for p in self.block_pooled)
        return prune_count(total, self.spec.target or 0.0)

    def global_block_caps(self) -> list[int]:
        """Per-kernel caps (`--set` / max_sparsity) as counts of blocks."""
        return [
            prune_count(self.blocks_of(p), p.cap) if p.cap is not None else self.blocks_of(p)
            for p in self.block_pooled
        ]

    def blocks_of(self, item: TensorPlan) -> int:
        return block_count(item.tensor, self.spec.block or (1, 1))


def unit_count(tensor: TensorInfo) -> int:
    """Output units of a unit kernel (axis -2 of a transposed convolution's kernel)."""
    return tensor.shape[unit_axis(tensor.layer_class)]


def mask_rules(plan: Plan, ties: dict[str, Tie] | None = None) -> MaskRules:
    """The plan as rules a trainer applies at every schedule step; `ties` rank their members'
    units together (`structured.training_units`)."""
    rules = tuple(_mask_rule(p, ties or {}) for p in plan.pruned)
    spec = plan.spec
    return MaskRules(
        rules, spec.target, spec.threshold, spec.pattern, spec.block, spec.block_pooling
    )


def _mask_rule(p: TensorPlan, ties: dict[str, Tie]) -> TensorRule:
    name = p.tensor.name
    axis = unit_axis(p.tensor.layer_class)
    assert p.method is not None  # only planned tensors get a rule
    tie = ties.get(name)
    if tie is not None and p.method is not TensorMethod.GLOBAL_UNITS:
        return TensorRule(name, "tied_units", tie.target, unit_axis=axis, tie=tie)
    return TensorRule(name, p.method, p.target, p.cap, p.mask, unit_axis=axis, tie=tie)


def make_plan(model: ModelFile, spec: PruneSpec) -> Plan:
    tensors = model.model_tensors
    selected = _selected(tensors, spec)
    _check_rule_names(model, spec)
    masks = _load_masks(spec.mask, tensors) if spec.mask else {}
    outputs = _output_layers(model) if spec.structure is Structure.UNITS else set()
    plans = []
    for tensor in tensors:
        plan = TensorPlan(tensor)
        if tensor.path in selected:
            reason = (
                _ineligible(tensor, spec)
                or _not_unit_prunable(tensor, spec, outputs)
                or not_block_prunable(tensor, spec.block)
            )
            if reason:
                plan.skip_reason = reason
            elif spec.structure is Structure.UNITS:
                _assign_target(plan, spec, TensorMethod.UNITS, TensorMethod.GLOBAL_UNITS)
            elif spec.block is not None:
                _assign_target(plan, spec, TensorMethod.BLOCKS, TensorMethod.GLOBAL_BLOCKS)
            else:
                _assign(plan, spec, masks)
        plans.append(plan)
    if not any(p.method for p in plans):
        reasons = sorted({p.skip_reason for p in plans if p.skip_reason and p.tensor.prunable})
        why = f" ({reasons[0]})" if reasons else ""
        hint = _selection_hint(spec, any(p.tensor.prunable for p in plans))
        raise InputError(f"no tensor is selected for pruning{why}{hint}.")
    return Plan(spec, plans)


def _selection_hint(spec: PruneSpec, any_prunable: bool) -> str:
    """What to try next, naming only the selection options that were given."""
    given = [f"--{name} '{value}'" for name, value in (("layers", spec.layers),
             ("exclude", spec.exclude)) if value is not None]  # fmt: skip
    if given:
        return f"; check {' and '.join(given)}"
    if any_prunable:
        return ""
    return (
        "; the model has no weights TFMOT prunes by default (--include-unknown also prunes "
        "rank >= 2 tensors of classes sparseprune does not know)"
    )


def _selected(tensors: list[TensorInfo], spec: PruneSpec) -> set[str]:
    chosen = tensors
    if spec.layers is not None:
        regex = compile_layer_regex(spec.layers)
        chosen = [t for t in chosen if regex.search(t.layer)]
        if not chosen:
            raise InputError(f"--layers '{spec.layers}' matches no layer with weights.")
    if spec.exclude is not None:
        regex = compile_layer_regex(spec.exclude)
        if not any(regex.search(t.layer) for t in tensors):
            raise InputError(f"--exclude '{spec.exclude}' matches no layer with weights.")
        chosen = [t for t in chosen if not regex.search(t.layer)]
    return {t.path for t in chosen}


def _check_rule_names(model: ModelFile, spec: PruneSpec) -> None:
    names = {t.layer for t in model.model_tensors}
    for name in spec.rules:
        if name not in names:
            raise InputError(
                f"'layer.{name}' (or --set {name}=...) names no layer with weights; "
                f"layers are: {', '.join(sorted(names))}."
            )


def _ineligible(tensor: TensorInfo, spec: PruneSpec) -> str | None:
    if tensor.prunable:
        return None
    if tensor.role == "bias":
        return None if spec.include_bias else "bias (use --include-bias)"
    if not is_known(tensor.layer_class) and len(tensor.shape) >= 2:
        if spec.include_unknown:
            return None
        return f"class {tensor.layer_class or '?'} is not in the prunable table (--include-unknown)"
    return "not prunable by default"


def _output_layers(model: ModelFile) -> set[str]:
    """Layers whose outputs are the model's: their units cannot be removed, only silenced."""
    return build_graph(model.config).outputs if model.config else set()


def _not_unit_prunable(tensor: TensorInfo, spec: PruneSpec, outputs: set[str]) -> str | None:
    """Structure units prunes the output-unit kernels of the classes shrink can remove."""
    if spec.structure is not Structure.UNITS:
        return None
    if UNIT_KERNELS.get(tensor.layer_class or "") != tensor.role:
        return f"{tensor.layer_class or '?'} {tensor.role} has no output units to remove"
    if tensor.layer in outputs:
        return "its units are the model's outputs (structure units keeps them)"
    return None


def _assign_target(
    plan: TensorPlan, spec: PruneSpec, own: TensorMethod, pooled: TensorMethod
) -> None:
    """A per-layer or layer-scope target gives method `own`; global scope joins the `pooled`
    ranking. Per-layer `max_sparsity` caps either."""
    rule = spec.rule(plan.tensor.layer)
    plan.cap = rule.max_sparsity
    if rule.target is not None or (spec.target is not None and spec.scope is Scope.LAYER):
        target = rule.target if rule.target is not None else spec.target
        assert target is not None  # the condition above: one of the two is set
        plan.target = min(target, rule.max_sparsity) if rule.max_sparsity is not None else target
        plan.method = own
    elif spec.target is not None:
        plan.method = pooled
        plan.target = spec.target


def _assign(plan: TensorPlan, spec: PruneSpec, masks: dict[str, np.ndarray]) -> None:
    tensor = plan.tensor
    if spec.mask is not None:
        plan.mask = masks.get(tensor.path)
        if plan.mask is not None:
            plan.method = TensorMethod.MASK
        elif spec.threshold:
            plan.method = TensorMethod.THRESHOLD
        return
    if spec.pattern is not None:
        zeros, group = spec.pattern
        if len(tensor.shape) < 2 or tensor.shape[-2] % group:
            plan.skip_reason = (
                f"input-channel axis is not a multiple of {group} for {zeros}:{group}"
            )
            return
        plan.method = TensorMethod.PATTERN
        return
    _assign_target(plan, spec, TensorMethod.TARGET, TensorMethod.GLOBAL)
    if plan.method is None and spec.threshold is not None:
        plan.method = TensorMethod.THRESHOLD


def _load_masks(path: str, tensors: list[TensorInfo]) -> dict[str, np.ndarray]:
    """Masks keyed by layer name (its kernel) or 'layer/role'; checked against the model."""
    arrays = read_npz(path, "mask file")
    by_key: dict[str, TensorInfo] = {t.name: t for t in tensors}
    for tensor in tensors:
        if tensor.prunable:
            by_key.setdefault(tensor.layer, tensor)
    masks = {}
    for key, mask in arrays.items():
        owner = by_key.get(key)
        if owner is None:
            raise InputError(
                f"mask file {path} has an entry '{key}' but the model has no such layer."
            )
        if tuple(mask.shape) != owner.shape:
            raise InputError(
                f"mask '{key}' has shape {tuple(mask.shape)} but {owner.name} has shape "
                f"{owner.shape}."
            )
        masks[owner.path] = mask
    return masks
