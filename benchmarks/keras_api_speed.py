"""Epoch time of pruning fits: sparseprune.keras vs plain Keras 3, and TFMOT vs plain tf_keras.

Prints, measured in one run on the digits MLP and CNN (same architectures, batch 32, Adam,
PolynomialDecay to 90% with TFMOT's default frequency of 100 steps): the median seconds per
epoch of each fit (first epoch, which traces, left out), and the ratios

    ours  = sparseprune.keras pruning fit / the same Keras 3 fit without pruning   (goal <= 1.15)
    tfmot = TFMOT pruning fit / the same tf_keras fit without pruning
    ours / tfmot = our pruning epoch / TFMOT's pruning epoch                      (goal <= 1)

Each library runs in its own subprocess (importing TFMOT flips a process to tf_keras); inside one
process the dense and pruned fits alternate, so load on the machine hits both alike.

It also splits each epoch into a per-step cost and a fixed per-epoch cost (epochs of the
training split and of it repeated 4 times, interleaved): whether Keras 3's slower plain fit is
paid per step or per epoch decides what an "epoch no slower than TFMOT's" can mean.

    python benchmarks/keras_api_speed.py [--epochs 6] [--rounds 2] [--backend tensorflow]
        [--threads N] [--input numpy|tf.data] [--json]

With numpy input, Keras 3 pays a fixed cost per epoch that tf_keras does not (its array adapter
sets up the epoch's shuffled pipeline: ~40-180 ms wall on this machine, most of the absolute gap
to TFMOT on 45-step epochs); `--input tf.data` gives both libraries one prebuilt pipeline.
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
SPE = 8  # steps_per_execution of the fused pruning fit (TF and JAX)
LONG = 4  # the long epoch repeats the training split LONG times: per-step vs per-epoch cost


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

    def start(epoch, logs):
        times.append(time.perf_counter())

    def stop(epoch, logs):
        times[-1] = time.perf_counter() - times[-1]

    k = sys.modules[type(model).__module__.split(".")[0]]
    timer = k.callbacks.LambdaCallback(on_epoch_begin=start, on_epoch_end=stop)
    if os.environ.get(INPUT_ENV) == "tf.data":  # both libraries read the same pipeline
        import tensorflow as tf

        data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).batch(32)
        model.fit(data.prefetch(2), epochs=epochs, verbose=0, callbacks=[*callbacks, timer])
    else:
        model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=[*callbacks, timer])
    return times


def worker(library: str, epochs: int, rounds: int) -> dict:
    """Epoch times; Keras 3 on TF/JAX also prunes with steps_per_execution=SPE (a Keras 3
    user's lever against its per-step cost; TFMOT is measured with its default fit only)."""
    import numpy as np

    with np.load(REPO / "sample_models" / "digits.npz") as data:
        x, y = data["x_train"].astype("float32"), data["y_train"]
    fused = library == "keras" and os.environ.get("KERAS_BACKEND") != "torch"
    end = (len(x) // 32 + 1) * epochs // 2  # pruning runs through the short fits' first half
    if library == "tfmot":
        import tensorflow_model_optimization as tfmot
        import tf_keras as k

        sparsity = tfmot.sparsity.keras

        def prune(model):
            schedule = sparsity.PolynomialDecay(0.0, 0.9, 0, end)
            return sparsity.prune_low_magnitude(model, pruning_schedule=schedule)

        callbacks = [sparsity.UpdatePruningStep()]
    else:
        import keras as k

        import sparseprune.keras as sparsity

        def prune(model):
            schedule = sparsity.PolynomialDecay(0.0, 0.9, 0, end)
            return sparsity.prune_low_magnitude(model, pruning_schedule=schedule)

        callbacks = [sparsity.UpdatePruningStep()]
    out: dict = {}
    for name in MODELS:
        kinds = ("dense", "pruned", "pruned_spe") if fused else ("dense", "pruned")
        times: dict = {(kind, n): [] for kind in kinds for n in (1, LONG)}
        for _ in range(rounds):
            for n in (1, LONG):  # epochs of 45 and LONG x 45 steps, interleaved
                xs, ys = np.concatenate([x] * n), np.concatenate([y] * n)
                for kind in kinds:
                    model = build(k, name)
                    if kind != "dense":
                        model = prune(model)
                    options = {"steps_per_execution": SPE} if kind == "pruned_spe" else {}
                    model.compile("adam", "sparse_categorical_crossentropy", **options)
                    used = callbacks if kind != "dense" else []
                    got = epoch_times(model, xs, ys, epochs, used)
                    times[kind, n].extend(got[1:])
        steps = -(-len(x) // 32)
        out[name] = {"steps": steps}
        for kind in kinds:
            short, long = (statistics.median(times[kind, n]) for n in (1, LONG))
            per_step = (long - short) / ((LONG - 1) * steps)
            out[name][kind] = short
            out[name][f"{kind}_per_step"] = per_step
            out[name][f"{kind}_per_epoch_fixed"] = short - steps * per_step
    return out


def run_worker(library: str, epochs: int, rounds: int, backend: str, threads: int,
               source: str) -> dict:  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    env["KERAS_BACKEND"] = backend if library == "keras" else "tensorflow"
    if library == "tfmot":
        env["TF_USE_LEGACY_KERAS"] = "1"
    env[INPUT_ENV] = source
    if threads:
        env.update({"OMP_NUM_THREADS": str(threads), "TF_NUM_INTRAOP_THREADS": str(threads)})
    result = subprocess.run(
        [sys.executable, __file__, "--worker", library, "--epochs", str(epochs),
         "--rounds", str(rounds)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode:
        raise SystemExit(f"{library} worker failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backend", default="tensorflow")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=0, help="intra-op threads (0: the libraries' default)"
    )
    parser.add_argument(
        "--input",
        choices=("numpy", "tf.data"),
        default="numpy",
        help="what fit reads: numpy arrays (Keras 3 builds its pipeline each epoch) or a "
        "tf.data pipeline made once",
    )
    parser.add_argument("--worker", choices=("keras", "tfmot"))
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.epochs, args.rounds)))
        return 0
    settings = (args.epochs, args.rounds, args.backend, args.threads, args.input)
    ours = run_worker("keras", *settings)
    theirs = run_worker("tfmot", *settings)
    rows = []
    for name in MODELS:
        a, b = ours[name], theirs[name]
        rows.append(
            {
                "model": name,
                "keras3_dense_s": a["dense"],
                "ours_pruned_s": a["pruned"],
                "tf_keras_dense_s": b["dense"],
                "tfmot_pruned_s": b["pruned"],
                "ours_ratio": a["pruned"] / a["dense"],
                "tfmot_ratio": b["pruned"] / b["dense"],
                "ours_vs_tfmot": a["pruned"] / b["pruned"],
                "steps_per_epoch": a["steps"],
                "ours_spe_pruned_s": a.get("pruned_spe"),
                "ours_spe_vs_tfmot": a["pruned_spe"] / b["pruned"] if "pruned_spe" in a else None,
                **{
                    f"{who}_{part}_ms": 1e3 * run[f"{kind}_{part}"]
                    for who, run, kind in (
                        ("keras3", a, "dense"),
                        ("ours", a, "pruned"),
                        ("tf_keras", b, "dense"),
                        ("tfmot", b, "pruned"),
                    )
                    for part in ("per_step", "per_epoch_fixed")
                },
            }
        )
    if args.json:
        print(json.dumps({"backend": args.backend, "input": args.input, "rows": rows}, indent=2))
        return 0
    print(f"backend {args.backend}, input {args.input}; median s/epoch (first epoch left out)")
    header = ("model", "Keras 3", "ours", "ratio", "tf_keras", "TFMOT", "ratio", "ours/TFMOT")
    print("{:<6} {:>9} {:>9} {:>6} {:>9} {:>9} {:>6} {:>10}".format(*header))
    for r in rows:
        print(
            f"{r['model']:<6} {r['keras3_dense_s']:>9.3f} {r['ours_pruned_s']:>9.3f} "
            f"{r['ours_ratio']:>6.2f} {r['tf_keras_dense_s']:>9.3f} {r['tfmot_pruned_s']:>9.3f} "
            f"{r['tfmot_ratio']:>6.2f} {r['ours_vs_tfmot']:>10.2f}"
        )
    for r in rows:
        if r["ours_spe_pruned_s"] is not None:
            print(
                f"{r['model']}: ours with steps_per_execution={SPE} "
                f"{r['ours_spe_pruned_s']:.3f} s/epoch, {r['ours_spe_vs_tfmot']:.2f}x TFMOT's "
                "default fit"
            )
    print(
        f"\nwhere an epoch's time goes (epochs of 1x and {LONG}x the steps): per-step ms "
        "and the fixed per-epoch ms"
    )
    print("{:<6} {:>15} {:>15} {:>15} {:>15}".format("model", *WHO))
    for r in rows:
        cells = [
            f"{r[f'{who}_per_step_ms']:6.2f} + {r[f'{who}_per_epoch_fixed_ms']:6.1f}" for who in WHO
        ]
        print("{:<6} {:>15} {:>15} {:>15} {:>15}".format(r["model"], *cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
