"""`evaluate` and `compare`, checked against expectations computed independently.

Every Keras-dependent command runs in ONE subprocess per module (`HELPER`), which afterwards loads
the same files with stock Keras / tf_keras and computes accuracy and output differences with numpy.
Refusals, data loading and the sparsity side run in this process, which never imports TensorFlow.
Sparsity expectations come from `rawread` (plain h5py, no sparseprune code).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import typer
from conftest import SAMPLES
from rawread import h5_weights, keras_weights
from typer.testing import CliRunner

from sparseprune.cli import compare_cmd, evaluate_cmd
from sparseprune.compare.comparison import MetricDiff, accuracy_drop_failure, compare_sparsity
from sparseprune.datasets import load_split
from sparseprune.errors import InputError
from sparseprune.keras_ops.evaluate import EvaluateResult
from sparseprune.prune import prune_model
from sparseprune.prune.recipes import PruneSpec

DATA = SAMPLES / "digits.npz"
MLP = SAMPLES / "mlp.keras"
KERNELS = ("hidden1", "hidden2", "head")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
HEAVY = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization")
ACCURACY_TOLERANCE = 1e-6  # Keras accumulates in float32

# The commands are registered here as the real app registers them, so the tests do not depend on
# cli/__init__.py. Runs all commands, then computes expectations with stock Keras and numpy.
HELPER = r"""
import json, sys
import numpy as np
import typer
from typer.testing import CliRunner
from sparseprune.cli import compare_cmd, evaluate_cmd

spec = json.loads(open(sys.argv[1]).read())
app = typer.Typer(pretty_exceptions_enable=False)
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("compare")(compare_cmd.compare)
runner = CliRunner()
out = {"runs": {}}
for phase in ("light", "heavy"):
    for name, args in spec[phase].items():
        result = runner.invoke(app, args)
        out["runs"][name] = {"code": result.exit_code, "stdout": result.stdout,
                             "stderr": result.stderr, "exception": repr(result.exception)}
    if phase == "light":
        out["heavy_after_light"] = [m for m in spec["heavy_modules"] if m in sys.modules]

import keras, tf_keras
with np.load(spec["data"]) as archive:
    x, y = archive["x_val"], archive["y_val"]
predictions = {}
for name, (path, library) in spec["models"].items():
    model = (keras if library == "keras" else tf_keras).models.load_model(path, compile=False)
    predictions[name] = np.asarray(model.predict(x, verbose=0), dtype=np.float64)
out["accuracy"] = {n: float(np.mean(p.argmax(axis=1) == y)) for n, p in predictions.items()}
out["diff"] = {}
for a, b in spec["pairs"]:
    delta = np.abs(predictions[a] - predictions[b])
    out["diff"][f"{a}:{b}"] = [float(delta.max()), float(delta.mean())]
open(sys.argv[2], "w").write(json.dumps(out))
"""


def args(*parts: object) -> list[str]:
    return [str(part) for part in parts]


def local_app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)
    app.command("evaluate")(evaluate_cmd.evaluate)
    app.command("compare")(compare_cmd.compare)
    return app


def invoke(*parts: object):
    return CliRunner().invoke(local_app(), args(*parts))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, needs_tensorflow: None) -> dict[str, Path]:
    """Pruned models (written by the library, no Keras) and small .npz variants."""
    out = tmp_path_factory.mktemp("evaluate")
    paths = {
        "b": out / "b.keras",
        "tfk_b": out / "tfk_b.h5",
        "nocompile": out / "nocompile.h5",
        "test_only": out / "test_only.npz",
        "onehot": out / "onehot.npz",
        "missing": out / "missing.npz",
        "pickled": out / "pickled.npz",
    }
    prune_model(MLP, paths["b"], PruneSpec(target=0.9))
    prune_model(SAMPLES / "tf_keras_mlp.h5", paths["tfk_b"], PruneSpec(target=0.5))
    prune_model(MLP, paths["nocompile"], PruneSpec(threshold=1e-15))  # converted: no compile
    with np.load(DATA) as archive:
        x, y = archive["x_val"], archive["y_val"]
    np.savez(paths["test_only"], x_test=x, y_test=y)
    np.savez(paths["onehot"], x=x, y=np.eye(10, dtype=np.float32)[y])
    np.savez(paths["missing"], features=x, labels=y)
    np.savez(paths["pickled"], x_val=np.array([{"a": 1}], dtype=object), y_val=y[:1])
    return paths


@pytest.fixture(scope="module")
def keras_runs(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run every Keras-dependent command and the independent expectations in one subprocess."""
    b, tfk_b, nocompile = files["b"], files["tfk_b"], files["nocompile"]
    tfk = SAMPLES / "tf_keras_mlp.h5"
    topk = "accuracy, sparse_top_k_categorical_accuracy"
    spec = {
        "light": {
            "refuse_drop": args("compare", MLP, b, "--max-drop", "0.01"),
            "refuse_npz": args("evaluate", MLP, "--data", files["missing"]),
            "refuse_compare_npz": args("compare", MLP, b, "--data", files["missing"]),
        },
        "heavy": {
            "eval_keras": args("evaluate", MLP, "--data", DATA, "--json"),
            "eval_h5": args("evaluate", SAMPLES / "mlp.h5", "--data", DATA, "--json"),
            "eval_tfk": args("evaluate", tfk, "--data", DATA, "--json"),
            "eval_sparse": args("evaluate", nocompile, "--data", files["test_only"], "--json"),
            "eval_onehot": args("evaluate", nocompile, "--data", files["onehot"], "--json"),
            "eval_options": args(
                "evaluate", MLP, "--data", DATA, "--batch-size", 7, "--metrics", topk, "--json"
            ),
            "eval_table": args("evaluate", MLP, "--data", DATA),
            "eval_bad_loss": args("evaluate", MLP, "--data", DATA, "--loss", "no_such_loss"),
            "cmp_data": args("compare", MLP, b, "--data", DATA, "--json"),
            "cmp_pass": args("compare", MLP, b, "--data", DATA, "--max-drop", 0.9, "--json"),
            "cmp_fail": args("compare", MLP, b, "--data", DATA, "--max-drop", 0),
            "cmp_table": args("compare", MLP, b, "--data", DATA),
            "cmp_tfk": args("compare", tfk, tfk_b, "--data", DATA, "--json"),
            "cmp_random": args("compare", MLP, SAMPLES / "cnn.keras", "--json"),
        },
        "heavy_modules": list(HEAVY),
        "models": {
            "a": args(MLP, "keras"),
            "h5": args(SAMPLES / "mlp.h5", "keras"),
            "b": args(b, "keras"),
            "nocompile": args(nocompile, "keras"),
            "tfk": args(tfk, "tf_keras"),
            "tfk_b": args(tfk_b, "tf_keras"),
        },
        "pairs": [["a", "b"], ["tfk", "tfk_b"]],
        "data": str(DATA),
    }
    scratch = tmp_path_factory.mktemp("helper")
    (scratch / "spec.json").write_text(json.dumps(spec))
    (scratch / "helper.py").write_text(HELPER)
    command = [sys.executable, *(str(scratch / n) for n in ("helper.py", "spec.json", "out.json"))]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((scratch / "out.json").read_text())


def run_json(runs: dict, name: str) -> dict:
    run = runs["runs"][name]
    assert run["code"] == 0, (run["stderr"], run["exception"])
    document = json.loads(run["stdout"])
    assert document["schema_version"] == 1
    return document


def near_zero_fraction(kernel: np.ndarray) -> float:
    return float(np.count_nonzero(np.abs(kernel) <= 1e-15) / kernel.size)


# ----------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize(
    ("run", "model"), [("eval_keras", "a"), ("eval_h5", "h5"), ("eval_tfk", "tfk")]
)
def test_evaluate_accuracy_matches_numpy(keras_runs: dict, run: str, model: str) -> None:
    result = run_json(keras_runs, run)
    expected = keras_runs["accuracy"][model]
    assert result["metrics"]["accuracy"] == pytest.approx(expected, abs=ACCURACY_TOLERANCE)
    assert result["samples"] == 360 and result["data"] == f"{DATA}:x_val"
    assert result["compile"]["loss"] == "sparse_categorical_crossentropy"
    assert result["compile"]["source"]["loss"] == "file"
    assert 0 < result["loss"] < 1


def test_evaluate_infers_sparse_crossentropy_for_integer_labels(keras_runs: dict) -> None:
    result = run_json(keras_runs, "eval_sparse")
    assert result["data"].endswith("test_only.npz:x_test")
    assert result["compile"] == {
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "source": {"loss": "inferred", "metrics": "inferred"},
    }
    expected = keras_runs["accuracy"]["nocompile"]
    assert result["metrics"]["accuracy"] == pytest.approx(expected, abs=ACCURACY_TOLERANCE)


def test_evaluate_infers_categorical_crossentropy_for_one_hot(keras_runs: dict) -> None:
    result = run_json(keras_runs, "eval_onehot")
    assert result["data"].endswith("onehot.npz:x")
    assert result["compile"]["loss"] == "categorical_crossentropy"
    expected = keras_runs["accuracy"]["nocompile"]
    assert result["metrics"]["accuracy"] == pytest.approx(expected, abs=ACCURACY_TOLERANCE)
    sparse = run_json(keras_runs, "eval_sparse")
    assert result["loss"] == pytest.approx(sparse["loss"], rel=1e-5)  # same data, same loss


def test_evaluate_options_override_the_file(keras_runs: dict) -> None:
    result = run_json(keras_runs, "eval_options")
    assert result["compile"]["source"] == {"loss": "file", "metrics": "options"}
    assert set(result["metrics"]) == {"accuracy", "sparse_top_k_categorical_accuracy"}
    expected = keras_runs["accuracy"]["a"]
    assert result["metrics"]["accuracy"] == pytest.approx(expected, abs=ACCURACY_TOLERANCE)


def test_evaluate_table_and_bad_loss(keras_runs: dict) -> None:
    table = keras_runs["runs"]["eval_table"]
    assert table["code"] == 0 and "accuracy" in table["stdout"] and "(file)" in table["stdout"]
    bad = keras_runs["runs"]["eval_bad_loss"]
    assert bad["code"] == 2 and "no_such_loss" in bad["stderr"]
    assert len(bad["stderr"].strip().splitlines()) == 1


# ----------------------------------------------------------------------------- compare


def test_compare_sparsity_matches_h5py(keras_runs: dict, files: dict[str, Path]) -> None:
    result = run_json(keras_runs, "cmp_data")
    dense, pruned = keras_weights(MLP), keras_weights(files["b"])
    layers = {layer["name"]: layer for layer in result["layers"]}
    assert list(layers) == list(KERNELS)
    for name in KERNELS:
        assert layers[name]["a"]["sparsity"] == near_zero_fraction(dense[name][0])
        assert layers[name]["b"]["sparsity"] == near_zero_fraction(pruned[name][0])
        assert layers[name]["b"]["params"] == dense[name][0].size
    sizes = MLP.stat().st_size, files["b"].stat().st_size
    assert (result["a"]["file_size"], result["b"]["file_size"]) == sizes
    assert result["size_ratio"] == pytest.approx(sizes[0] / sizes[1])


def test_compare_outputs_and_metrics_match_numpy(keras_runs: dict) -> None:
    result = run_json(keras_runs, "cmp_data")
    max_diff, mean_diff = keras_runs["diff"]["a:b"]
    outputs = result["outputs"]
    assert outputs["max_abs_diff"] == pytest.approx(max_diff, abs=1e-6)
    assert outputs["mean_abs_diff"] == pytest.approx(mean_diff, abs=1e-6)
    assert outputs["samples"] == 360 and outputs["inputs"] == f"{DATA}:x_val"
    accuracy = result["metrics"]["accuracy"]
    expected_a, expected_b = keras_runs["accuracy"]["a"], keras_runs["accuracy"]["b"]
    assert accuracy["a"] == pytest.approx(expected_a, abs=ACCURACY_TOLERANCE)
    assert accuracy["b"] == pytest.approx(expected_b, abs=ACCURACY_TOLERANCE)
    assert accuracy["delta"] == pytest.approx(expected_b - expected_a, abs=2 * ACCURACY_TOLERANCE)
    assert list(result["metrics"]) == ["loss", "accuracy"]
    assert result["checks"] == {"max_drop": None, "passed": True, "failures": []}


def test_compare_tf_keras_h5(keras_runs: dict, files: dict[str, Path]) -> None:
    result = run_json(keras_runs, "cmp_tfk")
    pruned = h5_weights(files["tfk_b"])
    for layer in result["layers"]:
        assert layer["b"]["sparsity"] == near_zero_fraction(pruned[layer["name"]][0])
    assert result["outputs"]["max_abs_diff"] == pytest.approx(
        keras_runs["diff"]["tfk:tfk_b"][0], abs=1e-6
    )
    expected = keras_runs["accuracy"]["tfk_b"]
    assert result["metrics"]["accuracy"]["b"] == pytest.approx(expected, abs=ACCURACY_TOLERANCE)


def test_max_drop_passes_when_generous(keras_runs: dict) -> None:
    result = run_json(keras_runs, "cmp_pass")
    assert result["checks"] == {"max_drop": 0.9, "passed": True, "failures": []}


def test_max_drop_zero_fails_when_b_is_worse(keras_runs: dict) -> None:
    expected_a, expected_b = keras_runs["accuracy"]["a"], keras_runs["accuracy"]["b"]
    assert expected_b < expected_a  # precondition: 90% one-shot pruning costs accuracy
    run = keras_runs["runs"]["cmp_fail"]
    assert run["code"] == 1
    message = run["stderr"].strip()
    assert message.startswith("check failed:") and len(message.splitlines()) == 1
    assert f"{expected_a:.4f}" in message and f"{expected_b:.4f}" in message
    assert "--max-drop 0" in message
    assert "accuracy" in run["stdout"]  # the report is still printed before the gate fails


def test_compare_table(keras_runs: dict) -> None:
    stdout = keras_runs["runs"]["cmp_table"]["stdout"]
    assert "hidden1" in stdout and "90.0%" in stdout and "smaller" in stdout
    assert "max |Δ|" in stdout and "B − A" in stdout


def test_compare_layers_in_one_model_only_and_random_inputs(keras_runs: dict) -> None:
    result = run_json(keras_runs, "cmp_random")
    layers = {layer["name"]: layer for layer in result["layers"]}
    assert layers["hidden1"]["b"] is None and layers["conv1"]["a"] is None
    assert layers["head"]["a"] is not None and layers["head"]["b"] is not None
    assert result["outputs"]["inputs"] == "random" and result["outputs"]["samples"] == 64
    assert result["metrics"] == {} and result["data"] is None


def test_compare_table_shows_a_dash_for_missing_layers() -> None:
    from rich.console import Console

    from sparseprune.render.compare_output import sparsity_table

    console = Console(width=160, record=True)
    console.print(sparsity_table(compare_sparsity(str(MLP), str(SAMPLES / "cnn.keras"))))
    rows = {
        line.split("│")[1].strip(): line
        for line in console.export_text().splitlines()
        if line.startswith("│")
    }
    cells = [cell.strip() for cell in rows["conv1"].split("│")[1:-1]]
    assert cells[3] == "-" and cells[5] == "-" and cells[4] == "0.0%"


# ----------------------------------------------------------------------------- refusals


def test_refusals_come_before_keras(keras_runs: dict) -> None:
    assert keras_runs["heavy_after_light"] == []
    runs = keras_runs["runs"]
    assert runs["refuse_drop"]["code"] == 2 and "--data" in runs["refuse_drop"]["stderr"]
    assert runs["refuse_npz"]["code"] == 2 and "x_val/y_val" in runs["refuse_npz"]["stderr"]
    assert runs["refuse_compare_npz"]["code"] == 2


def test_max_drop_without_data_is_usage_error() -> None:
    result = invoke("compare", MLP, MLP, "--max-drop", "0.005")
    assert result.exit_code == 2
    assert result.stderr.startswith("error:") and "--max-drop needs --data" in result.stderr


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing", "needs arrays x_val/y_val, x_test/y_test, x/y; it has features, labels"),
        ("pickled", "holds Python objects"),
    ],
)
@pytest.mark.tensorflow
def test_bad_npz_is_exit_2(files: dict[str, Path], name: str, message: str) -> None:
    result = invoke("evaluate", MLP, "--data", files[name])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.tensorflow
def test_missing_data_file_is_exit_2(tmp_path: Path) -> None:
    result = invoke("evaluate", MLP, "--data", tmp_path / "none.npz")
    assert result.exit_code == 2 and "does not exist" in result.stderr


# ----------------------------------------------------------------------------- library


def test_load_split_prefers_validation_then_test_then_train(tmp_path: Path) -> None:
    x, y = np.zeros((3, 2), np.float32), np.arange(3)
    np.savez(tmp_path / "all.npz", x=x, y=y, x_test=x[:2], y_test=y[:2], x_val=x[:1], y_val=y[:1])
    np.savez(tmp_path / "two.npz", x=x, y=y, x_test=x[:2], y_test=y[:2], x_val=x[:1])
    assert load_split(tmp_path / "all.npz")[2].endswith("all.npz:x_val")
    got_x, got_y, label = load_split(tmp_path / "two.npz")  # x_val without y_val is skipped
    assert label.endswith(":x_test") and len(got_x) == len(got_y) == 2


def test_load_split_rejects_mismatched_lengths(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 2)), y=np.zeros(2))
    with pytest.raises(InputError, match="'x' has 3 samples but 'y' has 2"):
        load_split(tmp_path / "bad.npz")


def test_compare_sparsity_needs_no_keras(files: dict[str, Path]) -> None:
    comparison = compare_sparsity(str(MLP), str(files["b"]))
    pruned = keras_weights(files["b"])
    for pair in comparison.layers:
        assert pair.b is not None
        assert pair.b.prunable_sparsity == near_zero_fraction(pruned[pair.name][0])
    assert comparison.size_ratio == MLP.stat().st_size / files["b"].stat().st_size
    with h5py.File(files["nocompile"], "r") as converted:  # premise of the inference tests
        assert "training_config" not in converted.attrs


def test_max_drop_gate_needs_an_accuracy_metric() -> None:
    comparison = compare_sparsity(str(MLP), str(MLP))
    comparison.metrics = [MetricDiff("loss", 0.1, 0.2), MetricDiff("mae", 0.3, 0.3)]
    with pytest.raises(InputError, match=r"needs an accuracy metric.*loss, mae"):
        accuracy_drop_failure(comparison, 0.01)
    comparison.metrics.append(MetricDiff("sparse_categorical_accuracy", 0.9, 0.895))
    assert accuracy_drop_failure(comparison, 0.005) is None  # a drop of exactly X passes
    assert "0.9000" in (accuracy_drop_failure(comparison, 0.001) or "")


def test_json_writes_non_finite_values_as_null() -> None:
    result = EvaluateResult("m.keras", "d.npz", 3, float("nan"), {"a": float("inf")})
    document = json.loads(result.to_json())
    assert document["schema_version"] == 1
    assert document["loss"] is None and document["metrics"] == {"a": None}
