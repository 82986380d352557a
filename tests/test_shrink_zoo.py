"""`prune --structure units` then `shrink` on models the project did not write.

keras.applications ResNet50, MobileNetV2 (alpha 0.35), DenseNet121 (weights=None, 32x32: the
zoo's files, conftest's `zoo_dir`, built once per session with tests/test_zoo.py), that
MobileNetV2 with random BatchNormalization statistics (so dead filters carry nonzero constants),
small RNN/attention models and tf_keras files. ONE subprocess builds the small ones, prunes half
of every prunable layer's units (the library, which imports no Keras), shrinks, and compares the
shrunk model's predictions with the zeroed model's in stock Keras; expectations (all-zero unit
columns, unit counts, parameter counts) come from Keras's own `get_weights()` there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, KERAS_ENV

ZOO = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[-1])  # tests/fixtures
from shrink_spy import keep_zeroed
import numpy as np
import keras
L = keras.layers
from sparseprune.prune import prune_model
from sparseprune.prune.recipes import PruneSpec
from sparseprune.shrink.shrinking import shrink_model

out, zoo = Path(sys.argv[1]), Path(sys.argv[2])
rng = np.random.default_rng(0)
keras.utils.set_random_seed(0)

def randomize_bn(model):
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.5, n),
                               rng.normal(0, 0.5, n), rng.uniform(0.5, 1.5, n)])
    return model

def rnn_block():
    i = keras.Input((6, 5))
    h = L.Dense(8, activation="tanh", name="to_lstm")(i)
    h = L.LSTM(4, return_sequences=True, name="lstm")(h)
    n = L.LayerNormalization(name="ln")(L.Dense(6, name="to_ln")(h))
    b = L.Bidirectional(L.GRU(3), name="bigru")(L.Dense(6, name="to_bi")(n))
    return keras.Model(i, L.Dense(2, name="head")(b))

def separable():
    i = keras.Input((12, 12, 3))
    h = L.SeparableConv2D(8, 3, activation="relu", name="sep1")(i)
    h = L.SeparableConv2D(6, 3, padding="same", name="sep2")(h)
    h = L.Conv2DTranspose(5, 3, name="up")(L.ZeroPadding2D(name="pad")(h))
    h = L.AveragePooling2D(2, padding="same", name="avg")(L.DepthwiseConv2D(3, name="dw")(h))
    return keras.Model(i, L.Dense(2, name="head")(L.GlobalMaxPooling2D(name="gmp")(h)))

shared = ("resnet50.keras", "mobilenetv2.h5", "densenet121.h5")  # the zoo's files, read only
models = {
    **{name: None for name in shared},
    "mobilenetv2_bn.keras": lambda: randomize_bn(
        keras.models.load_model(zoo / "mobilenetv2.keras", compile=False)),
    "rnn.h5": rnn_block,
    "separable.keras": separable,
}
import tf_keras
T = tf_keras.layers
def tf_cnn():
    return tf_keras.Sequential([T.Conv2D(8, 3, activation="relu", input_shape=(10, 10, 3)),
                                T.BatchNormalization(), T.MaxPooling2D(), T.Conv2D(6, 3),
                                T.GlobalAveragePooling2D(), T.Dense(4, activation="relu"),
                                T.Dense(2)])
def tf_lstm():
    return tf_keras.Sequential([T.Embedding(30, 6, input_length=7), T.Dense(8, activation="relu"),
                                T.LSTM(5), T.Dense(3)])
tf_models = {"tf_cnn.h5": tf_cnn, "tf_cnn.keras": tf_cnn, "tf_lstm.h5": tf_lstm}

spied = keep_zeroed(out)  # str(target) -> the zeroed file shrink read

def units(model):
    found = {}
    for layer in model.layers:
        weights = {w.name.split("/")[-1].split(":")[0]: w.numpy() for w in layer.weights}
        kernel = weights.get("pointwise_kernel", weights.get("kernel"))
        if kernel is not None and type(layer).__name__ in (
                "Dense", "Conv2D", "SeparableConv2D"):
            zero = int((kernel.reshape(-1, kernel.shape[-1]) == 0).all(axis=0).sum())
            found[layer.name] = [int(kernel.shape[-1]), zero]
    return found

def inputs(model):
    shape = [4, *model.inputs[0].shape[1:]]
    if "int" in str(model.inputs[0].dtype) or model.layers[0].__class__.__name__ == "Embedding":
        return rng.integers(0, 30, shape)
    return rng.normal(size=shape).astype("float32")

report = {}
for name, build in [*models.items(), *tf_models.items()]:
    source = zoo / name if name in shared else out / name
    if name not in shared:
        build().save(source)
    target = out / ("shrunk_" + name)
    result = prune_model(str(source), str(target), PruneSpec(target=0.5, structure="units"))
    loader = tf_keras.models.load_model if name in tf_models else keras.models.load_model
    zeroed = loader(spied[str(target)], compile=False)
    shrunk = loader(target, compile=False)
    x = inputs(zeroed)
    # one eager call each: predict() would trace a tf.function per model first
    got, want = (np.asarray(m(x, training=False)) for m in (shrunk, zeroed))
    diff = np.abs(want - got).max()
    skipped = {}
    for layer in result.shrink["layers"]:
        for reason, count in layer["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + count
    report[name] = {"before": units(zeroed), "after": units(shrunk), "diff": float(diff),
                    "params": [zeroed.count_params(), shrunk.count_params()],
                    "totals": result.shrink["totals"], "skipped": skipped,
                    "failures": result.failures}
    # shrink on the unmodified file never raises and changes nothing
    plain = shrink_model(str(source), out / ("plain_" + name))
    report[name]["plain_changed"] = plain.changed
    for path in (target, spied[str(target)], out / ("plain_" + name)):
        Path(path).unlink()
    if name not in shared:
        source.unlink()
print("REPORT" + json.dumps(report))
"""


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory, zoo_dir: Path) -> dict:
    out = tmp_path_factory.mktemp("shrink_zoo")
    run = subprocess.run(
        [sys.executable, "-c", ZOO, str(out), str(zoo_dir), str(FIXTURES)], env=KERAS_ENV,
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.split("REPORT", 1)[1])


ALL_REMOVED = ["resnet50.keras", "mobilenetv2.h5", "densenet121.h5", "tf_cnn.h5", "tf_cnn.keras"]


@pytest.mark.parametrize("name", ALL_REMOVED)
def test_every_zeroed_unit_is_removed_and_predictions_match(zoo: dict, name: str) -> None:
    """Fresh BatchNormalization and zero biases: every dead unit's constant is 0, so every unit
    prune zeroed goes, coupled residual members included (they are zeroed together)."""
    got = zoo[name]
    assert got["diff"] <= 1e-5 and not got["failures"]
    zeroed = sum(zero for _, zero in got["before"].values())
    assert zeroed > 0 and got["totals"]["dead"] == zeroed
    for layer, (units, zero) in got["before"].items():
        assert got["after"][layer][0] == units - zero, layer
    assert got["params"][1] == got["totals"]["params_after"] < got["params"][0]
    assert not got["plain_changed"]


def test_resnet50_loses_half_its_filters(zoo: dict) -> None:
    got = zoo["resnet50.keras"]
    prunable = sum(units for layer, (units, _) in got["before"].items() if layer != "predictions")
    assert got["totals"]["dead"] == prunable // 2
    assert got["params"][1] < 0.3 * got["params"][0]


def test_random_batchnorm_constants_are_folded_or_kept_with_reasons(zoo: dict) -> None:
    """Nonzero constants cannot pass a window that pads (depthwise 3x3 'same'); the rest go."""
    got = zoo["mobilenetv2_bn.keras"]
    assert got["diff"] <= 1e-5 and not got["failures"]
    zeroed = sum(zero for _, zero in got["before"].values())
    removed = got["totals"]["dead"]
    assert 0 < removed < zeroed
    assert sum(got["skipped"].values()) == zeroed - removed
    assert all("pads" in reason or "not constant" in reason for reason in got["skipped"])


def test_rnn_consumers_fold_and_stops_say_why(zoo: dict) -> None:
    got = zoo["rnn.h5"]
    assert got["diff"] <= 1e-5 and not got["failures"]
    assert got["after"]["to_lstm"][0] == 4  # folded into the LSTM's input bias
    assert got["after"]["to_ln"][0] == 6 and got["after"]["to_bi"][0] == 6
    assert got["skipped"] == {
        "'ln' (LayerNormalization) normalizes over the channels: a removed channel's "
        "constant still enters the mean and variance that scale every other channel, so "
        "removing it cannot be exact": 3,
        "channels feed Bidirectional 'bigru', which keeps its weights in sub-layers "
        "(forward_layer, backward_layer)": 3,
    }


def test_separable_transpose_depthwise_and_padding(zoo: dict) -> None:
    got = zoo["separable.keras"]
    assert got["diff"] <= 1e-5 and not got["failures"]
    assert got["after"]["sep1"][0] == 4  # consumed by a separable conv (valid) and folded
    assert got["after"]["sep2"][0] == 3  # through ZeroPadding into a transposed conv: zeros
    assert got["params"][1] == got["totals"]["params_after"]


def test_tf_keras_lstm_file(zoo: dict) -> None:
    got = zoo["tf_lstm.h5"]
    assert got["diff"] <= 1e-5 and not got["failures"]
    assert next(iter(got["after"].values()))[0] == 4  # Dense(8) before the LSTM, half removed
