"""`--method tfmot`: TFMOT on a tf_keras rebuild of the model, in a worker process.

Everything that imports TensorFlow runs in subprocesses: the worker (through the client, as the
CLI calls it) and one fixture script that saves the extra models. The test process itself never
imports TensorFlow, Keras or TFMOT.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES

from sparseprune.errors import InputError
from sparseprune.formats import open_model
from sparseprune.keras_ops.tfmot import client as tfmot_client
from sparseprune.keras_ops.tfmot.client import check_bridge, run_tfmot
from sparseprune.numeric.masks import prune_count
from sparseprune.numeric.schedule import TrainSpec, resolve_steps
from sparseprune.prune import prune_model
from sparseprune.prune.recipes import PruneSpec

MLP = SAMPLES / "mlp.keras"
CNN = SAMPLES / "cnn.keras"
DIGITS = SAMPLES / "digits.npz"
KERNELS = ("hidden1/kernel", "hidden2/kernel", "head/kernel")
ATOL = 1e-5

# Saves the models the bridge is checked on: Keras applications, a "zoo" Functional model with
# the table's other classes (two inputs, a shared layer, regularizers, constraints, activations
# by name), and two models the bridge must refuse.
MAKE_MODELS = r"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
import numpy as np
from keras import layers

out = sys.argv[1]
keras.utils.set_random_seed(0)


# Untrained, activations fade to nothing and every input gives the same output; one
# training-mode pass with momentum 0 sets each BatchNormalization's statistics to real ones.
def calibrated(model):
    norms = [l for l in model.layers if isinstance(l, layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    model(np.random.default_rng(1).normal(size=(16, 32, 32, 3)).astype("float32"), training=True)
    for layer in norms:
        layer.momentum = 0.99
    return model


calibrated(keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35)).save(
    f"{out}/mobilenet_v2.keras")
calibrated(keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3))).save(
    f"{out}/resnet50.keras")

img = keras.Input((8, 8, 3), name="img")
tok = keras.Input((6,), dtype="int32", name="tok")
x = layers.Rescaling(0.5, offset=0.1)(img)
a = layers.SeparableConv2D(4, 3, padding="same", activation="relu6", name="sep")(x)
a = layers.BatchNormalization(name="bn")(a)
b = layers.Conv2DTranspose(4, 3, padding="same", activation="silu", name="deconv",
                           kernel_regularizer=keras.regularizers.L2(1e-3),
                           kernel_constraint=keras.constraints.MaxNorm(2.0))(x)
c = layers.Conv2D(4, 1, activation="gelu", name="pointwise")(x)
d = layers.DepthwiseConv2D(3, padding="same", activation="tanh", name="depthwise")(c)
merged = [layers.Multiply()([a, b]), layers.Subtract()([a, c]), layers.Average()([a, b, d]),
          layers.Maximum()([a, c]), layers.Minimum()([b, d]), layers.Add()([a, d])]
y = layers.Concatenate(name="cat")(merged)
y = layers.ZeroPadding2D(((0, 1), (1, 0)))(y)
y = layers.AveragePooling2D(2)(y)
y = layers.MaxPooling2D(2, padding="same")(y)
y = layers.LeakyReLU(0.2)(y)
y = layers.ReLU(max_value=3.0, negative_slope=0.1)(y)
image = layers.Concatenate()([layers.GlobalMaxPooling2D()(y),
                              layers.GlobalAveragePooling2D()(y),
                              layers.Flatten()(layers.Activation("sigmoid")(y))])
e = layers.Embedding(10, 4, name="emb")(tok)
e = layers.ZeroPadding1D(1)(e)
e = layers.Conv1D(6, 3, activation="elu", name="conv1d")(e)
e = layers.MaxPooling1D(2)(e)
e = layers.SeparableConv1D(4, 2, padding="same", name="sep1d")(e)
e = layers.AveragePooling1D(1)(e)
e = layers.Reshape((-1, 4))(e)
shared = layers.Dense(3, activation="softplus", name="shared")
tokens = layers.Concatenate()([shared(layers.GlobalAveragePooling1D()(e)),
                               shared(layers.GlobalMaxPooling1D()(e))])
z = layers.Concatenate()([image, tokens])
z = layers.Dropout(0.3)(z)
z = layers.Dense(6, activation="selu", name="dense",
                 bias_regularizer=keras.regularizers.L1L2(1e-4, 1e-4))(z)
out_ = layers.Softmax()(z)
zoo = keras.Model([img, tok], out_, name="zoo")
rng = np.random.default_rng(0)
bn = zoo.get_layer("bn")
bn.set_weights([rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4),
                rng.uniform(0.5, 2, 4)])
zoo.save(f"{out}/zoo.keras")

keras.Sequential([keras.Input((8,)), layers.Dense(4, name="dense"),
                  layers.LayerNormalization(name="norm"), layers.Dense(2, name="head")],
                 name="with_layernorm").save(f"{out}/layernorm.keras")

@keras.saving.register_keras_serializable(package="demo")
class Doubler(layers.Layer):
    def call(self, x):
        return x * 2.0

keras.Sequential([keras.Input((8,)), layers.Dense(4, name="dense"), Doubler(name="doubler")],
                 name="with_custom").save(f"{out}/custom.keras")
"""


@pytest.fixture(autouse=True)
def _cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tfmot_models")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run(
        [sys.executable, "-c", MAKE_MODELS, str(out)],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    return out


def read_file(path: Path) -> dict[str, np.ndarray]:
    with open_model(path) as model:
        return {t.name: model.read(t) for t in model.model_tensors}


def test_one_shot_zeroes_what_the_file_level_mask_zeroes(tmp_path: Path) -> None:
    result = run_tfmot(str(MLP), dict.fromkeys(KERNELS, 0.8), None, None, tmp_path / "work")
    prune_model(MLP, tmp_path / "mask.keras", PruneSpec(target=0.8))
    masked, original = read_file(tmp_path / "mask.keras"), read_file(MLP)
    assert set(result.weights) == set(original)
    for name, values in result.weights.items():
        if name in KERNELS:
            np.testing.assert_array_equal(values == 0, masked[name] == 0, err_msg=name)
            kept = values != 0
            np.testing.assert_array_equal(values[kept], original[name][kept])  # masked only
        else:
            np.testing.assert_array_equal(values, original[name], err_msg=name)
    assert result.metrics["steps"] is None
    assert result.metrics["bridge"]["max_abs_diff"] <= ATOL


def test_one_shot_n_of_m_matches_the_file_level_pattern(tmp_path: Path) -> None:
    """sparseprune's N:M (N zeros in every M inputs) is TFMOT's sparsity_m_by_n=(N, M)."""
    result = run_tfmot(str(MLP), dict.fromkeys(KERNELS, 0.0), None, (2, 4), tmp_path / "work")
    prune_model(MLP, tmp_path / "nm.keras", PruneSpec(pattern=(2, 4)))
    masked = read_file(tmp_path / "nm.keras")
    for name in KERNELS:
        np.testing.assert_array_equal(result.weights[name] == 0, masked[name] == 0, err_msg=name)


def test_fine_tuning_reaches_each_target_exactly(tmp_path: Path) -> None:
    targets = {"hidden1/kernel": 0.8, "hidden2/kernel": 0.8, "head/kernel": 0.5}
    train = TrainSpec(data=str(DIGITS), epochs=2, batch_size=32)
    records: list[dict] = []
    result = run_tfmot(str(MLP), targets, train, None, tmp_path / "work", progress=records.append)
    for name, target in targets.items():
        values = result.weights[name]
        assert np.count_nonzero(values == 0) == prune_count(values.size, target), name
    metrics = result.metrics
    for phase in ("before", "after"):
        assert set(metrics[phase]) >= {"loss", "accuracy"}
        assert 0.5 < metrics[phase]["accuracy"] <= 1.0
    assert len(metrics["seconds_per_epoch"]) == 2
    with np.load(DIGITS, allow_pickle=False) as data:
        samples = len(data["x"])
    assert metrics["steps"] == asdict(resolve_steps(train, samples))
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[-1]["sparsity"] == pytest.approx(0.8, abs=0.02)
    assert not np.array_equal(result.weights["hidden1/bias"], read_file(MLP)["hidden1/bias"])


def test_bridge_reproduces_small_models(models: Path, tmp_path: Path) -> None:
    paths = [MLP, CNN, models / "mobilenet_v2.keras", models / "zoo.keras"]
    reports = check_bridge([str(p) for p in paths], tmp_path / "work")
    for path, report in zip(paths, reports, strict=True):
        assert "error" not in report, report
        assert report["max_abs_diff"] <= ATOL, path.name
        assert report["output_std"] > 0, path.name  # the comparison is not trivially equal


def test_bridge_reproduces_resnet50(models: Path, tmp_path: Path) -> None:
    (report,) = check_bridge([str(models / "resnet50.keras")], tmp_path / "work")
    assert "error" not in report, report
    assert report["layers"] == 177
    assert report["max_abs_diff"] <= ATOL
    assert report["output_std"] > 0


@pytest.mark.parametrize(
    ("model", "target", "expected"),
    [
        ("layernorm.keras", "dense/kernel", "layer 'norm' (LayerNormalization) is not supported"),
        ("custom.keras", "dense/kernel", "doubler"),
        (str(CNN), "bn1/gamma", "TFMOT does not prune bn1/gamma (BatchNormalization)"),
    ],
)
def test_what_tfmot_cannot_do_is_one_clear_sentence(
    models: Path, tmp_path: Path, model: str, target: str, expected: str
) -> None:
    with pytest.raises(InputError) as caught:
        run_tfmot(str(models / model), {target: 0.5}, None, None, tmp_path / "work")
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    assert "Traceback" not in message


def test_worker_failures_come_back_as_one_sentence(tmp_path: Path) -> None:
    (tmp_path / tfmot_client.ERROR).write_text(json.dumps({"error": "it broke."}))
    assert tfmot_client._failure(tmp_path, 2) == "it broke."
    (tmp_path / tfmot_client.ERROR).unlink()
    (tmp_path / tfmot_client.LOG).write_text("noise\nSegmentation fault\n\n")
    message = tfmot_client._failure(tmp_path, -11)
    assert "exit code -11 (Segmentation fault)" in message


def test_client_imports_no_tensorflow() -> None:
    code = (
        "import sys, sparseprune.keras_ops.tfmot.client\n"
        "print([m for m in ('tensorflow', 'keras', 'tf_keras', 'tensorflow_model_optimization')"
        " if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
