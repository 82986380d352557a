"""Time and peak memory of `sparseprune inspect --json` against loading the model with Keras.

For each model, two child processes are measured end to end (start-up and imports included):

* sparseprune: ``python -m sparseprune inspect MODEL --json`` (output discarded);
* keras: ``import keras; m = keras.models.load_model(MODEL, compile=False); w = m.get_weights()``,
  then the same near-zero counts (``|w| <= 1e-15``) with numpy.

Each command runs under a tiny wrapper process that starts it, waits, and reports the elapsed
time and ``getrusage(RUSAGE_CHILDREN).ru_maxrss``. The wrapper has exactly one child, so that
figure is the peak RSS of the measured command alone. The baseline RSS of
``python -c 'import sparseprune.cli'`` is subtracted to judge the memory goal.

Models: ``sample_models/mlp.keras`` (or a 64-128-64-10 MLP built in a temp dir when absent) and a
generated Keras 3 model of ``--params`` float32 parameters (5 x Dense(w) on Input(w), so there
are 4 square kernels and the largest tensor is about a quarter of the model), 80% of each kernel
set to zero. Generated files go to a temporary directory that is deleted afterwards.

Run from the repository root::

    /work/venv/bin/python benchmarks/inspect_speed.py             # full run, needs ~2 GiB RAM
    /work/venv/bin/python benchmarks/inspect_speed.py --skip-big  # small model only, ~20 s
    /work/venv/bin/python benchmarks/inspect_speed.py --params 300_000_000 --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE_MODEL = REPO / "sample_models" / "mlp.keras"
SMALL_LAYERS = [64, 128, 64, 10]
BIG_DEPTH = 4  # square Dense kernels in the generated model
KERNEL_SPARSITY = 0.8
THRESHOLD = 1e-15
SPEED_GOAL = 10.0  # keras / sparseprune wall time on the small model
MEMORY_GOAL = 1.5  # sparseprune RSS above baseline, at most this many largest tensors
MIB = 1 << 20

# Runs argv[3:] with stdout/stderr sent to the files argv[1] and argv[2]; prints one JSON line.
WRAPPER = """\
import json, resource, subprocess, sys, time
with open(sys.argv[1], "wb") as out, open(sys.argv[2], "wb") as err:
    start = time.perf_counter()
    code = subprocess.call(sys.argv[3:], stdout=out, stderr=err)
    seconds = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": seconds, "maxrss": rss, "returncode": code}))
"""

# The competitor: load the whole model with Keras, then count near-zero weights with numpy.
KERAS_CHILD = """\
import json, sys
import numpy as np
import keras
m = keras.models.load_model(sys.argv[1], compile=False)
w = m.get_weights()
print(json.dumps({
    "params": int(sum(a.size for a in w)),
    "near_zero": int(sum(np.count_nonzero(np.abs(a) <= float(sys.argv[2])) for a in w)),
    "largest_bytes": int(max(a.nbytes for a in w)),
}))
"""

# Build Input(sizes[0]) -> Dense(sizes[1]) -> ... with numpy weights, zero a fraction, save.
BUILD_CHILD = """\
import sys
import numpy as np
import keras
path, fraction, sizes = sys.argv[1], float(sys.argv[2]), [int(s) for s in sys.argv[3:]]
layers = [keras.layers.Dense(n, kernel_initializer="zeros") for n in sizes[1:]]
model = keras.Sequential([keras.Input((sizes[0],)), *layers])
rng = np.random.RandomState(0)
for layer, (fan_in, fan_out) in zip(layers, zip(sizes, sizes[1:])):
    kernel = rng.standard_normal((fan_in, fan_out)).astype(np.float32)
    kernel *= np.float32(1 / np.sqrt(fan_in))
    kernel[rng.random_sample(kernel.shape) < fraction] = 0
    layer.set_weights([kernel, rng.standard_normal(fan_out).astype(np.float32)])
    del kernel
model.save(path)
"""


@dataclass
class Run:
    """One measured process: wall seconds and peak RSS in MiB."""

    seconds: float
    rss_mib: float


@dataclass
class Row:
    """Every figure printed for one model."""

    model: str
    params: int
    file_mib: float
    largest_tensor_mib: float
    sparseprune_s: float
    sparseprune_rss_mib: float
    keras_s: float
    keras_rss_mib: float
    ratio: float
    counts_agree: bool
    sparsity: float


def child_env() -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONDONTWRITEBYTECODE="1")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    return env


def rss_to_mib(maxrss: int) -> float:
    """`ru_maxrss` is KiB on Linux, bytes on macOS."""
    return maxrss / MIB if sys.platform == "darwin" else maxrss / 1024


def measure_once(command: list[str], workdir: Path) -> tuple[Run, str]:
    """Run `command` under the wrapper; return its figures and its stdout (raise on failure)."""
    out, err = workdir / "stdout", workdir / "stderr"
    wrapper = [sys.executable, "-c", WRAPPER, str(out), str(err), *command]
    report = subprocess.run(
        wrapper, capture_output=True, text=True, check=True, env=child_env(), cwd=REPO
    )
    figures = json.loads(report.stdout)
    if figures["returncode"] != 0:
        tail = err.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{command[:4]} exited {figures['returncode']}:\n{tail}")
    return Run(figures["seconds"], rss_to_mib(figures["maxrss"])), out.read_text()


def measure(command: list[str], workdir: Path, repeats: int) -> tuple[Run, str]:
    """Median wall time and max peak RSS over `repeats` runs, and the last run's stdout."""
    runs, stdout = [], ""
    for _ in range(repeats):
        run, stdout = measure_once(command, workdir)
        runs.append(run)
    seconds = statistics.median(r.seconds for r in runs)
    return Run(seconds, max(r.rss_mib for r in runs)), stdout


def sparseprune_command(path: Path) -> list[str]:
    return [sys.executable, "-m", "sparseprune", "inspect", str(path), "--json"]


def keras_command(path: Path) -> list[str]:
    return [sys.executable, "-c", KERAS_CHILD, str(path), repr(THRESHOLD)]


def build_model(path: Path, sizes: list[int]) -> None:
    command = [sys.executable, "-c", BUILD_CHILD, str(path), str(KERNEL_SPARSITY)]
    subprocess.run([*command, *map(str, sizes)], check=True, env=child_env(), capture_output=True)


def big_sizes(params: int) -> list[int]:
    """Square layer widths (multiple of 64) so that BIG_DEPTH kernels hold >= `params`."""
    width = math.ceil(math.sqrt(params / BIG_DEPTH) / 64) * 64
    return [width] * (BIG_DEPTH + 1)


def baseline_rss(workdir: Path, repeats: int) -> float:
    """Peak RSS of a Python process that only imports the sparseprune CLI."""
    run, _ = measure([sys.executable, "-c", "import sparseprune.cli"], workdir, repeats)
    return run.rss_mib


def bench_model(name: str, path: Path, workdir: Path, repeats: int) -> Row:
    ours, ours_out = measure(sparseprune_command(path), workdir, repeats)
    theirs, theirs_out = measure(keras_command(path), workdir, repeats)
    totals = json.loads(ours_out)["models"][0]["totals"]
    truth = json.loads(theirs_out)
    agree = totals["params"] == truth["params"] and totals["near_zero"] == truth["near_zero"]
    return Row(
        model=name,
        params=totals["params"],
        file_mib=path.stat().st_size / MIB,
        largest_tensor_mib=truth["largest_bytes"] / MIB,
        sparseprune_s=ours.seconds,
        sparseprune_rss_mib=ours.rss_mib,
        keras_s=theirs.seconds,
        keras_rss_mib=theirs.rss_mib,
        ratio=theirs.seconds / ours.seconds,
        counts_agree=agree,
        sparsity=totals["sparsity"],
    )


def small_model(tmp: Path) -> tuple[str, Path]:
    if SAMPLE_MODEL.is_file():
        return str(SAMPLE_MODEL.relative_to(REPO)), SAMPLE_MODEL
    path = tmp / "mlp.keras"
    build_model(path, SMALL_LAYERS)
    return "mlp 64-128-64-10 (built)", path


def goals(rows: list[Row], baseline: float, has_big: bool) -> dict[str, object]:
    """Evaluate both goals: speed on the small model, memory on the big one."""
    small = rows[0]
    result: dict[str, object] = {
        "speed_goal": f"at least {SPEED_GOAL:g}x faster on the small model",
        "speed_holds": small.ratio >= SPEED_GOAL,
        "baseline_rss_mib": baseline,
        "memory_goal": "peak memory near the largest single tensor, not the whole model",
        "memory_holds": None,
    }
    if has_big:
        big = rows[-1]
        extra = big.sparseprune_rss_mib - baseline
        result["big_extra_rss_mib"] = extra
        result["extra_over_largest_tensor"] = extra / big.largest_tensor_mib
        result["extra_over_model"] = extra / big.file_mib
        result["memory_holds"] = extra <= MEMORY_GOAL * big.largest_tensor_mib
    return result


COLUMNS = [
    ("model", "{}"),
    ("params", "{:,}"),
    ("file MiB", "{:.1f}"),
    ("largest tensor MiB", "{:.1f}"),
    ("sparseprune s", "{:.3f}"),
    ("sparseprune peak RSS MiB", "{:.1f}"),
    ("keras s", "{:.3f}"),
    ("keras peak RSS MiB", "{:.1f}"),
    ("keras/sparseprune", "{:.1f}x"),
    ("counts agree", "{}"),
]


def table(rows: list[Row]) -> str:
    formats = [fmt for _, fmt in COLUMNS]
    cells = [[fmt.format(v) for fmt, v in zip(formats, cells_of(r), strict=True)] for r in rows]
    header = [title for title, _ in COLUMNS]
    widths = [max(len(c) for c in column) for column in zip(header, *cells, strict=True)]
    lines = [header, ["-" * w for w in widths], *cells]
    return "\n".join(
        "  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in lines
    )


def cells_of(row: Row) -> tuple:
    return (
        row.model,
        row.params,
        row.file_mib,
        row.largest_tensor_mib,
        row.sparseprune_s,
        row.sparseprune_rss_mib,
        row.keras_s,
        row.keras_rss_mib,
        row.ratio,
        "yes" if row.counts_agree else "NO",
    )


def verdict(result: dict[str, object]) -> str:
    speed = "holds" if result["speed_holds"] else "FAILS"
    baseline = result["baseline_rss_mib"]
    lines = [f"baseline RSS (python -c 'import sparseprune.cli'): {baseline:.1f} MiB"]
    if result["memory_holds"] is None:
        memory = "not measured (--skip-big)"
    else:
        memory = "holds" if result["memory_holds"] else "FAILS"
        lines.append(
            f"big model: sparseprune RSS above baseline {result['big_extra_rss_mib']:.1f} MiB = "
            f"{result['extra_over_largest_tensor']:.2f}x the largest tensor, "
            f"{result['extra_over_model']:.2f}x the whole model "
            f"(goal: <= {MEMORY_GOAL:g}x the largest tensor)"
        )
    lines.append(f"goals: {result['speed_goal']}: {speed}; {result['memory_goal']}: {memory}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=100_000_000, help="big model size")
    parser.add_argument("--skip-big", action="store_true", help="only the small model")
    parser.add_argument("--repeats", type=int, default=3, help="runs per small-model figure")
    parser.add_argument("--json", action="store_true", help="print figures as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sparseprune-bench-") as tmp_name:
        tmp = Path(tmp_name)
        name, path = small_model(tmp)
        rows = [bench_model(name, path, tmp, args.repeats)]
        if not args.skip_big:
            big = tmp / "big.keras"
            sizes = big_sizes(args.params)
            build_model(big, sizes)
            label = f"generated {BIG_DEPTH}x Dense({sizes[0]})"
            rows.append(bench_model(label, big, tmp, 1))
        baseline = baseline_rss(tmp, args.repeats)
    result = goals(rows, baseline, not args.skip_big)
    if args.json:
        print(json.dumps({"models": [asdict(r) for r in rows], **result}, indent=2))
    else:
        print(table(rows))
        print(verdict(result))
    return 0 if result["speed_holds"] and result["memory_holds"] is not False else 1


if __name__ == "__main__":
    sys.exit(main())
