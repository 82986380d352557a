"""`sparseprune inspect`, one test per option, on a hand-made model whose counts are known.

The kernel is [[0, 1e-20, 0.5], [0, -2, 0]]: 3 exact zeros, 4 with |w| <= 1e-15 (one dead unit,
column 0); at threshold 0.6, 5 near zero and 2 dead units. The bias [0, 0.1, 0] is not prunable.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from handmade import write_keras
from sparseprune import __version__
from sparseprune.cli import app
from sparseprune.errors import DEBUG_ENV

runner = CliRunner()


@pytest.fixture
def model(tmp_path: Path) -> str:
    return str(write_keras(tmp_path / "tiny.keras"))


def invoke(*args: str, stdin: bytes | None = None):
    return runner.invoke(app, list(args), input=stdin)


def as_json(*args: str) -> dict:
    result = invoke("inspect", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"sparseprune {__version__}"


def test_table_default_shows_prunable_only(model: str) -> None:
    result = invoke("inspect", model)
    assert result.exit_code == 0
    kernel_row = next(line for line in result.stdout.splitlines() if "kernel" in line)
    cells = [cell.strip() for cell in kernel_row.split("│")[1:-1]]
    # last column: 1 of 3 (partial) 4x1 blocks all zero, half the weights zero: LiteRT runs dense
    assert cells == ["d", "Dense", "kernel", "2×3", "6", "3", "4", "66.7%", "1", "33.3% dense"]
    assert "bias" not in result.stdout


def test_all_shows_every_tensor(model: str) -> None:
    names = [
        w["name"]
        for layer in as_json(model, "--all")["models"][0]["layers"]
        for w in layer["weights"]
    ]
    assert names == ["d/kernel", "d/bias"]


def test_json_contract(model: str) -> None:
    doc = as_json(model)
    assert doc["schema_version"] == 1
    entry = doc["models"][0]
    assert {"path", "format", "threshold", "layers", "totals"} <= set(entry)
    assert entry["format"] == "keras" and entry["threshold"] == 1e-15
    layer = entry["layers"][0]
    assert (layer["name"], layer["class"]) == ("d", "Dense")
    weight = layer["weights"][0]
    assert weight == weight | {
        "name": "d/kernel",
        "role": "kernel",
        "shape": [2, 3],
        "dtype": "float32",
        "params": 6,
        "zeros": 3,
        "near_zero": 4,
        "nan": 0,
        "prunable": True,
    }
    assert entry["totals"] == {
        "params": 9,
        "near_zero": 6,
        "sparsity": 6 / 9,
        "prunable_params": 6,
        "prunable_near_zero": 4,
        "prunable_sparsity": 4 / 6,
    }


def test_threshold(model: str) -> None:
    weight = as_json(model, "--threshold", "0.6")["models"][0]["layers"][0]["weights"][0]
    assert (weight["near_zero"], weight["dead_units"]) == (5, 2)


def test_negative_threshold_is_usage_error(model: str) -> None:
    assert invoke("inspect", model, "--threshold", "-1").exit_code == 2


def test_format_csv(model: str) -> None:
    result = invoke("inspect", model, "--format", "csv", "--all")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["weight"], r["near_zero"], r["prunable"]) for r in rows] == [
        ("d/kernel", "4", "true"),
        ("d/bias", "2", "false"),
    ]


def test_format_markdown(model: str) -> None:
    out = invoke("inspect", model, "-f", "markdown").stdout
    assert "| layer | class | weight |" in out and "| d | Dense | kernel | 2x3 | 6 | 3 | 4 |" in out


def test_layers_regex(tmp_path: Path, model: str) -> None:
    assert [x["name"] for x in as_json(model, "--layers", "^d$")["models"][0]["layers"]] == ["d"]
    result = invoke("inspect", model, "--layers", "head")
    assert result.exit_code == 2 and "matches no layer" in result.stderr
    result = invoke("inspect", model, "--layers", "(")
    assert result.exit_code == 2 and "not a valid regular expression" in result.stderr


def test_min_sparsity_gate(model: str) -> None:
    assert invoke("inspect", model, "--min-sparsity", "0.6").exit_code == 0
    result = invoke("inspect", model, "--min-sparsity", "0.7")
    assert result.exit_code == 1 and "below --min-sparsity 0.7" in result.stderr


def test_max_sparsity_gate_names_layer(model: str) -> None:
    assert invoke("inspect", model, "--max-sparsity", "0.7").exit_code == 0
    result = invoke("inspect", model, "--max-sparsity", "0.5", "--json")
    assert result.exit_code == 1 and "layer 'd'" in result.stderr
    assert json.loads(result.stdout)["models"][0]["failures"]


@pytest.mark.plot
def test_plot(tmp_path: Path, model: str) -> None:
    target = tmp_path / "plot.png"
    assert invoke("inspect", model, "--plot", str(target)).exit_code == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stdin(model: str) -> None:
    result = invoke("inspect", "-", "--json", stdin=Path(model).read_bytes())
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["models"][0]["path"] == "<stdin>"
    assert doc["models"][0]["totals"] == as_json(model)["models"][0]["totals"]


def test_several_models_and_a_bad_one(tmp_path: Path, model: str) -> None:
    result = invoke("inspect", model, str(tmp_path / "missing.h5"), model, "--json")
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert len(doc["models"]) == 2 and doc["errors"][0]["path"].endswith("missing.h5")


def test_debug_shows_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # --debug exports SPARSEPRUNE_DEBUG for worker processes and sets the CLI's debug state;
    # undo both so later tests (some register commands in apps of their own) run without it.
    from sparseprune.cli.common import state

    monkeypatch.setenv(DEBUG_ENV, "0")
    monkeypatch.setattr(state, "debug", False)
    result = runner.invoke(app, ["--debug", "inspect", str(tmp_path / "missing.h5")])
    assert result.exit_code != 0 and result.exception is not None
    assert "tensorflow" not in sys.modules
