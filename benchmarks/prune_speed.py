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

import json
import math
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for harness, however this is run
from harness import (
    BIG_DEPTH,
    MIB,
    REPO,
    Run,
    baseline_rss,
    big_sizes,
    build_model,
    child_env,
    measure_once,
    parse_args,
    summarize,
    table,
)

SAMPLES = [REPO / "sample_models" / "mlp.keras", REPO / "sample_models" / "mlp.h5"]
SMALL_LAYERS = [1024, 1024, 1024, 1024]  # Input(1024) -> 3 x Dense(1024): 3.1M params
BIG_TARGET = 0.8
SPARSITIES = (0.5, 0.8, 0.95)
SPEED_GOAL = 2.0  # prune wall time at most this many times read+write
MEMORY_TENSORS = 2.0  # prune RSS above baseline at most this many largest tensors...
MEMORY_SLACK_MIB = 300.0  # ...plus this

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


def measure_output(
    command: list[str], output: Path, workdir: Path, repeats: int, keep: Path | None = None
) -> tuple[Run, str, int]:
    """`summarize` over `repeats` runs of a command that writes `output`; last stdout and size.

    `output` is deleted after each run (prune refuses to overwrite), or the last one is moved to
    `keep`.
    """
    runs, stdout, size = [], "", 0
    for _ in range(repeats):
        output.unlink(missing_ok=True)
        run, stdout = measure_once(command, workdir)
        runs.append(run)
        size = output.stat().st_size
        if keep is None:
            output.unlink()
        else:
            output.replace(keep)
    return summarize(runs), stdout, size


def prune_command(source: Path, output: Path, target: float, *extra: str) -> list[str]:
    return [
        *[sys.executable, "-m", "sparseprune", "prune", str(source), "-o", str(output)],
        *["--target", repr(target), *extra, "--json"],
    ]


def bench_speed(path: Path, tmp: Path, repeats: int) -> tuple[list[SpeedRow], dict]:
    """The big model: baseline interpreter, read+write, prune --scope layer / global."""
    base = baseline_rss(tmp, repeats)
    out = tmp / "out.keras"
    copy, copy_out, copy_size = measure_output(
        [sys.executable, "-c", COPY_CHILD, str(path), str(out)], out, tmp, repeats
    )
    facts = json.loads(copy_out)
    rows = [
        SpeedRow(
            "read+write (identity)",
            copy.seconds,
            copy.rss_mib,
            copy.rss_mib - base,
            copy_size / MIB,
            1.0,
            None,
        )
    ]
    sparse = tmp / "sparse.keras"
    for scope in ("layer", "global"):
        command = prune_command(path, out, BIG_TARGET, "--scope", scope)
        run, stdout, size = measure_output(
            command, out, tmp, repeats, sparse if scope == "layer" else None
        )
        result = json.loads(stdout)
        rows.append(
            SpeedRow(
                f"prune --scope {scope}",
                run.seconds,
                run.rss_mib,
                run.rss_mib - base,
                size / MIB,
                run.seconds / copy.seconds,
                result["checks"]["passed"],
            )
        )
    # Not a goal: the same read+write on the pruned file, whose output deflates as fast as prune's.
    command = [sys.executable, "-c", COPY_CHILD, str(sparse), str(out)]
    run, _, size = measure_output(command, out, tmp, 1)
    rows.append(
        SpeedRow(
            "read+write of the pruned file (info)",
            run.seconds,
            run.rss_mib,
            run.rss_mib - base,
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
        "baseline_rss_mib": base,
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(
        argv,
        __doc__,
        skip_big_help="only the size table",
        repeats=1,
        repeats_help="runs per big-model figure",
    )
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
            print(
                table(SPEED_COLUMNS, [speed_cells(r, largest) for r in speed_rows], left_columns=1)
            )
            print()
        print(table(SIZE_COLUMNS, [size_cells(r) for r in size_rows], left_columns=1))
        if speed_rows:
            print()
            print(verdict(speed_rows, info, result))
        else:
            print("goals: not measured (--skip-big)")
    failed = result and not (result["speed_holds"] and result["memory_holds"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
