"""The TensorFlow boundary: only `keras_ops/` and the public `keras/` package import Keras.

Checked two ways: statically (no import statement of a heavy module anywhere outside those two
folders, even inside a function) and in a fresh process (importing every other module leaves
TensorFlow, Keras, tf_keras and TFMOT out of `sys.modules`).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sparseprune"
HEAVY = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization")
KERAS_SIDE = ("keras_ops", "keras")  # folders under sparseprune/ allowed to import Keras
KERAS_PACKAGES = [["sparseprune", folder] for folder in KERAS_SIDE]


def _is_keras_side(path: Path) -> bool:
    return path.relative_to(PACKAGE).parts[0] in KERAS_SIDE


def _light_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if not _is_keras_side(p))


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def _module_level_imports(path: Path) -> set[str]:
    """Modules imported by top-level statements (not in functions, not under TYPE_CHECKING)."""
    names = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _module_name(path: Path) -> str:
    parts = ("sparseprune", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_light_side_has_no_heavy_import_statement() -> None:
    offenders = {
        str(p.relative_to(PACKAGE)): sorted(_imported_roots(p) & set(HEAVY)) for p in _light_files()
    }
    assert {name: roots for name, roots in offenders.items() if roots} == {}


def test_light_side_imports_the_keras_side_only_inside_functions() -> None:
    """Importing keras_ops needs the [tensorflow] extra, so the core install could not import
    a light module that does so at module level."""
    offenders = {
        str(p.relative_to(PACKAGE)): sorted(
            n for n in _module_level_imports(p) if n.split(".")[:2] in KERAS_PACKAGES
        )
        for p in _light_files()
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_importing_every_light_module_keeps_tensorflow_out() -> None:
    modules = [_module_name(p) for p in _light_files() if p.stem != "__main__"]
    assert "sparseprune.inspect.inspection" in modules and "sparseprune.cli" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
