"""Whole-process time of `sparseprune inspect --json` on a small .h5, beside a bare h5py read.

Goal (issue 10): <= 0.25 s for a 60K-parameter legacy .h5, where a bare h5py script that opens
the file and reads every dataset takes ~0.17 s. All three commands run in the same session,
interleaved, each `--repeats` times (median, start-up and imports included, via harness.py):

* python:      ``python -c pass`` (the interpreter's own floor);
* bare h5py:   ``python -c "import h5py; read every dataset"``;
* sparseprune: ``python -m sparseprune inspect MODEL --json``.

The model (Input(64) -> Dense(300) -> Dense(128) -> Dense(10), 59,318 parameters) is built with
Keras in a child process into a temp dir. Run from the repository root::

    python benchmarks/startup.py              # 15 runs each
    python benchmarks/startup.py --repeats 5
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for harness, however this is run
from harness import build_model, measure_once, table

SIZES = [64, 300, 128, 10]
GOAL_SECONDS = 0.25
BARE_H5PY = (
    "import sys, h5py\n"
    "with h5py.File(sys.argv[1], 'r') as f:\n"
    "    f.visititems(lambda name, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)\n"
)


def commands(model: Path) -> dict[str, list[str]]:
    python = sys.executable
    cli = (python, "-m", "sparseprune")
    return {
        "python -c pass": [python, "-c", "pass"],
        "bare h5py read": [python, "-c", BARE_H5PY, str(model)],
        "sparseprune inspect --json": [*cli, "inspect", str(model), "--json"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sparseprune-startup-") as scratch:
        workdir = Path(scratch)
        model = workdir / "mlp60k.h5"
        build_model([model], SIZES)
        runs: dict[str, list[float]] = {name: [] for name in commands(model)}
        for _ in range(args.repeats):  # interleaved: load changes hit every command alike
            for name, command in commands(model).items():
                runs[name].append(measure_once(command, workdir)[0].seconds)
    params = sum(a * b + b for a, b in itertools.pairwise(SIZES))
    bare = statistics.median(runs["bare h5py read"])
    rows = [
        (name, statistics.median(times), min(times), statistics.median(times) / bare)
        for name, times in runs.items()
    ]
    print(f"{model.name}: {params:,} parameters, legacy .h5, {args.repeats} runs each")
    columns = [("command", "{}"), ("median s", "{:.3f}"), ("min s", "{:.3f}"), ("x bare", "{:.2f}")]
    print(table(columns, rows, left_columns=1))
    inspect_seconds = statistics.median(runs["sparseprune inspect --json"])
    verdict = "meets" if inspect_seconds <= GOAL_SECONDS else "misses"
    print(f"inspect --json: {inspect_seconds:.3f} s, {verdict} the {GOAL_SECONDS} s goal")


if __name__ == "__main__":
    main()
