"""Mask computation in `keras.ops`: runs inside the compiled train step on every backend.

The same rules as the numpy side (`sparseprune.numeric.masks`): a tensor of n weights at sparsity s
keeps k = round(n(1 - s)) (float32, half to even); among equal magnitudes the lower flat index
is pruned first; NaN is never pruned. Blocks follow TFMOT: |w| average-pooled over
`block_size` tiles of a 2-D kernel (edge tiles average only their real entries), the keep-k rule
applied to the tiles, each tile's decision spread back over it. N:M groups run along the input
axis (axis -2), as TFMOT's `sparsity_m_by_n` does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops


def stable_argsort(values: Any, axis: int = -1) -> Any:
    """Ascending order along `axis`, ties in index order (tf.argsort is unstable by default)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.argsort(values, axis=axis, stable=True)
    return ops.argsort(values, axis=axis)


def ranks(scores: Any) -> Any:
    """Rank of each entry of a 1-D tensor in (score, index) order, as int32."""
    order = stable_argsort(scores)
    return ops.cast(ops.argsort(order), "int32")  # inverse permutation (no ties left)


def prune_count(size: int, sparsity: Any) -> Any:
    """n - round(n(1 - s)) as an int32 tensor."""
    keep = ops.round(ops.cast(size, "float32") * (1.0 - ops.cast(sparsity, "float32")))
    return size - ops.cast(keep, "int32")


def magnitude_scores(values: Any) -> Any:
    """|w| flattened as float32, NaN mapped above every number so it is never pruned."""
    flat = ops.abs(ops.cast(ops.reshape(values, (-1,)), "float32"))
    return ops.where(ops.isnan(flat), float("inf"), flat)


def smallest_mask(scores: Any, count: Any) -> Any:
    """1.0 where kept: all but the `count` smallest scores of a 1-D tensor."""
    return ops.cast(ops.greater_equal(ranks(scores), count), "float32")


def magnitude_mask(values: Any, sparsity: Any) -> Any:
    size = math.prod(values.shape)
    keep = smallest_mask(magnitude_scores(values), prune_count(size, sparsity))
    return ops.reshape(keep, values.shape)


def block_scores(values: Any, block: Sequence[int], pooling: str = "AVG") -> Any:
    """Mean (or max) |w| of each block of a 2-D kernel, as TFMOT's SAME pooling computes it:
    half of the padding (rounded down) goes before the first window, and padding is not
    averaged in. Returns a (rows, columns) grid of float32 scores, NaN mapped to +inf."""
    (rows, cols), (height, width) = values.shape, (int(block[0]), int(block[1]))
    (tiles_r, before_r), (tiles_c, before_c) = _windows(rows, height), _windows(cols, width)
    pads = (
        (before_r, tiles_r * height - rows - before_r),
        (before_c, tiles_c * width - cols - before_c),
    )
    padded = ops.pad(ops.abs(ops.cast(values, "float32")), pads)
    tiles = ops.reshape(padded, (tiles_r, height, tiles_c, width))
    if pooling.upper() == "MAX":
        scores = ops.max(tiles, axis=(1, 3))
    else:
        counts = np.outer(_real(rows, height, before_r), _real(cols, width, before_c))
        scores = ops.sum(tiles, axis=(1, 3)) / ops.convert_to_tensor(counts.astype("float32"))
    return ops.where(ops.isnan(scores), float("inf"), scores)


def expand_blocks(keep: Any, block: Sequence[int], shape: Sequence[int]) -> Any:
    """Per-block decisions spread over blocks aligned at (0, 0), cut to `shape` (TFMOT's
    expand_tensor + slice)."""
    spread = ops.repeat(ops.repeat(keep, int(block[0]), axis=0), int(block[1]), axis=1)
    return spread[: shape[0], : shape[1]]


def block_mask(values: Any, sparsity: Any, block: Sequence[int], pooling: str = "AVG") -> Any:
    """TFMOT's block pruning of a 2-D kernel: keep round(blocks(1 - s)) blocks by score."""
    scores = block_scores(values, block, pooling)
    size = math.prod(scores.shape)
    keep = smallest_mask(ops.reshape(scores, (-1,)), prune_count(size, sparsity))
    return expand_blocks(ops.reshape(keep, scores.shape), block, values.shape)


def _windows(size: int, step: int) -> tuple[int, int]:
    count = -(-size // step)
    return count, (count * step - size) // 2


def _real(size: int, step: int, before: int) -> np.ndarray:
    """Real (unpadded) entries in each pooling window along one axis."""
    starts = np.arange(-(-size // step)) * step - before
    return np.minimum(starts + step, size) - np.maximum(starts, 0)


def m_by_n_mask(values: Any, zeros: int, group: int) -> Any:
    """In every `group` consecutive weights along axis -2, prune the `zeros` smallest |w|."""
    moved = ops.moveaxis(ops.abs(ops.cast(values, "float32")), -2, -1)
    shape = moved.shape
    if shape[-1] % group:
        raise ValueError(f"axis of size {shape[-1]} is not a multiple of {group} for N:M")
    groups = ops.reshape(moved, (-1, group))
    groups = ops.where(ops.isnan(groups), float("inf"), groups)
    # Rank inside each group, ties by position (lower position pruned first).
    within = stable_argsort(ops.cast(stable_argsort(groups), "int32"))
    keep = ops.cast(ops.greater_equal(within, zeros), "float32")
    return ops.moveaxis(ops.reshape(keep, shape), -1, -2)


def unit_mask(values: Any, sparsity: Any, axis: int = -1) -> Any:
    """Prune whole output units (along `axis`) with the smallest L2 norms of their slices."""
    moved = ops.moveaxis(values, axis, -1)
    keep = smallest_mask(unit_norms(moved), prune_count(int(moved.shape[-1]), sparsity))
    return ops.moveaxis(ops.broadcast_to(keep, moved.shape), -1, axis)


def unit_norms(values: Any) -> Any:
    """L2 norm of each unit (last axis) as float32, NaN mapped to +inf (never pruned)."""
    units = int(values.shape[-1])
    flat = ops.reshape(ops.cast(values, "float32"), (-1, units))
    norms = ops.sqrt(ops.sum(flat * flat, axis=0))
    return ops.where(ops.isnan(norms), float("inf"), norms)


def class_scores(
    norms: Sequence[Any], classes: Sequence[Any], count: int, blocked: Sequence[int]
) -> Any:
    """Root mean square of each class's unit norms (`numeric.tied.class_scores`); +inf (never
    chosen) where blocked or NaN. Class sums by segment_sum: no dense constant per member."""
    total = ops.zeros((count,), "float32")
    size = np.zeros(count, "float32")
    for norm, ids in zip(norms, classes, strict=True):
        segments = ops.convert_to_tensor(np.asarray(ids, "int32"))
        total = total + ops.segment_sum(norm * norm, segments, num_segments=count)
        size += np.bincount(np.asarray(ids), minlength=count)
    rms = ops.sqrt(total / ops.convert_to_tensor(np.maximum(size, 1)))
    never = np.zeros(count, bool)
    never[list(blocked)] = True
    return ops.where(ops.logical_or(ops.convert_to_tensor(never), ops.isnan(rms)),
                     float("inf"), rms)  # fmt: skip


def greedy_choice(
    scores: Any, weights: np.ndarray, spans: Sequence[np.ndarray], rooms: Sequence[int], count: Any
) -> Any:
    """1 per entry the one-shot greedy takes (`numeric.tied.choose_classes`/`global_choice`):
    entries in (score, index) order, taken while less than `count` weight is taken, never a
    non-finite score, skipping one that would use more units of a constrained member than its
    room. `spans[j]` gives the entry of each unit of constrained member j, `rooms[j]` how many
    of its units may go.

    Without a skip the choice is a prefix sum; the sequential loop runs only on steps where that
    choice overfills a member, which is exactly when the greedy skips.
    """
    size = int(scores.shape[0])
    order = stable_argsort(scores)
    finite = ops.logical_not(ops.isinf(ops.take(scores, order)))
    sizes = ops.take(ops.convert_to_tensor(np.asarray(weights, "int32")), order)
    count = ops.cast(count, "int32")
    inverse = ops.argsort(order)
    prefix = ops.logical_and(ops.less(ops.cumsum(sizes) - sizes, count), finite)
    fast = ops.take(ops.cast(prefix, "int32"), inverse)
    if not spans:
        return fast
    used = [ops.sum(ops.take(fast, ops.convert_to_tensor(np.asarray(s, "int32")))) for s in spans]
    overfull = ops.any(ops.greater(ops.stack(used), np.asarray(rooms, "int32")))
    usage = np.stack([np.bincount(s, minlength=size) for s in spans], axis=1).astype("int32")

    def sequential() -> Any:
        rows = ops.take(ops.convert_to_tensor(usage), order, axis=0)  # in ranked order
        positions = ops.arange(size, dtype="int32")

        def more(k: Any, left: Any, taken: Any, picked: Any) -> Any:
            return ops.logical_and(ops.less(k, size), ops.less(taken, count))

        def take_next(k: Any, left: Any, taken: Any, picked: Any) -> Any:
            row = ops.take(rows, k, axis=0)
            fits = ops.logical_and(ops.all(ops.less_equal(row, left)), ops.take(finite, k))
            step = ops.cast(fits, "int32")
            picked = ops.where(ops.equal(positions, k), step, picked)
            return k + 1, left - row * step, taken + ops.take(sizes, k) * step, picked

        start = (
            ops.convert_to_tensor(0, "int32"),
            ops.convert_to_tensor(np.asarray(rooms, "int32")),
            ops.convert_to_tensor(0, "int32"),
            ops.zeros((size,), "int32"),
        )
        picked = ops.while_loop(more, take_next, start, maximum_iterations=size)[3]
        return ops.take(picked, inverse)

    return ops.cond(overfull, sequential, lambda: fast)


def tied_unit_masks(
    members: Sequence[tuple[Any, Sequence[int], int]], blocked: Sequence[int], sparsity: Any
) -> list[Any]:
    """Units tied across kernels, pruned together (`sparseprune.numeric.tied` in keras.ops).

    `members` holds (values, class id of each unit, unit axis) per kernel. A class scores the
    root mean square of its members' unit norms; the `sparsity` share of all classes with the
    lowest scores (ties: lower class id) is pruned in every member; blocked classes never are,
    nor a class that would take a member's last unit (`tied.choose_classes`' guard).
    """
    count = 1 + max(max(ids) for _, ids, _ in members)
    norms = [unit_norms(ops.moveaxis(values, axis, -1)) for values, _, axis in members]
    scores = class_scores(norms, [ids for _, ids, _ in members], count, blocked)
    # A member holding a blocked class always keeps that unit: only the others need the guard.
    guarded = [np.asarray(ids) for _, ids, _ in members if not set(ids) & set(blocked)]
    chosen = greedy_choice(scores, np.ones(count), guarded, [len(ids) - 1 for ids in guarded],
                           prune_count(count, sparsity))  # fmt: skip
    keep = 1.0 - ops.cast(chosen, "float32")
    return [spread_units(ops.take(keep, np.asarray(ids, "int32")), values.shape, axis)
            for values, ids, axis in members]  # fmt: skip


def global_unit_masks(
    norms: Sequence[Any], ties: Sequence[tuple[int, Sequence[int], Sequence[int]] | None],
    caps: Sequence[int | None], sparsity: Any,
) -> list[Any]:  # fmt: skip
    """Global unit selection over a pool with tied kernels (`numeric.tied.global_choice`): 1.0
    per kept unit of each member.

    `ties[i]` is member i's (group, class id of each unit, blocked classes), None for a kernel
    ranked unit by unit. Entries in pool order: a single unit, or a group's classes at its first
    member; the pool loses the `sparsity` share of all its units, each member at most `caps[i]`.
    """
    groups: dict[int, list[int]] = {}
    for i, tie in enumerate(ties):
        if tie is not None:
            groups.setdefault(tie[0], []).append(i)
    segments: list[Any] = []
    weights: list[np.ndarray] = []
    index: list[np.ndarray] = [np.zeros(0, int)] * len(norms)
    offset = 0
    for i, tie in enumerate(ties):
        if tie is None:
            segments.append(norms[i])
            weights.append(np.ones(int(norms[i].shape[0]), "int32"))
            index[i] = offset + np.arange(int(norms[i].shape[0]))
        elif groups[tie[0]][0] == i:
            members = groups[tie[0]]
            classes = [np.asarray(ties[j][1]) for j in members]  # type: ignore[index]
            count = 1 + max(int(ids.max()) for ids in classes)
            segments.append(class_scores([norms[j] for j in members], classes, count, tie[2]))
            weights.append(np.sum([np.bincount(ids, minlength=count) for ids in classes], axis=0))
            for j, ids in zip(members, classes, strict=True):
                index[j] = offset + ids
        else:
            continue
        offset += int(segments[-1].shape[0])
    units = [int(n.shape[0]) for n in norms]
    capped = [i for i, cap in enumerate(caps) if cap is not None and cap < units[i]]
    count = prune_count(sum(units), sparsity)
    chosen = greedy_choice(ops.concatenate(segments), np.concatenate(weights),
                           [index[i] for i in capped], [caps[i] for i in capped], count)  # type: ignore[misc] # fmt: skip
    return [1.0 - ops.cast(ops.take(chosen, np.asarray(ids, "int32")), "float32") for ids in index]


def spread_units(keep: Any, shape: Sequence[int], axis: int) -> Any:
    """One decision per unit spread over its whole slice of a kernel of `shape`."""
    moved = [d for i, d in enumerate(shape) if i != axis % len(shape)]
    return ops.moveaxis(ops.broadcast_to(keep, (*moved, int(keep.shape[0]))), -1, axis)


def threshold_mask(values: Any, threshold: float) -> Any:
    """0.0 where |w| <= threshold (the lossless clean-up), 1.0 elsewhere."""
    return ops.cast(ops.greater(ops.abs(ops.cast(values, "float32")), threshold), "float32")


def global_masks(scores: Sequence[Any], sparsity: Any, caps: Sequence[int | None]) -> list[Any]:
    """Exact global selection with per-tensor caps, ties by (tensor, flat index).

    A tensor can only give up its `cap` smallest entries, so those are its only candidates;
    the globally smallest `count` candidates are then exactly the capped selection.
    """
    sizes = [int(s.shape[0]) for s in scores]
    count = prune_count(sum(sizes), sparsity)
    candidates = []
    for size, score, cap in zip(sizes, scores, caps, strict=True):
        limit = size if cap is None else cap
        candidates.append(ops.where(ops.less(ranks(score), limit), score, float("inf")))
    pooled = ops.concatenate(candidates)
    chosen = ops.less(ranks(pooled), count)
    allowed = ops.logical_and(chosen, ops.logical_not(ops.isinf(pooled)))
    out, start = [], 0
    for size in sizes:
        out.append(ops.cast(ops.logical_not(allowed[start : start + size]), "float32"))
        start += size
    return out
