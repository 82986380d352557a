"""`python -m sparseprune.keras_ops.tfmot.worker REQUEST.json`: the TFMOT side of the bridge.

Runs in its own process (see `tfmot.client` for the file protocol), because importing TFMOT
switches the process to legacy Keras. Every failure ends as one sentence in `error.json` and exit
code 2; the parent raises it as an InputError.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from sparseprune.errors import SparsePruneError, describe
from sparseprune.keras_ops.tfmot.client import (
    ERROR,
    METRICS,
    PROGRESS_PREFIX,
    PROTOCOL_VERSION,
    WEIGHTS,
    train_from_fields,
)

CHECK_SAMPLES = 8
USAGE = "usage: python -m sparseprune.keras_ops.tfmot.worker REQUEST.json"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(USAGE, file=sys.stderr)
        return 2
    request: dict[str, Any] = {}
    try:
        request = json.loads(Path(args[0]).read_text(encoding="utf-8"))
        _check_version(request)
        _quiet()
        metrics = _dispatch(request)
    except SparsePruneError as error:
        return _fail(request, str(error))
    except Exception as error:  # TensorFlow raises many types; the parent needs one sentence
        subject = request.get("model") or "the model"
        return _fail(request, f"TFMOT could not prune {subject}: {describe(error, 300)}")
    _write_json(Path(request["workdir"]) / METRICS, metrics)
    return 0


def _check_version(request: dict[str, Any]) -> None:
    if request.get("version") != PROTOCOL_VERSION:
        raise SparsePruneError(
            f"the TFMOT worker speaks protocol {PROTOCOL_VERSION}, the request "
            f"{request.get('version')}; reinstall sparseprune."
        )


def _dispatch(request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "prune":
        return _prune(request)
    if op == "check":
        return {"models": [_check(path) for path in request["models"]]}
    raise SparsePruneError(f"the TFMOT worker has no operation {op!r}.")


def _prune(request: dict[str, Any]) -> dict[str, Any]:
    from sparseprune.keras_ops.tfmot.bridge import Request, prune_with_tfmot  # imports TFMOT

    pattern = request.get("pattern")
    outcome = prune_with_tfmot(
        Request(
            model=request["model"],
            targets={str(k): float(v) for k, v in request["targets"].items()},
            train=train_from_fields(request.get("train")),
            pattern=(int(pattern[0]), int(pattern[1])) if pattern else None,
            unsafe=bool(request.get("unsafe", False)),
            block=_pair(request.get("block")),
            block_pooling=str(request.get("block_pooling") or "avg"),
        ),
        progress=_print_progress,
    )
    # Any: numpy's stub also matches **arrays against savez's `allow_pickle: bool`.
    arrays: dict[str, Any] = outcome.weights
    np.savez(Path(request["workdir"]) / WEIGHTS, **arrays)
    return outcome.metrics


def _pair(value: Any) -> tuple[int, int] | None:
    return (int(value[0]), int(value[1])) if value else None


def _check(path: str) -> dict[str, Any]:
    """Bridge equivalence for one model: tf_keras twin vs Keras 3, no TFMOT import."""
    from sparseprune.keras_ops.loading import load_keras_model
    from sparseprune.keras_ops.tfmot.translate import build_twin, compare_outputs, sample_inputs

    try:
        model = load_keras_model(path)
        twin = build_twin(model)
        comparison = compare_outputs(model, twin, sample_inputs(model, CHECK_SAMPLES, None))
    except SparsePruneError as error:
        return {"path": path, "error": str(error)}
    return {"path": path, "layers": len(twin.layers), **asdict(comparison)}


def _print_progress(record: dict[str, Any]) -> None:
    print(PROGRESS_PREFIX + json.dumps(record), flush=True)


def _fail(request: dict[str, Any], message: str) -> int:
    workdir = request.get("workdir")
    if workdir:
        _write_json(Path(workdir) / ERROR, {"error": message})
    print(f"error: {message}", file=sys.stderr)
    return 2


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def _quiet() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore")
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
