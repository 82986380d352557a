"""`bench --serving`: every path is named and timed on the same inputs; the verdict is honest.

TensorFlow runs in ONE subprocess (both serving benches); the corrupt-.tflite refusals run here
and must not import TensorFlow. Expectations are independent of the timing code: path names and
ratios are recomputed from the reported medians, kernels' sparse/dense from how they were pruned.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAMPLES
from rich.console import Console
from typer.testing import CliRunner

from sparseprune.cli import app
from sparseprune.keras_ops.serving import ServingResult
from sparseprune.render.bench_output import print_serving

runner = CliRunner()
MLP = SAMPLES / "mlp.keras"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
PATHS = ["keras.predict", "keras.predict_on_batch", "tf.function", "litert.dense", "litert.sparse"]

RUNNER = r"""
import json, sys
from typer.testing import CliRunner
from sparseprune.cli import app
out = {}
for name, path in json.loads(sys.argv[1]).items():
    result = CliRunner().invoke(app, ["bench", path, "--serving", "--batch-size", "1,4",
                                      "--repeats", "4", "--warmup", "1", "--json"])
    out[name] = {"code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr}
from pathlib import Path
from sparseprune import BenchSpec, ServingResult, bench_serving
spec = BenchSpec(batch_sizes=[2], repeats=3, warmup=1)
served = bench_serving(Path(json.loads(sys.argv[1])["blocks"]), spec=spec)
out["api"] = {"type": type(served) is ServingResult, "document": served.to_json()}
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, needs_tensorflow: None) -> dict:
    folder = tmp_path_factory.mktemp("serving")
    models = {}
    for name, args in {"blocks": ["--block", "4x1"], "random": []}.items():
        models[name] = str(folder / f"{name}.keras")
        result = runner.invoke(
            app, ["prune", str(MLP), "-o", models[name], "--target", "0.9", *args]
        )
        assert result.exit_code == 0, result.output
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(models)],
        capture_output=True, text=True, env=ENV, timeout=400, check=True,
    )  # fmt: skip
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def doc(runs: dict, name: str) -> dict:
    assert runs[name]["code"] == 0, runs[name]
    return json.loads(runs[name]["stdout"])


@pytest.mark.parametrize("name", ["blocks", "random"])
def test_every_path_is_named_timed_and_compared(runs: dict, name: str) -> None:
    result = doc(runs, name)
    assert list(result["paths"]) == PATHS and result["baseline"] == "tf.function"
    assert "ai_edge_litert" in result["settings"]["litert_runtime"]
    assert [b["batch_size"] for b in result["batches"]] == [1, 4]
    for batch in result["batches"]:
        medians = {p: batch["paths"][p]["median_ms"] for p in PATHS}
        assert all(m > 0 for m in medians.values())
        for path in PATHS:
            speedup = medians["tf.function"] / medians[path]
            assert batch["speedup_vs_baseline"][path] == pytest.approx(speedup)
            assert batch["paths"][path]["max_abs_diff"] < 1e-4  # same predictions on every path
        dense_ratio = medians["litert.dense"] / medians["litert.sparse"]
        assert batch["sparse_vs_dense_litert"] == pytest.approx(dense_ratio)


def test_the_python_api_gives_the_command_document(runs: dict) -> None:
    """`sparseprune.bench_serving` (exported, keyword-only spec) is what `bench --serving` runs."""
    api, command = runs["api"], doc(runs, "blocks")
    assert api["type"]
    served = json.loads(api["document"])
    assert set(served) == set(command)
    assert served["paths"] == command["paths"] and served["layers"] == command["layers"]
    assert [b["batch_size"] for b in served["batches"]] == [2]
    assert (served["settings"]["repeats"], served["settings"]["warmup"]) == (3, 1)
    assert served["model"] == command["model"] and served["verdict"] is None


def test_verdict_names_what_would_help(runs: dict) -> None:
    blocks, random = doc(runs, "blocks"), doc(runs, "random")
    assert {r["runs"] for r in blocks["layers"]} == {"sparse"} and blocks["verdict"] is None
    assert {r["runs"] for r in random["layers"]} == {"densified"}
    assert "--block 4x1" in random["verdict"] and "shrink" in random["verdict"]
    console = Console(record=True, width=200)
    fields = {k: v for k, v in random.items() if k != "schema_version"}
    print_serving(console, ServingResult(**fields))
    text = " ".join(console.export_text().split())
    assert "tf.function" in text and "cannot speed up" in text and "densified" in text


def test_corrupt_tflite_is_refused_without_tensorflow(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\xff" * 40)
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom sparseprune.cli import app\n"
        f"r = CliRunner().invoke(app, ['bench', {str(bad)!r}])\n"
        "print(r.exit_code, 'tensorflow' in sys.modules)\nprint(r.output)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    first, *rest = done.stdout.splitlines()
    assert first == "2 False", done.stdout + done.stderr
    assert "corrupt TFLite" in " ".join(rest) and "Traceback" not in done.stdout
