"""Whole-process time of `sparseprune inspect --json` on a small .h5, beside a bare h5py read.

Goal (issue 10): <= 0.25 s for a 60K-parameter legacy .h5, where a bare h5py script that opens
the file and reads every dataset takes ~0.17 s. All three commands run in the same session,
interleaved, each `--repeats` times (median, start-up and imports included, via harness.py):

* python:      ``python -c pass`` (the interpreter's own floor);
* bare h5py:   ``python -c "import h5py; read every dataset"``;
* sparseprune: ``python -m sparseprune inspect MODEL --json`` (cli/fast.py: no Typer, no rich);
* the same call through the Typer app (``--format csv``: same work, Typer's parsing);
* with ``--before DIR``, also ``inspect --json`` from another checkout (PYTHONPATH=DIR), so a
  change is measured side by side with the code it replaces, in the same run.

The model (Input(64) -> Dense(300) -> Dense(128) -> Dense(10), 59,318 parameters) is built with
Keras in a child process into a temp dir. Run from the repository root::

    python benchmarks/startup.py              # 15 runs each
    python benchmarks/startup.py --repeats 5
    mkdir /tmp/before && git archive main sparseprune | tar -x -C /tmp/before
    python benchmarks/startup.py --before /tmp/before
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for harness, however this is run
from harness import REPO, build_model, measure_once, table

INSPECT = "sparseprune inspect --json"
SIZES = [64, 300, 128, 10]
GOAL_SECONDS = 0.25
BARE_H5PY = (
    "import sys, h5py\n"
    "with h5py.File(sys.argv[1], 'r') as f:\n"
    "    f.visititems(lambda name, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)\n"
)


def commands(model: Path, before: Path | None) -> dict[str, list[str]]:
    python = sys.executable
    cli = [python, "-m", "sparseprune"]
    if before is not None:  # both checkouts found the same way (-P: not the working folder)
        cli = ["env", f"PYTHONPATH={REPO}", python, "-P", "-m", "sparseprune"]
    runs = {
        "python -c pass": [python, "-c", "pass"],
        "bare h5py read": [python, "-c", BARE_H5PY, str(model)],
        INSPECT: [*cli, "inspect", str(model), "--json"],
        "sparseprune inspect --format csv (Typer)": [*cli, "inspect", str(model), "-f", "csv"],
    }
    if before is not None:
        old = ["env", f"PYTHONPATH={before.resolve()}", python, "-P", "-m", "sparseprune"]
        runs[f"inspect --json, {before}"] = [*old, "inspect", str(model), "--json"]
    return runs


def compile_packages(checkouts: list[Path]) -> None:
    """Byte-compile each checkout's package first, as pip does on install: otherwise every run
    (child_env sets PYTHONDONTWRITEBYTECODE) would compile the sources again and time that."""
    for checkout in checkouts:
        command = [sys.executable, "-m", "compileall", "-q", str(checkout / "sparseprune")]
        subprocess.run(command, check=True, env=dict(os.environ, PYTHONDONTWRITEBYTECODE=""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--before", type=Path, help="another checkout to time beside this one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sparseprune-startup-") as scratch:
        workdir = Path(scratch)
        model = workdir / "mlp60k.h5"
        build_model([model], SIZES)
        compile_packages([REPO] + ([args.before] if args.before else []))
        calls = commands(model, args.before)
        runs: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.repeats):  # interleaved: load changes hit every command alike
            for name, command in calls.items():
                runs[name].append(measure_once(command, workdir)[0].seconds)
    params = sum(a * b + b for a, b in itertools.pairwise(SIZES))
    bare = statistics.median(runs["bare h5py read"])
    rows = [
        (name, statistics.median(times), min(times), statistics.median(times) / bare)
        for name, times in runs.items()
    ]
    print(f"{model.name}: {params:,} parameters, legacy .h5, {args.repeats} runs each")
    columns = [("command", "{:42}"), ("median s", "{:.3f}"), ("min s", "{:.3f}")]
    columns.append(("x bare", "{:.2f}"))
    print(table(columns, rows, left_columns=1))
    inspect_seconds = statistics.median(runs[INSPECT])
    verdict = "meets" if inspect_seconds <= GOAL_SECONDS else "misses"
    print(f"inspect --json: {inspect_seconds:.3f} s, {verdict} the {GOAL_SECONDS} s goal")


if __name__ == "__main__":
    main()
