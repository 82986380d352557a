"""prune's fine-tuning options and bench --threads / shrink --tolerance, each with a real effect.

Every run happens in ONE subprocess (one TensorFlow import for the module) through the CLI;
expectations come from the input and output files read with plain h5py (`rawread.py`) and numpy:

- A mask chosen at step 0 on the input's weights and never updated before the end (`--frequency`
  beyond the run) zeroes exactly the input's smallest |w| (layer scope, n - round(n/2) per kernel):
  true for `--schedule constant`, for `--initial-sparsity 0.5` and for `--end-step 0` (target
  reached at once), and false for the default polynomial start at 0 and for a `--begin-step`
  after the last step (masks then come from the trained weights).
- `--lr 1e-30`: the kept weights are bit-identical to the input's (each step is below one ulp).
- `--optimizer sgd` vs `adam` at the same small lr: Adam's steps are ~lr per weight, SGD's lr*grad.
- `--seed`: same seed, byte-identical output; another seed, other weights.
- Several batches per compiled call (the trainer's default on TensorFlow) write the same bytes as
  one batch per call; validation runs only in the epochs that end at the final sparsity (the
  `--restore-best` candidates), and never with `--no-restore-best`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES
from rawread import keras_weights

pytestmark = pytest.mark.tensorflow

MLP, DATA, L1 = SAMPLES / "mlp.keras", SAMPLES / "digits.npz", SAMPLES / "l1_mlp.keras"
KERNELS = ("hidden1", "hidden2", "head")
ONCE = ["--frequency", "100000"]  # one mask update at the begin step, then only at the end
CONSTANT_ONCE = ["--schedule", "constant", *ONCE]
RUNS = {
    "constant": ["--schedule", "constant", *ONCE],
    "polynomial": ONCE,
    "initial_half": [*ONCE, "--initial-sparsity", "0.5"],
    "end_zero": [*ONCE, "--end-step", "0"],
    "late_begin": [*CONSTANT_ONCE, "--begin-step", "100000", "--end-step", "200000"],
    "tiny_lr": ["--schedule", "constant", *ONCE, "--lr", "1e-30"],
    "default_lr": ["--schedule", "constant", *ONCE],
    "sgd": ["--schedule", "constant", *ONCE, "--optimizer", "sgd", "--lr", "0.001"],
    "adam": ["--schedule", "constant", *ONCE, "--optimizer", "adam", "--lr", "0.001"],
    "seed1": ["--seed", "1"],
    "seed1_again": ["--seed", "1"],
    "seed2": ["--seed", "2"],
}
CHILD = """\
import json, sys
from typer.testing import CliRunner
from sparseprune.cli import app
out, runs = sys.argv[1], json.loads(sys.argv[2])
mlp, data, l1 = sys.argv[3:6]
runner, results = CliRunner(), {}
def run(name, *args):
    result = runner.invoke(app, list(args))
    results[name] = {"code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr}
# first: TensorFlow's thread pools can only be sized before its first op
run("threads", "bench", mlp, "--threads", "2", "--repeats", "2", "--warmup", "0",
    "--batch-size", "1", "--json")
train = ["--data", data, "--epochs", "1", "--batch-size", "64", "--target", "0.5", "--json"]
for name, extra in runs.items():
    run(name, "prune", mlp, "-o", f"{out}/{name}.keras", *train, *extra)
for name, tolerance in (("tolerance_zero", "0"), ("tolerance_one", "1")):
    run(name, "shrink", l1, "-o", f"{out}/{name}.keras", "--verify", "--tolerance", tolerance,
        "--json")
# --power: the mask sparsity after epoch 1 (what the CLI's progress bar shows), via the library
from sparseprune import PruneSpec, TrainSpec, prune_model
for power in (1.0, 3.0):
    seen = []
    spec = TrainSpec(data=data, epochs=1, batch_size=64, end_step=46, frequency=1, power=power)
    prune_model(mlp, f"{out}/power{power:g}.keras", PruneSpec(target=0.5), train=spec,
                on_epoch=lambda update: seen.append(update["sparsity"]))
    results[f"power{power:g}"] = seen
# which epochs validate: the progress logs of a 4-epoch run, with and without --restore-best
for name, restore in (("validated", None), ("unvalidated", False)):
    seen = []
    spec = TrainSpec(data=data, epochs=4, batch_size=64, restore_best=restore)
    prune_model(mlp, f"{out}/{name}.keras", PruneSpec(target=0.5), train=spec,
                on_epoch=lambda update: seen.append(sorted(update["logs"])))
    results[name] = seen
# last: one batch per compiled call, against seed1's default (several batches per call)
import sparseprune.keras_ops.mask_trainer as trainer
trainer.STEPS_PER_EXECUTION = 1
run("one_step_per_call", "prune", mlp, "-o", f"{out}/one_step_per_call.keras", *train,
    "--seed", "1")
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("train_options")
    args = [str(out), json.dumps(RUNS), str(MLP), str(DATA), str(L1)]
    result = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=True
    )
    return out, json.loads(result.stdout.splitlines()[-1])


def ok(runs: tuple[Path, dict], name: str) -> dict:
    result = runs[1][name]
    assert result["code"] == 0, result
    return json.loads(result["stdout"])


def kernels(path: Path) -> dict[str, np.ndarray]:
    weights = keras_weights(path)
    return {layer: weights[layer][0] for layer in KERNELS}


def input_smallest(kernel: np.ndarray) -> np.ndarray:
    """The positions layer scope prunes at 0.5 on these weights: the n - round(n/2) smallest."""
    flat = np.abs(kernel).ravel()
    chosen = np.zeros(flat.size, dtype=bool)
    chosen[np.argsort(flat, kind="stable")[: flat.size - round(flat.size * 0.5)]] = True
    return chosen.reshape(kernel.shape)


def zeroed_like_input(runs: tuple[Path, dict], name: str) -> bool:
    ok(runs, name)
    before, after = kernels(MLP), kernels(runs[0] / f"{name}.keras")
    for layer in KERNELS:
        assert np.count_nonzero(after[layer] == 0) == after[layer].size - round(
            after[layer].size * 0.5
        )
    return all(np.array_equal(after[k] == 0, input_smallest(before[k])) for k in KERNELS)


def test_constant_schedule_prunes_the_input_smallest_at_step_zero(runs) -> None:
    assert zeroed_like_input(runs, "constant")
    assert not zeroed_like_input(runs, "polynomial")  # polynomial starts at 0 sparsity


def test_initial_sparsity_is_the_sparsity_at_the_begin_step(runs) -> None:
    assert zeroed_like_input(runs, "initial_half")


def test_end_step_zero_reaches_the_target_at_once(runs) -> None:
    assert ok(runs, "end_zero")["training"]["schedule"]["end"] == 0
    assert zeroed_like_input(runs, "end_zero")


def test_begin_step_after_the_run_leaves_masks_to_the_trained_weights(runs) -> None:
    assert ok(runs, "late_begin")["training"]["schedule"]["begin"] == 100000
    assert not zeroed_like_input(runs, "late_begin")


def test_frequency_sets_the_update_interval(runs) -> None:
    assert ok(runs, "constant")["training"]["schedule"]["frequency"] == 100000
    default = ok(runs, "seed1")["training"]["schedule"]["frequency"]
    assert default == max(1, -(-1437 // 64) // 4)  # 4 updates per epoch of 23 steps


def pruned_fraction(sparsity: float) -> float:
    """Layer scope at `sparsity` over the three kernels: n - round(n(1 - s)) each."""
    sizes = [64 * 128, 128 * 64, 64 * 10]
    return sum(n - round(n * (1 - sparsity)) for n in sizes) / sum(sizes)


@pytest.mark.parametrize("power", [1, 3])
def test_power_shapes_the_polynomial_schedule(runs, power: int) -> None:
    # 23 steps of 64 (1437 samples); the last update is at step 22 of a schedule ending at 46
    expected = 0.5 * (1 - (1 - 22 / 46) ** power)
    assert runs[1][f"power{power}"] == [pytest.approx(pruned_fraction(expected), abs=1e-12)]


def test_tiny_lr_keeps_every_unpruned_weight(runs) -> None:
    before = kernels(MLP)
    for name, unchanged in (("tiny_lr", True), ("default_lr", False)):
        ok(runs, name)
        after = kernels(runs[0] / f"{name}.keras")
        kept = {k: after[k] != 0 for k in KERNELS}
        same = all(np.array_equal(after[k][kept[k]], before[k][kept[k]]) for k in KERNELS)
        assert same is unchanged, name


def test_optimizer_choice_changes_the_step_size(runs) -> None:
    before = kernels(MLP)

    def mean_step(name: str) -> float:
        ok(runs, name)
        after = kernels(runs[0] / f"{name}.keras")
        kept = [(after[k] - before[k])[after[k] != 0] for k in KERNELS]
        return float(np.mean(np.abs(np.concatenate(kept))))

    assert mean_step("adam") > 3 * mean_step("sgd") > 0


def test_seed_makes_training_reproducible(runs) -> None:
    out = runs[0]
    for name in ("seed1", "seed1_again", "seed2"):
        ok(runs, name)
    assert (out / "seed1.keras").read_bytes() == (out / "seed1_again.keras").read_bytes()
    one, two = kernels(out / "seed1.keras"), kernels(out / "seed2.keras")
    assert not all(np.array_equal(one[k], two[k]) for k in KERNELS)


def test_threads_sizes_tensorflows_pools(runs) -> None:
    threads = ok(runs, "threads")["settings"]["threads"]
    assert threads == {"intra_op": 2, "inter_op": 2, "tflite": 2, "pinned": True}


def test_tolerance_gates_verify(runs) -> None:
    strict = runs[1]["tolerance_zero"]
    assert strict["code"] == 1, strict
    worst = json.loads(strict["stdout"])["verification"]["max_abs_diff"]
    assert worst > 0 and "above --tolerance 0" in strict["stderr"]
    assert ok(runs, "tolerance_one")["verification"]["max_abs_diff"] == worst


def test_several_batches_per_call_write_the_same_model(runs) -> None:
    ok(runs, "seed1")
    ok(runs, "one_step_per_call")
    out = runs[0]
    assert (out / "one_step_per_call.keras").read_bytes() == (out / "seed1.keras").read_bytes()


def test_only_epochs_at_the_final_sparsity_are_validated(runs) -> None:
    with np.load(DATA) as data:
        assert "x_val" in data  # its own validation split: all of x trains
        per_epoch = -(-len(data["x"]) // 64)
    end = round(4 * per_epoch * 0.5)  # the schedule ends half-way through the run
    expected = [epoch * per_epoch > end for epoch in range(1, 5)]
    assert expected == [False, False, True, True]
    validated = [any(k.startswith("val_") for k in logs) for logs in runs[1]["validated"]]
    assert validated == expected
    assert not any(k.startswith("val_") for logs in runs[1]["unvalidated"] for k in logs)
