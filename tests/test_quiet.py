"""TensorFlow's start-up noise (C++/absl lines on fd 2) never reaches the user unless --debug.

Two real processes that load Keras (`evaluate`), with no TF_CPP_MIN_LOG_LEVEL in their
environment: the default run's stderr is empty; with --debug the same noise is shown, so the
first assertion is about something that really happens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import SAMPLES

NOISE = ("oneDNN custom operations", "cuda drivers", "absl::InitializeLog", "cpu_feature_guard")
ARGS = ["evaluate", str(SAMPLES / "mlp.keras"), "--data", str(SAMPLES / "digits.npz"), "--json"]
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP", "SPARSEPRUNE"))}


def evaluate(*root_options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "sparseprune", *root_options, *ARGS]
    return subprocess.run(command, capture_output=True, text=True, env=ENV)


@pytest.mark.tensorflow
def test_keras_commands_keep_tensorflow_logs_off_stderr() -> None:
    quiet = evaluate()
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert json.loads(quiet.stdout)["samples"] == 360
    shown = evaluate("--debug")
    assert shown.returncode == 0, shown.stderr
    assert any(marker in shown.stderr for marker in NOISE), shown.stderr


@pytest.mark.tensorflow
def test_importing_sparseprune_keras_keeps_tensorflow_logs_off_stderr() -> None:
    """The library imports TensorFlow (KERAS_BACKEND=tensorflow) through the same quiet import
    as the CLI, when it is imported before Keras."""
    code = "import sparseprune.keras, tensorflow; print(sparseprune.keras.__name__)"
    env = {**ENV, "KERAS_BACKEND": "tensorflow"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "sparseprune.keras"
    assert not any(marker in result.stderr for marker in NOISE), result.stderr
