"""Statistics of one tensor, computed slab by slab so memory stays bounded. Pure numpy, no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

DEFAULT_THRESHOLD = 1e-15
# log10|w| histogram edges for plots: float32 denormals reach 1e-45; exact zeros go in `zeros`.
LOG10_EDGES = np.linspace(-46.0, 4.0, 401)  # 1/8 decade per bin


def exact_threshold(threshold: float, dtype: np.dtype) -> float | np.floating:
    """The largest `dtype` value <= threshold, so `|w| <= t` in `dtype` equals the exact test.

    Casting 1e-15 to float32 rounds it up (to 1.0000000036e-15), which would wrongly count a weight
    of exactly float32(1e-15) as near zero; huge thresholds would overflow to inf.
    """
    if not np.issubdtype(dtype, np.floating):
        return threshold
    with np.errstate(over="ignore"):
        value = np.asarray(threshold, dtype=dtype)[()]
    assert isinstance(value, np.floating)  # a 0-d array indexed by () is a numpy scalar
    if float(value) > threshold:
        value = np.nextafter(value, dtype.type(-np.inf))
    return value


# LiteRT's converter (EXPERIMENTAL_SPARSITY) keeps a FULLY_CONNECTED weight block-sparse (1x4
# in its (out, in) layout = (4, 1) in a Keras Dense kernel) when the zeros in whole blocks are
# more than 90% of all zeros; below ~30% zeros it does not encode the tensor at all. Checked
# against the converter's output flatbuffers (tests/test_export_sparse.py).
LITERT_BLOCK = (4, 1)
LITERT_BLOCK_OVER_RANDOM = 0.9
LITERT_MIN_SPARSITY = 0.3


@dataclass(frozen=True)
class LiteRtVerdict:
    """Whether LiteRT's converter keeps a Dense kernel sparse, and the sentence saying why."""

    runs_sparse: bool
    reason: str


def litert_verdict(zero_fraction: float, block_fraction: float) -> LiteRtVerdict:
    """Whether the converter would keep a Dense kernel sparse, and why (from its zero counts)."""
    if zero_fraction < LITERT_MIN_SPARSITY:
        return LiteRtVerdict(
            False, f"{zero_fraction:.0%} zeros: below the ~30% the converter encodes"
        )
    ratio = block_fraction / zero_fraction
    if ratio > LITERT_BLOCK_OVER_RANDOM:
        return LiteRtVerdict(
            True, f"{block_fraction:.0%} of 4x1 blocks are zero (ratio {ratio:.2f})"
        )
    return LiteRtVerdict(
        False,
        f"zeros are not in 4x1 blocks (block/random sparsity {ratio:.2f} <= 0.9; "
        "prune with --block 4x1)",
    )


@dataclass
class BlockCount:
    """All-zero (4, 1) blocks of a 2-D kernel read in slabs of rows (a block may span slabs)."""

    block: tuple[int, int] = LITERT_BLOCK
    zero_blocks: int = 0
    blocks: int = 0
    pending: np.ndarray | None = None  # rows left over from the last slab

    def add(self, values: np.ndarray, final: bool = False) -> None:
        zeros = values == 0
        if self.pending is not None:
            zeros = np.concatenate([self.pending, zeros])
        rows, cols = self.block
        whole = zeros.shape[0] - zeros.shape[0] % rows
        if final and whole < zeros.shape[0]:  # a partial last block counts when all zero
            pad = np.ones((rows - zeros.shape[0] % rows, zeros.shape[1]), dtype=bool)
            zeros, whole = np.concatenate([zeros, pad]), zeros.shape[0] + len(pad)
        self.pending = zeros[whole:] if whole < zeros.shape[0] else None
        width = -(-zeros.shape[1] // cols) * cols
        tiles = np.ones((whole, width), dtype=bool)
        tiles[:, : zeros.shape[1]] = zeros[:whole]
        tiles = tiles.reshape(whole // rows, rows, width // cols, cols)
        self.zero_blocks += int(tiles.all(axis=(1, 3)).sum())
        self.blocks += tiles.shape[0] * tiles.shape[2]


@dataclass
class TensorStats:
    """Counts over one tensor (see `tensor_stats`); `sparsity` is the near-zero fraction."""

    params: int = 0
    zeros: int = 0
    near_zero: int = 0
    nan: int = 0
    inf: int = 0
    dead_units: int = 0
    histogram: np.ndarray | None = None
    blocks: BlockCount | None = None  # Dense kernels: LiteRT's 4x1 blocks

    @property
    def litert(self) -> LiteRtVerdict | None:
        if self.blocks is None or not self.params or not self.blocks.blocks:
            return None
        return litert_verdict(
            self.zeros / self.params, self.blocks.zero_blocks / self.blocks.blocks
        )

    @property
    def sparsity(self) -> float:
        return self.near_zero / self.params if self.params else 0.0


def tensor_stats(
    slabs: Iterable[np.ndarray],
    shape: tuple[int, ...],
    threshold: float = DEFAULT_THRESHOLD,
    count_dead_units: bool = False,
    histogram: bool = False,
    count_blocks: bool = False,
) -> TensorStats:
    """Count exact zeros, |w| <= threshold (NaN never counts), NaN, Inf and dead output units.

    A dead unit is an output unit (last axis of a kernel) whose whole incoming slice is near zero.
    """
    stats = TensorStats(histogram=np.zeros(len(LOG10_EDGES) - 1, np.int64) if histogram else None)
    units = shape[-1] if count_dead_units and len(shape) >= 2 else 0
    alive = np.zeros(units, dtype=bool)
    if count_blocks and len(shape) == 2:
        stats.blocks = BlockCount()
    for slab in slabs:
        values = np.asarray(slab)
        if not np.issubdtype(values.dtype, np.floating):
            values = values.astype(np.float64)  # abs(int32 min) overflows in its own type
        magnitude = np.abs(values)
        stats.params += values.size
        stats.zeros += int(np.count_nonzero(values == 0))
        near = magnitude <= exact_threshold(threshold, values.dtype)
        stats.near_zero += int(np.count_nonzero(near))
        if np.issubdtype(values.dtype, np.floating):
            stats.nan += int(np.count_nonzero(np.isnan(values)))
            stats.inf += int(np.count_nonzero(np.isinf(values)))
        if units:
            alive |= (~near).reshape(-1, units).any(axis=0)
        if stats.histogram is not None:
            stats.histogram += log10_histogram(magnitude)
        if stats.blocks is not None:
            stats.blocks.add(values.reshape(-1, shape[-1]))
        del slab, values, magnitude, near  # free this block before the next one is read
    stats.dead_units = int(units - np.count_nonzero(alive)) if units else 0
    if stats.blocks is not None:
        stats.blocks.add(np.ones((0, shape[-1])), final=True)
    return stats


def log10_histogram(magnitude: np.ndarray) -> np.ndarray:
    finite = magnitude[np.isfinite(magnitude) & (magnitude > 0)].astype(np.float64)
    counts, _ = np.histogram(np.log10(finite), bins=LOG10_EDGES)
    return counts
