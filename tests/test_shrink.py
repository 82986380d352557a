"""`shrink`: dead units removed exactly, on the file.

Expectations come from h5py + numpy (a separate fixed-point count over the input kernels) and from
stock Keras in ONE subprocess that loads every output and compares predictions with the input's.
Models with Functional graphs are built by a subprocess too; the test process never imports
TensorFlow.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from sparseprune.cli.shrink_cmd import shrink
from sparseprune.shrink.shrinking import ShrinkResult, shrink_model

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}

# Saves small Functional models whose dead units are set by hand (kernel slices zeroed, biases
# chosen so the folded constants are not zero).
BUILD = r"""
import sys
import keras
import numpy as np
L = keras.layers
out = sys.argv[1]
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)

def kill(model, name, units, bias):
    layer = model.get_layer(name)
    kernel, b = layer.get_weights()
    kernel[..., units] = 0.0
    b[units] = bias
    layer.set_weights([kernel, b])

i = keras.Input((8, 8, 3))
h = L.Conv2D(6, 3, activation="relu", name="c1")(i)
h = L.BatchNormalization(name="bn")(h)
h = L.Conv2D(5, 3, activation="relu", name="c2")(h)
h = L.Flatten(name="flat")(L.MaxPooling2D(name="pool")(h))
h = L.Dropout(0.2, name="drop")(L.Dense(7, activation="tanh", name="d1")(h))
m = keras.Model(i, L.Dense(3, name="out")(h))
m.get_layer("bn").set_weights([rng.uniform(0.5, 2, 6), rng.normal(size=6), rng.normal(size=6),
                               rng.uniform(0.5, 2, 6)])
kill(m, "c1", [1, 4], [0.7, -0.3])
kill(m, "c2", [2], [0.4])
kill(m, "d1", [0, 5], [0.9, -1.2])
m.save(f"{out}/chain.keras")

x = keras.Input((6,))
d0 = L.Dense(8, activation="relu", name="d0")(x)
p = L.BatchNormalization(name="bn_p")(L.Dense(8, name="p1")(d0))
q = L.Dense(8, activation="relu", name="q1")(d0)
y = L.Activation("relu", name="act")(L.Add(name="add")([p, q]))
z = L.Subtract(name="sub")([y, L.Dense(8, name="w1")(x)])
m = keras.Model(x, L.Dense(4, name="r")(z))
m.get_layer("bn_p").set_weights([rng.uniform(0.5, 2, 8), rng.normal(size=8), rng.normal(size=8),
                                 rng.uniform(0.5, 2, 8)])
kill(m, "d0", [2], [0.3])
kill(m, "p1", [3, 5], [0.5, 0.2])
kill(m, "q1", [3, 5], [0.1, 0.4])
kill(m, "w1", [3], [0.6])
m.save(f"{out}/resid.keras")
m.save(f"{out}/resid.h5")

x = keras.Input((6,))
a = L.Dense(4, activation="relu", name="a")(x)
b = L.Dense(4, activation="relu", name="b")(x)
c = L.Dense(4, activation="relu", name="c")(x)
h = L.BatchNormalization(name="bn_cat")(L.Concatenate(name="cat")([a, L.Add(name="add")([b, c])]))
m = keras.Model(x, L.Dense(3, name="head")(h))
m.get_layer("bn_cat").set_weights([rng.uniform(0.5, 2, 8), rng.normal(size=8), rng.normal(size=8),
                                   rng.uniform(0.5, 2, 8)])
kill(m, "a", [1], [0.2])
kill(m, "b", [0, 2], [0.3, 0.1])
kill(m, "c", [2], [0.5])
m.save(f"{out}/concat.keras")

x = keras.Input((6,))
h = L.Reshape((2, 2), name="rs")(L.Dense(4, activation="relu", name="a")(x))
m = keras.Model(x, L.Dense(3, name="head")(L.Flatten(name="flat")(h)))
kill(m, "a", [1], [0.2])
m.save(f"{out}/reshape.keras")

i = keras.Input((6, 6, 2))
h = L.Conv2D(4, 3, padding="same", activation="relu", name="s1")(i)
h = L.Conv2D(3, 3, padding="same", activation="relu", name="s2")(h)
m = keras.Model(i, L.Dense(2, name="head")(L.GlobalAveragePooling2D(name="gap")(h)))
kill(m, "s1", [1, 2], [0.5, -0.5])
kill(m, "s2", [0], [0.8])
m.save(f"{out}/same.keras")
"""

# Loads every (input, output) pair with stock Keras, compares predictions; runs `shrink --verify`.
CHECK = r"""
import json, sys
import keras
import numpy as np
import typer
from typer.testing import CliRunner
from sparseprune.cli.shrink_cmd import shrink
jobs = json.loads(sys.argv[1])
report = {}
for source, written, data in jobs["pairs"]:
    before, after = keras.models.load_model(source), keras.models.load_model(written)
    shape = [32, *before.inputs[0].shape[1:]]
    x = np.load(data)["x_test"] if data else np.random.default_rng(0).normal(size=shape)
    diff = np.abs(before.predict(x, verbose=0) - after.predict(x, verbose=0))
    report[written] = {"max": float(diff.max()), "params": after.count_params()}
app = typer.Typer()
app.command()(shrink)
run = CliRunner().invoke(app, jobs["cli"])
report["cli"] = {"code": run.exit_code, "output": run.output}
print("REPORT" + json.dumps(report))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, needs_tensorflow: None) -> Path:
    out = tmp_path_factory.mktemp("shrink_in")
    subprocess.run(
        [sys.executable, "-c", BUILD, str(out)], check=True, env=ENV, capture_output=True
    )
    return out


@pytest.fixture(scope="module")
def shrunk(built: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ShrinkResult]:
    out = tmp_path_factory.mktemp("shrink_out")
    sources = {
        "l1_mlp": SAMPLES / "l1_mlp.keras",
        "mlp": SAMPLES / "mlp.keras",
        "cnn": SAMPLES / "cnn.keras",
        **{p.stem if p.suffix == ".keras" else p.name: p for p in built.iterdir()},
    }
    return {
        name: shrink_model(str(path), out / f"{name}{path.suffix}")
        for name, path in sources.items()
    }


def layers(result: ShrinkResult) -> dict:
    return {layer.name: layer for layer in result.layers}


def kernels(path: Path) -> list[np.ndarray]:
    """Kernels of a Sequential Dense .keras, in storage-key order (dense, dense_1, ...)."""
    with zipfile.ZipFile(path) as archive:
        store = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
        keys = sorted(store["layers"], key=lambda k: (len(k), k))
        return [store[f"layers/{k}/vars/0"][()] for k in keys]


def expected_units(weights: list[np.ndarray], threshold: float = 1e-15) -> list[int]:
    """Independent count: drop hidden units with no input or no output until nothing changes."""
    weights = [w.copy() for w in weights]
    changed = True
    while changed:
        changed = False
        for i in range(len(weights) - 1):
            near = [np.abs(w) <= threshold for w in weights[i : i + 2]]
            drop = near[0].all(axis=0) | near[1].all(axis=1)
            if drop.all():
                drop[0] = False
            if drop.any():
                weights[i], weights[i + 1] = weights[i][:, ~drop], weights[i + 1][~drop]
                changed = True
    return [w.shape[1] for w in weights]


def test_l1_mlp_removes_the_dead_units_counted_with_numpy(shrunk: dict) -> None:
    result = shrunk["l1_mlp"]
    original = kernels(SAMPLES / "l1_mlp.keras")
    want = expected_units(original)
    got = layers(result)
    assert [got[n].units_after for n in ("hidden1", "hidden2", "head")] == want == [30, 38, 10]
    dead_in = [int((np.abs(w) <= 1e-15).all(axis=0).sum()) for w in original]
    assert got["hidden1"].dead == dead_in[0] == 98
    assert got["hidden2"].dead == dead_in[1] == 25
    assert got["hidden2"].unused == 1 and result.changed and not result.failures


def test_l1_mlp_params_and_macs_match_arithmetic(shrunk: dict) -> None:
    result = shrunk["l1_mlp"]
    sizes = [64, 30, 38, 10]
    params = [a * b + b for a, b in itertools.pairwise(sizes)]
    macs = [a * b for a, b in itertools.pairwise(sizes)]
    got = layers(result)
    assert [got[n].params_after for n in ("hidden1", "hidden2", "head")] == params
    assert [got[n].macs_after for n in ("hidden1", "hidden2", "head")] == macs
    totals = result.totals()
    assert (totals["params_before"], totals["params_after"]) == (17226, sum(params))
    assert (totals["macs_before"], totals["macs_after"]) == (17024, sum(macs))


def test_output_file_has_the_new_shapes_and_config(shrunk: dict) -> None:
    path = Path(shrunk["l1_mlp"].output)
    assert [k.shape for k in kernels(path)] == [(64, 30), (30, 38), (38, 10)]
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    units = [entry["config"].get("units") for entry in config["config"]["layers"]]
    assert units == [None, 30, 38, 10] and "compile_config" not in config


def test_models_without_dead_units_are_unchanged(shrunk: dict) -> None:
    for name in ("mlp", "cnn"):
        result = shrunk[name]
        assert not result.changed and result.passes == 1
        assert all(layer.params_before == layer.params_after for layer in result.layers)


def test_constants_fold_through_batchnorm_flatten_and_valid_convolutions(shrunk: dict) -> None:
    got = layers(shrunk["chain"])
    assert [got[n].units_after for n in ("c1", "c2", "d1", "out")] == [4, 4, 5, 3]
    assert got["bn"].params_after == 4 * 4
    assert got["c1"].macs_before == 6 * 6 * 3 * 3 * 3 * 6
    assert got["c1"].macs_after == 6 * 6 * 3 * 3 * 3 * 4


def test_add_and_subtract_are_shrunk_as_one_group(shrunk: dict) -> None:
    for name in ("resid", "resid.h5"):
        got = layers(shrunk[name])
        assert {n: got[n].units_after for n in ("d0", "p1", "q1", "w1", "r")} == {
            "d0": 7, "p1": 7, "q1": 7, "w1": 7, "r": 4,
        }  # fmt: skip
        assert got["bn_p"].params_after == 4 * 7
        # channel 5 is dead in p1 and q1 but w1's channel 5 varies: kept, with the reason
        assert got["p1"].skipped == {"a coupled layer's channel is not constant": 1}


def test_concatenate_keeps_offsets_within_its_group(shrunk: dict) -> None:
    got = layers(shrunk["concat"])
    # a's unit 1 sits at offset 1 of the concatenation, b+c's unit 2 at offset 6
    assert {n: got[n].units_after for n in ("a", "b", "c", "head")} == {
        "a": 3, "b": 3, "c": 3, "head": 3,
    }  # fmt: skip
    assert got["bn_cat"].params_after == 4 * 6 and got["head"].params_after == 6 * 3 + 3
    assert got["b"].skipped == {"a coupled layer's channel is not constant": 1}


def test_unsupported_layers_and_same_padding_are_skipped_with_reasons(shrunk: dict) -> None:
    got = layers(shrunk["reshape"])
    assert got["a"].units_after == 4
    assert got["a"].skipped == {"Reshape 'rs' to [2, 2] regroups the channels": 1}
    got = layers(shrunk["same"])
    assert got["s1"].units_after == 3  # the filter whose constant is relu(-0.5) = 0 goes
    assert got["s2"].units_after == 2  # folded through global average pooling into the head
    assert got["s1"].skipped == {"'s2' pads its input: a nonzero constant varies at the border": 1}


def test_keras_loads_outputs_and_predicts_the_same(shrunk: dict, tmp_path: Path) -> None:
    digits = str(SAMPLES / "digits.npz")
    pairs = [
        [r.input, r.output, digits if r.input.startswith(str(SAMPLES)) else None]
        for r in shrunk.values()
    ]
    cli = [str(SAMPLES / "l1_mlp.keras"), "-o", str(tmp_path / "v.keras"), "--verify"]
    jobs = {"pairs": pairs, "cli": [*cli, "--data", digits, "--json"]}
    run = subprocess.run(
        [sys.executable, "-c", CHECK, json.dumps(jobs)], env=ENV, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.split("REPORT", 1)[1])
    for result in shrunk.values():
        assert report[result.output]["max"] <= 1e-5, result.output
        assert report[result.output]["params"] == result.totals()["params_after"]
    assert report["cli"]["code"] == 0, report["cli"]["output"]
    verification = json.loads(report["cli"]["output"])["verification"]
    assert verification["max_abs_diff"] <= 1e-5
    assert verification["inputs"].endswith("digits.npz:x_val")


def cli(*args: str):
    app = typer.Typer()
    app.command()(shrink)
    return CliRunner().invoke(app, list(args))


def test_cli_json_shape_and_table(tmp_path: Path) -> None:
    run = cli(str(SAMPLES / "l1_mlp.keras"), "-o", str(tmp_path / "s.keras"), "--json")
    assert run.exit_code == 0, run.output
    data = json.loads(run.output)
    assert data["changed"] and data["totals"]["units_after"] == 78
    assert data["layers"][0]["removed"] == {"dead": 98, "unused": 0}
    run = cli(str(SAMPLES / "mlp.keras"), "-o", str(tmp_path / "m.keras"))
    assert run.exit_code == 0 and "no dead or unused units" in run.output


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        ("l1_mlp.keras", "out.h5", "give -o a .keras path"),
        ("mlp.weights.h5", "out.weights.h5", "holds weights only"),
        ("l1_mlp.keras", "-", "give -o a .keras or .h5 path"),
    ],
)
def test_cli_refuses_clearly(tmp_path: Path, source: str, target: str, message: str) -> None:
    out = target if target == "-" else str(tmp_path / target)
    run = cli(str(SAMPLES / source), "-o", out)
    assert run.exit_code == 2 and message in run.output.replace("\n", " ")


def test_existing_output_needs_force(tmp_path: Path) -> None:
    target = tmp_path / "s.keras"
    target.write_bytes(b"old")
    assert cli(str(SAMPLES / "l1_mlp.keras"), "-o", str(target)).exit_code == 2
    assert cli(str(SAMPLES / "l1_mlp.keras"), "-o", str(target), "--force").exit_code == 0


def test_shrink_never_imports_tensorflow(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; "
        "from sparseprune.shrink.shrinking import shrink_model; "
        f"shrink_model({str(SAMPLES / 'l1_mlp.keras')!r}, Path({str(tmp_path / 'o.keras')!r})); "
        "print(sorted(m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert run.stdout.strip() == "[]", run.stderr
