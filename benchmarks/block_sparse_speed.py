"""Prediction speed from 4x1 block sparsity in LiteRT, measured side by side in one process.

For a 784-2048-2048-10 MLP and a single 4096x4096 Dense layer (random weights), prunes every
kernel on the file with `prune --block 4x1` at 90% and 95% (and, for contrast, unstructured 95%),
converts the pruned model to LiteRT twice (dense, and with EXPERIMENTAL_SPARSITY), and times at
batch 1 and 32, interleaved call by call, one thread, median of --repeats (latencies) and median
over rounds of the ratio measured within a round (ratios: robust on a shared CPU):

- LiteRT sparse vs LiteRT dense of the same pruned model (what the zeros buy in one runtime);
- the dense (unpruned) Keras model through a compiled call (a concrete tf.function) vs LiteRT
  sparse (the user's starting point vs the served pruned model);
- max |LiteRT sparse - pruned Keras| over the batch.

Goals (issue 12): at 90% blocks >= 7x (batch 1) and >= 1.3x (batch 32) sparse vs dense LiteRT;
at 95% >= 13x and >= 2.5x; outputs within 1e-4; at 95%, >= 20x faster than the dense Keras
model's compiled call at batch 1.

    python benchmarks/block_sparse_speed.py [--repeats 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from harness import table

from sparseprune.export.litert import file_kernels, layer_runs
from sparseprune.formats.tflite import read_tflite
from sparseprune.keras_ops.bench import _KerasRunner, make_interpreter, pin_threads
from sparseprune.keras_ops.export import convert
from sparseprune.prune import prune_model
from sparseprune.prune.recipes import PruneSpec

MODELS = {"mlp 784-2048-2048-10": [784, 2048, 2048, 10], "dense 4096x4096": [4096, 4096]}
VARIANTS = (("4x1 blocks", 0.9, (4, 1)), ("4x1 blocks", 0.95, (4, 1)), ("unstructured", 0.95, None))
BATCHES = (1, 32)
GOALS = {  # (variant sparsity, batch): minimum LiteRT sparse / dense speed-up
    (0.9, 1): 7.0,
    (0.9, 32): 1.3,
    (0.95, 1): 13.0,
    (0.95, 32): 2.5,
}
KERAS_GOAL = 20.0  # dense Keras compiled call / LiteRT sparse at 95%, batch 1
TOLERANCE = 1e-4


def build(sizes: list[int], path: Path) -> None:
    import keras

    rng = np.random.default_rng(0)
    layers = [keras.layers.Dense(n, activation="relu") for n in sizes[1:-1]]
    layers.append(keras.layers.Dense(sizes[-1]))
    model = keras.Sequential([keras.Input((sizes[0],)), *layers])
    for layer, fan_in, fan_out in zip(layers, sizes, sizes[1:], strict=False):
        kernel = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        layer.set_weights([kernel, (0.1 * rng.standard_normal(fan_out)).astype(np.float32)])
    model.save(path)


class Litert:
    def __init__(self, content: bytes) -> None:
        self.interpreter = make_interpreter(content=content, threads=1)
        self.runtime = self.interpreter.sparseprune_runtime

    def prepare(self, batch: int) -> None:
        (detail,) = self.interpreter.get_input_details()
        self.interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]])
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input, x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output)


def interleaved(runners: dict, x: np.ndarray, repeats: int, warmup: int) -> dict[str, list]:
    """Times (ms) per runner, calls interleaved with a rotating order: one round = one call of
    each, so a burst of load from other processes hits all runners of that round alike."""
    for _ in range(warmup):
        for run in runners.values():
            run(x)
    names = list(runners)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            runners[name](x)
            times[name].append((time.perf_counter() - start) * 1000.0)
    return times


def paired_ratio(slow: list[float], fast: list[float]) -> float:
    """Median over rounds of slow/fast measured in the same round (robust to shared-CPU noise)."""
    return statistics.median(a / b for a, b in zip(slow, fast, strict=True))


def measure_variant(dense_path, pruned_path, keras_dense, label, target, block, args) -> list:
    import keras

    prune_model(dense_path, pruned_path, PruneSpec(target=target, block=block), force=True)
    pruned = keras.models.load_model(pruned_path, compile=False)
    keras_pruned = _KerasRunner(pruned)
    dense_lite = Litert(convert(pruned, None, None, False))
    sparse_content = convert(pruned, None, None, True)
    sparse_lite = Litert(sparse_content)
    runs = layer_runs(read_tflite(sparse_content), file_kernels(str(pruned_path)))
    sparse_layers = sum(r.runs == "sparse" for r in runs)
    rows = []
    for batch in BATCHES:
        keras_dense.inputs(batch)
        keras_pruned.inputs(batch)
        dense_lite.prepare(batch)
        sparse_lite.prepare(batch)
        x = np.random.default_rng(batch).normal(size=(batch, pruned.inputs[0].shape[1]))
        x = x.astype(np.float32)
        reference = np.asarray(keras_pruned(x), dtype=np.float64)
        difference = float(np.abs(np.asarray(sparse_lite(x), np.float64) - reference).max())
        times = interleaved(
            {"keras_dense": keras_dense, "litert_dense": dense_lite, "litert_sparse": sparse_lite},
            x,
            args.repeats,
            args.warmup,
        )
        rows.append(
            {
                "pattern": label,
                "sparsity": target,
                "batch": batch,
                "sparse_layers": f"{sparse_layers}/{len(runs)}",
                **{f"{k}_ms": statistics.median(v) for k, v in times.items()},
                "sparse_vs_dense": paired_ratio(times["litert_dense"], times["litert_sparse"]),
                "keras_vs_sparse": paired_ratio(times["keras_dense"], times["litert_sparse"]),
                "max_abs_diff": difference,
                "runtime": sparse_lite.runtime,
            }
        )
    return rows


def goal_failures(model: str, rows: list[dict]) -> list[str]:
    failures = []
    for row in rows:
        if row["pattern"] != "4x1 blocks":
            continue
        need = GOALS.get((row["sparsity"], row["batch"]))
        where = f"{model} {row['sparsity']:.0%} batch {row['batch']}"
        if need and row["sparse_vs_dense"] < need:
            failures.append(f"{where}: sparse/dense {row['sparse_vs_dense']:.1f}x < {need}x")
        if row["max_abs_diff"] > TOLERANCE:
            failures.append(f"{where}: max |diff| {row['max_abs_diff']:.2g} > {TOLERANCE}")
        if row["sparsity"] == 0.95 and row["batch"] == 1 and row["keras_vs_sparse"] < KERAS_GOAL:
            failures.append(f"{where}: vs Keras {row['keras_vs_sparse']:.1f}x < {KERAS_GOAL}x")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    threads = pin_threads(1)
    import keras

    results, failures = {}, []
    with tempfile.TemporaryDirectory() as scratch:
        for name, sizes in MODELS.items():
            dense_path = Path(scratch) / "dense.keras"
            build(sizes, dense_path)
            keras_dense = _KerasRunner(keras.models.load_model(dense_path, compile=False))
            rows = []
            for label, target, block in VARIANTS:
                pruned_path = Path(scratch) / "pruned.keras"
                rows += measure_variant(
                    dense_path, pruned_path, keras_dense, label, target, block, args
                )
            results[name] = rows
            failures += goal_failures(name, rows)
    if args.json:
        print(json.dumps({"threads": threads, "results": results, "failures": failures}, indent=2))
    else:
        print_tables(results, threads, args)
        for failure in failures:
            print(f"GOAL MISSED: {failure}")
        if not failures:
            print("all goals met")
    return 1 if failures else 0


def print_tables(results: dict, threads: dict, args: argparse.Namespace) -> None:
    titles = ["pattern", "sparsity", "batch", "sparse FC", "Keras dense ms", "LiteRT dense ms"]
    titles += ["LiteRT sparse ms", "sparse/dense", "vs Keras", "max |diff|"]
    columns = [(title, "{}") for title in titles]
    for name, rows in results.items():
        print(f"\n{name} (1 thread, median of {args.repeats}, interleaved)")
        body = [
            (
                r["pattern"],
                f"{r['sparsity']:.0%}",
                r["batch"],
                r["sparse_layers"],
                f"{r['keras_dense_ms']:.3f}",
                f"{r['litert_dense_ms']:.3f}",
                f"{r['litert_sparse_ms']:.3f}",
                f"{r['sparse_vs_dense']:.1f}x",
                f"{r['keras_vs_sparse']:.1f}x",
                f"{r['max_abs_diff']:.1e}",
            )
            for r in rows
        ]
        print(table(columns, body, left_columns=1))
    runtime = next(iter(results.values()))[0]["runtime"]
    print(f"\nLiteRT runtime: {runtime}; TF threads pinned: {threads['pinned']}")


if __name__ == "__main__":
    sys.exit(main())
