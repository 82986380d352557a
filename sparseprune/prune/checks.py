"""Re-read a written prune output: measure every figure and check each rule was met exactly.

The figures in a PruneResult (zeros, information bound, units and blocks found) come from here,
never from what the writer meant to do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparseprune.choices import BLOCK_METHODS, UNIT_METHODS, TensorMethod
from sparseprune.formats import ModelFile, open_model
from sparseprune.formats.writer import information_bound_bytes
from sparseprune.numeric.masks import zero_blocks
from sparseprune.prune import blocks, streamed, structured
from sparseprune.prune.plan import Plan, TensorPlan
from sparseprune.prune.result import PruneResult, TensorOutcome


def measure_and_verify(
    model: ModelFile, target: Path, plan: Plan, result: PruneResult, trained: bool = False
) -> None:
    """Re-read the written file: measure every figure and check each rule was met exactly."""
    outcomes = {t.tensor.name: t for t in result.tensors}  # names survive format conversion
    by_name = {p.tensor.name: p for p in plan.tensors}
    with open_model(target, result.output) as written:
        result.output_size = written.size
        if sorted(t.name for t in written.model_tensors) != sorted(outcomes):
            result.failures.append("the written file does not hold the same weights as the input.")
            return
        for tensor in written.model_tensors:
            outcome, item = outcomes[tensor.name], by_name[tensor.name]
            if not trained and streamed.is_streamed(tensor, item.method):
                nonzero, failures = streamed.measure(model, written, tensor, item, outcome)
                bits = streamed.decoded_bits(tensor)
                result.bound_bytes += information_bound_bytes(tensor.params, nonzero, bits)
                result.failures += failures
                continue
            values = written.read(tensor)
            outcome.zeros_after = int(np.count_nonzero(values == 0))
            result.bound_bytes += information_bound_bytes(
                values.size, values.size - outcome.zeros_after, values.dtype.itemsize * 8
            )
            if item.method in UNIT_METHODS:
                outcome.units_zero_after = structured.zero_units_count(tensor, values)
            if item.method in BLOCK_METHODS and plan.spec.block is not None:
                found, total = zero_blocks(values, plan.spec.block)
                outcome.blocks_zero_after, outcome.blocks_total = found, total
            if trained and item.method is None:
                continue  # training changes every weight; only the pruning rules are checked
            result.failures += _check_tensor(model, item, outcome, values, plan)
    by_path = {t.tensor.path: t for t in result.tensors}
    result.failures += _check_pool(plan, by_path)
    chosen = {path: t.units_pruned for path, t in by_path.items()}
    after = {path: t.units_zero_after or 0 for path, t in by_path.items()}
    result.failures += structured.check_pool(plan, chosen, after)
    result.failures += _check_block_pool(plan, by_path)


def _check_block_pool(plan: Plan, outcomes: dict[str, TensorOutcome]) -> list[str]:
    pooled = plan.block_pooled
    if not pooled:
        return []
    caps = plan.global_block_caps()
    wanted = min(plan.global_block_count(), sum(caps))
    chosen = {p.tensor.path: outcomes[p.tensor.path].blocks_pruned for p in pooled}
    after = {p.tensor.path: outcomes[p.tensor.path].blocks_zero_after or 0 for p in pooled}
    return blocks.check_pool(pooled, wanted, caps, chosen, after)


def _check_tensor(
    model: ModelFile, item: TensorPlan, outcome: TensorOutcome, values: np.ndarray, plan: Plan
) -> list[str]:
    name = item.tensor.name
    if item.method is None:
        original = model.read(item.tensor)
        same = original.dtype == values.dtype and np.array_equal(original, values, equal_nan=True)
        return [] if same else [f"{name} was not to be pruned but changed."]
    if outcome.expected_zeros is not None and outcome.zeros_after != outcome.expected_zeros:
        return [f"{name}: expected {outcome.expected_zeros} zeros, found {outcome.zeros_after}."]
    if item.method is TensorMethod.PATTERN and plan.spec.pattern is not None:
        zeros, group = plan.spec.pattern
        groups = np.moveaxis(values, -2, -1).reshape(-1, group)
        if (np.count_nonzero(groups == 0, axis=1) < zeros).any():
            return [f"{name}: a group of {group} has fewer than {zeros} zeros."]
    if (
        item.method is TensorMethod.MASK
        and item.mask is not None
        and (values[item.mask == 0] != 0).any()
    ):
        return [f"{name}: a masked weight is not zero."]
    if item.method in BLOCK_METHODS and plan.spec.block is not None:
        return blocks.check_blocks(name, outcome.blocks_pruned, values, plan.spec.block)
    return structured.check_units(item.tensor, outcome.units_pruned, values)


def _check_pool(plan: Plan, outcomes: dict[str, TensorOutcome]) -> list[str]:
    pooled = plan.pooled
    if not pooled:
        return []
    zeros = [outcomes[p.tensor.path].zeros_after for p in pooled]
    wanted = min(plan.global_prune_count(), sum(plan.global_caps()))
    failures = []
    if sum(zeros) < wanted:
        failures.append(f"global scope: expected at least {wanted} zeros, found {sum(zeros)}.")
    for item, count, cap in zip(pooled, zeros, plan.global_caps(), strict=True):
        before = outcomes[item.tensor.path].zeros_before
        if count > max(cap, before) and item.cap is not None:
            failures.append(f"{item.tensor.name}: {count} zeros exceed its cap of {cap}.")
    return failures
