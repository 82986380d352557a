"""No code from a model file runs without --unsafe, on any path that hands a file to Keras.

ONE subprocess (`HELPER`) builds real reproductions with tf_keras / Keras 3 / h5py / zipfile — a
Lambda whose code writes a marker file when it runs, placed inside TimeDistributed, a nested
model, RNN cells, Bidirectional's backward layer, a Keras 2.2 list-config Sequential, an activation
`__lambda__`, and a zip/HDF5 polyglot named `.h5` — then runs every command that loads with Keras
(evaluate, compare, bench, export, prune --verify, prune --epochs, prune --method tfmot, shrink
--verify, the TFMOT worker) on each, and records exit codes, messages and whether a marker
appeared. Last, it loads the buildable reproductions with stock tf_keras to prove each Lambda
really runs when loaded. The test process itself never imports TensorFlow.
"""

from __future__ import annotations

import base64
import json
import marshal
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLES

from sparseprune.formats.config import is_marshalled_code, scan_config
from sparseprune.keras_ops.loading import check_loadable

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
ENV["PYTHONPATH"] = os.pathsep.join([str(ROOT), ENV.get("PYTHONPATH", "")])

HELPER = r"""
import copy, io, json, os, subprocess, sys, zipfile
from pathlib import Path
import h5py, numpy as np

spec = json.loads(Path(sys.argv[1]).read_text())
work = Path(spec["dir"])
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tf_keras, keras

def marker(name):
    return str(work / f"ran-{name}")

def code(name):
    # A lambda's bytecode carries the marker path as a constant: if it runs, the file appears.
    # Written to a module file, so Keras 3 (which also saves the source) can find its source.
    source = work / f"evil_{name}.py"
    source.write_text(f"f = lambda x: (__import__('pathlib').Path({marker(name)!r})"
                      ".write_text('ran'), x)[1]\n")
    import importlib.util
    loader = importlib.util.spec_from_file_location(f"evil_{name}", source)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module.f

def tf_lambda(name):
    return tf_keras.layers.Lambda(code(name), name="evil")

def save_h5(model, name):
    path = work / f"{name}.h5"
    model.save(path, save_format="h5")
    return path

def rewrite_config(path, edit):
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        f.attrs["model_config"] = json.dumps(edit(config))

models = {}
# TimeDistributed(Lambda): the Lambda sits under config.layers[i].config.layer
models["time_distributed"] = save_h5(tf_keras.Sequential(
    [tf_keras.Input((3, 4)), tf_keras.layers.TimeDistributed(tf_lambda("time_distributed")),
     tf_keras.layers.Dense(2)]
), "time_distributed")
# a nested model holding the Lambda
inner = tf_keras.Sequential([tf_keras.Input((4,)), tf_lambda("nested")], name="inner")
models["nested"] = save_h5(tf_keras.Sequential(
    [tf_keras.Input((4,)), inner, tf_keras.layers.Dense(2)]
), "nested")
# Keras 2.2 Sequential: "config" is a plain list of layers (no InputLayer, batch_input_shape)
flat = save_h5(tf_keras.Sequential(
    [tf_keras.Input((4,)), tf_lambda("list_config"), tf_keras.layers.Dense(2)]
), "list_config")
def to_list(config):
    layers = [l for l in config["config"]["layers"] if l["class_name"] != "InputLayer"]
    layers[0]["config"]["batch_input_shape"] = [None, 4]
    return {"class_name": "Sequential", "config": layers}
rewrite_config(flat, to_list)
models["list_config"] = flat
# RNN cell, stacked cells, Bidirectional backward_layer: Lambda entries moved into those slots
lambda_entry = json.loads(h5py.File(models["nested"], "r").attrs["model_config"])
lambda_entry = lambda_entry["config"]["layers"][1]["config"]["layers"][1]
base = save_h5(tf_keras.Sequential(
    [tf_keras.Input((3, 4)), tf_keras.layers.Bidirectional(tf_keras.layers.SimpleRNN(2)),
     tf_keras.layers.Dense(2)]
), "bidirectional")
def backward(config):
    config["config"]["layers"][1]["config"]["backward_layer"] = copy.deepcopy(lambda_entry)
    return config
rewrite_config(base, backward)
models["bidirectional"] = base
for name, cell in {
    "rnn_cell": copy.deepcopy(lambda_entry),
    "rnn_cells": {"class_name": "StackedRNNCells",
                  "config": {"cells": [copy.deepcopy(lambda_entry)]}},
}.items():
    path = save_h5(tf_keras.Sequential(
        [tf_keras.Input((3, 4)), tf_keras.layers.SimpleRNN(2, name="rnn"), tf_keras.layers.Dense(2)]
    ), name)
    def put_cell(config, cell=cell):
        rnn = config["config"]["layers"][1]
        rnn["class_name"] = "RNN"
        rnn["config"]["cell"] = cell
        return config
    rewrite_config(path, put_cell)
    models[name] = path
# Keras 3 .keras: TimeDistributed(Lambda) and a lambda activation (`__lambda__`)
k3 = keras.Sequential([keras.Input((3, 4)), keras.layers.TimeDistributed(
    keras.layers.Lambda(code("keras3_time_distributed"))), keras.layers.Dense(2)])
k3.save(work / "keras3_time_distributed.keras")
models["keras3_time_distributed"] = work / "keras3_time_distributed.keras"
k3 = keras.Sequential(
    [keras.Input((4,)), keras.layers.Dense(2, activation=code("keras3_activation"))])
k3.save(work / "keras3_activation.keras")
models["keras3_activation"] = work / "keras3_activation.keras"
# zip/HDF5 polyglot named .h5: a harmless .keras in the HDF5 user block of an evil .h5
evil = tf_keras.Sequential([tf_keras.Input((4,)), tf_lambda("polyglot"), tf_keras.layers.Dense(2)])
harmless = Path(spec["harmless"]).read_bytes()
block = 1 << max(9, (len(harmless) - 1).bit_length())
poly = work / "polyglot.h5"
with h5py.File(poly, "w", userblock_size=block) as f:
    evil.save(f, save_format="h5")
with open(poly, "r+b") as f:
    f.write(harmless)
assert zipfile.is_zipfile(poly)
models["polyglot"] = poly

for built in work.glob("ran-*"):  # building a model calls its Lambda once; that is not a load
    built.unlink()

data = {"x": np.zeros((8, 4), "f4"), "y": np.zeros(8, "i8")}
np.savez(work / "data.npz", **data, x_val=data["x"], y_val=data["y"])
D = str(work / "data.npz")

from typer.testing import CliRunner
from sparseprune.cli import app
from sparseprune.keras_ops.loading import load_keras_model
from sparseprune.errors import InputError
runner = CliRunner()
commands = {
    "evaluate": lambda m: ["evaluate", m, "--data", D],
    "compare": lambda m: ["compare", m, m, "--data", D],
    "bench": lambda m: ["bench", m],
    "export": lambda m: ["export", m, "-o", str(work / "out.tflite")],
    "prune --verify": lambda m: ["prune", m, "--target", "0.5", "--verify",
                                  "-o", str(work / "p.h5")],
    "prune --epochs": lambda m: ["prune", m, "--target", "0.5", "--epochs", "1", "--data", D,
                                  "-o", str(work / "p.h5")],
    "prune tfmot": lambda m: ["prune", m, "--target", "0.5", "--method", "tfmot", "--epochs", "1",
                               "--data", D, "-o", str(work / "p.h5")],
    "shrink --verify": lambda m: ["shrink", m, "--verify", "-o", str(work / "s.h5")],
}
out = {"runs": {}, "markers_after_commands": {}, "library": {}, "models": {}}
for name, path in models.items():
    out["models"][name] = str(path)
    for command, build in commands.items():
        result = runner.invoke(app, build(str(path)))
        out["runs"][f"{name}: {command}"] = {"code": result.exit_code, "stderr": result.stderr}
    try:
        load_keras_model(str(path))
        out["library"][name] = "loaded"
    except InputError as error:
        out["library"][name] = str(error)
request = work / "request.json"
from sparseprune.keras_ops.tfmot.client import PROTOCOL_VERSION
request.write_text(json.dumps({"version": PROTOCOL_VERSION, "op": "check", "workdir": str(work),
                               "models": [str(p) for p in models.values()]}))
worker = subprocess.run([sys.executable, "-m", "sparseprune.keras_ops.tfmot.worker", str(request)],
                        capture_output=True, text=True)
out["worker"] = {"code": worker.returncode, "stderr": worker.stderr[-2000:],
                 "metrics": json.loads((work / "metrics.json").read_text())
                 if (work / "metrics.json").exists() else None}
out["markers_after_commands"] = sorted(p.name for p in work.glob("ran-*"))

# The controls: the file sparseprune reads by magic bytes is what Keras now loads, whatever its
# name; and the reproductions are real (stock tf_keras runs each buildable Lambda on load).
renamed = work / "renamed.keras"
renamed.write_bytes(Path(spec["tf_keras_h5"]).read_bytes())
result = runner.invoke(app, ["evaluate", str(renamed), "--data", spec["digits"]])
out["renamed"] = {"code": result.exit_code, "stderr": result.stderr}
out["stock"] = {}
for name in ("time_distributed", "nested", "list_config", "polyglot"):
    try:
        tf_keras.models.load_model(models[name], compile=False)
    except Exception as error:
        out["stock"][name] = repr(error)[:300]
    out["stock"][name + " ran"] = Path(marker(name)).exists()
Path(sys.argv[2]).write_text(json.dumps(out))
"""

COMMANDS = (
    "evaluate",
    "compare",
    "bench",
    "export",
    "prune --verify",
    "prune --epochs",
    "prune tfmot",
    "shrink --verify",
)
MODELS = (
    "time_distributed",
    "nested",
    "list_config",
    "bidirectional",
    "rnn_cell",
    "rnn_cells",
    "keras3_time_distributed",
    "keras3_activation",
    "polyglot",
)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("unsafe")
    spec_path, out_path = work / "spec.json", work / "out.json"
    from handmade import write_keras

    harmless = write_keras(work / "harmless.keras")
    spec = {
        "dir": str(work),
        "harmless": str(harmless),
        "tf_keras_h5": str(SAMPLES / "tf_keras_mlp.h5"),
        "digits": str(SAMPLES / "digits.npz"),
    }
    spec_path.write_text(json.dumps(spec))
    done = subprocess.run(
        [sys.executable, "-c", HELPER, str(spec_path), str(out_path)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out_path.read_text())


def test_reproductions_are_real(outcome: dict) -> None:
    """Stock tf_keras runs the Lambda of every buildable reproduction when it loads it."""
    for name in ("time_distributed", "nested", "list_config", "polyglot"):
        assert outcome["stock"][f"{name} ran"], outcome["stock"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", MODELS)
def test_every_command_refuses(outcome: dict, name: str, command: str) -> None:
    run = outcome["runs"][f"{name}: {command}"]
    assert run["code"] == 2, run
    lines = run["stderr"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), run
    expected = "reads both" if name == "polyglot" else "--unsafe"
    assert expected in lines[0], lines[0]


def test_no_lambda_ran_during_the_commands(outcome: dict) -> None:
    assert outcome["markers_after_commands"] == []


@pytest.mark.parametrize("name", MODELS)
def test_library_loader_refuses(outcome: dict, name: str) -> None:
    message = outcome["library"][name]
    assert message != "loaded"
    assert ("reads both" if name == "polyglot" else "--unsafe") in message


def test_tfmot_worker_refuses(outcome: dict) -> None:
    worker = outcome["worker"]
    assert worker["metrics"] is not None, worker
    for entry in worker["metrics"]["models"]:
        assert "error" in entry, entry
        assert "--unsafe" in entry["error"] or "reads both" in entry["error"], entry


def test_keras_reads_the_format_sparseprune_read(outcome: dict) -> None:
    """An HDF5 model named .keras: Keras gets it as .h5, so it loads (and evaluates)."""
    assert outcome["renamed"]["code"] == 0, outcome["renamed"]


@pytest.mark.parametrize("name", MODELS)
def test_inspect_flags_the_code(outcome: dict, name: str) -> None:
    """Found without Keras, in this process: inspect names the layer that holds code."""
    from typer.testing import CliRunner

    from sparseprune.cli import app

    result = CliRunner().invoke(app, ["inspect", outcome["models"][name], "--json"])
    if name == "polyglot":
        assert result.exit_code == 2 and "reads both" in result.stderr
        return
    assert result.exit_code == 0, result.output
    (model,) = json.loads(result.stdout)["models"]
    assert model["flags"].get("lambda"), model["flags"]


# --- the scan itself, on hand-written configs (no Keras) ------------------------------------------


def _code_string(urlsafe: bool = False, wrap: bool = False) -> str:
    raw = marshal.dumps(compile("lambda x: x", "<m>", "eval").co_consts[0])
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()
    return "\n".join(text[i : i + 76] for i in range(0, len(text), 76)) if wrap else text


@pytest.mark.parametrize(
    "spelling",
    [
        {"urlsafe": False, "wrap": False},
        {"urlsafe": True, "wrap": False},
        {"urlsafe": False, "wrap": True},
    ],
)
def test_marshalled_code_is_found_under_any_key(spelling: dict) -> None:
    code = _code_string(**spelling)
    assert is_marshalled_code(code)
    config = {
        "class_name": "Functional",
        "config": {
            "name": "m",
            "layers": [
                {"class_name": "Dense", "config": {"name": "d", "kernel_initializer": [code]}}
            ],
        },
    }
    assert scan_config(config) == {"lambda": ["d"]}


@pytest.mark.parametrize(
    ("entry", "flag"),
    [
        ({"class_name": "TFOpLambda", "config": {"name": "x"}}, "lambda"),
        ({"class_name": "Custom>Lambda", "config": {"name": "x"}}, "lambda"),
        ({"class_name": "__lambda__", "config": {"name": "x"}}, "lambda"),
        ({"class_name": "Dense", "config": {"name": "x", "function_type": "lambda"}}, "lambda"),
        (
            {"class_name": "Dense", "module": "evil.layers", "config": {"name": "x"}},
            "custom_module",
        ),
        (
            {"class_name": "Dense", "registered_name": "evil>Dense", "config": {"name": "x"}},
            "custom_module",
        ),
        (
            {"class_name": "T", "module": "keras_nlp.models", "config": {"name": "x"}},
            "custom_module",
        ),
        (
            {"class_name": "Bert", "module": "keras_hub.src.models", "config": {"name": "x"}},
            "keras_hub",
        ),
    ],
)
def test_each_rule_in_any_position(entry: dict, flag: str) -> None:
    for position in ("layer", "cell", "forward_layer", "backward_layer", "anything"):
        wrapper = {"class_name": "Wrapper", "config": {"name": "w", position: entry}}
        config = {"class_name": "Sequential", "config": [wrapper]}  # Keras 2.2 list config too
        assert scan_config(config) == {flag: ["w/x"]}, position


def test_plain_keras_config_has_no_findings() -> None:
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [
                {
                    "module": "keras.layers",
                    "class_name": "Dense",
                    "config": {"name": "conv2dtranspose1abcdefghijklmnopqrstuvwxyz", "units": 2},
                    "registered_name": None,
                },
                {"module": "builtins", "class_name": "function", "config": "relu"},
            ],
        },
    }
    assert scan_config(config) == {}


def test_deep_config_does_not_overflow() -> None:
    value: object = {"class_name": "Lambda", "config": {"name": "deep"}}
    for _ in range(20_000):
        value = [value]
    assert scan_config({"class_name": "Sequential", "config": {"layers": value}}) == {
        "lambda": ["deep"]
    }


def test_keras_hub_is_flagged_but_loadable(tmp_path: Path) -> None:
    from handmade import weights_h5_bytes, write_keras

    config = {
        "module": "keras_hub.src.models.bert.bert_backbone",
        "class_name": "BertBackbone",
        "config": {"name": "bert_backbone", "hidden_dim": 4},
        "registered_name": "keras_hub>BertBackbone",
    }
    path = write_keras(
        tmp_path / "hub.keras",
        [
            ("metadata.json", b'{"keras_version": "3.15.1"}'),
            ("config.json", json.dumps(config).encode()),
            ("model.weights.h5", weights_h5_bytes()),
        ],
    )
    from typer.testing import CliRunner

    from sparseprune.cli import app

    result = CliRunner().invoke(app, ["inspect", str(path), "--json"])
    (model,) = json.loads(result.stdout)["models"]
    assert model["flags"] == {"keras_hub": ["bert_backbone"]}
    assert check_loadable(str(path), unsafe=False) == "3.15.1"


# --- polyglots, both layouts, found by every command (here: inspect, no Keras) ------------------


def _zip_in_user_block(tmp_path: Path) -> Path:
    import h5py

    from handmade import write_keras

    harmless = write_keras(tmp_path / "harmless.keras").read_bytes()
    path = tmp_path / "userblock.h5"
    with h5py.File(path, "w", userblock_size=1 << max(9, (len(harmless) - 1).bit_length())) as f:
        f["x"] = [1.0]
    with open(path, "r+b") as handle:
        handle.write(harmless)
    return path


def _zip_after_hdf5(tmp_path: Path) -> Path:
    from handmade import weights_h5_bytes, write_keras

    path = tmp_path / "appended.keras"
    path.write_bytes(weights_h5_bytes() + write_keras(tmp_path / "z.keras").read_bytes())
    return path


@pytest.mark.parametrize("build", [_zip_in_user_block, _zip_after_hdf5])
def test_polyglot_is_refused_by_the_reader(tmp_path: Path, build) -> None:
    import zipfile

    from typer.testing import CliRunner

    from sparseprune.cli import app

    path = build(tmp_path)
    assert zipfile.is_zipfile(path)  # both readings really exist
    result = CliRunner().invoke(app, ["inspect", str(path)])
    assert result.exit_code == 2 and "reads both" in result.stderr, result.output
