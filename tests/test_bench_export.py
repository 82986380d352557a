"""`bench` and `export`, checked against counts and predictions computed independently.

Every TensorFlow-dependent step runs in ONE subprocess (`RUNNER`), which registers the two
commands on a local Typer app (the tests do not depend on cli/__init__.py), runs them, and then
computes its own expectations: TFLite predictions via a fresh `tf.lite.Interpreter` against Keras
on held-out data. Parameter counts come from `rawread` (plain h5py, no sparseprune code); MACs
are written out by hand from the architectures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from conftest import SAMPLES
from rawread import keras_weights
from typer.testing import CliRunner

from sparseprune.cli import bench_cmd, export_cmd
from sparseprune.errors import InputError
from sparseprune.keras_ops.bench import ratios
from sparseprune.keras_ops.timing import latency_stats
from sparseprune.prune import prune_model
from sparseprune.prune.recipes import PruneSpec

DATA = SAMPLES / "digits.npz"
MLP = SAMPLES / "mlp.keras"
MLP_MACS = 64 * 128 + 128 * 64 + 64 * 10
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
HEAVY = ("tensorflow", "keras", "tf_keras")
# conv 3x3x3->4 stride 2 on 9x9 (out 4x4); depthwise 2x2 x2 (out 3x3); separable 2x2 -> 5 (out
# 2x2); dense 20 -> 3. Per sample, kernel size x output positions:
CONV_MACS = {"conv": 27 * 4 * 16, "dw": 4 * 4 * 2 * 9, "sep": (4 * 8 + 8 * 5) * 4, "fc": 20 * 3}
CONV_ZEROED = 27 * 16  # the runner zeroes conv's first output filter (27 weights, 16 positions)

RUNNER = r"""
import json, sys
import numpy as np
import typer
from typer.testing import CliRunner
from sparseprune.cli import bench_cmd, export_cmd

spec = json.loads(open(sys.argv[1]).read())
app = typer.Typer(pretty_exceptions_enable=False)
app.command("bench")(bench_cmd.bench)
app.command("export")(export_cmd.export)
runner = CliRunner()
out = {"runs": {}}

def run(name, args):
    result = runner.invoke(app, args)
    out["runs"][name] = {"code": result.exit_code, "stdout": result.stdout,
                         "stderr": result.stderr, "exception": repr(result.exception)}

for name, args in spec["light"].items():
    run(name, args)
out["heavy_after_light"] = [m for m in spec["heavy_modules"] if m in sys.modules]

def save_conv_model(path):
    # built only after the first bench: running TF ops first would stop thread pinning
    import keras
    layers = keras.layers
    inputs = keras.Input((9, 9, 3))
    x = layers.Conv2D(4, 3, strides=2, name="conv")(inputs)
    x = layers.DepthwiseConv2D(2, depth_multiplier=2, name="dw")(x)
    x = layers.SeparableConv2D(5, 2, name="sep")(x)
    x = layers.Dense(3, name="fc")(layers.Flatten()(x))
    model = keras.Model(inputs, x)
    kernel = np.ones(model.get_layer("conv").kernel.shape, dtype=np.float32)
    kernel[..., 0] = 0.0
    model.get_layer("conv").kernel.assign(kernel)
    model.save(path)

for name, args in spec["heavy"].items():
    if name == "conv":
        save_conv_model(spec["conv_model"])
    run(name, args)

import tensorflow as tf
with np.load(spec["data"]) as archive:
    x_val = archive["x_val"].astype(np.float32)
import keras
model = keras.models.load_model(spec["model"], compile=False)
expected = np.asarray(model.predict(x_val, verbose=0))
out["tflite_diff"] = {}
for name, path in spec["tflite"].items():
    interpreter = tf.lite.Interpreter(model_path=path)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], list(x_val.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x_val)
    interpreter.invoke()
    actual = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    out["tflite_diff"][name] = {
        "max": float(np.abs(actual - expected).max()),
        "top1": float(np.mean(actual.argmax(1) == expected.argmax(1))),
    }
open(sys.argv[2], "w").write(json.dumps(out))
"""


def args(*parts: object) -> list[str]:
    return [str(part) for part in parts]


def local_app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)
    app.command("bench")(bench_cmd.bench)
    app.command("export")(export_cmd.export)
    return app


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample MLP at 80% per tensor, pruned by the library (no TensorFlow)."""
    path = tmp_path_factory.mktemp("bench") / "mlp80.keras"
    prune_model(MLP, path, PruneSpec(target=0.8))
    return path


@pytest.fixture(scope="module")
def runs(pruned: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every TensorFlow-dependent run and its independent expectations, in one subprocess."""
    out = tmp_path_factory.mktemp("bench_out")
    tfl = {name: out / f"{name}.tflite" for name in ("sparse", "plain", "int8", "f16")}
    (out / "exists.tflite").write_bytes(b"keep")
    timing = ("--repeats", 5, "--warmup", 2, "--json")
    spec = {
        "heavy_modules": HEAVY,
        "data": str(DATA),
        "model": str(pruned),
        "conv_model": str(out / "conv.keras"),
        "tflite": {name: str(path) for name, path in tfl.items()},
        "light": {
            "int8_no_data": args("export", pruned, "-o", out / "x.tflite", "--quantize", "int8"),
            "exists": args("export", pruned, "-o", out / "exists.tflite"),
            "missing": args("bench", out / "nothing.keras"),
            "bad_sizes": args("bench", pruned, "--batch-size", "1,x"),
        },
        "heavy": {
            "pair": args("bench", MLP, pruned, "--batch-size", "1,4", *timing),
            "sparse": args("export", pruned, "-o", tfl["sparse"], "--data", DATA, "--json"),
            "plain": args("export", pruned, "-o", tfl["plain"], "--no-sparsity", "--json"),
            "int8": args(
                "export", pruned, "-o", tfl["int8"], "--quantize", "int8", "--data", DATA, "--json"
            ),
            "f16": args("export", pruned, "-o", tfl["f16"], "--quantize", "float16", "--json"),
            "tflite": args("bench", pruned, tfl["sparse"], tfl["int8"], *timing),
            "conv": args("bench", out / "conv.keras", "--batch-size", 2, *timing),
            "table": args("bench", MLP, pruned, "--repeats", 3, "--warmup", 1),
            "export_table": args("export", pruned, "-o", out / "t.tflite", "--data", DATA),
        },
    }
    spec_path, result_path = out / "spec.json", out / "result.json"
    spec_path.write_text(json.dumps(spec))
    subprocess.run(
        [sys.executable, "-c", RUNNER, str(spec_path), str(result_path)],
        check=True,
        env=ENV,
        timeout=300,
    )
    return json.loads(result_path.read_text())


def ok(runs: dict, name: str) -> dict:
    run = runs["runs"][name]
    assert run["code"] == 0, run
    return json.loads(run["stdout"])


def independent_counts(path: Path) -> tuple[int, int]:
    """(params, nonzero) of the model weights, read with plain h5py."""
    arrays = [a for values in keras_weights(path).values() for a in values]
    return sum(a.size for a in arrays), sum(int(np.count_nonzero(a)) for a in arrays)


def test_refusals_exit_2_before_tensorflow_loads(runs: dict) -> None:
    for name, phrase in (
        ("int8_no_data", "needs --data"),
        ("exists", "--force"),
        ("missing", "does not exist"),
        ("bad_sizes", "--batch-size"),
    ):
        run = runs["runs"][name]
        assert run["code"] == 2, run
        assert phrase in run["stderr"] and len(run["stderr"].strip().splitlines()) == 1
    assert runs["heavy_after_light"] == []


def test_bench_counts_match_independent_counts(runs: dict, pruned: Path) -> None:
    result = ok(runs, "pair")
    assert result["schema_version"] == 1
    assert result["settings"]["threads"] == {
        "intra_op": 1,
        "inter_op": 1,
        "tflite": 1,
        "pinned": True,
    }
    dense, sparse = result["models"]
    for entry, path in ((dense, MLP), (sparse, pruned)):
        params, nonzero = independent_counts(path)
        assert (entry["params"], entry["nonzero_params"]) == (params, nonzero)
        assert entry["macs"] == MLP_MACS and entry["macs_uncounted"] == []
        assert entry["file_size"] == path.stat().st_size
    kernels = keras_weights(pruned)
    nonzero_kernels = sum(
        int(np.count_nonzero(kernels[n][0])) for n in ("hidden1", "hidden2", "head")
    )
    assert sparse["macs_nonzero"] == nonzero_kernels


def test_bench_latency_is_positive_and_ordered(runs: dict) -> None:
    for name in ("pair", "tflite", "conv"):
        for model in ok(runs, name)["models"]:
            for row in model["latency"]:
                assert 0 < row["min_ms"] <= row["median_ms"] <= row["p90_ms"]
                assert row["spread"] >= 1.0 and row["std_ms"] >= 0
                assert row["throughput"] == pytest.approx(
                    row["batch_size"] / row["median_ms"] * 1e3
                )


def test_bench_pair_reports_ratios(runs: dict, pruned: Path) -> None:
    result = ok(runs, "pair")
    (ratio,) = result["ratios"]
    dense, sparse = result["models"]
    assert ratio["baseline"] == str(MLP) and ratio["model"] == str(pruned)
    assert set(ratio["latency"]) == {"1", "4"}
    assert ratio["params"] == 1.0 and ratio["macs"] == 1.0
    assert ratio["file_size"] == pytest.approx(sparse["file_size"] / dense["file_size"])
    assert ratio["nonzero_params"] == pytest.approx(0.2, abs=0.02)
    table = runs["runs"]["table"]
    assert table["code"] == 0 and "nonzero MACs" in table["stdout"]
    assert f"{MLP_MACS:,}" in table["stdout"]


def test_bench_counts_conv_depthwise_separable(runs: dict) -> None:
    (model,) = ok(runs, "conv")["models"]
    assert model["macs"] == sum(CONV_MACS.values())
    assert model["macs_nonzero"] == sum(CONV_MACS.values()) - CONV_ZEROED


def test_bench_accepts_tflite(runs: dict) -> None:
    result = ok(runs, "tflite")
    keras_entry, sparse, int8 = result["models"]
    assert keras_entry["format"] == "keras"
    for entry in (sparse, int8):
        assert entry["format"] == "tflite" and entry["macs"] is None and entry["params"] is None
        assert set(entry) == set(keras_entry)  # the same fields, null where unknown
    assert [r["macs"] for r in result["ratios"]] == [None, None]
    assert all(r["latency"]["1"] > 0 for r in result["ratios"])


def test_export_sparsity_shrinks_pruned_model(runs: dict) -> None:
    sparse, plain = ok(runs, "sparse"), ok(runs, "plain")
    assert sparse["sparsity_optimization"] and not plain["sparsity_optimization"]
    assert sparse["output_size"] < 0.5 * plain["output_size"]
    for result in (sparse, plain):
        assert Path(result["output"]).stat().st_size == result["output_size"]
    assert ok(runs, "int8")["output_size"] < plain["output_size"]
    assert plain["check"] is None


def test_export_predictions_match_keras(runs: dict) -> None:
    check = ok(runs, "sparse")["check"]
    assert check["max_abs_diff"] < 1e-5 and check["top1_agreement"] == 1.0
    int8 = ok(runs, "int8")["check"]
    assert int8["max_abs_diff"] < 0.1 and int8["top1_agreement"] >= 0.9
    diff = runs["tflite_diff"]  # held-out data, fresh interpreter: independent of the command
    assert diff["sparse"]["max"] < 1e-5 and diff["plain"]["max"] < 1e-5
    assert diff["f16"]["max"] < 1e-2 and diff["f16"]["top1"] >= 0.98
    assert diff["int8"]["max"] < 0.1 and diff["int8"]["top1"] >= 0.9
    table = runs["runs"]["export_table"]
    assert table["code"] == 0 and "Keras vs TFLite" in table["stdout"]


def test_latency_stats_and_ratios_by_hand() -> None:
    stats = latency_stats([float(t) for t in range(1, 11)], batch=2)
    assert (stats["median_ms"], stats["p90_ms"], stats["min_ms"]) == (5.5, 9.0, 1.0)
    assert stats["throughput"] == pytest.approx(2 / 5.5e-3)
    base = {"path": "a", "latency": [{"batch_size": 1, "median_ms": 2.0}], "params": 10}
    other = {"path": "b", "latency": [{"batch_size": 1, "median_ms": 1.0}], "params": None}
    ratio = ratios(base, other)
    assert ratio["latency"] == {"1": 0.5} and ratio["params"] is None


def test_batch_size_parsing() -> None:
    assert bench_cmd.parse_sizes("1, 32,1") == (1, 32)
    with pytest.raises(InputError):
        bench_cmd.parse_sizes("0")
    result = CliRunner().invoke(local_app(), ["bench", str(MLP), "--batch-size", ""])
    assert result.exit_code == 2


def test_table_warns_when_threads_were_not_pinned() -> None:
    from rich.console import Console

    from sparseprune.keras_ops.bench import BenchResult
    from sparseprune.render.bench_output import print_bench

    row = {"batch_size": 1, "median_ms": 1.0, "p90_ms": 1.2, "spread": 1.2, "throughput": 1e3}
    model = {"path": "a.tflite", "format": "tflite", "file_size": 10, "latency": [row]}
    model.update(dict.fromkeys(("params", "nonzero_params", "macs", "macs_nonzero")))
    threads = {"intra_op": 0, "inter_op": 0, "tflite": 1, "pinned": False}
    settings = {"repeats": 5, "warmup": 1, "threads": threads}
    console = Console(record=True, width=160)
    print_bench(console, BenchResult(settings, [model], []))
    assert "could not be pinned" in console.export_text()
