"""Epoch time of pruning fits: sparseprune.keras vs plain Keras 3, and TFMOT vs plain tf_keras.

Prints, measured in one run on the digits MLP and CNN (same architectures, batch 32, Adam,
PolynomialDecay to 90% with TFMOT's default frequency of 100 steps), for each input (numpy
arrays, a prebuilt tf.data pipeline) and each epoch length (the training split once, 45 steps,
and repeated `--repeat` times, so that a fixed per-epoch cost is amortized): the median seconds
per epoch of each fit (first epoch of each fit, which traces, left out), and the ratios

    ours  = sparseprune.keras pruning fit / the same Keras 3 fit without pruning   (goal <= 1.15)
    tfmot = TFMOT pruning fit / the same tf_keras fit without pruning
    ours / tfmot = our pruning epoch / TFMOT's pruning epoch                      (goal <= 1)
    k3 / tfk = plain Keras 3 epoch / plain tf_keras epoch (what Keras 3 itself costs)
    floor = plain Keras 3 epoch / TFMOT's pruning epoch: the best ours / tfmot any Keras 3
            pruning could reach (one that cost nothing); above 1, "<= TFMOT" is out of reach
            of a wrapper, whatever it does

Each ratio is the median over all rounds; beside it, the lowest and highest per-round ratio
(each round's workers ran back to back), so the noise of one run is printed with its figure.

Each library runs in its own subprocess (importing TFMOT flips a process to tf_keras), one per
round, the two libraries alternating; inside one the plain and pruned fits alternate, so a change
of load on the machine hits all four alike. The per-step and fixed per-epoch costs come from
the two epoch lengths.

    python benchmarks/keras_api_speed.py [--epochs 6] [--long-epochs 3] [--repeat 8]
        [--rounds 3] [--backend tensorflow] [--input numpy,tf.data] [--threads N]
        [--clock wall|cpu] [--json]

`--clock cpu` times each epoch in CPU seconds of the whole process (all its threads) instead of
wall seconds: on a shared machine another job's load then moves the figures far less (what
PyTorch's eager step, ~40% apart between wall-clock runs, needs); with `--threads 1`, spinning
thread pools do not count either.

With numpy input, Keras 3 pays a fixed cost per epoch that tf_keras does not (its array adapter
sets up the epoch's shuffled pipeline), most of the absolute gap to TFMOT on 45-step epochs;
`--input tf.data` gives both libraries one prebuilt pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = ("mlp", "cnn")
WHO = ("keras3", "ours", "tf_keras", "tfmot")
INPUT_ENV = "KERAS_API_SPEED_INPUT"  # numpy arrays (default) or one tf.data pipeline
CLOCK_ENV = "KERAS_API_SPEED_CLOCK"  # wall (default) or cpu: process CPU seconds
SPE = 8  # steps_per_execution of the fused pruning fit (TF and JAX)


def build(k, name: str):
    layers = k.layers
    if name == "mlp":
        body = [
            layers.Dense(128, activation="relu"),
            layers.Dense(64, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ]
    else:
        body = [
            layers.Reshape((8, 8, 1)),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.BatchNormalization(),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(10, activation="softmax"),
        ]
    return k.Sequential([k.Input((64,)), *body])


def epoch_times(model, x, y, epochs: int, callbacks: list) -> list[float]:
    times: list[float] = []
    clock = time.process_time if os.environ.get(CLOCK_ENV) == "cpu" else time.perf_counter

    def start(epoch, logs):
        times.append(clock())

    def stop(epoch, logs):
        times[-1] = clock() - times[-1]

    k = sys.modules[type(model).__module__.split(".")[0]]
    timer = k.callbacks.LambdaCallback(on_epoch_begin=start, on_epoch_end=stop)
    if os.environ.get(INPUT_ENV) == "tf.data":  # both libraries read the same pipeline
        import tensorflow as tf

        data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).batch(32)
        model.fit(data.prefetch(2), epochs=epochs, verbose=0, callbacks=[*callbacks, timer])
    else:
        model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=[*callbacks, timer])
    return times


def worker(library: str, epochs: int, rounds: int, repeat: int, long_epochs: int) -> dict:
    """Epoch times; Keras 3 on TF/JAX also prunes with steps_per_execution=SPE (a Keras 3
    user's lever against its per-step cost; TFMOT is measured with its default fit only)."""
    import numpy as np

    with np.load(REPO / "sample_models" / "digits.npz") as data:
        x, y = data["x_train"].astype("float32"), data["y_train"]
    fused = library == "keras" and os.environ.get("KERAS_BACKEND") != "torch"
    steps = -(-len(x) // 32)
    if library == "tfmot":
        import tensorflow_model_optimization as tfmot
        import tf_keras as k

        sparsity = tfmot.sparsity.keras
    else:
        import keras as k

        import sparseprune.keras as sparsity

    def prune(model, end: int):
        schedule = sparsity.PolynomialDecay(0.0, 0.9, 0, end)
        return sparsity.prune_low_magnitude(model, pruning_schedule=schedule)

    lengths = {1: epochs, repeat: long_epochs}  # repeats of the split -> epochs per fit
    kinds = ("dense", "pruned", "pruned_spe") if fused else ("dense", "pruned")
    out: dict = {"steps": {str(n): steps * n for n in lengths}}
    for name in MODELS:
        times: dict = {(kind, n): [] for kind in kinds for n in lengths}
        for _ in range(rounds):
            for n, count in lengths.items():  # short and long epochs, interleaved
                xs, ys = np.concatenate([x] * n), np.concatenate([y] * n)
                end = steps * n * count // 2  # pruning runs through each fit's first half
                for kind in kinds:
                    model = build(k, name)
                    if kind != "dense":
                        model = prune(model, end)
                    options = {"steps_per_execution": SPE} if kind == "pruned_spe" else {}
                    model.compile("adam", "sparse_categorical_crossentropy", **options)
                    used = [sparsity.UpdatePruningStep()] if kind != "dense" else []
                    got = epoch_times(model, xs, ys, count, used)
                    times[kind, n].extend(got[1:])
        out[name] = {f"{kind}@{n}": times[kind, n] for kind in kinds for n in lengths}
    return out


def interleaved(args: argparse.Namespace, source: str) -> list[tuple[dict, dict]]:
    """Both libraries' epoch times, one worker process per library and round, alternating, so
    a change of load on the machine hits both alike; per round, medians over its epochs."""
    rounds = []
    for _ in range(args.rounds):
        pair = [medians(run_worker(library, args, source)) for library in ("keras", "tfmot")]
        rounds.append((pair[0], pair[1]))
    return rounds


def medians(result: dict) -> dict:
    out = {"steps": result["steps"]}
    for name in MODELS:
        out[name] = {key: statistics.median(times) for key, times in result[name].items()}
    return out


def run_worker(library: str, args: argparse.Namespace, source: str) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    env["KERAS_BACKEND"] = args.backend if library == "keras" else "tensorflow"
    if library == "tfmot":
        env["TF_USE_LEGACY_KERAS"] = "1"
    env[INPUT_ENV] = source
    env[CLOCK_ENV] = args.clock
    if args.threads:
        threads = str(args.threads)
        env.update({"OMP_NUM_THREADS": threads, "TF_NUM_INTRAOP_THREADS": threads})
        eigen = "false" if args.threads == 1 else "true"  # XLA's CPU pool (JAX)
        env["XLA_FLAGS"] = (
            f"--xla_cpu_multi_thread_eigen={eigen} intra_op_parallelism_threads={threads}"
        )
    command = [sys.executable, __file__, "--worker", library]
    for option in ("epochs", "long_epochs", "repeat"):
        command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    command += ["--rounds", "1"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode:
        raise SystemExit(f"{library} worker failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


RATIOS = {  # name: (numerator, denominator), each a seconds-per-epoch figure of a row
    "ours_ratio": ("ours_pruned_s", "keras3_dense_s"),
    "tfmot_ratio": ("tfmot_pruned_s", "tf_keras_dense_s"),
    "ours_vs_tfmot": ("ours_pruned_s", "tfmot_pruned_s"),
    "keras3_vs_tf_keras": ("keras3_dense_s", "tf_keras_dense_s"),
    "floor_vs_tfmot": ("keras3_dense_s", "tfmot_pruned_s"),
    "ours_spe_vs_tfmot": ("ours_spe_pruned_s", "tfmot_pruned_s"),
}


def rows_for(source: str, rounds: list[tuple[dict, dict]]) -> list[dict]:
    """One row per model and epoch length: median seconds per epoch over the rounds, each goal
    ratio's median over the rounds and its per-round range (`<ratio>_range`)."""
    rows = []
    for name in MODELS:
        for n, steps in rounds[0][0]["steps"].items():
            per_round = [seconds(a[name], b[name], n) for a, b in rounds]
            row = {key: _median(r[key] for r in per_round) for key in per_round[0]}
            row.update(input=source, model=name, steps_per_epoch=steps)
            for ratio, (top, bottom) in RATIOS.items():
                values = [r[top] / r[bottom] for r in per_round if r[top] is not None]
                row[ratio] = statistics.median(values) if values else None
                row[f"{ratio}_range"] = [min(values), max(values)] if values else None
            rows.append(row)
    return rows


def seconds(a: dict, b: dict, n: str) -> dict:
    """One round's seconds per epoch of the five fits of one model and epoch length."""
    return {
        "keras3_dense_s": a[f"dense@{n}"],
        "ours_pruned_s": a[f"pruned@{n}"],
        "ours_spe_pruned_s": a.get(f"pruned_spe@{n}"),
        "tf_keras_dense_s": b[f"dense@{n}"],
        "tfmot_pruned_s": b[f"pruned@{n}"],
    }


def _median(values) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def per_step_split(rows: list[dict]) -> list[str]:
    """Per-step ms and fixed per-epoch ms of each fit, from the short and long epochs."""
    lines = []
    for source, name in dict.fromkeys((r["input"], r["model"]) for r in rows):
        short, long = (r for r in rows if (r["input"], r["model"]) == (source, name))
        extra = long["steps_per_epoch"] - short["steps_per_epoch"]
        cells = []
        for who in ("keras3_dense", "ours_pruned", "tf_keras_dense", "tfmot_pruned"):
            per_step = (long[f"{who}_s"] - short[f"{who}_s"]) / extra
            fixed = short[f"{who}_s"] - short["steps_per_epoch"] * per_step
            cells.append(f"{1e3 * per_step:6.2f} + {1e3 * fixed:6.1f}")
        lines.append("{:<8} {:<5} {:>15} {:>15} {:>15} {:>15}".format(source, name, *cells))
    return lines


def verdict(row: dict) -> str:
    speed = "meets" if row["ours_ratio"] <= 1.15 else "misses"
    tfmot = "meets" if row["ours_vs_tfmot"] <= 1.0 else "misses"
    if tfmot == "misses" and row["floor_vs_tfmot"] > 1.0:
        tfmot += f" (out of reach: plain Keras 3 alone is {row['floor_vs_tfmot']:.2f}x TFMOT)"
    return f"<=1.15x plain: {speed}; <= TFMOT: {tfmot}"


def spread(row: dict, ratio: str) -> str:
    low, high = row[f"{ratio}_range"]
    return f"{row[ratio]:.2f} [{low:.2f}-{high:.2f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6, help="epochs per fit, short epochs")
    parser.add_argument("--long-epochs", type=int, default=3, help="epochs per fit, long epochs")
    parser.add_argument(
        "--repeat", type=int, default=8, help="a long epoch is the training split this many times"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", default="tensorflow")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=0, help="intra-op threads (0: the libraries' default)"
    )
    parser.add_argument(
        "--input",
        default="numpy",
        help="comma-separated: numpy (Keras 3 builds its pipeline each epoch) and/or tf.data "
        "(one pipeline made once)",
    )
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall", help="seconds of what (see above)"
    )
    parser.add_argument("--worker", choices=("keras", "tfmot"))
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.epochs, args.rounds, args.repeat,
                                args.long_epochs)))  # fmt: skip
        return 0
    sources = args.input.split(",")
    unknown = set(sources) - {"numpy", "tf.data"}
    if unknown:
        parser.error(f"--input takes numpy and/or tf.data, not {sorted(unknown)}")
    rows = []
    for source in sources:
        rows += rows_for(source, interleaved(args, source))
    if args.json:
        print(json.dumps({"backend": args.backend, "clock": args.clock, "rows": rows}, indent=2))
        return 0
    print(f"backend {args.backend} (TFMOT: tf_keras on tensorflow); median {args.clock}-clock "
          f"s/epoch over {args.rounds} rounds (first epoch of each fit left out)")  # fmt: skip
    header = ("input", "model", "steps", "Keras 3", "ours", "ours/plain", "tf_keras", "TFMOT",
              "ratio", "ours/TFMOT", "k3/tfk", "floor")  # fmt: skip
    line = "{:<8} {:<5} {:>5} {:>8} {:>8} {:>16} {:>8} {:>8} {:>6} {:>16} {:>6} {:>6}"
    print(line.format(*header))
    for r in rows:
        print(line.format(
            r["input"], r["model"], r["steps_per_epoch"], f"{r['keras3_dense_s']:.3f}",
            f"{r['ours_pruned_s']:.3f}", spread(r, "ours_ratio"), f"{r['tf_keras_dense_s']:.3f}",
            f"{r['tfmot_pruned_s']:.3f}", f"{r['tfmot_ratio']:.2f}", spread(r, "ours_vs_tfmot"),
            f"{r['keras3_vs_tf_keras']:.2f}", f"{r['floor_vs_tfmot']:.2f}",
        ))  # fmt: skip
    print()
    for r in rows:
        spe = ""
        if r["ours_spe_pruned_s"] is not None:
            spe = (f"; ours with steps_per_execution={SPE}: {r['ours_spe_pruned_s']:.3f} s, "
                   f"{r['ours_spe_vs_tfmot']:.2f}x TFMOT")  # fmt: skip
        print(f"{r['input']} {r['model']} {r['steps_per_epoch']} steps: {verdict(r)}{spe}")
    print("\nwhere an epoch's time goes: per-step ms + fixed per-epoch ms")
    print("{:<8} {:<5} {:>15} {:>15} {:>15} {:>15}".format("input", "model", *WHO))
    print("\n".join(per_step_split(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
