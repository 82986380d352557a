"""`inspect --json` without Typer (cli/fast.py) prints what the Typer app prints.

Each call runs twice in real processes: through `python -m sparseprune` (where the fast path
takes the calls it understands) and through the Typer app directly (`typer_app.run`). Stdout,
stderr, the exit code and any --json-file must be identical. The app's output itself is checked
against independent counts in test_inspect_cli.py and test_output_options.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAMPLES
from rawread import keras_weights

from sparseprune.cli import fast

MLP, KERAS = str(SAMPLES / "mlp.h5"), str(SAMPLES / "mlp.keras")
L1 = SAMPLES / "l1_mlp.keras"  # trained with L1: many exact zeros
THROUGH_TYPER = (
    "import sys\n"
    "from sparseprune.cli.typer_app import run\n"
    "sys.argv[0] = 'sparseprune'\n"
    "run()\n"
)
HEAVY = ("typer", "rich", "pydantic", "click", "sparseprune.cli.typer_app")
# What a legacy .h5 never needs: the zip side, the output writer (no --json-file), CSV/Markdown.
NOT_FOR_H5 = ("zipfile", "tempfile", "shutil", "csv", "base64", "sparseprune.formats.archive",
              "sparseprune.formats.varstore", "sparseprune.formats.atomic",
              "sparseprune.render.tabular")  # fmt: skip


def loaded(watched: tuple[str, ...]) -> str:
    """A script that runs the CLI's `main()`, then prints which of `watched` it imported."""
    return (
        "import sys\n"
        "from sparseprune.cli import main\n"
        "sys.argv = ['sparseprune', *sys.argv[1:]]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as end:\n"
        "    code = end.code\n"
        f"watched = {watched!r}\n"
        "found = [m for m in sys.modules if m.split('.')[0] in watched or m in watched]\n"
        "print(sorted(found), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )


def both(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, ...]:
    def run(command: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(command, capture_output=True, text=True, cwd=cwd)

    fast_run = run([sys.executable, "-m", "sparseprune", *args])
    typer_run = run([sys.executable, "-c", THROUGH_TYPER, *args])
    return fast_run, typer_run


CALLS = [
    ["inspect", MLP, "--json"],
    ["inspect", "--format", "json", MLP, KERAS],
    ["inspect", MLP, "-f", "json", "-t", "0.01", "--all"],
    ["inspect", MLP, "--json", "--threshold=1e-2", "--layers", "dense_1"],
    ["inspect", MLP, "--json", "--min-sparsity", "0.5"],  # the gate fails: exit 1
    ["inspect", MLP, "--json", "--max-sparsity=0"],
    ["inspect", MLP, "--json", "--layers", "("],  # bad regex: the app's error, exit 2
    ["inspect", "missing.h5", MLP, "--json"],  # one file fails, the other is reported
    ["inspect", MLP, "--json", "--threshold", "-1"],  # usage error from Typer
]


@pytest.mark.parametrize("args", CALLS, ids=[" ".join(a[2:]) for a in CALLS])
def test_fast_path_prints_what_the_app_prints(args: list[str], tmp_path: Path) -> None:
    fast_run, typer_run = both(args, tmp_path)
    assert (fast_run.returncode, fast_run.stdout, fast_run.stderr) == (
        typer_run.returncode,
        typer_run.stdout,
        typer_run.stderr,
    )


def test_json_file_is_the_same_and_existing_files_are_refused(tmp_path: Path) -> None:
    for name in ("fast", "typer"):
        (tmp_path / name).mkdir()
    # each run in its own folder, so both can create o.json
    fast_run = subprocess.run(
        [sys.executable, "-m", "sparseprune", "inspect", MLP, "--json", "--json-file", "o.json"],
        capture_output=True, text=True, cwd=tmp_path / "fast",
    )
    typer_run = subprocess.run(
        [sys.executable, "-c", THROUGH_TYPER, "inspect", MLP, "--json", "--json-file", "o.json"],
        capture_output=True, text=True, cwd=tmp_path / "typer",
    )
    assert fast_run.returncode == typer_run.returncode == 0, fast_run.stderr
    written = (tmp_path / "fast" / "o.json").read_text()
    assert written == (tmp_path / "typer" / "o.json").read_text() == fast_run.stdout
    again = subprocess.run(
        [sys.executable, "-m", "sparseprune", "inspect", MLP, "--json", "--json-file", "o.json"],
        capture_output=True, text=True, cwd=tmp_path / "fast",
    )
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.startswith("error: ") and "--force" in again.stderr


def test_fast_path_counts_match_an_independent_read(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", loaded(HEAVY), "inspect", str(L1), "--json", "--all"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "[]"  # no Typer, rich, pydantic or the app module loaded
    document = json.loads(result.stdout)
    counted = {
        layer["name"]: [(w["params"], w["zeros"]) for w in layer["weights"]]
        for layer in document["models"][0]["layers"]
    }
    expected = {
        name: [(a.size, int((a == 0).sum())) for a in arrays]
        for name, arrays in keras_weights(L1).items()
    }
    assert counted == expected
    assert sum(zeros for pairs in expected.values() for _, zeros in pairs) > 0


def test_a_legacy_h5_loads_neither_the_zip_side_nor_the_writers(tmp_path: Path) -> None:
    """Start-up time (benchmarks/startup.py): what an .h5 does not use is not imported."""
    result = subprocess.run(
        [sys.executable, "-c", loaded(HEAVY + NOT_FOR_H5), "inspect", MLP, "--json"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "[]"
    assert json.loads(result.stdout)["models"][0]["format"] == "h5"


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", MLP],  # a table: rich
        ["inspect", MLP, "-f", "csv"],
        ["inspect", MLP, "--json", "--help"],
        ["inspect", MLP, "--json", "--plot", "p.png"],
        ["inspect", "-", "--json"],  # stdin can be read only once
        ["inspect", MLP, "--json", "--json=1"],
        ["inspect", MLP, "--json", "-t=0.1"],
        ["inspect", MLP, "--json", "-t", "-0.1"],
        ["inspect", MLP, "--json", "--min-sparsity", "1.5"],
        ["inspect", MLP, "--json", "--threshold", "nan"],
        ["inspect", MLP, "--json", "--layers"],
        ["inspect", "--json"],
        ["--debug", "inspect", MLP, "--json"],
        ["prune", MLP, "--json"],
    ],
)
def test_calls_the_table_does_not_read_go_to_the_app(args: list[str]) -> None:
    assert fast.parse(args) is None


def test_parse_reads_every_option_of_the_table() -> None:
    call = fast.parse(
        ["inspect", "a.h5", "--all", "-t", "0.5", "--layers=x", "b.keras", "--force", "-f",
         "json", "--json-file", "o.json", "--min-sparsity", "0.25", "--max-sparsity=1"]
    )
    assert call == fast.InspectCall(
        models=["a.h5", "b.keras"], threshold=0.5, show_all=True, layers="x",
        output_format="json", json_file=Path("o.json"), min_sparsity=0.25, max_sparsity=1.0,
        force=True,
    )


def test_the_table_names_inspect_options_and_misses_only_plot() -> None:
    """A new inspect option fails here until the table reads it (or it is listed as Typer's)."""
    from typer.main import get_command

    from sparseprune.cli.typer_app import app, click

    group = get_command(app)
    context = click.Context(group)
    command = group.get_command(context, "inspect")  # type: ignore[attr-defined]
    names = {name for param in command.get_params(context) for name in param.opts}
    assert set(fast.OPTIONS) <= names
    assert names - set(fast.OPTIONS) == {"models", "--plot", "--help"}
