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
    if float(value) > threshold:
        value = np.nextafter(value, dtype.type(-np.inf))
    return value


@dataclass
class TensorStats:
    params: int = 0
    zeros: int = 0
    near_zero: int = 0
    nan: int = 0
    inf: int = 0
    dead_units: int = 0
    histogram: np.ndarray | None = None

    @property
    def sparsity(self) -> float:
        return self.near_zero / self.params if self.params else 0.0


def tensor_stats(
    slabs: Iterable[np.ndarray],
    shape: tuple[int, ...],
    threshold: float = DEFAULT_THRESHOLD,
    count_dead_units: bool = False,
    histogram: bool = False,
) -> TensorStats:
    """Count exact zeros, |w| <= threshold (NaN never counts), NaN, Inf and dead output units.

    A dead unit is an output unit (last axis of a kernel) whose whole incoming slice is near zero.
    """
    stats = TensorStats(histogram=np.zeros(len(LOG10_EDGES) - 1, np.int64) if histogram else None)
    units = shape[-1] if count_dead_units and len(shape) >= 2 else 0
    alive = np.zeros(units, dtype=bool)
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
        del slab, values, magnitude, near  # free this block before the next one is read
    stats.dead_units = int(units - np.count_nonzero(alive)) if units else 0
    return stats


def log10_histogram(magnitude: np.ndarray) -> np.ndarray:
    finite = magnitude[np.isfinite(magnitude) & (magnitude > 0)].astype(np.float64)
    counts, _ = np.histogram(np.log10(finite), bins=LOG10_EDGES)
    return counts
