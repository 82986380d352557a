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

import json
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for harness, however this is run
from harness import (
    BIG_DEPTH,
    MIB,
    REPO,
    baseline_rss,
    big_sizes,
    build_model,
    measure,
    parse_args,
    table,
)

SAMPLE_MODEL = REPO / "sample_models" / "mlp.keras"
SMALL_LAYERS = [64, 128, 64, 10]
KERNEL_SPARSITY = 0.8
THRESHOLD = 1e-15
SPEED_GOAL = 10.0  # keras / sparseprune wall time on the small model
MEMORY_GOAL = 1.5  # sparseprune RSS above baseline, at most this many largest tensors

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


def sparseprune_command(path: Path) -> list[str]:
    return [sys.executable, "-m", "sparseprune", "inspect", str(path), "--json"]


def keras_command(path: Path) -> list[str]:
    return [sys.executable, "-c", KERAS_CHILD, str(path), repr(THRESHOLD)]


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
    build_model([path], SMALL_LAYERS, KERNEL_SPARSITY)
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(
        argv,
        __doc__,
        skip_big_help="only the small model",
        repeats=3,
        repeats_help="runs per small-model figure",
    )
    with tempfile.TemporaryDirectory(prefix="sparseprune-bench-") as tmp_name:
        tmp = Path(tmp_name)
        name, path = small_model(tmp)
        rows = [bench_model(name, path, tmp, args.repeats)]
        if not args.skip_big:
            big = tmp / "big.keras"
            sizes = big_sizes(args.params)
            build_model([big], sizes, KERNEL_SPARSITY)
            label = f"generated {BIG_DEPTH}x Dense({sizes[0]})"
            rows.append(bench_model(label, big, tmp, 1))
        baseline = baseline_rss(tmp, args.repeats)
    result = goals(rows, baseline, not args.skip_big)
    if args.json:
        print(json.dumps({"models": [asdict(r) for r in rows], **result}, indent=2))
    else:
        print(table(COLUMNS, [cells_of(r) for r in rows]))
        print(verdict(result))
    return 0 if result["speed_holds"] and result["memory_holds"] is not False else 1


if __name__ == "__main__":
    sys.exit(main())
