"""sparseprune: inspect and prune saved Keras models without running code from them.

The public API; each CLI command is a thin layer over one function here::

    from sparseprune import PruneSpec, inspect_model, prune_model

    report = inspect_model("model.keras")
    result = prune_model("model.keras", "model.pruned.keras", PruneSpec(target=0.8))
    print(result.to_json())

Every function takes `str | os.PathLike` paths and keyword-only options; specs are checked when
they are made; results are dataclasses with `to_json()` (the command's `--json` document).
Names are imported on first use, so `import sparseprune` stays cheap and never imports
TensorFlow: only evaluate_model, compare_models, bench_models, bench_serving and export_model
load Keras, and only when called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first access)
_EXPORTS = {
    "inspect_model": "sparseprune.inspect.inspection",
    "gate_failures": "sparseprune.inspect.inspection",
    "ModelReport": "sparseprune.inspect.inspection",
    "prune_model": "sparseprune.prune.run",
    "PruneResult": "sparseprune.prune.result",
    "PruneSpec": "sparseprune.prune.spec",
    "LayerRule": "sparseprune.prune.spec",
    "load_recipe": "sparseprune.prune.recipes",
    "TrainSpec": "sparseprune.numeric.schedule",
    "strip_model": "sparseprune.strip.stripping",
    "StripResult": "sparseprune.strip.stripping",
    "shrink_model": "sparseprune.shrink.shrinking",
    "ShrinkResult": "sparseprune.shrink.shrinking",
    "compare_models": "sparseprune.compare.comparison",
    "Comparison": "sparseprune.compare.comparison",
    "evaluate_model": "sparseprune.keras_ops.evaluate",
    "EvaluateResult": "sparseprune.keras_ops.evaluate",
    "bench_models": "sparseprune.keras_ops.bench",
    "BenchSpec": "sparseprune.keras_ops.bench",
    "BenchResult": "sparseprune.keras_ops.bench",
    "bench_serving": "sparseprune.keras_ops.serving",
    "ServingResult": "sparseprune.keras_ops.serving",
    "export_model": "sparseprune.keras_ops.export",
    "ExportResult": "sparseprune.keras_ops.export",
    "Scope": "sparseprune.choices",
    "BlockPooling": "sparseprune.choices",
    "Schedule": "sparseprune.choices",
    "Strategy": "sparseprune.choices",
    "Structure": "sparseprune.choices",
    "TrainMethod": "sparseprune.choices",
    "TensorMethod": "sparseprune.choices",
    "Quantize": "sparseprune.choices",
    "OutputFormat": "sparseprune.choices",
    "SCHEMA_VERSION": "sparseprune.schema",
    "SparsePruneError": "sparseprune.errors",
    "InputError": "sparseprune.errors",
    "UnsafeModelError": "sparseprune.errors",
    "CheckFailed": "sparseprune.errors",
    "ModelFile": "sparseprune.formats",
    "open_model": "sparseprune.formats",
}

__all__ = [
    "SCHEMA_VERSION",
    "BenchResult",
    "BenchSpec",
    "BlockPooling",
    "CheckFailed",
    "Comparison",
    "EvaluateResult",
    "ExportResult",
    "InputError",
    "LayerRule",
    "ModelFile",
    "ModelReport",
    "OutputFormat",
    "PruneResult",
    "PruneSpec",
    "Quantize",
    "Schedule",
    "Scope",
    "ServingResult",
    "ShrinkResult",
    "SparsePruneError",
    "Strategy",
    "StripResult",
    "Structure",
    "TensorMethod",
    "TrainMethod",
    "TrainSpec",
    "UnsafeModelError",
    "__version__",
    "bench_models",
    "bench_serving",
    "compare_models",
    "evaluate_model",
    "export_model",
    "gate_failures",
    "inspect_model",
    "load_recipe",
    "open_model",
    "prune_model",
    "shrink_model",
    "strip_model",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sparseprune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # for type checkers and IDEs; at run time names load on first use
    from sparseprune.choices import (
        BlockPooling,
        OutputFormat,
        Quantize,
        Schedule,
        Scope,
        Strategy,
        Structure,
        TensorMethod,
        TrainMethod,
    )
    from sparseprune.compare.comparison import Comparison, compare_models
    from sparseprune.errors import CheckFailed, InputError, SparsePruneError, UnsafeModelError
    from sparseprune.formats import ModelFile, open_model
    from sparseprune.inspect.inspection import ModelReport, gate_failures, inspect_model
    from sparseprune.keras_ops.bench import BenchResult, BenchSpec, bench_models
    from sparseprune.keras_ops.evaluate import EvaluateResult, evaluate_model
    from sparseprune.keras_ops.export import ExportResult, export_model
    from sparseprune.keras_ops.serving import ServingResult, bench_serving
    from sparseprune.numeric.schedule import TrainSpec
    from sparseprune.prune.recipes import load_recipe
    from sparseprune.prune.result import PruneResult
    from sparseprune.prune.run import prune_model
    from sparseprune.prune.spec import LayerRule, PruneSpec
    from sparseprune.schema import SCHEMA_VERSION
    from sparseprune.shrink.shrinking import ShrinkResult, shrink_model
    from sparseprune.strip.stripping import StripResult, strip_model
