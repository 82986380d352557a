"""Shared fixtures. Model files are written once per session by a separate process.

`tests/fixtures/make_fixtures.py` builds small models with Keras 3 and tf_keras, saves them in every
supported layout and records expected counts from `layer.get_weights()`. Running it in a subprocess
keeps TensorFlow out of the test process, so tests can also check that nothing imports it.
`tfmot_dir` (TFMOT-wrapped files) and `zoo_dir` (real architectures) are built once per session
too and shared by the modules that need them (strip, fuzz, zoo, shrink zoo). Under pytest-xdist
the workers share them too: the first worker to need one builds it, the others wait and reuse it.
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from functools import partial
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


# pytest-xdist (`--dist loadfile`, see pyproject.toml): a module is one unit of work, so its module
# fixtures run once. Units start in collection order; XDIST_ORDER moves the longest (measured
# with `--durations`) to the front so neither worker is left with one at the end, and
# test_shrink_zoo to the back so the zoo (built by test_zoo's worker) is ready when it starts
# rather than idling the other worker on the build's lock. (`--dist loadgroup` would put the zoo
# modules in one unit, but pytest-xdist 3.8 cannot set its group suffix on pytest 9.2's nodeids.)
XDIST_ORDER = {"test_zoo": -2, "test_training": -1, "test_tied_units_app": -1, "test_shrink_zoo": 1}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip, with the extra's name, tests whose extra is not installed (marked or by fixture);
    in an xdist worker, order the work units (XDIST_ORDER)."""
    for item in items:
        needs = {extra for extra in MISSING if item.get_closest_marker(extra)}
        if KERAS_FIXTURES & set(getattr(item, "fixturenames", ())):
            needs.add("tensorflow")
        for extra in sorted(needs):
            if MISSING[extra]:
                item.add_marker(pytest.mark.skip(reason=f"needs the [{extra}] extra"))
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker sorts alike: same collection
        items.sort(key=lambda item: XDIST_ORDER.get(item.path.stem, 0))  # stable: order kept


@pytest.fixture(scope="session")
def needs_tensorflow() -> None:
    """Ask for this in a fixture that runs Keras: its tests then skip in a core install."""


def shared_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """`name` in this run's temp folder, the same for every pytest-xdist worker of the run."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name


def built_once(out: Path, marker: str, build: Callable[[Path], None]) -> Path:
    """`out`, built by `build` unless it already holds `marker`, once across processes.

    A lock beside `out` lets one process build at a time (the others wait, then find it built);
    the build goes to a scratch folder renamed into place, so a failed one leaves nothing."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / marker).is_file():
            scratch = out.with_name(out.name + ".building")
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
            build(scratch)
            shutil.rmtree(out, ignore_errors=True)
            scratch.rename(out)
    return out


def run_builder(script: str, *args: str | Path) -> None:
    """Run a fixture script (TensorFlow stays in its process); its stderr tail on failure."""
    command = [sys.executable, str(FIXTURES / script), *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, env=KERAS_ENV)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = shared_dir(tmp_path_factory, "models")
    return built_once(out, "expected.json", partial(run_builder, "make_fixtures.py"))


@pytest.fixture(scope="session")
def expected(fixture_dir: Path) -> dict:
    return json.loads((fixture_dir / "expected.json").read_text())["files"]


@pytest.fixture(scope="session")
def tfmot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TFMOT-wrapped files and their stripped references (`fixtures/make_tfmot_fixtures.py`,
    one TFMOT process per run: it flips its process to legacy Keras). Read-only for tests."""
    out = shared_dir(tmp_path_factory, "tfmot")
    return built_once(out, "expected.npz", partial(run_builder, "make_tfmot_fixtures.py"))


def zoo_cache_key() -> str:
    """The zoo's content key: the sources of everything that writes it."""
    digest = hashlib.sha256()
    for name in ("zoo.py", "custom_layers.py", "make_tfmot_fixtures.py"):
        digest.update((FIXTURES / name).read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def zoo_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zoo (`fixtures/zoo.py`: keras.applications, keras_hub, tf_keras and TFMOT files, a few
    hundred MB), built once per run for tests/test_zoo.py and tests/test_shrink_zoo.py.
    Read-only for tests. Set SPARSEPRUNE_ZOO_CACHE to a folder to keep it between runs (keyed
    by the builders' source)."""
    cache = os.environ.get("SPARSEPRUNE_ZOO_CACHE")
    out = Path(cache) / zoo_cache_key() if cache else shared_dir(tmp_path_factory, "zoo")

    def build(to: Path) -> None:
        tfmot = request.getfixturevalue("tfmot_dir")  # only when building: a cached zoo has it
        run_builder("zoo.py", to, "--tfmot", tfmot)

    return built_once(out, "zoo.json", build)
