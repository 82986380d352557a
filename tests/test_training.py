"""Training-aware pruning with native Keras masks (`--method mask --epochs N`).

The schedule is tested as pure functions; the CLI runs in subprocesses so this process never
imports TensorFlow. Expectations are read back from the written files with `rawread`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES
from rawread import keras_weights

from sparseprune.errors import InputError
from sparseprune.numeric.schedule import (
    ScheduleSteps,
    TrainSpec,
    resolve_steps,
    should_update,
    sparsity_at,
)

MLP = SAMPLES / "mlp.keras"
DATA = SAMPLES / "digits.npz"
KERNELS = ("hidden1", "hidden2", "head")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def prune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sparseprune", "prune", *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def prune_json(*args: str) -> dict:
    result = prune(*args, "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_polynomial_schedule_endpoints() -> None:
    spec = TrainSpec(data="d.npz", initial_sparsity=0.1)
    steps = ScheduleSteps(begin=10, end=110, frequency=5)
    assert sparsity_at(0, 0.8, spec, steps) == pytest.approx(0.1)
    assert sparsity_at(10, 0.8, spec, steps) == pytest.approx(0.1)
    assert sparsity_at(60, 0.8, spec, steps) == pytest.approx(0.8 - 0.7 * 0.5**3)
    assert sparsity_at(500, 0.8, spec, steps) == pytest.approx(0.8)
    constant = TrainSpec(data="d.npz", schedule="constant")
    assert sparsity_at(0, 0.8, constant, steps) == 0.8


def test_default_steps_prune_a_short_run() -> None:
    steps = resolve_steps(TrainSpec(data="d.npz", epochs=2, batch_size=32), samples=1437)
    assert steps == ScheduleSteps(begin=0, end=45, frequency=11)  # 45 steps/epoch, half, 4/epoch
    updates = [s for s in range(90) if should_update(s, steps)]
    assert updates == [0, 11, 22, 33, 44, 45]


def test_bad_training_options() -> None:
    with pytest.raises(InputError):
        TrainSpec(data="d.npz", epochs=0).validate()
    result = prune(str(MLP), "-o", "/tmp/never.keras", "--target", "0.5", "--epochs", "2")
    assert result.returncode == 2 and "--data" in result.stderr


@pytest.mark.tensorflow
def test_finetune_reaches_exact_targets(tmp_path: Path) -> None:
    out = tmp_path / "ft.keras"
    doc = prune_json(
        str(MLP),
        "-o",
        str(out),
        "--target",
        "0.8",
        "--set",
        "head=0.5",
        "--data",
        str(DATA),
        "--epochs",
        "3",
    )
    before, after = keras_weights(MLP), keras_weights(out)
    for layer, target in (("hidden1", 0.8), ("hidden2", 0.8), ("head", 0.5)):
        kernel = after[layer][0]
        assert np.count_nonzero(kernel) == round(kernel.size * (1 - target))
        assert not np.array_equal(after[layer][1], before[layer][1])  # biases were trained
    training = doc["training"]
    assert training["method"] == "mask" and training["epochs"] == 3
    assert set(training["before"]) >= {"loss", "accuracy"} and training["after"]["accuracy"] > 0.8
    assert len(training["seconds_per_epoch"]) == 3 and doc["checks"]["passed"]


@pytest.mark.tensorflow
def test_fixed_mask_stays_fixed_through_training(tmp_path: Path) -> None:
    mask = (np.random.default_rng(3).random((64, 128)) > 0.7).astype(np.int8)
    np.savez(tmp_path / "mask.npz", hidden1=mask)
    out = tmp_path / "m.keras"
    prune_json(
        str(MLP),
        "-o",
        str(out),
        "--mask",
        str(tmp_path / "mask.npz"),
        "--data",
        str(DATA),
        "--epochs",
        "2",
    )
    before, after = keras_weights(MLP)["hidden1"][0], keras_weights(out)["hidden1"][0]
    assert (after[mask == 0] == 0).all()
    assert np.count_nonzero(after[mask == 1]) == np.count_nonzero(mask)  # all connections live
    assert not np.array_equal(after[mask == 1], before[mask == 1])  # and trained


@pytest.mark.tensorflow
def test_global_scope_pattern_and_strategy(tmp_path: Path) -> None:
    out = tmp_path / "g.keras"
    doc = prune_json(
        str(MLP),
        "-o",
        str(out),
        "--target",
        "0.85",
        "--scope",
        "global",
        "--set",
        "head=0.4",
        "--data",
        str(DATA),
        "--epochs",
        "2",
        "--strategy",
        "mirrored",
    )
    after = keras_weights(out)
    total = sum(after[k][0].size for k in KERNELS)
    assert sum(np.count_nonzero(after[k][0] == 0) for k in KERNELS) >= round(total * 0.85) - 1
    assert np.mean(after["head"][0] == 0) <= 0.4 + 1e-9
    assert doc["checks"]["passed"]
    out = tmp_path / "p.keras"
    prune_json(
        str(MLP),
        "-o",
        str(out),
        "--pattern",
        "2:4",
        "--exclude",
        "head",
        "--data",
        str(DATA),
        "--epochs",
        "2",
    )
    kernel = keras_weights(out)["hidden1"][0]
    assert ((kernel == 0).T.reshape(128, -1, 4).sum(axis=2) >= 2).all()


@pytest.mark.tensorflow
def test_tfmot_one_shot_writes_the_same_file_as_the_mask_method(tmp_path: Path) -> None:
    """TFMOT's own mask code and the file-level rule zero the same weights; zeros are canonical
    (+0.0, not the -0.0 that multiplying by a mask leaves), so even the bytes agree."""
    by_tfmot, by_file = tmp_path / "t.keras", tmp_path / "f.keras"
    doc = prune_json(str(MLP), "-o", str(by_tfmot), "--target", "0.8", "--method", "tfmot")
    prune_json(str(MLP), "-o", str(by_file), "--target", "0.8")
    assert doc["training"]["method"] == "tfmot" and doc["checks"]["passed"]
    assert by_tfmot.read_bytes() == by_file.read_bytes()


@pytest.mark.tensorflow
def test_tfmot_fine_tuning_through_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "t.keras"
    doc = prune_json(
        str(MLP),
        "-o",
        str(out),
        "--target",
        "0.8",
        "--method",
        "tfmot",
        "--data",
        str(DATA),
        "--epochs",
        "2",
    )
    for layer in KERNELS:
        kernel = keras_weights(out)[layer][0]
        assert np.count_nonzero(kernel) == round(kernel.size * 0.2)
        assert not (np.signbit(kernel) & (kernel == 0)).any()  # no -0.0 written
    assert doc["training"]["epochs"] == 2 and doc["training"]["after"]["accuracy"] > 0.8


CUSTOM = Path(__file__).parent / "fixtures" / "custom_layers.py"
BUILD_CUSTOM = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("custom_layers", sys.argv[1])
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
import keras
model = keras.Sequential([keras.Input((64,)), module.Projection(32, name="proj"),
                          keras.layers.Activation("relu"), keras.layers.Dense(10, name="head")])
model.save(sys.argv[2])
"""


@pytest.mark.tensorflow
def test_custom_layer_trains_with_include_unknown(tmp_path: Path) -> None:
    source, out = tmp_path / "custom.keras", tmp_path / "c.keras"
    subprocess.run(
        [sys.executable, "-c", BUILD_CUSTOM, str(CUSTOM), str(source)],
        env=ENV,
        check=True,
        capture_output=True,
    )
    base = [
        str(source),
        "-o",
        str(out),
        "--target",
        "0.5",
        "--include-unknown",
        "--data",
        str(DATA),
        "--epochs",
        "1",
        "--loss",
        "sparse_categorical_crossentropy",
        "--custom-objects",
        str(CUSTOM),
    ]
    refused = prune(*base)
    assert refused.returncode == 2 and "--unsafe" in refused.stderr
    doc = prune_json(*base, "--unsafe")
    weight = keras_weights(out)["proj"][0]
    assert np.count_nonzero(weight) == weight.size // 2
    assert {t["name"] for t in doc["tensors"]} == {"proj/var0", "head/kernel"}


@pytest.mark.tensorflow
def test_multiworker_strategy_single_worker(tmp_path: Path) -> None:
    """Without TF_CONFIG, MultiWorkerMirroredStrategy runs as one worker: the same command a
    cluster runs on every worker."""
    out = tmp_path / "w.keras"
    doc = prune_json(
        str(MLP),
        "-o",
        str(out),
        "--target",
        "0.5",
        "--data",
        str(DATA),
        "--epochs",
        "1",
        "--strategy",
        "multiworker",
    )
    kernel = keras_weights(out)["hidden1"][0]
    assert np.count_nonzero(kernel) == kernel.size // 2 and doc["checks"]["passed"]


def mlp_accuracy(weights: dict, x: np.ndarray, y: np.ndarray) -> float:
    """The digits MLP's forward pass in numpy (relu, relu, argmax), from the file's weights."""
    hidden = x
    for layer in ("hidden1", "hidden2"):
        kernel, bias = weights[layer]
        hidden = np.maximum(hidden @ kernel + bias, 0)
    kernel, bias = weights["head"]
    return float(np.mean(np.argmax(hidden @ kernel + bias, axis=1) == y))


@pytest.mark.tensorflow
def test_held_out_90_percent_within_two_points_and_never_below_one_shot(tmp_path: Path) -> None:
    """Training sees the training split only (validation is held out of it); the test split
    is seen by nobody until this check, which computes accuracy with numpy."""
    with np.load(DATA) as digits:
        x_test, y_test = digits["x_test"], digits["y_test"]
        np.savez(tmp_path / "train.npz", x=digits["x_train"], y=digits["y_train"])
    one_shot, tuned = tmp_path / "o.keras", tmp_path / "t.keras"
    prune_json(str(MLP), "-o", str(one_shot), "--target", "0.9")
    doc = prune_json(
        str(MLP), "-o", str(tuned), "--target", "0.9",
        "--data", str(tmp_path / "train.npz"), "--epochs", "30",
    )  # fmt: skip
    dense = mlp_accuracy(keras_weights(MLP), x_test, y_test)
    tuned_acc = mlp_accuracy(keras_weights(tuned), x_test, y_test)
    assert tuned_acc >= dense - 0.02
    assert tuned_acc >= mlp_accuracy(keras_weights(one_shot), x_test, y_test)
    assert doc["training"]["restored"]["restore_best"] is True
    assert doc["training"]["after"]["accuracy"] >= doc["training"]["one_shot"]["accuracy"]


@pytest.mark.tensorflow
def test_restore_best_falls_back_to_the_one_shot_prune(tmp_path: Path) -> None:
    """A learning rate that wrecks training: the written weights are the one-shot prune's."""
    one_shot, tuned = tmp_path / "o.keras", tmp_path / "t.keras"
    prune_json(str(MLP), "-o", str(one_shot), "--target", "0.8")
    doc = prune_json(
        str(MLP), "-o", str(tuned), "--target", "0.8", "--data", str(DATA),
        "--epochs", "1", "--lr", "50", "--end-step", "0",
    )  # fmt: skip
    assert doc["training"]["restored"]["epoch"] == 0
    expected, got = keras_weights(one_shot), keras_weights(tuned)
    for layer in KERNELS:
        assert np.array_equal(expected[layer][0], got[layer][0])
        assert np.array_equal(expected[layer][1], got[layer][1])
    off = prune_json(
        str(MLP), "-o", str(tmp_path / "n.keras"), "--target", "0.8", "--data", str(DATA),
        "--epochs", "1", "--lr", "50", "--no-restore-best",
    )  # fmt: skip
    assert off["training"]["restored"]["restore_best"] is False


BUILD_IMAGE_MODEL = """
import sys, keras
model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 255),
                          keras.layers.Flatten(), keras.layers.Dense(32, activation="relu",
                          name="hidden"), keras.layers.Dense(3, activation="softmax", name="head")])
model.save(sys.argv[1])
"""


@pytest.mark.tensorflow
def test_image_folder_and_csv_data(tmp_path: Path) -> None:
    from PIL import Image

    with np.load(DATA) as digits:
        x, y = digits["x"], digits["y"]
    folder = tmp_path / "images"
    for label in range(3):
        (folder / f"class_{label}").mkdir(parents=True)
        for i in np.flatnonzero(y == label)[:40]:
            pixels = (x[i].reshape(8, 8) * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"class_{label}" / f"{i}.png")
    model = tmp_path / "img.keras"
    subprocess.run([sys.executable, "-c", BUILD_IMAGE_MODEL, str(model)], env=ENV, check=True,
                   capture_output=True)  # fmt: skip
    out = tmp_path / "img-pruned.keras"
    doc = prune_json(str(model), "-o", str(out), "--target", "0.5", "--data", str(folder),
                     "--epochs", "15", "--lr", "0.01",
                     "--loss", "sparse_categorical_crossentropy")  # fmt: skip
    kernel = keras_weights(out)["hidden"][0]
    assert np.count_nonzero(kernel) == kernel.size // 2
    # 3 classes of 40 images: 96 train, 24 held out; a random-init model learns them
    assert doc["training"]["after"]["accuracy"] > 0.5
    csv_path = tmp_path / "digits.csv"
    names = ",".join(f"p{i}" for i in range(64))
    rows = [
        ",".join(f"{v:g}" for v in row) + f",digit{label}" for row, label in zip(x, y, strict=True)
    ]
    csv_path.write_text(f"{names},digit\n" + "\n".join(rows) + "\n")
    out = tmp_path / "csv.keras"
    doc = prune_json(str(MLP), "-o", str(out), "--target", "0.8", "--data", str(csv_path),
                     "--label", "digit", "--epochs", "2")  # fmt: skip
    assert doc["training"]["after"]["accuracy"] > 0.8  # digit0..digit9 map to labels 0..9
    refused = prune(str(MLP), "-o", str(tmp_path / "x.keras"), "--target", "0.8",
                    "--data", str(csv_path), "--epochs", "1")  # fmt: skip
    assert refused.returncode == 2 and "--label" in refused.stderr
