"""Whole-process behaviour: no TensorFlow on the light path, the installed command, --verify."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAMPLES

BIN = Path(sys.executable).parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
HEAVY = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=300)


@pytest.mark.plot
def test_inspect_and_prune_never_import_tensorflow(tmp_path: Path) -> None:
    code = f"""
import sys
from typer.testing import CliRunner
from sparseprune.cli import app
runner = CliRunner()
assert runner.invoke(app, ["inspect", {str(SAMPLES / "mlp.keras")!r}, "--plot",
                           {str(tmp_path / "p.png")!r}]).exit_code == 0
assert runner.invoke(app, ["prune", {str(SAMPLES / "mlp.h5")!r}, "-o",
                           {str(tmp_path / "o.h5")!r}, "--target", "0.5"]).exit_code == 0
print([m for m in {HEAVY!r} if m in sys.modules])
"""
    result = run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_installed_command(tmp_path: Path) -> None:
    result = run(str(BIN / "sparseprune"), "inspect", str(SAMPLES / "l1_mlp.keras"), "--json")
    assert result.returncode == 0, result.stderr
    totals = json.loads(result.stdout)["models"][0]["totals"]
    assert totals["prunable_sparsity"] > 0.9
    version = run(sys.executable, "-m", "sparseprune", "--version")
    assert version.returncode == 0 and version.stdout.startswith("sparseprune ")


def test_installed_command_bad_input_has_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "junk.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    result = run(str(BIN / "sparseprune"), "inspect", str(tmp_path / "junk.h5"))
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.tensorflow
def test_verify_threshold_cleanup_is_lossless(tmp_path: Path) -> None:
    result = run(
        str(BIN / "sparseprune"),
        "prune",
        str(SAMPLES / "l1_mlp.keras"),
        "-o",
        str(tmp_path / "clean.keras"),
        "--threshold",
        "1e-15",
        "--verify",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["verification"]["max_abs_diff"] <= 1e-6
    assert doc["output"]["size"] * 10 < doc["input"]["size"]


def test_verify_with_data_and_refusal_of_code(tmp_path: Path, fixture_dir: Path) -> None:
    result = run(
        str(BIN / "sparseprune"),
        "prune",
        str(SAMPLES / "mlp.keras"),
        "-o",
        str(tmp_path / "m.keras"),
        "--target",
        "0.5",
        "--verify",
        "--data",
        str(SAMPLES / "digits.npz"),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    verification = json.loads(result.stdout)["verification"]
    assert verification["inputs"].endswith("x_val") and verification["max_abs_diff"] > 0
    refused = run(
        str(BIN / "sparseprune"),
        "prune",
        str(fixture_dir / "lambda.keras"),
        "-o",
        str(tmp_path / "l.keras"),
        "--target",
        "0.5",
        "--verify",
    )
    assert refused.returncode == 2 and "--unsafe" in refused.stderr
    assert not (tmp_path / "l.keras").exists()
