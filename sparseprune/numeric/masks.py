"""Which weights to zero: magnitude masks, global selection with caps, N:M groups. Pure numpy.

Rules shared by every method:
- TFMOT's count: a tensor of n weights at sparsity s keeps k = round(n * (1 - s)) weights
  (computed in float32 and rounded half to even, exactly as TFMOT's `tf.math.round`).
- Ties are broken deterministically: among equal magnitudes the lower flat index is pruned first
  (globally: the earlier tensor first), so results never depend on sort stability.
- NaN sorts above every number, so NaN weights are never pruned by magnitude.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from sparseprune.numeric.stats import exact_threshold

HIGH_BINS = 1 << 16


def keep_count(n: int, sparsity: float) -> int:
    """TFMOT's k = round(n * (1 - s)) in float32, half to even."""
    return int(np.round(np.float32(n) * (np.float32(1.0) - np.float32(sparsity))))


def prune_count(n: int, sparsity: float) -> int:
    return n - keep_count(n, sparsity)


def magnitude_keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving uint32 keys of |w| (float32 bit patterns of non-negative floats)."""
    magnitude = np.abs(np.asarray(values, dtype=np.float32))
    keys = magnitude.view(np.uint32)
    keys[np.isnan(magnitude)] = np.uint32(0xFFFFFFFF)
    return keys


def smallest_positions(values: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the `count` smallest-|w| entries (ties: lowest flat index first)."""
    flat = values.reshape(-1)
    chosen = np.zeros(flat.size, dtype=bool)
    if count <= 0:
        return chosen.reshape(values.shape)
    if count >= flat.size:
        chosen[:] = True
        return chosen.reshape(values.shape)
    keys = magnitude_keys(flat)
    keys.partition(count - 1)  # in place: memory stays at two copies of the tensor
    cut = keys[count - 1]
    del keys
    keys = magnitude_keys(flat)
    np.less(keys, cut, out=chosen)
    ties_needed = count - int(np.count_nonzero(chosen))
    chosen[np.flatnonzero(keys == cut)[:ties_needed]] = True
    return chosen.reshape(values.shape)


def zero_smallest(values: np.ndarray, count: int) -> np.ndarray:
    """Zero the `count` smallest-|w| entries in place (ties: lowest flat index first)."""
    values[smallest_positions(values, count)] = 0
    return values


def n_of_m_positions(values: np.ndarray, zeros: int, group: int, axis: int) -> np.ndarray:
    """Boolean mask of the `zeros` smallest entries in every `group` along `axis`."""
    chosen = np.zeros(values.shape, dtype=bool)
    n_of_m(values.copy(), zeros, group, axis, chosen)
    return chosen


def zero_below(values: np.ndarray, threshold: float) -> np.ndarray:
    """Zero every |w| <= threshold in place (the lossless 'effectively zero' clean-up)."""
    values[np.abs(values) <= exact_threshold(threshold, values.dtype)] = 0
    return values


def zero_by_mask(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    values[np.asarray(mask) == 0] = 0
    return values


def n_of_m(
    values: np.ndarray, zeros: int, group: int, axis: int, chosen: np.ndarray | None = None
) -> np.ndarray:
    """In every `group` consecutive weights along `axis`, zero the `zeros` smallest (in place).

    `chosen`, if given, is set True at the zeroed positions.
    """
    moved = np.moveaxis(values, axis, -1)
    if moved.shape[-1] % group:
        raise ValueError(f"axis of size {moved.shape[-1]} is not a multiple of {group}")
    groups = moved.reshape(-1, group)
    keys = magnitude_keys(groups).astype(np.int64)
    # Stable order: smaller key first, then lower position within the group.
    order = np.argsort(keys * group + np.arange(group), axis=1, kind="stable")
    smallest = order[:, :zeros]
    np.put_along_axis(groups, smallest, 0, axis=1)
    values[...] = np.moveaxis(groups.reshape(moved.shape), -1, axis)
    if chosen is not None:
        marks = np.zeros(groups.shape, dtype=bool)
        np.put_along_axis(marks, smallest, True, axis=1)
        chosen[...] = np.moveaxis(marks.reshape(moved.shape), -1, axis)
    return values


@dataclass
class GlobalCut:
    """Result of a global selection: the key to cut at, and per-tensor counts."""

    cut: int  # prune keys < cut everywhere (subject to caps)...
    ties: list[int]  # ...plus this many keys == cut in each tensor (lowest flat index first)
    capped: list[bool]  # tensors that hit their cap prune exactly `caps[i]` smallest instead
    caps: list[int]


def global_cut(
    read: Callable[[int], np.ndarray | Iterable[np.ndarray]],
    sizes: Sequence[int],
    total_prune: int,
    caps: Sequence[int],
) -> GlobalCut:
    """Choose which weights to prune across tensors with one global magnitude threshold.

    `read(i)` returns tensor i, or its blocks in flat order (an iterable of arrays); it is called
    twice per tensor: bounded memory, two passes. The selection is exact: `total_prune` weights
    (or the sum of caps, if smaller) with the smallest (|w|, tensor index, flat index), where
    tensor i gives up at most `caps[i]` weights.
    """
    count = len(sizes)
    high = np.zeros((count, HIGH_BINS), dtype=np.int64)
    for i in range(count):
        for block in _blocks(read(i)):
            keys = magnitude_keys(block).reshape(-1)
            keys >>= 16  # in place: no third copy of the tensor
            high[i] += np.bincount(keys, minlength=HIGH_BINS)
            del keys
    caps_arr = np.asarray(caps, dtype=np.int64)
    target = min(total_prune, int(caps_arr.sum()))
    if target <= 0:
        return GlobalCut(0, [0] * count, [False] * count, list(caps))
    cumulative = np.cumsum(high, axis=1)
    totals = np.minimum(cumulative, caps_arr[:, None]).sum(axis=0)
    bin_ = int(np.searchsorted(totals, target))
    before = cumulative[:, bin_ - 1] if bin_ else np.zeros(count, dtype=np.int64)
    low = np.zeros((count, HIGH_BINS), dtype=np.int64)
    for i in range(count):
        if high[i, bin_]:
            for block in _blocks(read(i)):
                keys = magnitude_keys(block).reshape(-1)
                in_bin = keys[(keys >> 16) == bin_]
                del keys
                in_bin &= 0xFFFF
                low[i] += np.bincount(in_bin, minlength=HIGH_BINS)
    low_cumulative = before[:, None] + np.cumsum(low, axis=1)
    low_totals = np.minimum(low_cumulative, caps_arr[:, None]).sum(axis=0)
    offset = int(np.searchsorted(low_totals, target))
    cut = (bin_ << 16) | offset
    below = low_cumulative[:, offset - 1] if offset else before
    capped = below >= caps_arr
    remaining = target - int(np.minimum(below, caps_arr).sum())
    ties = []
    for i in range(count):
        take = 0 if capped[i] else min(remaining, int(caps_arr[i] - below[i]), int(low[i, offset]))
        ties.append(take)
        remaining -= take
    return GlobalCut(cut, ties, capped.tolist(), list(caps))


def _blocks(read: np.ndarray | Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    return (read,) if isinstance(read, np.ndarray) else read


def smallest_cut(read: Callable[[], Iterable[np.ndarray]], size: int, count: int) -> GlobalCut:
    """The cut that prunes the `count` smallest |w| of one tensor read in blocks (two passes).

    Applied with `BlockCut`, it zeroes exactly what `zero_smallest` zeroes on the whole tensor.
    """
    return global_cut(lambda _: read(), [size], count, [size])


class BlockCut:
    """Apply tensor `index`'s share of a cut block by block, in flat order.

    Keys below the cut are pruned everywhere; keys equal to it are pruned, lowest flat index
    first, until the tensor's tie count is used up: the same weights as on the whole tensor.
    """

    def __init__(self, selection: GlobalCut, index: int = 0) -> None:
        self.cut = selection.cut
        self.ties_left = selection.ties[index]

    def apply(self, block: np.ndarray) -> np.ndarray:
        keys = magnitude_keys(block.reshape(-1))
        chosen = keys < self.cut
        if self.ties_left:
            ties = np.flatnonzero(keys == self.cut)[: self.ties_left]
            chosen[ties] = True
            self.ties_left -= len(ties)
        block.reshape(-1)[chosen] = 0
        return block


def global_positions(values: np.ndarray, index: int, selection: GlobalCut) -> np.ndarray:
    """Boolean mask of tensor `index`'s share of a global selection."""
    if selection.capped[index]:
        return smallest_positions(values, selection.caps[index])
    keys = magnitude_keys(values.reshape(-1))
    chosen = keys < selection.cut
    if selection.ties[index]:
        chosen[np.flatnonzero(keys == selection.cut)[: selection.ties[index]]] = True
    return chosen.reshape(values.shape)


def apply_global_cut(values: np.ndarray, index: int, selection: GlobalCut) -> np.ndarray:
    """Zero tensor `index`'s share of a global selection, in place."""
    values[global_positions(values, index, selection)] = 0
    return values


def unit_norms(kernel: np.ndarray) -> np.ndarray:
    """L2 norm of each output unit's incoming slice (every axis but the last), as float32.

    Summed in float64 so large fan-ins do not lose the ranking; float32 so the norms share the
    deterministic key order (and NaN-is-never-pruned rule) of weight magnitudes.
    """
    flat = np.asarray(kernel, dtype=np.float64).reshape(-1, kernel.shape[-1])
    with np.errstate(over="ignore"):
        return np.sqrt(np.einsum("ij,ij->j", flat, flat)).astype(np.float32)


def columns(kernel_shape: tuple[int, ...], units: np.ndarray) -> np.ndarray:
    """A per-unit boolean vector spread over whole kernel slices (the last axis)."""
    return np.broadcast_to(units, kernel_shape).copy()


def unit_positions(kernel: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the `count` units with the smallest L2 norms, as whole kernel slices.

    Ties: the lower unit index is pruned first, as for single weights.
    """
    return columns(kernel.shape, smallest_positions(unit_norms(kernel), count))


def global_unit_cut(
    norms: Sequence[np.ndarray], total_prune: int, caps: Sequence[int]
) -> GlobalCut:
    """One ranking of units by norm over several layers, each giving up at most `caps[i]` units."""
    return global_cut(lambda i: norms[i], [n.size for n in norms], total_prune, caps)


def zero_units(values: np.ndarray, chosen: np.ndarray) -> int:
    """Zero the chosen slices in place; returns how many units were chosen."""
    values[chosen] = 0
    return int(chosen.reshape(-1, values.shape[-1])[0].sum()) if values.size else 0


Block = tuple[int, int]  # (rows, columns) of a 2-D kernel, e.g. (4, 1) for a Keras Dense kernel
POOLINGS = ("avg", "max")


def block_grid(shape: tuple[int, ...], block: Block) -> tuple[int, int]:
    """Blocks along each axis; a partial block at the end counts as one (TFMOT pads)."""
    return -(-shape[0] // block[0]), -(-shape[1] // block[1])


def _window_starts(size: int, step: int) -> np.ndarray:
    """Where TFMOT's pooling windows start: `tf.nn.pool(padding="SAME")` puts half of the
    padding (rounded down) before the first window, so scores of a size that is not a multiple
    of the block are taken over windows shifted by that much (clipped to the tensor)."""
    count = -(-size // step)
    before = (count * step - size) // 2
    return np.maximum(np.arange(count) * step - before, 0)


def _pool_axis(values: np.ndarray, step: int, axis: int, pooling: str) -> np.ndarray:
    starts = _window_starts(values.shape[axis], step)
    if pooling == "max":
        return np.maximum.reduceat(values, starts, axis=axis)
    sums = np.add.reduceat(values, starts, axis=axis)
    counts = np.diff(np.append(starts, values.shape[axis]))  # padding is not averaged in
    shape = [1, 1]
    shape[axis] = counts.size
    return sums / counts.reshape(shape)


def block_scores(kernel: np.ndarray, block: Block, pooling: str = "avg") -> np.ndarray:
    """Each block's mean (or max) |w|, as TFMOT's factorized pooling computes it: float32 keys
    that share the weights' deterministic order (NaN is never pruned)."""
    magnitude = np.abs(np.asarray(kernel, dtype=np.float64))
    pooled = _pool_axis(_pool_axis(magnitude, block[0], 0, pooling), block[1], 1, pooling)
    return pooled.astype(np.float32)


def expand_blocks(chosen: np.ndarray, block: Block, shape: tuple[int, ...]) -> np.ndarray:
    """Per-block booleans spread over aligned blocks from (0, 0), cut to `shape` (TFMOT's
    expand_tensor + slice: the last block along an axis may be partial)."""
    spread = np.repeat(np.repeat(chosen, block[0], axis=0), block[1], axis=1)
    return np.ascontiguousarray(spread[: shape[0], : shape[1]])


def block_positions(kernel: np.ndarray, block: Block, count: int, pooling: str = "avg"):
    """Boolean mask of the `count` blocks with the smallest scores (ties: lower block first)."""
    scores = block_scores(kernel, block, pooling)
    return expand_blocks(smallest_positions(scores, count), block, kernel.shape)


def global_block_cut(
    scores: Sequence[np.ndarray], total_prune: int, caps: Sequence[int]
) -> GlobalCut:
    """One ranking of blocks by score over several kernels, each giving up at most `caps[i]`."""
    return global_cut(lambda i: scores[i], [s.size for s in scores], total_prune, caps)


def global_block_positions(
    kernel: np.ndarray, scores: np.ndarray, index: int, selection: GlobalCut, block: Block
) -> np.ndarray:
    """Kernel `index`'s share of a global block selection, as whole blocks."""
    return expand_blocks(global_positions(scores, index, selection), block, kernel.shape)


def zero_blocks(values: np.ndarray, block: Block) -> tuple[int, int]:
    """(all-zero blocks, blocks) over aligned blocks from (0, 0); a partial end block counts
    when its weights are all zero."""
    rows, cols = block_grid(values.shape, block)
    padded = np.ones((rows * block[0], cols * block[1]), dtype=bool)
    padded[: values.shape[0], : values.shape[1]] = values == 0
    tiles = padded.reshape(rows, block[0], cols, block[1])
    return int(tiles.all(axis=(1, 3)).sum()), rows * cols


def count_zeros(values: Iterable[np.ndarray]) -> int:
    return sum(int(np.count_nonzero(np.asarray(v) == 0)) for v in values)
