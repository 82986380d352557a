"""How bench times one runner: the settings, the warm-up + timed loop, and the statistics.

Shared by the Keras runs (in bench's own process) and the TFLite runs (in tflite_probe's child
process), so both are timed by the same code. Imports neither TensorFlow nor LiteRT.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from sparseprune.errors import InputError

SEED = 0


@dataclass(frozen=True)
class BenchSpec:
    """How to time: batch sizes, timed repeats, untimed warm-up calls, and thread pool sizes."""

    batch_sizes: tuple[int, ...] = (1, 32)
    repeats: int = 50
    warmup: int = 20
    threads: int = 1

    def __post_init__(self) -> None:
        sizes = self.batch_sizes
        if isinstance(sizes, int) or not all(isinstance(n, int) for n in sizes):
            raise InputError(f"'batch_sizes' must be a sequence of integers, got {sizes!r}.")
        object.__setattr__(self, "batch_sizes", tuple(dict.fromkeys(sizes)))
        self.check()

    def check(self) -> None:
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise InputError("--batch-size needs positive integers, e.g. 1,32.")
        if self.repeats < 2:
            raise InputError(f"--repeats must be at least 2, got {self.repeats}.")
        if self.warmup < 0:
            raise InputError(f"--warmup must be 0 or more, got {self.warmup}.")
        if self.threads < 1:
            raise InputError(f"--threads must be at least 1, got {self.threads}.")


class Runner:
    """Makes inputs for a batch size and runs one forward pass, returning a host array."""

    def inputs(self, batch: int) -> Any:
        raise NotImplementedError

    def __call__(self, inputs: Any) -> Any:
        raise NotImplementedError


def time_batch(runner: Runner, batch: int, spec: BenchSpec) -> dict[str, Any]:
    """Warm up (trace, allocate), then time `repeats` calls; latency figures in milliseconds."""
    return latency_stats(run_batch(runner, batch, spec.warmup, spec.repeats), batch)


def run_batch(runner: Runner, batch: int, warmup: int, repeats: int) -> list[float]:
    """Milliseconds of each timed call after `warmup` untimed ones; a failure is InputError.
    The TFLite probe runs this with (0, 1): bench's own path, once."""
    try:
        inputs = runner.inputs(batch)
        for _ in range(warmup):
            runner(inputs)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            runner(inputs)
            times.append((time.perf_counter() - start) * 1000.0)
    except InputError:
        raise
    except Exception as error:  # shape/dtype problems surface as many TF exception types
        raise InputError(f"could not run the model at batch size {batch}: {error}") from error
    return times


def latency_stats(times_ms: list[float], batch: int) -> dict[str, Any]:
    """Median and p90 (nearest rank), spread = p90/median, throughput from the median."""
    ordered = sorted(times_ms)
    median = statistics.median(ordered)
    p90 = ordered[min(len(ordered) - 1, int(np.ceil(0.9 * len(ordered))) - 1)]
    return {
        "batch_size": batch,
        "median_ms": median,
        "p90_ms": p90,
        "min_ms": ordered[0],
        "std_ms": statistics.stdev(ordered) if len(ordered) > 1 else 0.0,
        "spread": p90 / median if median > 0 else None,
        "throughput": batch / (median / 1000.0) if median > 0 else None,
    }
