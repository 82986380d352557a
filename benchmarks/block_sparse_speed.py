"""Prediction speed from 4x1 block sparsity in LiteRT, measured side by side in one process.

For a 784-2048-2048-10 MLP and a single 4096x4096 Dense layer (random weights), prunes every
kernel on the file with `prune --block 4x1` at 90% and 95% (and, for contrast, unstructured 95%),
converts the pruned model to LiteRT twice (dense, and with EXPERIMENTAL_SPARSITY), and times at
batch 1 and 32, interleaved call by call, one thread, median of --repeats (latencies) and median
over rounds of the ratio measured within a round (ratios: robust on a shared CPU):

- LiteRT sparse vs LiteRT dense of the same pruned model (what the zeros buy in one runtime).
  The dense baseline the goals use is what a user serving the dense model gets by default:
  `ai_edge_litert`'s Interpreter, which applies XNNPACK. The same dense model on LiteRT's builtin
  kernels (no XNNPACK, `OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`) is timed beside it and
  its ratio printed separately, labelled: it is slower at batch 32 (3-5x) and somewhat at batch 1,
  so a ratio against it looks better than what a user would see. The sparse model runs LiteRT's
  builtin sparse FULLY_CONNECTED kernel in both runtimes (XNNPACK declines block-sparse weights);
- the dense (unpruned) Keras model through a compiled call (a concrete tf.function) vs LiteRT
  sparse (the user's starting point vs the served pruned model);
- max |LiteRT sparse - pruned Keras| over the batch.

Goals (issue 12): at 90% blocks >= 7x (batch 1) and >= 1.3x (batch 32) sparse vs dense LiteRT;
at 95% >= 13x and >= 2.5x; outputs within 1e-4; at 95%, >= 20x faster than the dense Keras
model's compiled call at batch 1.

Batch 1 on the 4096 layer is memory-bound: its dense weights (64 MiB) do not fit the 32 MiB L3
cache, the 90%/95% sparse ones do. So anything else streaming memory on the machine slows the
dense baseline several times while the sparse kernel hardly moves, and batch-1 ratios measured on
a busy machine are inflated (see the README). `--memory-load` reproduces that on purpose: a
second process copies a 256 MiB array in a loop while the rounds run.

    python benchmarks/block_sparse_speed.py [--repeats 30] [--models mlp,4096] [--batches 1,32]
        [--threads 1] [--memory-load] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from harness import table

from sparseprune.export.litert import file_kernels, layer_runs
from sparseprune.formats.tflite import read_tflite
from sparseprune.keras_ops.bench import _KerasRunner, pin_threads
from sparseprune.keras_ops.export import convert
from sparseprune.keras_ops.interpreters import BUILTIN_RUNTIME, DEFAULT_RUNTIME, make_interpreter
from sparseprune.prune import prune_model
from sparseprune.prune.recipes import PruneSpec

MODELS = {"mlp": ("mlp 784-2048-2048-10", [784, 2048, 2048, 10]),
          "4096": ("dense 4096x4096", [4096, 4096])}  # fmt: skip
VARIANTS = (("4x1 blocks", 0.9, (4, 1)), ("4x1 blocks", 0.95, (4, 1)), ("unstructured", 0.95, None))
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
    def __init__(self, content: bytes, threads: int, runtime: str | None = None) -> None:
        self.interpreter = make_interpreter(content=content, threads=threads, runtime=runtime)
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
    dense_content = convert(pruned, None, None, False)
    dense_lite = Litert(dense_content, args.threads, DEFAULT_RUNTIME)
    builtin_lite = Litert(dense_content, args.threads, BUILTIN_RUNTIME)
    sparse_content = convert(pruned, None, None, True)
    sparse_lite = Litert(sparse_content, args.threads)
    runs = layer_runs(read_tflite(sparse_content), file_kernels(str(pruned_path)))
    sparse_layers = sum(r.runs == "sparse" for r in runs)
    rows = []
    for batch in args.batches:
        keras_dense.inputs(batch)
        keras_pruned.inputs(batch)
        for lite in (dense_lite, builtin_lite, sparse_lite):
            lite.prepare(batch)
        x = np.random.default_rng(batch).normal(size=(batch, pruned.inputs[0].shape[1]))
        x = x.astype(np.float32)
        reference = np.asarray(keras_pruned(x), dtype=np.float64)
        difference = float(np.abs(np.asarray(sparse_lite(x), np.float64) - reference).max())
        runners = {"keras_dense": keras_dense, "litert_dense": dense_lite}
        runners |= {"litert_dense_builtin": builtin_lite, "litert_sparse": sparse_lite}
        times = interleaved(runners, x, args.repeats, args.warmup)
        rows.append(
            {
                "pattern": label,
                "sparsity": target,
                "batch": batch,
                "sparse_layers": f"{sparse_layers}/{len(runs)}",
                **{f"{k}_ms": statistics.median(v) for k, v in times.items()},
                "sparse_vs_dense": paired_ratio(times["litert_dense"], times["litert_sparse"]),
                "sparse_vs_builtin_dense": paired_ratio(
                    times["litert_dense_builtin"], times["litert_sparse"]
                ),
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
    parser.add_argument("--models", default="mlp,4096", help="comma-separated: mlp, 4096")
    parser.add_argument("--batches", default="1,32", type=lambda s: [int(b) for b in s.split(",")])
    parser.add_argument("--threads", type=int, default=1, help="LiteRT and TF threads")
    parser.add_argument("--memory-load", action="store_true", help="stream memory meanwhile")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    threads = pin_threads(args.threads)
    results, failures = {}, []
    with memory_load(args.memory_load), tempfile.TemporaryDirectory() as scratch:
        for key in args.models.split(","):
            name, sizes = MODELS[key]
            results[name] = measure_model(sizes, Path(scratch), args)
            failures += goal_failures(name, results[name])
    if args.json:
        print(json.dumps({"threads": threads, "results": results, "failures": failures}, indent=2))
    else:
        print_tables(results, threads, args)
        for failure in failures:
            print(f"GOAL MISSED: {failure}")
        if not failures:
            print("all goals met")
    return 1 if failures else 0


def measure_model(sizes: list[int], scratch: Path, args: argparse.Namespace) -> list[dict]:
    import keras

    dense_path = scratch / "dense.keras"
    build(sizes, dense_path)
    keras_dense = _KerasRunner(keras.models.load_model(dense_path, compile=False))
    rows = []
    for label, target, block in VARIANTS:
        pruned_path = scratch / "pruned.keras"
        rows += measure_variant(dense_path, pruned_path, keras_dense, label, target, block, args)
    return rows


@contextlib.contextmanager
def memory_load(enabled: bool) -> Iterator[None]:
    """A second process streaming a 256 MiB array (memory traffic, like a busy machine's)."""
    if not enabled:
        yield
        return
    code = "import numpy as np\na = np.ones(1 << 25)\nb = np.empty_like(a)\nwhile True: b[:] = a"
    process = subprocess.Popen([sys.executable, "-c", code])
    try:
        yield
    finally:
        process.kill()
        process.wait()


def print_tables(results: dict, threads: dict, args: argparse.Namespace) -> None:
    titles = ["pattern", "sparsity", "batch", "sparse FC", "Keras dense ms"]
    titles += ["LiteRT dense ms (default: XNNPACK)", "LiteRT dense ms (builtin, no XNNPACK)"]
    titles += ["LiteRT sparse ms", "sparse vs dense (goal)", "sparse vs builtin dense"]
    titles += ["vs Keras", "max |diff|"]
    columns = [(title, "{}") for title in titles]
    load = ", memory load running" if args.memory_load else ""
    for name, rows in results.items():
        print(f"\n{name} ({args.threads} thread(s), median of {args.repeats}, interleaved{load})")
        body = [
            (
                r["pattern"],
                f"{r['sparsity']:.0%}",
                r["batch"],
                r["sparse_layers"],
                f"{r['keras_dense_ms']:.3f}",
                f"{r['litert_dense_ms']:.3f}",
                f"{r['litert_dense_builtin_ms']:.3f}",
                f"{r['litert_sparse_ms']:.3f}",
                f"{r['sparse_vs_dense']:.1f}x",
                f"{r['sparse_vs_builtin_dense']:.1f}x",
                f"{r['keras_vs_sparse']:.1f}x",
                f"{r['max_abs_diff']:.1e}",
            )
            for r in rows
        ]
        print(table(columns, body, left_columns=1))
    runtime = next(iter(results.values()))[0]["runtime"]
    print(f"\nLiteRT sparse runtime: {runtime}; TF threads pinned: {threads['pinned']}")
    print("goals use the default dense baseline (what serving the dense model gets); the builtin")
    print("column is the same dense model without XNNPACK, for comparison with older figures")


if __name__ == "__main__":
    sys.exit(main())
