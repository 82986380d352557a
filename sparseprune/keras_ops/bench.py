"""`bench`: inference latency, throughput, parameter and MAC counts of Keras and TFLite models.

Timings are only comparable when the runtime is pinned: TensorFlow's thread pools are sized
before the first op runs (`pin_threads`), every batch size is warmed up (tracing, allocation)
and the spread (p90/median) is reported so a noisy run is visible. Parameter counts come from
sparseprune's own reader (no Keras); MACs come from the loaded Keras model's layer shapes. A
`.tflite` is probed and timed in child processes (tflite_probe.py), so a corrupt one that
crashes the interpreter is exit 2, not a crash of bench.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparseprune.errors import InputError
from sparseprune.formats import open_model
from sparseprune.keras_ops.inputs import synthetic_inputs
from sparseprune.keras_ops.interpreters import interpreter_runtime
from sparseprune.keras_ops.loading import check_loadable, load_keras_model
from sparseprune.keras_ops.tflite_probe import probe_tflite, time_tflite
from sparseprune.keras_ops.timing import SEED, BenchSpec, Runner, time_batch
from sparseprune.layers.slots import mac_count
from sparseprune.schema import JsonResult

TFLITE_MAGIC = b"TFL3"  # bytes 4..8 of a TFLite flatbuffer (its file identifier)
TFLITE_UNKNOWN = ("params", "nonzero_params", "macs", "macs_nonzero", "macs_uncounted")


def is_tflite(path: str) -> bool:
    """Decide by the flatbuffer identifier, never the suffix (as the model reader does)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(8)[4:8] == TFLITE_MAGIC
    except OSError as error:
        raise InputError(f"cannot read {path} ({error.strerror or error}).") from None


@dataclass
class BenchResult(JsonResult):
    """Settings used, one entry per model (sizes, counts, latency per batch size), B/A ratios."""

    DOCUMENT = "sparseprune.render.bench_output"

    settings: dict[str, Any]
    models: list[dict[str, Any]] = field(default_factory=list)
    ratios: list[dict[str, Any]] = field(default_factory=list)


def bench_models(
    paths: Sequence[str | os.PathLike[str]],
    *,
    spec: BenchSpec | None = None,
    unsafe: bool = False,
) -> BenchResult:
    """Benchmark each model with the same settings; later models get ratios against the first."""
    spec = spec or BenchSpec()
    spec.check()
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = [os.fspath(path) for path in paths]
    if not files:
        raise InputError("bench needs at least one model file.")
    kinds = [_preflight(path, spec, unsafe) for path in files]  # refuse bad files first
    threads = pin_threads(spec.threads)
    results = [
        _bench_one(path, kind, spec, unsafe) for path, kind in zip(files, kinds, strict=True)
    ]
    return BenchResult(
        settings={
            "batch_sizes": list(spec.batch_sizes),
            "repeats": spec.repeats,
            "warmup": spec.warmup,
            "threads": threads,
            "timer": "time.perf_counter",
            "keras_runner": "concrete tf.function of model(x, training=False) per batch size",
            "tflite_runner": f"{interpreter_runtime()[0]}(num_threads=threads).invoke() in a "
            "child process",
        },
        models=results,
        ratios=[ratios(results[0], other) for other in results[1:]],
    )


def _preflight(path: str, spec: BenchSpec, unsafe: bool) -> str:
    """'tflite' or the Keras file's format; raises InputError for anything else, before TF
    starts or any model is timed."""
    if not os.path.isfile(path):
        raise InputError(f"{path} does not exist or is not a file.")
    if is_tflite(path):
        probe_tflite(path, spec)  # run once per batch size in a child: a crash is one sentence
        return "tflite"
    check_loadable(path, unsafe)
    with open_model(path) as model:
        return model.format


def pin_threads(threads: int) -> dict[str, int]:
    """Size TF's intra/inter-op pools; this only works before TF runs its first op."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # already initialized in this process (a library caller); report what is in effect
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    # 0 means TensorFlow's default (all cores): timings are then not comparable across runs.
    return {
        "intra_op": intra,
        "inter_op": inter,
        "tflite": threads,
        "pinned": intra == inter == threads,
    }


def _bench_one(path: str, kind: str, spec: BenchSpec, unsafe: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": path, "format": kind, "file_size": os.path.getsize(path)}
    if kind == "tflite":
        entry.update(dict.fromkeys(TFLITE_UNKNOWN))  # no Keras layers to count from
        entry["latency"] = time_tflite(path, spec)  # in a child process, as the probe was
        return entry
    entry.update(weight_counts(path))
    model = load_keras_model(path, unsafe)
    entry.update(count_macs(model))
    runner = _KerasRunner(model)
    entry["latency"] = [time_batch(runner, batch, spec) for batch in spec.batch_sizes]
    return entry


def weight_counts(path: str) -> dict[str, int]:
    """Model weights (optimizer state excluded) and how many are nonzero, read tensor by tensor."""
    params = nonzero = 0
    with open_model(path) as model:
        for tensor in model.model_tensors:
            params += tensor.params
            nonzero += sum(int(np.count_nonzero(block)) for block in model.slabs(tensor))
    return {"params": params, "nonzero_params": nonzero}


class _KerasRunner(Runner):
    """A concrete function per batch size: graph execution without tf.function's per-call
    signature matching, which is faster and steadier than eager calls or predict_on_batch
    (measured on the sample MLP: 0.18 ms vs 0.31 ms and 0.35 ms per call)."""

    def __init__(self, model: Any) -> None:
        import tensorflow as tf

        self.model = model
        self.function = tf.function(lambda x: model(x, training=False))
        self.concrete: Any = None

    def inputs(self, batch: int) -> Any:
        import tensorflow as tf

        inputs = synthetic_inputs(self.model, batch, SEED)
        specs = tf.nest.map_structure(lambda a: tf.TensorSpec(a.shape, a.dtype), inputs)
        self.concrete = self.function.get_concrete_function(specs)
        return inputs

    def __call__(self, inputs: Any) -> Any:
        import tensorflow as tf

        outputs = self.concrete(tf.nest.map_structure(tf.constant, inputs))
        return tf.nest.map_structure(lambda t: t.numpy(), outputs)


def count_macs(model: Any) -> dict[str, Any]:
    """Per-sample MACs (the layer table's formula, `layers.slots.mac_count`), and the share done
    by nonzero weights (what a sparse kernel could skip). Biases, activations, pooling,
    normalization and classes the table gives no MAC formula (listed in `macs_uncounted`) are
    not counted."""
    macs = nonzero = 0
    uncounted = []
    for layer in _leaf_layers(model):
        kernels = {_leaf_name(v): np.asarray(v) for v in layer.weights}
        positions = _output_positions(layer)
        name = type(layer).__name__
        sizes = {role: k.size for role, k in kernels.items()}
        counted = mac_count(name, sizes, positions) if positions is not None else None
        if counted is None or positions is None:
            if layer.weights:
                uncounted.append(layer.name)
            continue
        macs += counted
        live = {role: int(np.count_nonzero(k)) for role, k in kernels.items()}
        nonzero += mac_count(name, live, positions) or 0
    return {"macs": macs, "macs_nonzero": nonzero, "macs_uncounted": uncounted}


def _leaf_name(variable: Any) -> str:
    """`kernel` from `conv/kernel` (Keras 3 path) or `conv/kernel:0` (tf_keras name)."""
    path = getattr(variable, "path", None) or variable.name
    return str(path).split("/")[-1].split(":")[0]


def _leaf_layers(model: Any) -> list[Any]:
    """Layers of nested models (a Sequential inside a Functional) are walked into."""
    found = []
    for layer in getattr(model, "layers", []):
        found.extend(_leaf_layers(layer) if hasattr(layer, "layers") else [layer])
    return found


def _output_positions(layer: Any) -> int | None:
    """Output positions per sample: every output dimension except batch and channels."""
    try:
        shape = tuple(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):  # shared or unbuilt layers
        return None
    if any(d is None for d in shape[1:]):
        return None
    spatial = shape[2:] if getattr(layer, "data_format", None) == "channels_first" else shape[1:-1]
    return int(np.prod(spatial, dtype=np.int64))


RATIO_FIELDS = ("params", "nonzero_params", "macs", "macs_nonzero", "file_size")


def ratios(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """other/base for each count and per batch size for median latency; None when undefined."""
    latency = {}
    base_latency = {row["batch_size"]: row["median_ms"] for row in base["latency"]}
    for row in other["latency"]:
        latency[str(row["batch_size"])] = _ratio(
            row["median_ms"], base_latency.get(row["batch_size"])
        )
    counts = {name: _ratio(other.get(name), base.get(name)) for name in RATIO_FIELDS}
    return {"model": other["path"], "baseline": base["path"], "latency": latency, **counts}


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return value / base
