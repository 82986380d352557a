"""The output contract, one test per output option per command (sqlite-utils style).

Every command that prints a table takes `--format table|json|csv|markdown`, `--json` and
`--json-file`. Each test checks the figures printed against values computed independently:
counts from `rawread` (plain h5py, no sparseprune code) for the light commands, and for the
Keras commands (evaluate, compare, bench, export) values computed with stock Keras / TFLite in
the ONE subprocess this module starts (the pytest process never imports TensorFlow). `strip`'s
output options are tested in test_strip.py, beside the TFMOT files they need.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES
from rawread import keras_weights
from typer.testing import CliRunner

from handmade import write_keras
from sparseprune.cli import app

runner = CliRunner()
MLP = SAMPLES / "mlp.keras"
L1_MLP = SAMPLES / "l1_mlp.keras"
DATA = SAMPLES / "digits.npz"
KERNELS = ("hidden1", "hidden2", "head")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
FORMATS = ("table", "json", "csv", "markdown")


def strict_json(text: str) -> dict:
    """json.loads that refuses NaN/Infinity, which Python's json accepts by default."""

    def refuse(constant: str) -> None:
        raise ValueError(f"invalid JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def markdown_rows(text: str) -> list[list[str]]:
    """Cells of each Markdown table row after the header and its separator."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert set(lines[1].replace("|", "")) <= set("-: "), lines[:2]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


# ---- the light commands, in this process -------------------------------------------------


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """Kernel [[0, 1e-20, 0.5], [0, -2, 0]]: 6 params, 3 exact zeros, 4 near zero (1e-15)."""
    return write_keras(tmp_path / "tiny.keras")


def test_inspect_format_table(tiny: Path) -> None:
    result = invoke("inspect", tiny, "--format", "table")
    assert result.exit_code == 0 and "d" in result.stdout and "66.7%" in result.stdout


def test_inspect_format_json(tiny: Path) -> None:
    result = invoke("inspect", tiny, "--format", "json")
    totals = strict_json(result.stdout)["models"][0]["totals"]
    assert (totals["prunable_params"], totals["prunable_near_zero"]) == (6, 4)


def test_inspect_format_csv(tiny: Path) -> None:
    (row,) = csv_rows(invoke("inspect", tiny, "--format", "csv").stdout)
    assert (row["layer"], row["params"], row["zeros"], row["near_zero"]) == ("d", "6", "3", "4")


def test_inspect_format_markdown(tiny: Path) -> None:
    rows = markdown_rows(invoke("inspect", tiny, "--format", "markdown").stdout)
    assert rows[0][:2] == ["d", "Dense"] and rows[0][4:7] == ["6", "3", "4"]


def test_inspect_json_flag(tiny: Path) -> None:
    assert strict_json(invoke("inspect", tiny, "--json").stdout) == strict_json(
        invoke("inspect", tiny, "--format", "json").stdout
    )


def test_inspect_json_file(tiny: Path, tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    result = invoke("inspect", tiny, "--format", "csv", "--json-file", target)
    assert result.exit_code == 0 and result.stdout.startswith("path,layer")
    document = strict_json(target.read_text())
    assert document["models"][0]["totals"]["prunable_near_zero"] == 4


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`prune --target 0.5` once per format; zeros per kernel read back with rawread."""
    out = tmp_path_factory.mktemp("prune_formats")
    runs = {}
    for name, options in {
        **{fmt: ["--format", fmt] for fmt in FORMATS},
        "json_flag": ["--json"],
        "json_file": ["--format", "csv", "--json-file", str(out / "r.json")],
    }.items():
        target = out / f"{name}.keras"
        result = invoke("prune", MLP, "-o", target, "--target", "0.5", *options)
        assert result.exit_code == 0, result.output
        zeros = {k: int(np.count_nonzero(keras_weights(target)[k][0] == 0)) for k in KERNELS}
        runs[name] = (result.stdout, zeros)
    return {"runs": runs, "json_file": out / "r.json"}


def test_prune_format_table(pruned: dict) -> None:
    stdout, zeros = pruned["runs"]["table"]
    assert all(f"{zeros[k]:,}" in stdout for k in KERNELS) and "smaller" in stdout


def test_prune_format_json(pruned: dict) -> None:
    stdout, zeros = pruned["runs"]["json"]
    tensors = {t["name"]: t for t in strict_json(stdout)["tensors"]}
    assert {k: tensors[f"{k}/kernel"]["zeros_after"] for k in KERNELS} == zeros


def test_prune_format_csv(pruned: dict) -> None:
    stdout, zeros = pruned["runs"]["csv"]
    rows = {row["tensor"]: row for row in csv_rows(stdout)}
    assert {k: int(rows[f"{k}/kernel"]["zeros_after"]) for k in KERNELS} == zeros
    assert (
        rows["hidden1/kernel"]["method"] == "target" and rows["hidden1/kernel"]["target"] == "0.5"
    )


def test_prune_format_markdown(pruned: dict) -> None:
    stdout, zeros = pruned["runs"]["markdown"]
    rows = {row[0]: row for row in markdown_rows(stdout)}
    assert {k: int(rows[f"{k}/kernel"][8]) for k in KERNELS} == zeros


def test_prune_json_flag(pruned: dict) -> None:
    flag, _ = pruned["runs"]["json_flag"]
    explicit, _ = pruned["runs"]["json"]
    assert strict_json(flag)["tensors"] == strict_json(explicit)["tensors"]


def test_prune_json_file(pruned: dict) -> None:
    stdout, zeros = pruned["runs"]["json_file"]
    assert stdout.startswith("tensor,layer")  # --format csv still goes to stdout
    tensors = {t["name"]: t for t in strict_json(pruned["json_file"].read_text())["tensors"]}
    assert {k: tensors[f"{k}/kernel"]["zeros_after"] for k in KERNELS} == zeros


@pytest.fixture(scope="module")
def shrunk(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`shrink` of the L1-trained MLP once per format; units read back with rawread."""
    out = tmp_path_factory.mktemp("shrink_formats")
    before = {k: keras_weights(L1_MLP)[k][0].shape[-1] for k in KERNELS}
    runs = {}
    for name, options in {
        **{fmt: ["--format", fmt] for fmt in FORMATS},
        "json_flag": ["--json"],
        "json_file": ["--format", "markdown", "--json-file", str(out / "r.json")],
    }.items():
        target = out / f"{name}.keras"
        result = invoke("shrink", L1_MLP, "-o", target, *options)
        assert result.exit_code == 0, result.output
        after = {k: keras_weights(target)[k][0].shape[-1] for k in KERNELS}
        runs[name] = (result.stdout, after)
    assert any(runs["json"][1][k] < before[k] for k in KERNELS), "precondition: units removed"
    return {"runs": runs, "before": before, "json_file": out / "r.json"}


def test_shrink_format_table(shrunk: dict) -> None:
    stdout, after = shrunk["runs"]["table"]
    before = shrunk["before"]
    assert f"{before['hidden1']:,} -> {after['hidden1']:,}" in stdout


def test_shrink_format_json(shrunk: dict) -> None:
    stdout, after = shrunk["runs"]["json"]
    layers = {layer["name"]: layer for layer in strict_json(stdout)["layers"]}
    assert {k: layers[k]["units_after"] for k in KERNELS} == after
    assert {k: layers[k]["units_before"] for k in KERNELS} == shrunk["before"]


def test_shrink_format_csv(shrunk: dict) -> None:
    stdout, after = shrunk["runs"]["csv"]
    rows = {row["layer"]: row for row in csv_rows(stdout)}
    assert {k: int(rows[k]["units_after"]) for k in KERNELS} == after


def test_shrink_format_markdown(shrunk: dict) -> None:
    stdout, after = shrunk["runs"]["markdown"]
    rows = {row[0]: row for row in markdown_rows(stdout)}
    assert {k: int(rows[k][3]) for k in KERNELS} == after


def test_shrink_json_flag(shrunk: dict) -> None:
    flag, _ = shrunk["runs"]["json_flag"]
    explicit, _ = shrunk["runs"]["json"]
    assert strict_json(flag)["layers"] == strict_json(explicit)["layers"]


def test_shrink_json_file(shrunk: dict) -> None:
    stdout, after = shrunk["runs"]["json_file"]
    assert stdout.startswith("| layer |")
    layers = {
        layer["name"]: layer for layer in strict_json(shrunk["json_file"].read_text())["layers"]
    }
    assert {k: layers[k]["units_after"] for k in KERNELS} == after


def test_json_file_refuses_existing_file_without_force(tiny: Path, tmp_path: Path) -> None:
    target = tmp_path / "taken.json"
    target.write_text("keep me")
    refused = invoke("inspect", tiny, "--json-file", target)
    assert refused.exit_code == 2 and "--force" in refused.stderr
    assert target.read_text() == "keep me"
    assert invoke("inspect", tiny, "--json-file", target, "--force").exit_code == 0
    assert strict_json(target.read_text())["models"][0]["totals"]["prunable_params"] == 6


def test_failed_checks_end_the_same_way(tiny: Path) -> None:
    result = invoke("inspect", tiny, "--min-sparsity", "0.9")
    assert result.exit_code == 1
    assert result.stderr.startswith("check failed:") and len(result.stderr.splitlines()) == 1


# ---- the Keras commands, in one subprocess ---------------------------------------------

HELPER = r"""
import json, sys
import numpy as np
from typer.testing import CliRunner
from sparseprune.cli import app

spec = json.loads(open(sys.argv[1]).read())
runner = CliRunner()
out = {"runs": {}}
for name, args in spec["runs"].items():
    result = runner.invoke(app, args)
    out["runs"][name] = {"code": result.exit_code, "stdout": result.stdout,
                         "stderr": result.stderr, "exception": repr(result.exception)}

import keras
with np.load(spec["data"]) as archive:
    x, y = archive["x_val"], archive["y_val"]
mlp = keras.models.load_model(spec["mlp"], compile=False)
out["accuracy"] = float(np.mean(mlp.predict(x, verbose=0).argmax(1) == y))
out["params"] = int(sum(np.size(w) for w in mlp.get_weights()))
nan = keras.models.load_model(spec["nan"], compile=False)
probe = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
out["nan_outputs"] = bool(np.isnan(nan.predict(probe, verbose=0)).any())
open(sys.argv[2], "w").write(json.dumps(out))
"""

BENCH = ["--batch-size", "1", "--repeats", "2", "--warmup", "0"]


def keras_commands(out: Path, nan_model: Path) -> dict[str, list[str]]:
    """Each Keras command once per output option, plus --verify on a model with NaN weights."""
    commands = {
        "evaluate": ["evaluate", MLP, "--data", DATA],
        "compare": ["compare", MLP, MLP, "--data", DATA],
        "bench": ["bench", MLP, *BENCH],
        "export": ["export", MLP, "--data", DATA],
    }
    runs: dict[str, list[str]] = {}
    for command, base in commands.items():
        options = {
            **{fmt: ["--format", fmt] for fmt in FORMATS},
            "json_flag": ["--json"],
            "json_file": ["--format", "csv", "--json-file", out / f"{command}.json"],
        }
        for option, extra in options.items():
            args = list(base)
            if command == "export":
                args += ["-o", out / f"{option}.tflite"]
            runs[f"{command}/{option}"] = [str(a) for a in (*args, *extra)]
    runs["nan/prune"] = [
        str(a)
        for a in ("prune", nan_model, "-o", out / "nan_p.keras", "--threshold", "0", "--verify")
    ] + ["--json"]
    runs["nan/shrink"] = [
        str(a) for a in ("shrink", nan_model, "-o", out / "nan_s.keras", "--verify", "--json")
    ]
    return runs


@pytest.fixture(scope="module")
def keras_runs(tmp_path_factory: pytest.TempPathFactory, fixture_dir: Path) -> dict:
    out = tmp_path_factory.mktemp("keras_formats")
    nan_model = fixture_dir / "nan.keras"
    spec = {
        "runs": keras_commands(out, nan_model),
        "data": str(DATA),
        "mlp": str(MLP),
        "nan": str(nan_model),
    }
    (out / "spec.json").write_text(json.dumps(spec))
    result = subprocess.run(
        [sys.executable, "-c", HELPER, str(out / "spec.json"), str(out / "out.json")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads((out / "out.json").read_text())
    runs["dir"] = out
    return runs


def stdout_of(runs: dict, name: str) -> str:
    run = runs["runs"][name]
    assert run["code"] == 0, (name, run["stderr"][-2000:], run["exception"])
    return run["stdout"]


# evaluate: accuracy on x_val/y_val recomputed with stock Keras in the helper


def test_evaluate_format_table(keras_runs: dict) -> None:
    stdout = stdout_of(keras_runs, "evaluate/table")
    assert "accuracy" in stdout and f"{keras_runs['accuracy']:.4f}" in stdout


def test_evaluate_format_json(keras_runs: dict) -> None:
    document = strict_json(stdout_of(keras_runs, "evaluate/json"))
    assert document["schema_version"] == 1
    assert abs(document["metrics"]["accuracy"] - keras_runs["accuracy"]) < 1e-6


def test_evaluate_format_csv(keras_runs: dict) -> None:
    rows = {row["metric"]: row for row in csv_rows(stdout_of(keras_runs, "evaluate/csv"))}
    assert next(iter(rows)) == "loss" and rows["accuracy"]["samples"] == "360"
    assert abs(float(rows["accuracy"]["value"]) - keras_runs["accuracy"]) < 1e-6


def test_evaluate_format_markdown(keras_runs: dict) -> None:
    rows = {row[3]: row for row in markdown_rows(stdout_of(keras_runs, "evaluate/markdown"))}
    assert abs(float(rows["accuracy"][4]) - keras_runs["accuracy"]) < 1e-6


def test_evaluate_json_flag(keras_runs: dict) -> None:
    flag = strict_json(stdout_of(keras_runs, "evaluate/json_flag"))
    assert flag == strict_json(stdout_of(keras_runs, "evaluate/json"))


def test_evaluate_json_file(keras_runs: dict) -> None:
    assert stdout_of(keras_runs, "evaluate/json_file").startswith("model,data,samples")
    document = strict_json((keras_runs["dir"] / "evaluate.json").read_text())
    assert abs(document["metrics"]["accuracy"] - keras_runs["accuracy"]) < 1e-6


# compare: a model with itself has equal sparsity on both sides and zero output difference


def test_compare_format_table(keras_runs: dict) -> None:
    stdout = stdout_of(keras_runs, "compare/table")
    assert "hidden1" in stdout and "(same size)" in stdout and "smaller" not in stdout


def test_compare_format_json(keras_runs: dict) -> None:
    document = strict_json(stdout_of(keras_runs, "compare/json"))
    assert document["outputs"]["max_abs_diff"] == 0.0
    accuracy = document["metrics"]["accuracy"]
    assert abs(accuracy["a"] - keras_runs["accuracy"]) < 1e-6 and accuracy["delta"] == 0.0


def test_compare_format_csv(keras_runs: dict) -> None:
    rows = {row["layer"]: row for row in csv_rows(stdout_of(keras_runs, "compare/csv"))}
    weights = keras_weights(MLP)
    for name in KERNELS:
        kernel = weights[name][0]
        assert int(rows[name]["a_params"]) == kernel.size == int(rows[name]["b_params"])
        assert float(rows[name]["delta"]) == 0.0


def test_compare_format_markdown(keras_runs: dict) -> None:
    rows = {row[0]: row for row in markdown_rows(stdout_of(keras_runs, "compare/markdown"))}
    assert set(KERNELS) <= set(rows) and int(rows["head"][2]) == keras_weights(MLP)["head"][0].size


def test_compare_json_flag(keras_runs: dict) -> None:
    flag = strict_json(stdout_of(keras_runs, "compare/json_flag"))
    assert flag == strict_json(stdout_of(keras_runs, "compare/json"))


def test_compare_json_file(keras_runs: dict) -> None:
    assert stdout_of(keras_runs, "compare/json_file").startswith("layer,class")
    document = strict_json((keras_runs["dir"] / "compare.json").read_text())
    assert document["outputs"]["max_abs_diff"] == 0.0


# bench: parameter counts from Keras's get_weights(); timings only have to exist


def test_bench_format_table(keras_runs: dict) -> None:
    assert f"{keras_runs['params']:,}" in stdout_of(keras_runs, "bench/table")


def test_bench_format_json(keras_runs: dict) -> None:
    (model,) = strict_json(stdout_of(keras_runs, "bench/json"))["models"]
    assert model["params"] == keras_runs["params"] and model["latency"][0]["batch_size"] == 1


def test_bench_format_csv(keras_runs: dict) -> None:
    (row,) = csv_rows(stdout_of(keras_runs, "bench/csv"))
    assert int(row["params"]) == keras_runs["params"] and float(row["median_ms"]) > 0


def test_bench_format_markdown(keras_runs: dict) -> None:
    (row,) = markdown_rows(stdout_of(keras_runs, "bench/markdown"))
    assert int(row[3]) == keras_runs["params"] and row[7] == "1"


def test_bench_json_flag(keras_runs: dict) -> None:
    flag = strict_json(stdout_of(keras_runs, "bench/json_flag"))
    assert flag["models"][0]["params"] == keras_runs["params"]
    assert flag.keys() == strict_json(stdout_of(keras_runs, "bench/json")).keys()


def test_bench_json_file(keras_runs: dict) -> None:
    assert stdout_of(keras_runs, "bench/json_file").startswith("model,format")
    document = strict_json((keras_runs["dir"] / "bench.json").read_text())
    assert document["models"][0]["params"] == keras_runs["params"]


# export: the written file's size is measured here; the check ran on --data's x_train


def test_export_format_table(keras_runs: dict) -> None:
    size = (keras_runs["dir"] / "table.tflite").stat().st_size
    assert f"{size:,} bytes" in stdout_of(keras_runs, "export/table")


def test_export_format_json(keras_runs: dict) -> None:
    document = strict_json(stdout_of(keras_runs, "export/json"))
    assert document["output_size"] == (keras_runs["dir"] / "json.tflite").stat().st_size
    assert document["check"]["samples"] > 0 and document["quantize"] is None


def test_export_format_csv(keras_runs: dict) -> None:
    (row,) = csv_rows(stdout_of(keras_runs, "export/csv"))
    assert int(row["output_size"]) == (keras_runs["dir"] / "csv.tflite").stat().st_size
    assert int(row["input_size"]) == MLP.stat().st_size and float(row["max_abs_diff"]) < 1e-3


def test_export_format_markdown(keras_runs: dict) -> None:
    (row,) = markdown_rows(stdout_of(keras_runs, "export/markdown"))
    assert int(row[5]) == (keras_runs["dir"] / "markdown.tflite").stat().st_size


def test_export_json_flag(keras_runs: dict) -> None:
    document = strict_json(stdout_of(keras_runs, "export/json_flag"))
    assert document["output_size"] == (keras_runs["dir"] / "json_flag.tflite").stat().st_size


def test_export_json_file(keras_runs: dict) -> None:
    assert stdout_of(keras_runs, "export/json_file").startswith("model,output")
    document = strict_json((keras_runs["dir"] / "export.json").read_text())
    assert document["output_size"] == (keras_runs["dir"] / "json_file.tflite").stat().st_size


# NaN weights: the verification differences are NaN, and the JSON must still be valid


@pytest.mark.parametrize(("command", "code"), [("prune", 0), ("shrink", 1)])
def test_json_is_valid_for_a_model_with_nan_weights(
    keras_runs: dict, command: str, code: int
) -> None:
    """prune --verify reports the difference; shrink --verify also fails its tolerance (exit 1)."""
    assert keras_runs["nan_outputs"], "precondition: the model predicts NaN"
    run = keras_runs["runs"][f"nan/{command}"]
    assert run["code"] == code, (run["stderr"][-2000:], run["exception"])
    document = strict_json(run["stdout"])
    assert document["verification"]["max_abs_diff"] is None
    assert document["checks"]["passed"] is (code == 0)
