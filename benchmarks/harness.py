"""The measuring harness shared by ``inspect_speed.py`` and ``prune_speed.py``.

Both benchmarks judge a command by its wall time and peak RSS as a whole process (start-up and
imports included), build their test models with Keras in a child process, and print fixed-width
tables. Keeping that here means both scripts measure in exactly the same way, so their figures
(and the baseline RSS they subtract) can be compared with each other.

This is a plain module next to the scripts, not part of the ``sparseprune`` package: the scripts
put this folder on ``sys.path`` and import it as ``harness``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MIB = 1 << 20
BIG_DEPTH = 4  # square Dense kernels in the generated big model

# Runs argv[3:] with stdout/stderr sent to the files argv[1] and argv[2]; prints one JSON line.
# The wrapper has exactly one child, so RUSAGE_CHILDREN is the peak RSS of that command alone,
# which the parent could not get for itself once it has run anything else.
WRAPPER = """\
import json, resource, subprocess, sys, time
with open(sys.argv[1], "wb") as out, open(sys.argv[2], "wb") as err:
    start = time.perf_counter()
    code = subprocess.call(sys.argv[3:], stdout=out, stderr=err)
    seconds = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": seconds, "maxrss": rss, "returncode": code}))
"""

# Build Input(sizes[0]) -> Dense(sizes[1]) -> ... with random normal numpy weights, set a fraction
# argv[2] of each kernel to zero (none if 0), and save to each path in the JSON list argv[1] (the
# suffix picks the format: .keras or legacy .h5). The zeroing draws from the generator only when
# the fraction is nonzero, so a dense model gets the same weights as if it did not exist.
BUILD_CHILD = """\
import json, sys
import numpy as np
import keras
paths, fraction = json.loads(sys.argv[1]), float(sys.argv[2])
sizes = [int(s) for s in sys.argv[3:]]
layers = [keras.layers.Dense(n, kernel_initializer="zeros") for n in sizes[1:]]
model = keras.Sequential([keras.Input((sizes[0],)), *layers])
rng = np.random.RandomState(0)
for layer, (fan_in, fan_out) in zip(layers, zip(sizes, sizes[1:])):
    kernel = rng.standard_normal((fan_in, fan_out)).astype(np.float32)
    kernel *= np.float32(1 / np.sqrt(fan_in))
    if fraction:
        kernel[rng.random_sample(kernel.shape) < fraction] = 0
    layer.set_weights([kernel, rng.standard_normal(fan_out).astype(np.float32)])
    del kernel
for path in paths:
    model.save(path)
"""


@dataclass
class Run:
    """One measured process: wall seconds and peak RSS in MiB."""

    seconds: float
    rss_mib: float


def child_env() -> dict[str, str]:
    """Environment for every child: quiet TensorFlow, no stray .pyc files, TF backend by default."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONDONTWRITEBYTECODE="1")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    return env


def rss_to_mib(maxrss: int) -> float:
    """`ru_maxrss` is KiB on Linux, bytes on macOS."""
    return maxrss / MIB if sys.platform == "darwin" else maxrss / 1024


def measure_once(command: list[str], workdir: Path) -> tuple[Run, str]:
    """Run `command` under the wrapper; return its figures and its stdout (raise on failure).

    Its stdout and stderr go to files in `workdir` rather than pipes, so a large output cannot
    stall the child or add to the wrapper's memory.
    """
    out, err = workdir / "stdout", workdir / "stderr"
    wrapper = [sys.executable, "-c", WRAPPER, str(out), str(err), *command]
    report = subprocess.run(
        wrapper, capture_output=True, text=True, check=True, env=child_env(), cwd=REPO
    )
    figures = json.loads(report.stdout)
    if figures["returncode"] != 0:
        tail = err.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{command[:6]} exited {figures['returncode']}:\n{tail}")
    return Run(figures["seconds"], rss_to_mib(figures["maxrss"])), out.read_text()


def summarize(runs: Sequence[Run]) -> Run:
    """Median wall time (robust to one slow start) and max peak RSS (the worst case) of `runs`."""
    return Run(statistics.median(r.seconds for r in runs), max(r.rss_mib for r in runs))


def measure(command: list[str], workdir: Path, repeats: int) -> tuple[Run, str]:
    """`summarize` over `repeats` runs of `command`, and the last run's stdout."""
    runs, stdout = [], ""
    for _ in range(repeats):
        run, stdout = measure_once(command, workdir)
        runs.append(run)
    return summarize(runs), stdout


def baseline_rss(workdir: Path, repeats: int) -> float:
    """Peak RSS of a Python process that only imports the sparseprune CLI.

    Subtracted from a command's peak RSS, it leaves the memory the command's own work needed.
    """
    run, _ = measure([sys.executable, "-c", "import sparseprune.cli"], workdir, repeats)
    return run.rss_mib


def build_model(paths: list[Path], sizes: list[int], zero_fraction: float = 0.0) -> None:
    """Generate the Dense model `sizes` and save it to every path (see BUILD_CHILD).

    Runs in a child so that Keras and TensorFlow never load into the measuring process.
    """
    command = [sys.executable, "-c", BUILD_CHILD, json.dumps([str(p) for p in paths])]
    command += [str(zero_fraction), *map(str, sizes)]
    subprocess.run(command, check=True, env=child_env(), capture_output=True)


def big_sizes(params: int, depth: int = BIG_DEPTH) -> list[int]:
    """Square layer widths (multiple of 64) so that `depth` kernels hold >= `params`.

    Square kernels make the largest tensor a known fraction (1/depth) of the model.
    """
    width = math.ceil(math.sqrt(params / depth) / 64) * 64
    return [width] * (depth + 1)


def table(columns: list[tuple[str, str]], rows: list[tuple], left_columns: int = 0) -> str:
    """Format `rows` under `columns` (title, format) as right-aligned fixed-width text.

    The first `left_columns` columns are left-aligned instead (for labels).
    """
    formats = [fmt for _, fmt in columns]
    cells = [[fmt.format(v) for fmt, v in zip(formats, row, strict=True)] for row in rows]
    header = [title for title, _ in columns]
    widths = [max(len(c) for c in column) for column in zip(header, *cells, strict=True)]
    lines = [header, ["-" * w for w in widths], *cells]
    return "\n".join(
        "  ".join(
            (c.ljust(w) if i < left_columns else c.rjust(w))
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )


def parse_args(
    argv: list[str] | None, doc: str, *, skip_big_help: str, repeats: int, repeats_help: str
) -> argparse.Namespace:
    """The options both benchmarks take, so their command lines stay alike.

    `doc` is the script's module docstring, whose first line describes it in ``--help``.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--params", type=int, default=100_000_000, help="big model size")
    parser.add_argument("--skip-big", action="store_true", help=skip_big_help)
    parser.add_argument("--repeats", type=int, default=repeats, help=repeats_help)
    parser.add_argument("--json", action="store_true", help="print figures as JSON")
    return parser.parse_args(argv)
