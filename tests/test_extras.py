"""A core install (no TensorFlow, no matplotlib): heavy features say in one line which extra to
install, exit 2, and write nothing; the light commands work.

Each run is a fresh process in which the optional modules are made unimportable
(`sys.modules[name] = None`), so this holds in the full venv too; in CI's core venv it is real.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAMPLES

HEAVY = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization", "ai_edge_litert")
TF_HINT = "pip install 'sparseprune[tensorflow]'."
MLP, DATA = str(SAMPLES / "mlp.keras"), str(SAMPLES / "digits.npz")


def run_without(blocked: tuple[str, ...], *args: str) -> subprocess.CompletedProcess:
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None\n"
        "from sparseprune.cli import main\n"
        f"sys.argv = ['sparseprune', *{list(args)!r}]\n"
        "main()\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def assert_one_line_hint(result: subprocess.CompletedProcess, hint: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and lines[0].endswith(hint), lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["evaluate", MLP, "--data", DATA],
        ["compare", MLP, MLP, "--data", DATA],
        ["bench", MLP, "--repeats", "2"],
        ["export", MLP, "-o", "{tmp}/m.tflite"],
        ["prune", MLP, "--target", "0.5", "-o", "{tmp}/p.keras", "--verify"],
        ["prune", MLP, "--target", "0.5", "-o", "{tmp}/p.keras", "--epochs", "1", "--data", DATA],
        ["prune", MLP, "--target", "0.5", "-o", "{tmp}/p.keras", "--method", "tfmot"],
        ["shrink", str(SAMPLES / "l1_mlp.keras"), "-o", "{tmp}/s.keras", "--verify"],
    ],
    ids=["evaluate", "compare", "bench", "export", "verify", "epochs", "tfmot", "shrink-verify"],
)
def test_heavy_feature_names_the_tensorflow_extra(tmp_path: Path, args: list[str]) -> None:
    result = run_without(HEAVY, *(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert_one_line_hint(result, TF_HINT)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_tfmot_names_the_extra_when_only_tfmot_is_missing(tmp_path: Path) -> None:
    out = tmp_path / "p.keras"
    args = ("prune", MLP, "--target", "0.5", "-o", str(out), "--method", "tfmot")
    result = run_without(("tensorflow_model_optimization",), *args)
    assert_one_line_hint(result, TF_HINT)
    if importlib.util.find_spec("tensorflow") is not None:  # else the TensorFlow gate says it
        assert "--method tfmot needs" in result.stderr
        assert "'tensorflow_model_optimization' is not installed" in result.stderr
    assert not out.exists()


def test_plot_names_the_plot_extra(tmp_path: Path) -> None:
    result = run_without(("matplotlib",), "inspect", MLP, "--plot", str(tmp_path / "p.png"))
    assert_one_line_hint(result, "pip install 'sparseprune[plot]'.")
    assert "--plot needs" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_light_commands_run_without_the_extras(tmp_path: Path) -> None:
    blocked = (*HEAVY, "matplotlib")
    inspected = run_without(blocked, "inspect", MLP, "--json")
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["models"][0]["path"] == MLP
    pruned = run_without(blocked, "prune", MLP, "--target", "0.5", "-o", str(tmp_path / "p.keras"))
    assert pruned.returncode == 0, pruned.stderr
    assert (tmp_path / "p.keras").stat().st_size > 0
    shrunk = run_without(
        blocked, "shrink", str(SAMPLES / "l1_mlp.keras"), "-o", str(tmp_path / "s.keras")
    )
    assert shrunk.returncode == 0, shrunk.stderr
    assert (tmp_path / "s.keras").stat().st_size < (SAMPLES / "l1_mlp.keras").stat().st_size


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_sparseprune_keras_without_keras_names_the_extra() -> None:
    result = run_python(
        "import sys\n"
        "sys.modules['keras'] = None\n"
        "try:\n"
        "    import sparseprune.keras\n"
        "except Exception as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "MissingExtra sparseprune.keras needs the [tensorflow] extra ('keras' is not installed): "
        + TF_HINT
    )


@pytest.mark.tensorflow  # needs Keras, which the core install lacks; TensorFlow is hidden below
def test_sparseprune_keras_gate_needs_no_tensorflow() -> None:
    """JAX and PyTorch users have Keras without TensorFlow: the gate passes and installs no TF
    import hook (the gate file runs alone, so Keras itself is not imported)."""
    gate = Path(__file__).resolve().parent.parent / "sparseprune" / "keras" / "_gate.py"
    result = run_python(
        "import runpy, sys\n"
        "sys.modules['tensorflow'] = None\n"
        f"runpy.run_path({str(gate)!r})\n"
        "print([type(f).__name__ for f in sys.meta_path if 'Quiet' in type(f).__name__],"
        " 'keras' in sys.modules)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] False"
