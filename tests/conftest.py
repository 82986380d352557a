"""Shared fixtures. Model files are written once per session by a separate process.

`tests/fixtures/make_fixtures.py` builds small models with Keras 3 and tf_keras, saves them in every
supported layout and records expected counts from `layer.get_weights()`. Running it in a subprocess
keeps TensorFlow out of the test process, so tests can also check that nothing imports it.
`tfmot_dir` (TFMOT-wrapped files) and `zoo_dir` (real architectures) are built once per session
too and shared by the modules that need them (strip, fuzz, zoo, shrink zoo).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"
FIXTURES = ROOT / "tests" / "fixtures"
KERAS_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}

# The core install has neither; CI runs the light tests in a venv without them (see .ci/run).
MISSING = {
    extra: importlib.util.find_spec(module) is None
    for extra, module in (("tensorflow", "tensorflow"), ("plot", "matplotlib"))
}
# Fixtures that run Keras in a subprocess: a test that uses one (directly or through another
# fixture) is skipped without TensorFlow. A module's own Keras fixture asks for `needs_tensorflow`.
KERAS_FIXTURES = {"fixture_dir", "expected", "needs_tensorflow", "tfmot_dir", "zoo_dir"}


KERAS_PACKAGES = ("sparseprune.keras_ops", "sparseprune.keras")


def imports_keras_side(path: Path) -> bool:
    """Whether a test module imports keras_ops/keras at module level (top-level statements)."""
    for node in ast.parse(path.read_text(), str(path)).body:
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        if any(n == p or n.startswith(p + ".") for n in names for p in KERAS_PACKAGES):
            return True
    return False


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """In a core install, Keras-side test modules are not collected; every other module must
    import without the extras (CI's core venv proves it)."""
    name = collection_path.name
    if MISSING["tensorflow"] and name.startswith("test_") and name.endswith(".py"):
        return imports_keras_side(collection_path) or None
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip, with the extra's name, tests whose extra is not installed (marked or by fixture)."""
    for item in items:
        needs = {extra for extra in MISSING if item.get_closest_marker(extra)}
        if KERAS_FIXTURES & set(getattr(item, "fixturenames", ())):
            needs.add("tensorflow")
        for extra in sorted(needs):
            if MISSING[extra]:
                item.add_marker(pytest.mark.skip(reason=f"needs the [{extra}] extra"))


@pytest.fixture(scope="session")
def needs_tensorflow() -> None:
    """Ask for this in a fixture that runs Keras: its tests then skip in a core install."""


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models")
    subprocess.run(
        [sys.executable, str(FIXTURES / "make_fixtures.py"), str(out)],
        check=True,
        env=KERAS_ENV,
        stdout=subprocess.DEVNULL,
    )
    return out


@pytest.fixture(scope="session")
def expected(fixture_dir: Path) -> dict:
    return json.loads((fixture_dir / "expected.json").read_text())["files"]


@pytest.fixture(scope="session")
def tfmot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TFMOT-wrapped files and their stripped references (`fixtures/make_tfmot_fixtures.py`,
    one TFMOT process per session: it flips its process to legacy Keras). Read-only for tests."""
    out = tmp_path_factory.mktemp("tfmot")
    script = FIXTURES / "make_tfmot_fixtures.py"
    done = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True,
                          env=KERAS_ENV)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def zoo_cache_key() -> str:
    """The zoo's content key: the sources of everything that writes it."""
    digest = hashlib.sha256()
    for name in ("zoo.py", "custom_layers.py", "make_tfmot_fixtures.py"):
        digest.update((FIXTURES / name).read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def zoo_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zoo (`fixtures/zoo.py`: keras.applications, keras_hub, tf_keras and TFMOT files, a few
    hundred MB), built once per session for tests/test_zoo.py and tests/test_shrink_zoo.py.
    Read-only for tests. Set SPARSEPRUNE_ZOO_CACHE to a folder to keep it between runs (keyed
    by the builders' source)."""
    cache = os.environ.get("SPARSEPRUNE_ZOO_CACHE")
    out = Path(cache) / zoo_cache_key() if cache else tmp_path_factory.mktemp("zoo")
    if not (out / "zoo.json").is_file():
        tfmot = request.getfixturevalue("tfmot_dir")  # only when building: a cached zoo has it
        builder = [sys.executable, str(FIXTURES / "zoo.py"), str(out), "--tfmot", str(tfmot)]
        done = subprocess.run(builder, capture_output=True, text=True, env=KERAS_ENV)
        assert done.returncode == 0, done.stderr[-3000:]
    return out
