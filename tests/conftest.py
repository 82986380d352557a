"""Shared fixtures. Model files are written once per session by a separate process.

`tests/fixtures/make_fixtures.py` builds small models with Keras 3 and tf_keras, saves them in every
supported layout and records expected counts from `layer.get_weights()`. Running it in a subprocess
keeps TensorFlow out of the test process, so tests can also check that nothing imports it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run(
        [sys.executable, str(ROOT / "tests" / "fixtures" / "make_fixtures.py"), str(out)],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return out


@pytest.fixture(scope="session")
def expected(fixture_dir: Path) -> dict:
    return json.loads((fixture_dir / "expected.json").read_text())["files"]
