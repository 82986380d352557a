"""Time, peak memory and output size of `sparseprune prune`, against plain read+write.

Part 1, speed and memory, on a generated Keras 3 model of ``--params`` dense float32 parameters
(``Input(w) -> 4 x Dense(w)``, random normal weights, no zeros, so pruning has real work). Four
child processes are measured end to end (start-up and imports included):

* read+write: the baseline. ``open_model`` + ``write_model`` with the identity transform on the
  tensors pruning would touch (``v.copy() if t.prunable else None``, optimizer reset), so it reads,
  copies and compresses exactly the same data as ``prune``, and does nothing else;
* layer: ``python -m sparseprune prune MODEL -o OUT --target 0.8 --scope layer --json``;
* global: the same with ``--scope global``;
* ``python -c 'import sparseprune.cli'``: the baseline interpreter RSS;
* for information only (no goal): the same read+write on the ``--scope layer`` output, i.e. with
  an output as sparse (and as quick to DEFLATE) as prune's.

Each command runs under a tiny wrapper process that starts it, waits, and reports the elapsed
time and ``getrusage(RUSAGE_CHILDREN).ru_maxrss``. The wrapper has exactly one child, so that
figure is the peak RSS of the measured command alone.

Part 2, output size against the information bound (the nonzero values verbatim plus the entropy
of the zero/nonzero pattern, ``information_bound_bytes`` in ``prune --json``) at 50/80/95%
sparsity (default layer scope), for a generated ~3M-parameter model saved by Keras both as
``.keras`` and as legacy ``.h5``, and for ``sample_models/mlp.keras`` and ``mlp.h5`` (when
present). The input column is Keras's own file; "keras re-save" is the file Keras writes when it
loads the pruned output and saves it again in the same format (the same zeros, Keras's layout).

Generated files go to a temporary directory that is deleted afterwards.

Run from the repository root::

    /work/venv/bin/python benchmarks/prune_speed.py             # full run, needs ~2.5 GiB RAM
    /work/venv/bin/python benchmarks/prune_speed.py --skip-big  # size table only, ~40 s
    /work/venv/bin/python benchmarks/prune_speed.py --params 300_000_000 --json
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
SAMPLES = [REPO / "sample_models" / "mlp.keras", REPO / "sample_models" / "mlp.h5"]
SMALL_LAYERS = [1024, 1024, 1024, 1024]  # Input(1024) -> 3 x Dense(1024): 3.1M params
BIG_DEPTH = 4  # square Dense kernels in the generated big model
BIG_TARGET = 0.8
SPARSITIES = (0.5, 0.8, 0.95)
SPEED_GOAL = 2.0  # prune wall time at most this many times read+write
MEMORY_TENSORS = 2.0  # prune RSS above baseline at most this many largest tensors...
MEMORY_SLACK_MIB = 300.0  # ...plus this
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

# The baseline: the same reader and writer, identity transform on the tensors prune would touch.
COPY_CHILD = """\
import json, sys
from pathlib import Path
from sparseprune.formats import open_model
from sparseprune.formats.writer import write_model
largest = 0
def identity(tensor, values):
    global largest
    largest = max(largest, values.nbytes)
    return values.copy() if tensor.prunable else None
with open_model(sys.argv[1]) as m:
    write_model(m, Path(sys.argv[2]), identity, reset_optimizer=True)
    params = sum(t.params for t in m.model_tensors)
print(json.dumps({"params": params, "largest_bytes": largest}))
"""

# Build Input(sizes[0]) -> Dense(sizes[1]) -> ... with random normal numpy weights; save to each
# path in the JSON list argv[1] (the suffix picks the format: .keras or legacy .h5).
BUILD_CHILD = """\
import json, sys
import numpy as np
import keras
paths, sizes = json.loads(sys.argv[1]), [int(s) for s in sys.argv[2:]]
layers = [keras.layers.Dense(n, kernel_initializer="zeros") for n in sizes[1:]]
model = keras.Sequential([keras.Input((sizes[0],)), *layers])
rng = np.random.RandomState(0)
for layer, (fan_in, fan_out) in zip(layers, zip(sizes, sizes[1:])):
    kernel = rng.standard_normal((fan_in, fan_out)).astype(np.float32)
    kernel *= np.float32(1 / np.sqrt(fan_in))
    layer.set_weights([kernel, rng.standard_normal(fan_out).astype(np.float32)])
    del kernel
for path in paths:
    model.save(path)
"""

# Load each pruned output with Keras and save it again in the same format; print the sizes.
RESAVE_CHILD = """\
import json, os, sys
import keras
sizes = []
for source, target in zip(sys.argv[1::2], sys.argv[2::2]):
    keras.models.load_model(source, compile=False).save(target)
    sizes.append(os.path.getsize(target))
print(json.dumps(sizes))
"""


@dataclass
class Run:
    """One measured process: wall seconds and peak RSS in MiB."""

    seconds: float
    rss_mib: float


@dataclass
class SpeedRow:
    """One command on the big model."""

    command: str
    seconds: float
    rss_mib: float
    extra_rss_mib: float
    output_mib: float
    ratio: float  # seconds / read+write seconds
    checks_passed: bool | None  # prune's own verification (None for the baseline)


@dataclass
class SizeRow:
    """One model at one sparsity."""

    model: str
    format: str
    target: float
    sparsity: float  # measured over the pruned tensors
    input_bytes: int
    output_bytes: int
    bound_bytes: int
    over_bound: float
    input_over_output: float
    keras_resave_bytes: int | None = None


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
        raise RuntimeError(f"{command[:6]} exited {figures['returncode']}:\n{tail}")
    return Run(figures["seconds"], rss_to_mib(figures["maxrss"])), out.read_text()


def measure(
    command: list[str], output: Path | None, workdir: Path, repeats: int, keep: Path | None = None
):
    """Median wall time and max peak RSS over `repeats` runs; last stdout and output size.

    `output` (if any) is deleted after each run (prune refuses to overwrite), or the last one is
    moved to `keep`.
    """
    runs, stdout, size = [], "", 0
    for _ in range(repeats):
        if output is not None:
            output.unlink(missing_ok=True)
        run, stdout = measure_once(command, workdir)
        runs.append(run)
        if output is not None:
            size = output.stat().st_size
            if keep is None:
                output.unlink()
            else:
                output.replace(keep)
    seconds = statistics.median(r.seconds for r in runs)
    return Run(seconds, max(r.rss_mib for r in runs)), stdout, size


def prune_command(source: Path, output: Path, target: float, *extra: str) -> list[str]:
    return [
        *[sys.executable, "-m", "sparseprune", "prune", str(source), "-o", str(output)],
        *["--target", repr(target), *extra, "--json"],
    ]


def build_model(paths: list[Path], sizes: list[int]) -> None:
    command = [sys.executable, "-c", BUILD_CHILD, json.dumps([str(p) for p in paths])]
    subprocess.run([*command, *map(str, sizes)], check=True, env=child_env(), capture_output=True)


def big_sizes(params: int) -> list[int]:
    """Square layer widths (multiple of 64) so that BIG_DEPTH kernels hold >= `params`."""
    width = math.ceil(math.sqrt(params / BIG_DEPTH) / 64) * 64
    return [width] * (BIG_DEPTH + 1)


def bench_speed(path: Path, tmp: Path, repeats: int) -> tuple[list[SpeedRow], dict]:
    """The big model: baseline interpreter, read+write, prune --scope layer / global."""
    base, _, _ = measure([sys.executable, "-c", "import sparseprune.cli"], None, tmp, repeats)
    out = tmp / "out.keras"
    copy, copy_out, copy_size = measure(
        [sys.executable, "-c", COPY_CHILD, str(path), str(out)], out, tmp, repeats
    )
    facts = json.loads(copy_out)
    rows = [
        SpeedRow(
            "read+write (identity)",
            copy.seconds,
            copy.rss_mib,
            copy.rss_mib - base.rss_mib,
            copy_size / MIB,
            1.0,
            None,
        )
    ]
    sparse = tmp / "sparse.keras"
    for scope in ("layer", "global"):
        command = prune_command(path, out, BIG_TARGET, "--scope", scope)
        run, stdout, size = measure(
            command, out, tmp, repeats, sparse if scope == "layer" else None
        )
        result = json.loads(stdout)
        rows.append(
            SpeedRow(
                f"prune --scope {scope}",
                run.seconds,
                run.rss_mib,
                run.rss_mib - base.rss_mib,
                size / MIB,
                run.seconds / copy.seconds,
                result["checks"]["passed"],
            )
        )
    # Not a goal: the same read+write on the pruned file, whose output deflates as fast as prune's.
    run, _, size = measure([sys.executable, "-c", COPY_CHILD, str(sparse), str(out)], out, tmp, 1)
    rows.append(
        SpeedRow(
            "read+write of the pruned file (info)",
            run.seconds,
            run.rss_mib,
            run.rss_mib - base.rss_mib,
            size / MIB,
            run.seconds / copy.seconds,
            None,
        )
    )
    sparse.unlink()
    info = {
        "params": facts["params"],
        "file_mib": path.stat().st_size / MIB,
        "largest_tensor_mib": facts["largest_bytes"] / MIB,
        "baseline_rss_mib": base.rss_mib,
    }
    return rows, info


def bench_sizes(models: list[tuple[str, Path]], tmp: Path) -> list[SizeRow]:
    rows, resave_args = [], []
    for index, (name, path) in enumerate(models):
        suffix = path.suffix
        for target in SPARSITIES:
            out = tmp / f"size{index}-{round(target * 100)}{suffix}"
            _, stdout = measure_once(prune_command(path, out, target), tmp)
            result = json.loads(stdout)
            if not result["checks"]["passed"]:
                raise RuntimeError(f"prune {name} --target {target}: {result['checks']}")
            params = sum(t["params"] for t in result["tensors"])
            zeros = sum(t["zeros_after"] for t in result["tensors"])
            bound = result["information_bound_bytes"]
            size = result["output"]["size"]
            rows.append(
                SizeRow(
                    model=name,
                    format=result["input"]["format"],
                    target=target,
                    sparsity=zeros / params if params else 0.0,
                    input_bytes=result["input"]["size"],
                    output_bytes=size,
                    bound_bytes=bound,
                    over_bound=size / bound if bound else math.inf,
                    input_over_output=result["input"]["size"] / size,
                )
            )
            resave_args += [str(out), str(tmp / f"resave{index}-{round(target * 100)}{suffix}")]
    done = subprocess.run(
        [sys.executable, "-c", RESAVE_CHILD, *resave_args],
        check=True,
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=REPO,
    )
    for row, size in zip(rows, json.loads(done.stdout.strip().splitlines()[-1]), strict=True):
        row.keras_resave_bytes = size
    return rows


def goals(rows: list[SpeedRow], info: dict) -> dict[str, object]:
    limit = MEMORY_TENSORS * info["largest_tensor_mib"] + MEMORY_SLACK_MIB
    prunes = [r for r in rows if r.command.startswith("prune")]
    return {
        "speed_goal": f"within {SPEED_GOAL:g}x of read+write",
        "speed_holds": all(r.ratio <= SPEED_GOAL for r in prunes),
        "memory_goal": (
            f"peak memory under {MEMORY_TENSORS:g}x the largest tensor plus "
            f"{MEMORY_SLACK_MIB:g} MiB"
        ),
        "memory_limit_mib": limit,
        "memory_holds": all(r.extra_rss_mib <= limit for r in prunes),
    }


SPEED_COLUMNS = [
    ("command", "{}"),
    ("wall s", "{:.2f}"),
    ("peak RSS MiB", "{:.1f}"),
    ("above baseline MiB", "{:.1f}"),
    ("x largest tensor", "{:.2f}"),
    ("output MiB", "{:.1f}"),
    ("vs read+write", "{:.2f}x"),
    ("checks", "{}"),
]

SIZE_COLUMNS = [
    ("model", "{}"),
    ("format", "{}"),
    ("target", "{:.0%}"),
    ("sparsity", "{:.1%}"),
    ("keras input B", "{:,}"),
    ("output B", "{:,}"),
    ("bound B", "{:,}"),
    ("output/bound", "{:.3f}"),
    ("input/output", "{:.2f}x"),
    ("keras re-save B", "{:,}"),
]


def table(columns: list[tuple[str, str]], rows: list[tuple]) -> str:
    formats = [fmt for _, fmt in columns]
    cells = [[fmt.format(v) for fmt, v in zip(formats, row, strict=True)] for row in rows]
    header = [title for title, _ in columns]
    widths = [max(len(c) for c in column) for column in zip(header, *cells, strict=True)]
    lines = [header, ["-" * w for w in widths], *cells]
    return "\n".join(
        "  ".join(
            (c.ljust(w) if i == 0 else c.rjust(w))
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )


def speed_cells(row: SpeedRow, largest_mib: float) -> tuple:
    checks = "-" if row.checks_passed is None else ("passed" if row.checks_passed else "FAILED")
    return (
        row.command,
        row.seconds,
        row.rss_mib,
        row.extra_rss_mib,
        row.extra_rss_mib / largest_mib,
        row.output_mib,
        row.ratio,
        checks,
    )


def size_cells(row: SizeRow) -> tuple:
    return (
        row.model,
        row.format,
        row.target,
        row.sparsity,
        row.input_bytes,
        row.output_bytes,
        row.bound_bytes,
        row.over_bound,
        row.input_over_output,
        row.keras_resave_bytes,
    )


def verdict(rows: list[SpeedRow], info: dict, result: dict) -> str:
    rows = [r for r in rows if r.command.startswith("prune")]
    speed = "holds" if result["speed_holds"] else "FAILS"
    memory = "holds" if result["memory_holds"] else "FAILS"
    ratios = ", ".join(f"{r.command.split()[-1]} {r.ratio:.2f}x" for r in rows)
    extras = ", ".join(f"{r.command.split()[-1]} {r.extra_rss_mib:.0f} MiB" for r in rows)
    return "\n".join(
        [
            f"baseline RSS (python -c 'import sparseprune.cli'): {info['baseline_rss_mib']:.1f} "
            f"MiB; largest tensor {info['largest_tensor_mib']:.1f} MiB",
            f"goal: prune {result['speed_goal']}: {speed} ({ratios})",
            f"goal: {result['memory_goal']} (<= {result['memory_limit_mib']:.0f} MiB above "
            f"baseline): {memory} ({extras})",
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=100_000_000, help="big model size")
    parser.add_argument("--skip-big", action="store_true", help="only the size table")
    parser.add_argument("--repeats", type=int, default=1, help="runs per big-model figure")
    parser.add_argument("--json", action="store_true", help="print figures as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    speed_rows: list[SpeedRow] = []
    info: dict = {}
    with tempfile.TemporaryDirectory(prefix="sparseprune-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if not args.skip_big:
            big = tmp / "big.keras"
            sizes = big_sizes(args.params)
            build_model([big], sizes)
            speed_rows, info = bench_speed(big, tmp, args.repeats)
            info["model"] = f"generated {BIG_DEPTH}x Dense({sizes[0]})"
            big.unlink()
        small = [tmp / "small.keras", tmp / "small.h5"]
        build_model(small, SMALL_LAYERS)
        label = f"generated {len(SMALL_LAYERS) - 1}x Dense({SMALL_LAYERS[0]})"
        models = [(label, p) for p in small]
        models += [(str(p.relative_to(REPO)), p) for p in SAMPLES if p.is_file()]
        size_rows = bench_sizes(models, tmp)
    result = goals(speed_rows, info) if speed_rows else {}
    if args.json:
        print(
            json.dumps(
                {
                    "big_model": info or None,
                    "speed": [asdict(r) for r in speed_rows],
                    "sizes": [asdict(r) for r in size_rows],
                    **result,
                },
                indent=2,
            )
        )
    else:
        if speed_rows:
            print(
                f"{info['model']}: {info['params']:,} params, {info['file_mib']:.1f} MiB file, "
                f"--target {BIG_TARGET:g}"
            )
            largest = info["largest_tensor_mib"]
            print(table(SPEED_COLUMNS, [speed_cells(r, largest) for r in speed_rows]))
            print()
        print(table(SIZE_COLUMNS, [size_cells(r) for r in size_rows]))
        if speed_rows:
            print()
            print(verdict(speed_rows, info, result))
        else:
            print("goals: not measured (--skip-big)")
    failed = result and not (result["speed_holds"] and result["memory_holds"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
