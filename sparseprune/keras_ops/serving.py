"""`bench --serving`: one Keras model through every serving path, timed side by side.

A latency means nothing unless it names the serving path: `model.predict()` pays tens of
milliseconds of per-call overhead, a compiled call (`predict_on_batch`, a concrete
`tf.function`) much less, and LiteRT less again; and zeros only turn into time in LiteRT's
block-sparse FULLY_CONNECTED kernel. So every path runs the same inputs in one process,
interleaved call by call (noise hits all paths alike), and the result says which kernels run
sparse and, when none can, what would make the model faster.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sparseprune.errors import InputError
from sparseprune.export.litert import file_kernels, layer_runs
from sparseprune.formats.tflite import read_tflite
from sparseprune.keras_ops.bench import (
    BenchSpec,
    _KerasRunner,
    _preflight,
    is_tflite,
    pin_threads,
)
from sparseprune.keras_ops.export import convert
from sparseprune.keras_ops.interpreters import interpreter_runtime, make_interpreter
from sparseprune.keras_ops.loading import load_keras_model
from sparseprune.keras_ops.timing import latency_stats
from sparseprune.keras_ops.verify import as_array
from sparseprune.schema import JsonResult

BASELINE = "tf.function"  # the compiled Keras call every other path is compared with
PATHS = ("keras.predict", "keras.predict_on_batch", "tf.function", "litert.dense", "litert.sparse")
DESCRIPTIONS = {
    "keras.predict": "model.predict(x) (Keras's batch loop: per-call overhead)",
    "keras.predict_on_batch": "model.predict_on_batch(x) (compiled predict step)",
    "tf.function": "concrete tf.function of model(x, training=False)",
    "litert.dense": "LiteRT, converted without sparsity (dense kernels)",
    "litert.sparse": "LiteRT, converted with EXPERIMENTAL_SPARSITY (block-sparse kernels)",
}
NO_GAIN = (
    "No kernel of this model runs sparse in LiteRT, so its zeros cannot speed up predictions on "
    "any path here. To make it faster: prune Dense layers with --block 4x1 (LiteRT runs them "
    "sparse), or remove whole units with --structure units / shrink (any layer, any runtime)."
)


@dataclass
class ServingResult(JsonResult):
    """One model through every serving path: latency per path and batch size, ratios, verdict."""

    DOCUMENT = "sparseprune.render.bench_output"

    model: str
    settings: dict[str, Any]
    paths: dict[str, str]
    baseline: str
    tflite_sizes: dict[str, int]
    layers: list[dict[str, Any]]
    batches: list[dict[str, Any]]
    verdict: str | None


def bench_serving(
    path: str | os.PathLike[str], *, spec: BenchSpec | None = None, unsafe: bool = False
) -> ServingResult:
    """Time every serving path of one Keras model per batch size; ratios to the compiled call.

    `sparseprune bench --serving`; `spec` as for bench_models (batch sizes, repeats, warmup,
    threads); `unsafe` allows Lambda/custom layers.
    """
    spec = spec or BenchSpec()
    spec.check()
    path = os.fspath(path)
    if os.path.isfile(path) and is_tflite(path):  # refused before _preflight runs it in a child
        raise InputError("bench --serving compares serving paths of a Keras model, not a .tflite.")
    _preflight(path, spec, unsafe)
    threads = pin_threads(spec.threads)
    model = load_keras_model(path, unsafe)
    if len(model.inputs) != 1:
        raise InputError(
            f"bench --serving supports single-input models; this has {len(model.inputs)}."
        )
    dense, sparse = convert(model, None, None, False), convert(model, None, None, True)
    rows = layer_runs(read_tflite(sparse, "the converted model"), file_kernels(path))
    runners = _runners(model, dense, sparse, spec.threads)
    batches = [_time_batch(runners, batch, spec, model) for batch in spec.batch_sizes]
    runs_sparse = any(row.runs == "sparse" for row in rows)
    return ServingResult(
        model=path,
        settings={
            "batch_sizes": list(spec.batch_sizes),
            "repeats": spec.repeats,
            "warmup": spec.warmup,
            "threads": threads,
            "timer": "time.perf_counter, paths interleaved call by call",
            "litert_runtime": interpreter_runtime()[0],
        },
        paths={name: DESCRIPTIONS[name] for name in PATHS},
        baseline=BASELINE,
        tflite_sizes={"litert.dense": len(dense), "litert.sparse": len(sparse)},
        layers=[row.to_dict() for row in rows],
        batches=batches,
        verdict=None if runs_sparse else NO_GAIN,
    )


Runner = Callable[[np.ndarray], np.ndarray]


def _runners(model: Any, dense: bytes, sparse: bytes, threads: int) -> dict[str, Any]:
    """Factories: batch size -> a callable on that batch's input (LiteRT resizes per batch)."""
    compiled = _KerasRunner(model)

    def keras_call(method: str) -> Callable[[int], Runner]:
        if method == "predict":
            return lambda batch: lambda x: model.predict(x, batch_size=len(x), verbose=0)
        return lambda batch: lambda x: model.predict_on_batch(x)

    def function(batch: int) -> Runner:
        compiled.inputs(batch)  # traces the concrete function for this batch shape
        return compiled

    return {
        "keras.predict": keras_call("predict"),
        "keras.predict_on_batch": keras_call("predict_on_batch"),
        "tf.function": function,
        "litert.dense": _litert(dense, threads),
        "litert.sparse": _litert(sparse, threads),
    }


def _litert(content: bytes, threads: int) -> Callable[[int], Runner]:
    interpreter = make_interpreter(content=content, threads=threads)

    def for_batch(batch: int) -> Runner:
        (detail,) = interpreter.get_input_details()
        interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape_signature"][1:]])
        interpreter.allocate_tensors()
        (detail,) = interpreter.get_input_details()
        output = interpreter.get_output_details()[0]["index"]

        def run(x: np.ndarray) -> np.ndarray:
            interpreter.set_tensor(detail["index"], x)
            interpreter.invoke()
            return interpreter.get_tensor(output)

        return run

    return for_batch


def _inputs(model: Any, batch: int) -> np.ndarray:
    shape = [batch, *[8 if d is None else int(d) for d in tuple(model.inputs[0].shape)[1:]]]
    return np.random.default_rng(0).normal(size=shape).astype(np.float32)


def _time_batch(
    factories: dict[str, Callable[[int], Runner]], batch: int, spec: BenchSpec, model: Any
) -> dict[str, Any]:
    """Warm every path up, then time them in turn, call by call, rotating the order."""
    x = _inputs(model, batch)
    try:
        runners = {name: factory(batch) for name, factory in factories.items()}
        outputs = {name: as_array(run(x)) for name, run in runners.items()}
        for _ in range(spec.warmup):
            for run in runners.values():
                run(x)
        times: dict[str, list[float]] = {name: [] for name in runners}
        names = list(runners)
        for repeat in range(spec.repeats):
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                runners[name](x)
                times[name].append((time.perf_counter() - start) * 1000.0)
    except InputError:
        raise
    except Exception as error:  # shape/dtype problems surface as many TF exception types
        raise InputError(f"could not run the model at batch size {batch}: {error}") from error
    reference = outputs[BASELINE].astype(np.float64)
    paths = {}
    for name in names:
        stats = latency_stats(times[name], batch)
        difference = np.abs(outputs[name].astype(np.float64) - reference)
        stats["max_abs_diff"] = float(difference.max()) if difference.size else 0.0
        paths[name] = stats
    base = statistics.median(times[BASELINE])
    dense = paths["litert.dense"]["median_ms"]
    return {
        "batch_size": batch,
        "paths": paths,
        "speedup_vs_baseline": {n: base / p["median_ms"] for n, p in paths.items()},
        "sparse_vs_dense_litert": dense / paths["litert.sparse"]["median_ms"],
    }
