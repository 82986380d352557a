"""Block pruning (`block = (R, C)`): zero whole R x C blocks of 2-D kernels, ranked by mean |w|.

Why blocks: LiteRT's FULLY_CONNECTED kernel runs a weight tensor sparse only when its zeros come
in blocks of 4 consecutive inputs of one output unit (a (4, 1) block of a Keras Dense kernel);
single zeros get a DENSIFY op and run dense. Ranking is pure numpy (`masks.py`, TFMOT's pooling
and padding); this module adds the file-level steps around `run.py`'s writer: the global block
selection (one read pass keeping only block scores), the per-tensor transform and the re-read
checks that the written kernels hold whole zero blocks.
"""

from __future__ import annotations

import numpy as np

from sparseprune.choices import TensorMethod
from sparseprune.formats import ModelFile, TensorInfo
from sparseprune.numeric.masks import (
    GlobalCut,
    block_grid,
    block_scores,
    expand_blocks,
    global_block_cut,
    global_positions,
    prune_count,
    smallest_positions,
    zero_blocks,
)
from sparseprune.prune.spec import PruneSpec

CONV_REASON = (
    "{cls} kernels are not block-pruned: nothing runs block-sparse convolutions on x86 "
    "(use --structure units, then shrink, to make a CNN faster)"
)


def not_block_prunable(tensor: TensorInfo, block: tuple[int, int] | None) -> str | None:
    """Why a selected tensor cannot take blocks (None if it can)."""
    if block is None:
        return None
    layer_class = tensor.layer_class or "?"
    if "Conv" in layer_class:
        return CONV_REASON.format(cls=layer_class)
    if len(tensor.shape) != 2:
        return (
            f"block pruning needs a 2-D kernel (as TFMOT); {tensor.role} has shape {tensor.shape}"
        )
    return None


def block_count(tensor: TensorInfo, block: tuple[int, int]) -> int:
    rows, cols = block_grid(tensor.shape, block)
    return rows * cols


class BlockPool:
    """The global block ranking: block scores of every pooled kernel (small), then one cut."""

    def __init__(
        self, model: ModelFile, tensors: list[TensorInfo], spec: PruneSpec, total: int, caps: list
    ) -> None:
        self.block = spec.block or (1, 1)
        self.index = {t.path: i for i, t in enumerate(tensors)}
        self.scores = [
            block_scores(_float(model.read(t)), self.block, spec.block_pooling) for t in tensors
        ]
        self.selection: GlobalCut | None = (
            global_block_cut(self.scores, total, caps) if tensors else None
        )

    def chosen(self, path: str) -> np.ndarray:
        """Per-block booleans of this kernel's share of the selection."""
        assert self.selection is not None, "only pooled tensors are asked for"
        i = self.index[path]
        return global_positions(self.scores[i], i, self.selection)


def _float(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def apply_blocks(
    method: str,
    path: str,
    values: np.ndarray,
    target: float | None,
    spec: PruneSpec,
    pool: BlockPool | None,
) -> int:
    """Zero the tensor's chosen blocks in place; returns how many blocks were chosen."""
    block = spec.block or (1, 1)
    if method is TensorMethod.BLOCKS:
        scores = block_scores(_float(values), block, spec.block_pooling)
        chosen = smallest_positions(scores, prune_count(scores.size, target or 0.0))
    elif method is TensorMethod.GLOBAL_BLOCKS and pool is not None:
        chosen = pool.chosen(path)
    else:
        return 0
    values[expand_blocks(chosen, block, values.shape)] = 0
    return int(np.count_nonzero(chosen))


def check_blocks(
    name: str, expected: int | None, values: np.ndarray, block: tuple[int, int]
) -> list[str]:
    """The written kernel holds at least the planned number of all-zero blocks."""
    if expected is None:
        return []
    found, _ = zero_blocks(values, block)
    if found < expected:
        return [
            f"{name}: expected {expected} all-zero {block[0]}x{block[1]} blocks, found {found}."
        ]
    return []


def check_pool(
    pooled: list, wanted: int, caps: list[int], chosen: dict[str, int | None], after: dict[str, int]
) -> list[str]:
    """Global block scope: the pool gave up the requested count, no kernel beyond its cap.

    `chosen` is what the selection zeroed (None after training), `after` the all-zero blocks
    measured in the written file (it also counts blocks that were zero before pruning).
    """
    failures = []
    found = sum(after[p.tensor.path] for p in pooled)
    if pooled and found < wanted:
        failures.append(f"global blocks: expected at least {wanted} zero blocks, found {found}.")
    for item, cap in zip(pooled, caps, strict=True):
        count = chosen[item.tensor.path]
        if count is not None and count > cap:
            failures.append(f"{item.tensor.name}: {count} blocks chosen exceed its cap of {cap}.")
    return failures
