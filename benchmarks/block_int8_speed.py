"""int8 with block sparsity in LiteRT: which block shape runs sparse, and what it buys.

LiteRT's sparse FULLY_CONNECTED kernels exist for float32 with 1x4 blocks and for int8 weights
with 1x16 blocks (16 consecutive inputs of one output: `prune --block 16x1` on the Keras kernel).
For a 4096x4096 Dense layer (random weights) pruned on the file at 90% and 95%, this converts to
dynamic-range int8 (int8 weights, float activations: `Optimize.DEFAULT` without data) and full
int8 (calibrated on random inputs, float input/output), each dense and with
`EXPERIMENTAL_SPARSITY`, and times, interleaved, one thread, at batch 1 and 32:

- the float32 dense model in the default runtime (ai_edge_litert, XNNPACK): the reference;
- each int8 model in the default runtime and on the builtin kernels (no XNNPACK), since XNNPACK
  takes over some sparse int8 graphs (and runs them dense) and refuses others.

Ratios are medians over rounds of the ratio within a round. max |diff| is against the pruned
Keras model in float (quantization error, not a bug).

    python benchmarks/block_int8_speed.py [--repeats 30] [--size 4096] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from block_sparse_speed import Litert, build, interleaved, paired_ratio
from harness import table

from sparseprune.export.litert import file_kernels, layer_runs
from sparseprune.formats.tflite import read_tflite
from sparseprune.keras_ops.bench import _KerasRunner, pin_threads
from sparseprune.keras_ops.export import _quiet_stdout
from sparseprune.keras_ops.interpreters import BUILTIN_RUNTIME, DEFAULT_RUNTIME
from sparseprune.prune import prune_model
from sparseprune.prune.recipes import PruneSpec

VARIANTS = (("16x1", 0.9, (16, 1)), ("16x1", 0.95, (16, 1)), ("4x1", 0.9, (4, 1)))
PRECISIONS = ("dynamic-range int8", "full int8")
RUNTIMES = {"default": DEFAULT_RUNTIME, "builtin": BUILTIN_RUNTIME}


def convert(model, precision: str | None, sparse: bool, size: int) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    optimizations = [tf.lite.Optimize.DEFAULT] if precision else []
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if precision == "full int8":
        rng = np.random.default_rng(7)
        samples = rng.normal(size=(64, size)).astype(np.float32)
        converter.representative_dataset = lambda: ([row[None]] for row in samples)
    with _quiet_stdout(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bytes(converter.convert())


def interpreters(content: bytes, label: str) -> dict:
    """One runner per runtime that can prepare the model (XNNPACK refuses some int8 graphs)."""
    runners, refused = {}, []
    for short, runtime in RUNTIMES.items():
        try:
            runners[f"{label} {short}"] = Litert(content, 1, runtime)
        except Exception as error:  # the interpreter raises several types; record and go on
            refused.append(f"{label} {short}: {str(error).splitlines()[0][:90]}")
    return runners, refused


def measure_variant(dense_path, pruned_path, reference, label, target, block, args) -> list:
    import keras

    prune_model(dense_path, pruned_path, PruneSpec(target=target, block=block), force=True)
    pruned = keras.models.load_model(pruned_path, compile=False)
    keras_pruned = _KerasRunner(pruned)
    rows = []
    for precision in PRECISIONS:
        dense = convert(pruned, precision, False, args.size)
        sparse = convert(pruned, precision, True, args.size)
        (run,) = layer_runs(read_tflite(sparse), file_kernels(str(pruned_path)))
        runners, refused = interpreters(dense, "dense")
        more, refused_sparse = interpreters(sparse, "sparse")
        runners |= more
        for batch in args.batches:
            rows.append(time_batch(reference, keras_pruned, runners, batch, args) | {
                "block": label, "sparsity": target, "precision": precision,
                "weight_runs": run.runs, "refused": refused + refused_sparse,
            })  # fmt: skip
    return rows


def time_batch(reference: Litert, keras_pruned, runners: dict, batch: int, args) -> dict:
    keras_pruned.inputs(batch)
    for lite in (reference, *runners.values()):
        lite.prepare(batch)
    x = np.random.default_rng(batch).normal(size=(batch, args.size)).astype(np.float32)
    expected = np.asarray(keras_pruned(x), np.float64)
    differences = {
        name: float(np.abs(np.asarray(lite(x), np.float64) - expected).max())
        for name, lite in runners.items()
    }
    times = interleaved({"f32 dense": reference, **runners}, x, args.repeats, args.warmup)
    base = times["f32 dense"]
    return {
        "batch": batch,
        "ms": {name: statistics.median(t) for name, t in times.items()},
        "vs_f32_dense": {n: paired_ratio(base, t) for n, t in times.items() if n != "f32 dense"},
        "sparse_vs_dense_default": {
            n: paired_ratio(times["dense default"], t)
            for n, t in times.items()
            if n.startswith("sparse") and "dense default" in times
        },
        "max_abs_diff": differences,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--batches", default="1,32", type=lambda s: [int(b) for b in s.split(",")])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    threads = pin_threads(1)
    import keras

    with tempfile.TemporaryDirectory() as scratch:
        dense_path = Path(scratch) / "dense.keras"
        build([args.size, args.size], dense_path)
        reference = Litert(convert(keras.models.load_model(dense_path), None, False, 0), 1)
        rows = []
        for label, target, block in VARIANTS:
            pruned_path = Path(scratch) / "pruned.keras"
            rows += measure_variant(dense_path, pruned_path, reference, label, target, block, args)
    if args.json:
        print(json.dumps({"threads": threads, "rows": rows}, indent=2))
    else:
        print_table(rows, args)
    return 0


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    names = ["dense default", "dense builtin", "sparse default", "sparse builtin"]
    titles = ["block", "sparsity", "precision", "batch", "weight", "f32 dense ms (default)"]
    titles += [f"{n} ms" for n in names]
    titles += ["sparse builtin vs f32 dense", "sparse builtin vs int8 dense default"]
    body = []
    for r in rows:
        ms = r["ms"]
        cells = [f"{ms[n]:.3f}" if n in ms else "refused" for n in names]
        body.append((
            r["block"], f"{r['sparsity']:.0%}", r["precision"], r["batch"], r["weight_runs"],
            f"{ms['f32 dense']:.3f}", *cells,
            _ratio(r["vs_f32_dense"].get("sparse builtin")),
            _ratio(r["sparse_vs_dense_default"].get("sparse builtin")),
        ))  # fmt: skip
    print(f"{args.size}x{args.size} Dense, 1 thread, median of {args.repeats}, interleaved")
    print(table([(t, "{}") for t in titles], body, left_columns=3))
    refused = sorted({line for r in rows for line in r["refused"]})
    for line in refused:
        print(f"refused: {line}")
    worst = max(d for r in rows for d in r["max_abs_diff"].values())
    print(f"max |int8 - float Keras| over all rows: {worst:.2g} (quantization error)")


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


if __name__ == "__main__":
    sys.exit(main())
