"""Units, params, MACs and latency before and after `sparseprune shrink`, measured in one run.

Three models, each shrunk with ``sparseprune shrink IN -o OUT --json --verify`` (units, params and
multiply-accumulates before/after from its report, max output difference from its ``--verify``
on seeded random inputs) and then timed with ``sparseprune bench IN OUT --batch-size 1,256
--json``, which loads both models in one process with TensorFlow's threads pinned (1 thread),
warms every batch size up and takes the median of ``--repeats`` calls; the latency ratios are
bench's own (after/before):

* ``sample_models/l1_mlp.keras``: trained with an L1 penalty, 98 + 25 dead hidden units; shrunk
  as it is;
* ``sample_models/cnn.keras``: half of each Conv2D's filters zeroed (whole output channels of the
  kernel, smallest L2 norm first; biases left alone), with numpy in a Keras child process;
* a generated ``Input(1024) -> Dense(2048, relu) -> Dense(2048, relu) -> Dense(10)`` (random
  normal weights), big enough that the matrix products dominate a call; half of each hidden
  layer's units have their incoming kernel column zeroed (smallest L2 norm first). Skipped with
  ``--skip-big``.

Goal: where compute dominates, the latency gain is at least 80% of the multiply-accumulate
reduction (halving MACs gives at least 1.6x): MAC ratio = MACs before / MACs after, speed-up =
latency before / latency after at batch 256, and it holds when speed-up >= 0.8 x MAC ratio. The
check is printed for every model; the exit status (1 on failure) follows the generated wide MLP,
the model where compute dominates. The small sample models take a fraction of a millisecond per
call, mostly fixed per-call overhead, and batch 1 is shown for every model without a goal.

Generated files go to a temporary directory that is deleted afterwards.

Run from anywhere::

    /work/venv/bin/python benchmarks/shrink_speed.py              # all three models (~1 min)
    /work/venv/bin/python benchmarks/shrink_speed.py --skip-big   # sample models only
    /work/venv/bin/python benchmarks/shrink_speed.py --repeats 100 --json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for harness, however this is run
from harness import REPO, child_env, table

SAMPLES = REPO / "sample_models"
WIDE_SIZES = [1024, 2048, 2048, 10]  # Input(1024) -> 2 x Dense(2048, relu) -> Dense(10)
ZERO_FRACTION = 0.5
BATCHES = (1, 256)
GOAL_BATCH = 256
GOAL_SHARE = 0.8  # speed-up at least this share of the MAC ratio

# argv: source ("-" to build the wide MLP from the sizes in argv[4:]), output path, JSON list of
# layer class names to zero. In every layer of those classes except the model's last one (whose
# outputs are the model's outputs), zero the fraction ZERO_FRACTION of output channels with the
# smallest L2 norm of their incoming kernel slice (kernel[..., j]); biases are left alone.
PREPARE_CHILD = """\
import json, sys
import numpy as np
import keras
source, target, classes = sys.argv[1], sys.argv[2], set(json.loads(sys.argv[3]))
fraction = float(sys.argv[4])
if source == "-":
    sizes = [int(s) for s in sys.argv[5:]]
    hidden = [keras.layers.Dense(n, activation="relu") for n in sizes[1:-1]]
    model = keras.Sequential([keras.Input((sizes[0],)), *hidden, keras.layers.Dense(sizes[-1])])
    rng = np.random.RandomState(0)
    for layer, fan_in, fan_out in zip(model.layers, sizes, sizes[1:]):
        kernel = rng.standard_normal((fan_in, fan_out)).astype(np.float32)
        kernel *= np.float32(np.sqrt(2 / fan_in))
        bias = (0.1 * rng.standard_normal(fan_out)).astype(np.float32)
        layer.set_weights([kernel, bias])
else:
    model = keras.models.load_model(source, compile=False)
zeroed = {}
for layer in model.layers[:-1]:
    if type(layer).__name__ not in classes:
        continue
    kernel, *rest = layer.get_weights()
    norms = np.sqrt((kernel.astype(np.float64) ** 2).reshape(-1, kernel.shape[-1]).sum(axis=0))
    drop = np.argsort(norms, kind="stable")[: int(round(fraction * kernel.shape[-1]))]
    kernel[..., drop] = 0
    layer.set_weights([kernel, *rest])
    zeroed[layer.name] = [int(len(drop)), int(kernel.shape[-1])]
model.save(target)
print(json.dumps(zeroed))
"""


@dataclass
class Row:
    """One model, before and after shrink."""

    model: str
    units_before: int
    units_after: int
    removed: int
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    mac_ratio: float  # before / after
    latency_ms_before: dict[str, float]  # batch size -> median ms
    latency_ms_after: dict[str, float]
    spread_before: dict[str, float]  # batch size -> p90 / median
    spread_after: dict[str, float]
    speedup: dict[str, float]  # batch size -> before / after (from bench's ratios)
    max_abs_diff: float
    skipped: dict[str, str]  # layer -> reasons shrink kept units
    zeroed: dict[str, list[int]]  # layer -> [channels zeroed, channels] (empty: none zeroed)

    @property
    def goal_speedup(self) -> float:
        return self.speedup[str(GOAL_BATCH)]

    @property
    def fixed_share(self) -> float:
        """Batch-1 latency over batch-256 latency, before shrink: a bound on the share of a
        batch-256 call that is fixed per-call cost rather than work that scales with MACs."""
        return self.latency_ms_before["1"] / self.latency_ms_before[str(GOAL_BATCH)]

    @property
    def goal_holds(self) -> bool:
        return self.goal_speedup >= GOAL_SHARE * self.mac_ratio


def run_json(command: list[str]) -> dict:
    """Run a child; its stdout is one JSON document (the last line for PREPARE_CHILD)."""
    done = subprocess.run(command, capture_output=True, text=True, env=child_env(), cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{command[:5]} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def prepare(source: str, target: Path, classes: list[str], extra: list[str]) -> dict:
    command = [sys.executable, "-c", PREPARE_CHILD, source, str(target), json.dumps(classes)]
    done = subprocess.run(
        [*command, str(ZERO_FRACTION), *extra],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=REPO,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(name: str, source: Path, tmp: Path, repeats: int, zeroed: dict) -> Row:
    shrunk = tmp / f"{source.stem}.shrunk.keras"
    cli = [sys.executable, "-m", "sparseprune"]
    # A loose tolerance: the max |diff| is reported, never turned into a crash here.
    shrink = [*cli, "shrink", str(source), "-o", str(shrunk), "--json", "--verify"]
    report = run_json([*shrink, "--tolerance", "1.0", "--force"])
    if not report["checks"]["passed"]:
        raise RuntimeError(f"shrink {name}: {report['checks']}")
    totals = report["totals"]
    batches = ",".join(map(str, BATCHES))
    timing = ["--repeats", str(repeats), "--json"]
    bench = run_json([*cli, "bench", str(source), str(shrunk), "--batch-size", batches, *timing])
    if not bench["settings"]["threads"]["pinned"]:
        raise RuntimeError(f"bench could not pin threads: {bench['settings']['threads']}")
    before, after = bench["models"]
    latency = {
        side: {str(r["batch_size"]): r for r in model["latency"]}
        for side, model in (("before", before), ("after", after))
    }
    if (before["macs"], after["macs"]) != (totals["macs_before"], totals["macs_after"]):
        raise RuntimeError(f"{name}: shrink and bench count MACs differently")
    skipped = {
        layer["name"]: "; ".join(f"{s['units']} kept: {s['reason']}" for s in layer["skipped"])
        for layer in report["layers"]
        if layer["skipped"]
    }
    return Row(
        model=name,
        units_before=totals["units_before"],
        units_after=totals["units_after"],
        removed=totals["dead"] + totals["unused"],
        params_before=totals["params_before"],
        params_after=totals["params_after"],
        macs_before=totals["macs_before"],
        macs_after=totals["macs_after"],
        mac_ratio=totals["macs_before"] / totals["macs_after"],
        latency_ms_before={b: r["median_ms"] for b, r in latency["before"].items()},
        latency_ms_after={b: r["median_ms"] for b, r in latency["after"].items()},
        spread_before={b: r["spread"] for b, r in latency["before"].items()},
        spread_after={b: r["spread"] for b, r in latency["after"].items()},
        speedup={b: 1 / r for b, r in bench["ratios"][0]["latency"].items()},
        max_abs_diff=report["verification"]["max_abs_diff"],
        skipped=skipped,
        zeroed=zeroed,
    )


COUNT_COLUMNS = [
    ("model", "{}"),
    ("units", "{}"),
    ("removed", "{:,}"),
    ("params", "{}"),
    ("MACs", "{}"),
    ("MAC ratio", "{:.2f}x"),
    ("max |diff|", "{:.1e}"),
]

LATENCY_COLUMNS = [
    ("model", "{}"),
    ("batch", "{}"),
    ("before ms", "{:.3f}"),
    ("after ms", "{:.3f}"),
    ("spread b/a", "{}"),
    ("speed-up", "{:.2f}x"),
    ("MAC ratio", "{:.2f}x"),
    ("speed-up / MAC ratio", "{:.0%}"),
]


def count_cells(row: Row) -> tuple:
    return (
        row.model,
        f"{row.units_before:,} -> {row.units_after:,}",
        row.removed,
        f"{row.params_before:,} -> {row.params_after:,}",
        f"{row.macs_before:,} -> {row.macs_after:,}",
        row.mac_ratio,
        row.max_abs_diff,
    )


def latency_cells(row: Row) -> list[tuple]:
    return [
        (
            row.model,
            batch,
            row.latency_ms_before[batch],
            row.latency_ms_after[batch],
            f"{row.spread_before[batch]:.2f}/{row.spread_after[batch]:.2f}",
            row.speedup[batch],
            row.mac_ratio,
            row.speedup[batch] / row.mac_ratio,
        )
        for batch in map(str, BATCHES)
    ]


def goal_lines(rows: list[Row], wide: Row | None) -> list[str]:
    lines = [
        f"goal: latency gain at batch {GOAL_BATCH} >= {GOAL_SHARE:.0%} of the MAC reduction "
        f"(speed-up >= {GOAL_SHARE:g} x MAC ratio)"
    ]
    for row in rows:
        verdict = "holds" if row.goal_holds else "FAILS"
        role = "the goal" if row is wide else "info only"
        lines.append(
            f"  {row.model}: {row.goal_speedup:.2f}x vs {GOAL_SHARE * row.mac_ratio:.2f}x "
            f"needed: {verdict} ({role}; batch-1 call = {row.fixed_share:.0%} of a batch-"
            f"{GOAL_BATCH} call)"
        )
    if wide is None:
        lines.append("  goal not measured (--skip-big): the wide MLP is the compute-bound model")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-big", action="store_true", help="skip the generated wide MLP")
    parser.add_argument(
        "--repeats", type=int, default=100, help="timed calls per batch size (bench --repeats)"
    )
    parser.add_argument("--json", action="store_true", help="print figures as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows: list[Row] = []
    wide: Row | None = None
    with tempfile.TemporaryDirectory(prefix="sparseprune-shrink-bench-") as tmp_name:
        tmp = Path(tmp_name)
        l1 = SAMPLES / "l1_mlp.keras"
        rows.append(measure(str(l1.relative_to(REPO)), l1, tmp, args.repeats, {}))
        cnn = tmp / "cnn_half.keras"
        zeroed = prepare(str(SAMPLES / "cnn.keras"), cnn, ["Conv2D"], [])
        rows.append(measure("cnn.keras, 50% filters zeroed", cnn, tmp, args.repeats, zeroed))
        if not args.skip_big:
            path = tmp / "wide.keras"
            zeroed = prepare("-", path, ["Dense"], [str(s) for s in WIDE_SIZES])
            label = "wide MLP " + "-".join(map(str, WIDE_SIZES)) + ", 50% units zeroed"
            wide = measure(label, path, tmp, args.repeats, zeroed)
            rows.append(wide)
    failed = wide is not None and not wide.goal_holds
    if args.json:
        result = {
            "settings": {"batch_sizes": list(BATCHES), "repeats": args.repeats, "threads": 1},
            "models": [
                {
                    **asdict(r),
                    "goal_speedup": r.goal_speedup,
                    "goal_holds": r.goal_holds,
                    "batch1_over_batch256_before": r.fixed_share,
                }
                for r in rows
            ],
            "goal": f"speed-up at batch {GOAL_BATCH} >= {GOAL_SHARE:g} x MAC ratio",
            "goal_model": wide.model if wide else None,
            "goal_holds": None if wide is None else wide.goal_holds,
        }
        print(json.dumps(result, indent=2))
        return 1 if failed else 0
    print(table(COUNT_COLUMNS, [count_cells(r) for r in rows], left_columns=1))
    print()
    cells = [c for r in rows for c in latency_cells(r)]
    print(f"bench: 1 thread, median of {args.repeats} calls after 20 warm-up calls")
    print(table(LATENCY_COLUMNS, cells, left_columns=1))
    for row in rows:
        if row.skipped:
            kept = "; ".join(f"{k}: {v}" for k, v in row.skipped.items())
            print(f"{row.model}: shrink kept dead units in {kept}")
    print()
    print("\n".join(goal_lines(rows, wide)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
