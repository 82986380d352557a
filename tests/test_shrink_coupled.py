"""Tied units, transposed and grouped convolutions, LayerScale and LayerNormalization in
`prune --structure units` + `shrink`, checked against Keras itself.

ONE subprocess builds tiny models (8x8 inputs), prunes them through the library (no Keras in
the pruning), shrinks, and loads the zeroed and the shrunk model in stock Keras: predictions are
compared there, and all-zero unit counts and parameter counts come from Keras's `get_weights()`
and `count_params()`, never from the tool's own report.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import FIXTURES, KERAS_ENV

SCRIPT = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[-1])  # tests/fixtures
from shrink_spy import keep_zeroed
import numpy as np
import keras
from keras.src.applications.convnext import LayerScale
L = keras.layers
from sparseprune.prune import prune_model
from sparseprune.prune.recipes import PruneSpec
from sparseprune.numeric.schedule import TrainSpec

out = Path(sys.argv[1])
rng = np.random.default_rng(0)
keras.utils.set_random_seed(0)

def randomize(model):
    # Biases and BatchNormalization statistics away from their fresh values, so dead units
    # carry nonzero constants that shrink must fold, not just drop.
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, L.BatchNormalization):
            n = weights[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.5, n),
                               rng.normal(0, 0.5, n), rng.uniform(0.5, 1.5, n)])
        elif isinstance(layer, L.LayerNormalization) and not layer.name.endswith("beta"):
            continue  # fresh beta (0 everywhere): a constant channel comes out as 0
        elif isinstance(layer, LayerScale):
            layer.set_weights([rng.uniform(0.5, 1.5, weights[0].shape)])
        elif weights and len(weights) == 2 and weights[1].ndim == 1:
            layer.set_weights([weights[0], rng.normal(0, 0.3, weights[1].shape)])
    return model

def residual():
    i = keras.Input((8, 8, 3))
    s = L.Conv2D(8, 1, name="stem")(i)
    a = L.Conv2D(8, 1, activation="relu", name="a1")(s)
    a = L.Conv2D(8, 1, name="a2")(a)
    h = L.ReLU(name="r1")(L.Add(name="add1")([s, a]))
    b = L.Conv2D(8, 1, activation="relu", name="b1")(h)
    b = L.Conv2D(8, 1, name="b2")(b)
    h = L.Add(name="add2")([h, b])
    h = L.GlobalAveragePooling2D(name="gap")(h)
    h = L.Dense(6, activation="relu", name="fc")(h)
    return keras.Model(i, L.Dense(3, name="head")(h))

def partly_tied():
    # NASNet's cell shape: sums of branches concatenated with one of their own inputs.
    i = keras.Input((8, 8, 3))
    p = L.Conv2D(6, 1, name="p")(i)
    x1 = L.Add(name="x1")([L.Conv2D(6, 1, name="c1")(i), L.Conv2D(6, 1, name="c2")(i)])
    x2 = L.Add(name="x2")([L.Conv2D(6, 1, name="c3")(i), p])
    h = L.Concatenate(name="cat")([p, x1, x2])
    h = L.Conv2D(5, 1, name="after")(L.ReLU(name="r")(h))
    return keras.Model(i, L.Dense(3, name="head")(L.GlobalAveragePooling2D(name="gap")(h)))

def transposed():
    i = keras.Input((6, 6, 3))
    h = L.Conv2DTranspose(8, 3, strides=2, activation="relu", name="up")(i)
    h = L.Conv2D(4, 1, name="mix")(h)
    return keras.Model(i, L.Dense(3, name="head")(L.GlobalAveragePooling2D(name="gap")(h)))

def convnext_like():
    # A ConvNeXt block without its LayerNormalization: grouped 7x7 depthwise Conv2D
    # (groups == channels == filters), pointwise Dense, LayerScale, residual Add.
    i = keras.Input((8, 8, 3))
    s = L.Conv2D(8, 1, name="stem")(i)
    d = L.Conv2D(8, 3, groups=8, name="dwconv")(L.ZeroPadding2D(name="pad")(s))
    h = L.Dense(16, activation="gelu", name="pw1")(d)
    h = LayerScale(0.5, 8, name="ls")(L.Dense(8, name="pw2")(h))
    h = L.Add(name="add")([s, h])
    g = L.Conv2D(8, 3, groups=2, padding="same", name="grouped")(h)
    h = L.GlobalAveragePooling2D(name="gap")(L.Concatenate(name="cat")([h, g]))
    return keras.Model(i, L.Dense(3, name="head")(h))

def depthwise_valid():
    i = keras.Input((8, 8, 3))
    s = L.Conv2D(8, 1, activation="relu", name="stem")(i)
    d = L.Conv2D(8, 3, groups=8, activation="relu", name="dwconv")(s)
    h = LayerScale(0.5, 8, name="ls")(d)
    return keras.Model(i, L.Dense(3, name="head")(L.GlobalAveragePooling2D(name="gap")(h)))

def layernorm(suffix=""):
    i = keras.Input((5, 6))
    over_channels = L.LayerNormalization(name="ln_channels")(L.Dense(6, name="to_ln")(i))
    over_time = L.LayerNormalization(axis=1, name="ln_time" + suffix)(
        L.Dense(6, name="to_time")(i))
    h = L.Concatenate(name="cat")([L.Dense(4, name="d1")(over_channels),
                                   L.Dense(4, name="d2")(over_time)])
    return keras.Model(i, L.Dense(3, name="head")(L.Flatten(name="flat")(h)))

spied = keep_zeroed(out)  # str(target) -> the zeroed file shrink read

UNIT_AXIS = {"Conv2DTranspose": -2}
def units(model):
    found = {}
    for layer in model.layers:
        if type(layer).__name__ in ("Dense", "Conv2D", "Conv2DTranspose") and layer.weights:
            axis = UNIT_AXIS.get(type(layer).__name__, -1)
            kernel = np.moveaxis(layer.get_weights()[0], axis, -1)
            zero = int((kernel.reshape(-1, kernel.shape[-1]) == 0).all(axis=0).sum())
            found[layer.name] = [int(kernel.shape[-1]), zero]
    return found

digits = {}
def data_for(model, name):
    shape = [64, *model.inputs[0].shape[1:]]
    x = rng.normal(size=shape).astype("float32")
    y = rng.integers(0, 3, 64)
    path = out / (name + ".npz")
    np.savez(path, x_train=x, y_train=y, x_test=x[:16], y_test=y[:16])
    return str(path)

cases = {
    "residual_layer": (residual, {}),
    "residual_global": (residual, {"scope": "global"}),
    "residual_epochs": (residual, {"epochs": 1}),
    "partly_tied": (partly_tied, {}),
    "partly_tied_global": (partly_tied, {"scope": "global"}),
    "transposed": (transposed, {}),
    "transposed_epochs": (transposed, {"epochs": 1}),
    "convnext_like": (convnext_like, {}),
    "depthwise_valid": (depthwise_valid, {}),
    "layernorm": (layernorm, {}),
    "layernorm_beta": (lambda: layernorm("_beta"), {}),
}
report = {}
for name, (build, options) in cases.items():
    model = randomize(build())
    source = out / (name + ".keras")
    model.save(source)
    target = out / ("shrunk_" + name + ".keras")
    train = None
    if options.get("epochs"):
        train = TrainSpec(data=data_for(model, name), epochs=1, batch_size=16,
                          loss="sparse_categorical_crossentropy")
    spec = PruneSpec(target=0.5, structure="units", scope=options.get("scope", "layer"))
    result = prune_model(str(source), str(target), spec, train=train)
    zeroed = keras.models.load_model(spied[str(target)], compile=False)
    shrunk = keras.models.load_model(target, compile=False)
    x = rng.normal(size=[4, *zeroed.inputs[0].shape[1:]]).astype("float32")
    diff = np.abs(zeroed.predict(x, verbose=0) - shrunk.predict(x, verbose=0)).max()
    skipped = {}
    for layer in result.shrink["layers"]:
        for reason, count in layer["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + count
    report[name] = {
        "before": units(zeroed), "after": units(shrunk), "diff": float(diff),
        "params": [zeroed.count_params(), shrunk.count_params()],
        "totals": result.shrink["totals"], "skipped": skipped, "failures": result.failures,
        "chosen": {t.tensor.name: t.units_pruned for t in result.tensors
                   if t.units_pruned is not None},
        "configs": {l.name: {k: l.get_config().get(k) for k in ("filters", "groups",
                    "projection_dim", "units") if k in l.get_config()} for l in shrunk.layers},
    }
print("REPORT" + json.dumps(report))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, needs_tensorflow: None) -> dict:
    out = tmp_path_factory.mktemp("shrink_coupled")
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out), str(FIXTURES)], env=KERAS_ENV,
        capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.split("REPORT", 1)[1])


def zeroed_units(got: dict) -> int:
    return sum(zero for _, zero in got["before"].values())


def assert_exact(got: dict) -> None:
    """Predictions match the zeroed model; params fall by exactly what the report says."""
    assert got["diff"] <= 1e-5, got["diff"]
    assert not got["failures"], got["failures"]
    assert got["params"][1] == got["totals"]["params_after"]
    assert got["params"][0] == got["totals"]["params_before"]


def assert_all_removed(got: dict) -> None:
    """Every unit Keras sees all-zero in the zeroed model is gone from the shrunk one."""
    assert zeroed_units(got) > 0
    assert got["totals"]["dead"] == zeroed_units(got)
    for layer, (count, zero) in got["before"].items():
        assert got["after"][layer][0] == count - zero, layer
    assert not got["skipped"], got["skipped"]


@pytest.mark.parametrize(
    "name", ["residual_layer", "residual_global", "residual_epochs", "partly_tied",
             "partly_tied_global", "transposed", "transposed_epochs"],
)  # fmt: skip
def test_tied_and_transposed_units_are_zeroed_together_and_removed(runs: dict, name: str) -> None:
    got = runs[name]
    assert_exact(got)
    assert_all_removed(got)
    assert got["params"][1] < got["params"][0]


def test_residual_members_lose_the_same_channels(runs: dict) -> None:
    """stem, a2 and b2 are one channel space (two Adds): each loses half of it, the same half."""
    for name in ("residual_layer", "residual_epochs"):
        before = runs[name]["before"]
        assert before["stem"] == before["a2"] == before["b2"] == [8, 4], name
        assert runs[name]["after"]["stem"][0] == 4


def test_global_scope_counts_tied_units_once_per_member(runs: dict) -> None:
    got = runs["residual_global"]
    pooled = sum(units for layer, (units, _) in got["before"].items() if layer != "head")
    assert zeroed_units(got) >= pooled // 2  # a tied class removes one unit in each member
    before = got["before"]
    assert before["stem"][1] == before["a2"][1] == before["b2"][1]


def test_partly_tied_classes(runs: dict) -> None:
    """p is tied to c3 through x2 but also concatenated alone; c1 and c2 through x1."""
    before = runs["partly_tied"]["before"]
    assert before["p"][1] == before["c3"][1] and before["c1"][1] == before["c2"][1]


def test_transposed_units_are_on_axis_minus_two(runs: dict) -> None:
    got = runs["transposed"]
    assert got["before"]["up"] == [8, 4] and got["after"]["up"][0] == 4
    assert got["configs"]["up"]["filters"] == 4
    assert got["chosen"]["up/kernel"] == 4


def test_grouped_depthwise_conv_and_layerscale_follow_the_channels(runs: dict) -> None:
    """A zeroed filter of the depthwise (grouped) conv makes its channel constant too, so the
    channels removed are those dead in the stem or in the depthwise conv: at least half."""
    got = runs["depthwise_valid"]
    assert_exact(got)
    kept = got["after"]["stem"][0]
    assert kept == got["after"]["dwconv"][0] <= 4 and got["after"]["stem"][1] == 0
    assert got["configs"]["dwconv"] == {"filters": kept, "groups": kept}
    assert got["configs"]["ls"] == {"projection_dim": kept}
    assert not got["skipped"]


def test_convnext_like_block_with_exact_reasons(runs: dict) -> None:
    """The residual stream goes through a zero-padded depthwise conv (nonzero constants vary
    at the border) and feeds a grouped conv with 4 channels per group: kept, with reasons;
    the pointwise Dense units (pw1) inside the block go."""
    got = runs["convnext_like"]
    assert_exact(got)
    assert got["after"]["pw1"][0] == 8
    assert got["skipped"] == {  # stem, pw2 and grouped: one group through Add and Concatenate
        "'grouped' is a grouped convolution (groups=2) with 4 input channels per group: "
        "removing one would leave its groups unequal": 12,
    }
    assert got["configs"]["dwconv"] == {"filters": 8, "groups": 8}


def test_layernorm_over_channels_is_refused_and_over_time_passes(runs: dict) -> None:
    got = runs["layernorm"]
    assert_exact(got)
    assert got["after"]["to_time"][0] == 3  # normalized over time: each channel alone
    assert got["after"]["to_ln"][0] == 6
    assert got["skipped"] == {
        "'ln_channels' (LayerNormalization) normalizes over the channels: a removed channel's "
        "constant still enters the mean and variance that scale every other channel, so "
        "removing it cannot be exact": 3,
    }


def test_layernorm_over_time_with_uneven_beta_keeps_constants_with_the_reason(runs: dict) -> None:
    got = runs["layernorm_beta"]
    assert_exact(got)
    assert got["after"]["to_time"][0] == 6
    assert got["skipped"]["'ln_time_beta' normalizes over axis 1: a constant channel comes out "
                          "as its beta, which is not the same along that axis"] == 3


def test_global_choice_ranks_classes_with_single_units_under_caps() -> None:
    """Hand-computed: tensors 0 and 1 tied (class c = unit c of each), tensor 2 alone.
    Class scores are the RMS of the two norms: [1, 5, 0.5]; tensor 2's norms [0.7, 2, 0.1]."""
    import numpy as np

    from sparseprune.prune.coupled import Coupling, global_choice

    tie = Coupling([], [np.arange(3), np.arange(3)], 3, np.zeros(3, bool))
    norms = [np.array([1.0, 5.0, 0.5]), np.array([1.0, 5.0, 0.5]), np.array([0.7, 2.0, 0.1])]
    # ranking: t2u2 0.1, class2 0.5 (2 units), t2u0 0.7, class0 1.0 (2 units), t2u1 2, class1 5
    picks = global_choice(norms, [[0, 1]], [tie], count=4, caps=[3, 3, 3])
    assert [p.tolist() for p in picks] == [
        [False, False, True], [False, False, True], [True, False, True]
    ]
    # tensor 1 may give up one unit only: class 2 goes, class 0 cannot; t2u1 fills the count
    picks = global_choice(norms, [[0, 1]], [tie], count=5, caps=[3, 1, 3])
    assert [p.tolist() for p in picks] == [
        [False, False, True], [False, False, True], [True, True, True]
    ]
