"""Run TFMOT in a worker process and read its results back. Imports no TensorFlow/Keras/TFMOT.

Importing TFMOT sets TF_USE_LEGACY_KERAS=1 and switches `tf.keras` to tf_keras for the whole
process, so it must stay out of the process that uses Keras 3. The protocol is files in a
working directory:

- `request.json` (written here): {"version", "op": "prune" | "check", "workdir", ...}; for
  "prune": "model", "targets" {name: sparsity}, "train" (TrainSpec fields) or null, "pattern"
  [zeros, group] or null, "block" [rows, columns] or null, "block_pooling" "avg" | "max",
  "unsafe"; for "check": "models" [paths].
- on success (exit 0): `metrics.json`, and for "prune" `weights.npz` (every model weight after
  `strip_pruning`, keyed by sparseprune name `layer/role`).
- on a failure the worker can describe (exit 2): `error.json` {"error": "one sentence"}.
- progress: stdout lines `PROGRESS_PREFIX + json`, one per epoch; TensorFlow's logging goes to
  `worker.log`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparseprune.errors import InputError, describe
from sparseprune.extras import require
from sparseprune.formats.npz import read_npz
from sparseprune.numeric.schedule import TrainSpec

PROTOCOL_VERSION = 1
WORKER_MODULE = "sparseprune.keras_ops.tfmot.worker"
REQUEST, WEIGHTS, METRICS, ERROR, LOG = (
    "request.json",
    "weights.npz",
    "metrics.json",
    "error.json",
    "worker.log",
)
PROGRESS_PREFIX = "sparseprune-progress "
Progress = Callable[[dict], None]


@dataclass
class TfmotResult:
    weights: dict[str, np.ndarray]  # every model weight, keyed by `layer/role`
    metrics: dict[str, Any]  # before, after, seconds_per_epoch, steps, sparsity, bridge


def run_tfmot(
    model_path: str,
    targets: dict[str, float],
    train: TrainSpec | None,
    pattern: tuple[int, int] | None,
    workdir: Path,
    *,
    unsafe: bool = False,
    progress: Progress | None = None,
    block: tuple[int, int] | None = None,
    block_pooling: str = "avg",
) -> TfmotResult:
    """Prune `model_path` with TFMOT (fine-tuning on `train.data` when `train` is given).

    `targets` maps tensor names to final sparsity; layers without a target are left alone.
    `progress` receives {"epoch", "epochs", "logs", "sparsity"} after each epoch. Raises
    InputError with the worker's one-sentence reason on failure.
    """
    require("tfmot", "--method tfmot")
    request = {
        "op": "prune",
        "model": str(Path(model_path).resolve()),
        "targets": {name: float(value) for name, value in targets.items()},
        "train": _train_fields(train),
        "pattern": list(pattern) if pattern is not None else None,
        "unsafe": unsafe,
        "block": list(block) if block is not None else None,
        "block_pooling": block_pooling,
    }
    workdir = _call_worker(request, Path(workdir), progress)
    return TfmotResult(_load_weights(workdir / WEIGHTS), _load_json(workdir / METRICS))


def check_bridge(model_paths: list[str], workdir: Path) -> list[dict[str, Any]]:
    """Rebuild each model in tf_keras and compare predictions (no TFMOT involved).

    One entry per model: {"path", "max_abs_diff", "output_std", "layers"} or {"path", "error"}.
    """
    request = {"op": "check", "models": [str(Path(p).resolve()) for p in model_paths]}
    workdir = _call_worker(request, Path(workdir), None)
    return _load_json(workdir / METRICS)["models"]


def _train_fields(train: TrainSpec | None) -> dict[str, Any] | None:
    if train is None:
        return None
    fields = asdict(train.validate())
    fields["data"] = str(Path(train.data).resolve())
    return fields


def train_from_fields(fields: dict[str, Any] | None) -> TrainSpec | None:
    """The TrainSpec a request carries (the inverse of `_train_fields`)."""
    if fields is None:
        return None
    metrics = fields.get("metrics")
    return TrainSpec(**{**fields, "metrics": tuple(metrics) if metrics is not None else None})


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def _call_worker(request: dict[str, Any], workdir: Path, progress: Progress | None) -> Path:
    """Write the request, run the worker with this interpreter, raise its error if it failed."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS, METRICS, ERROR):
        (workdir / name).unlink(missing_ok=True)
    request = {"version": PROTOCOL_VERSION, "workdir": str(workdir), **request}
    (workdir / REQUEST).write_text(json.dumps(request, indent=1), encoding="utf-8")
    command = [sys.executable, "-m", WORKER_MODULE, str(workdir / REQUEST)]
    with open(workdir / LOG, "wb") as log:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log, env=worker_env(), text=True
        )
        try:
            _relay_progress(process, progress)
            code = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    if code != 0:
        raise InputError(_failure(workdir, code))
    return workdir


def _relay_progress(process: subprocess.Popen, progress: Progress | None) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        if progress is not None and line.startswith(PROGRESS_PREFIX):
            progress(json.loads(line[len(PROGRESS_PREFIX) :]))


def _failure(workdir: Path, code: int) -> str:
    """The worker's own sentence, else the exit code and the last line it logged."""
    try:
        return str(json.loads((workdir / ERROR).read_text(encoding="utf-8"))["error"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        lines = (workdir / LOG).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    last = next((line.strip() for line in reversed(lines) if line.strip()), "no output")
    return f"the TFMOT worker stopped with exit code {code} ({last[:200]}); see {workdir / LOG}."


def _load_weights(path: Path) -> dict[str, np.ndarray]:
    return read_npz(path, "the TFMOT worker's weights")


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        message = f"cannot read the TFMOT worker's {path.name} ({describe(error)})."
        raise InputError(message) from error
