"""Prune, write and check tensors too large to hold whole, one slab at a time.

A tensor above `BLOCK_BYTES` (a 4 GiB kernel, or a gzip'd all-zero one a 4 MB file claims) is
never read whole: every pass reads it slab by slab as `inspect` does, so memory stays near a few
slabs whatever the tensor's size. The methods that need only per-weight decisions are streamed:
threshold, mask, layer-scope target (an exact two-pass cut per tensor), global scope (the pool's
cut; a capped tensor gets its own). N:M patterns, units and blocks need neighbouring weights and
keep the whole-tensor path. Results are the same weights the whole-tensor path zeroes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from sparseprune.choices import TensorMethod
from sparseprune.formats import ModelFile, TensorInfo
from sparseprune.formats.h5safe import BLOCK_BYTES
from sparseprune.numeric.masks import (
    BlockCut,
    GlobalCut,
    prune_count,
    smallest_cut,
    zero_below,
    zero_by_mask,
)

STREAMED_METHODS = frozenset(
    {None, TensorMethod.TARGET, TensorMethod.GLOBAL, TensorMethod.THRESHOLD, TensorMethod.MASK}
)
Blocks = Callable[[], Iterator[tuple[tuple, np.ndarray]]]


def tensor_bytes(tensor: TensorInfo) -> int:
    itemsize = 2 if tensor.dtype == "bfloat16" else np.dtype(tensor.dtype).itemsize
    return tensor.params * itemsize


def decoded_bits(tensor: TensorInfo) -> int:
    """Bits per value as read (bfloat16 is read as float32), as the whole-tensor path counts."""
    return 32 if tensor.dtype == "bfloat16" else np.dtype(tensor.dtype).itemsize * 8


def is_streamed(tensor: TensorInfo, method: str | None) -> bool:
    return tensor_bytes(tensor) > BLOCK_BYTES and method in STREAMED_METHODS


def blocks_of(model: ModelFile, tensor: TensorInfo) -> Iterator[np.ndarray]:
    """Tensor values for `global_cut`: whole when small, slabs when large."""
    if tensor_bytes(tensor) > BLOCK_BYTES:
        return model.slabs(tensor)
    return iter([model.read(tensor)])


class Streamer:
    """The blocks a pruned tensor is written from; outcome counts filled in on the way.

    `plan_item` has `.method`, `.target`, `.mask`; `outcome` gets `zeros_before` and
    `expected_zeros` as the whole-tensor transform sets them.
    """

    def __init__(self, threshold: float | None, selection: GlobalCut | None, pool_index: dict):
        self.threshold = threshold
        self.selection = selection
        self.pool_index = pool_index

    def prepared(self, block: np.ndarray) -> np.ndarray:
        block = np.array(block, copy=True)
        if self.threshold is not None:
            zero_below(block, self.threshold)
        return block

    def blocks(self, tensor: TensorInfo, item, outcome, read: Blocks) -> Blocks:
        zeros_before = prepared_zeros = 0
        for _, block in read():
            zeros_before += int(np.count_nonzero(block == 0))
            prepared_zeros += int(np.count_nonzero(self.prepared(block) == 0))
        outcome.zeros_before = zeros_before
        method = item.method
        if method is None:
            return read
        if method is TensorMethod.MASK:
            return lambda: ((s, zero_by_mask(self.prepared(b), item.mask[s])) for s, b in read())
        cut = self._cut(tensor, item, outcome, read, prepared_zeros)
        if cut is None:  # threshold (or a global method with nothing pooled)
            if method is TensorMethod.THRESHOLD:
                outcome.expected_zeros = prepared_zeros
            return lambda: ((s, self.prepared(b)) for s, b in read())
        return lambda: self._apply(read, cut())

    def _cut(
        self, tensor: TensorInfo, item, outcome, read: Blocks, prepared_zeros: int
    ) -> Callable[[], BlockCut] | None:
        """A factory of fresh `BlockCut`s (each pass counts its ties from the start)."""
        selection = self.selection
        if item.method is TensorMethod.TARGET:
            count = prune_count(tensor.params, item.target or 0.0)
            outcome.expected_zeros = max(count, prepared_zeros)
        elif item.method is TensorMethod.GLOBAL and selection is not None:
            index = self.pool_index[tensor.path]
            if not selection.capped[index]:
                return lambda: BlockCut(selection, index)
            count = selection.caps[index]
        else:
            return None
        cut = smallest_cut(lambda: (self.prepared(b) for _, b in read()), tensor.params, count)
        return lambda: BlockCut(cut)

    def _apply(self, read: Blocks, cut: BlockCut) -> Iterator[tuple[tuple, np.ndarray]]:
        for selection, block in read():
            yield selection, cut.apply(self.prepared(block))


class StreamingTransform:
    """A whole-tensor transform plus its slab-by-slab form for tensors above `BLOCK_BYTES`."""

    def __init__(self, whole, streamer: Streamer, items: dict, outcomes: dict) -> None:
        self.whole, self.streamer, self.items, self.outcomes = whole, streamer, items, outcomes

    def __call__(self, tensor: TensorInfo, values: np.ndarray) -> np.ndarray | None:
        return self.whole(tensor, values)

    def blocks(self, tensor: TensorInfo, read: Blocks) -> Blocks | None:
        item = self.items[tensor.path]
        if not is_streamed(tensor, item.method):
            return None
        return self.streamer.blocks(tensor, item, self.outcomes[tensor.path], read)


def measure(
    model: ModelFile, written: ModelFile, tensor: TensorInfo, item, outcome
) -> tuple[int, list[str]]:
    """Zeros after, and the rule checks of the whole-tensor path, read slab by slab.

    Returns (nonzero count, failures).
    """
    zeros = 0
    changed = masked_left = False
    originals = model.slabs(item.tensor) if item.method is None else None
    for selection, values in written.blocks(tensor):
        zeros += int(np.count_nonzero(values == 0))
        if originals is not None:
            original = next(originals)
            same = original.dtype == values.dtype and np.array_equal(
                original, values, equal_nan=True
            )
            changed = changed or not same
        if item.method is TensorMethod.MASK and item.mask is not None:
            masked_left = masked_left or bool((values[item.mask[selection] == 0] != 0).any())
    outcome.zeros_after = zeros
    name = item.tensor.name
    if changed:
        return tensor.params - zeros, [f"{name} was not to be pruned but changed."]
    if outcome.expected_zeros is not None and zeros != outcome.expected_zeros:
        return tensor.params - zeros, [
            f"{name}: expected {outcome.expected_zeros} zeros, found {zeros}."
        ]
    if masked_left:
        return tensor.params - zeros, [f"{name}: a masked weight is not zero."]
    return tensor.params - zeros, []
