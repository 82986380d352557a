"""`export` reads the converted flatbuffer back: which kernels LiteRT runs sparse, and why.

Expectations come from a second reader: `ai_edge_litert`'s generated flatbuffer schema (the
converter's own), used in the one TensorFlow subprocess of this module, which runs every
export. Variants of the sample MLP are pruned on the file (no TensorFlow) here: 4x1
blocks (runs sparse), unstructured 90% and 1x4 blocks along the output axis (both densified).
The converter's keep-sparse rule (inspect's verdict) is checked against what it did.
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
from typer.testing import CliRunner

from sparseprune.cli import app
from sparseprune.errors import InputError
from sparseprune.formats.tflite import read_tflite

runner = CliRunner()
MLP = SAMPLES / "mlp.keras"
DATA = SAMPLES / "digits.npz"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
VARIANTS = {
    "blocks": ["--target", "0.9", "--block", "4x1"],
    "random": ["--target", "0.9"],
    "out_blocks": ["--target", "0.9", "--block", "1x4"],
    "blocks_98": ["--target", "0.98", "--block", "4x1", "--layers", "^hidden1$"],  # others dense
}

RUNNER = r"""
import json, sys
import numpy as np
from typer.testing import CliRunner
spec = json.loads(open(sys.argv[1]).read())
from ai_edge_litert import schema_py_generated as schema
from sparseprune.cli import app
out = {}
for name, (source, target) in spec["exports"].items():
    result = CliRunner().invoke(
        app, ["export", source, "-o", target, "--json", "--require-sparse", "--data", spec["data"]]
    )
    data = open(target, "rb").read()
    fb = schema.ModelT.InitFromPackedBuf(data, 0)
    graph = fb.subgraphs[0]
    producers = {o: op for op in graph.operators for o in op.outputs}
    ops = []
    for op in graph.operators:
        code = fb.operatorCodes[op.opcodeIndex]
        fc = schema.BuiltinOperator.FULLY_CONNECTED
        if max(code.builtinCode, code.deprecatedBuiltinCode) != fc:
            continue
        weight = op.inputs[1]
        producer = producers.get(weight)
        densify = producer is not None and max(
            fb.operatorCodes[producer.opcodeIndex].builtinCode,
            fb.operatorCodes[producer.opcodeIndex].deprecatedBuiltinCode,
        ) == schema.BuiltinOperator.DENSIFY
        source_tensor = graph.tensors[producer.inputs[0] if densify else weight]
        sparsity = source_tensor.sparsity
        ops.append({
            "densify": bool(densify),
            "block_map": [] if sparsity is None or sparsity.blockMap is None
                         else [int(v) for v in sparsity.blockMap],
            "shape": [int(v) for v in source_tensor.shape],
        })
    tensors = [
        {"name": t.name.decode(), "shape": [int(v) for v in t.shape] if t.shape is not None else [],
         "buffer": int(t.buffer), "sparse": t.sparsity is not None}
        for t in graph.tensors
    ]
    out[name] = {"code": result.exit_code, "stdout": result.stdout, "ops": ops,
                 "tensors": tensors}
open(sys.argv[2], "w").write(json.dumps(out))
"""


def tf_run(spec: dict, folder: Path) -> dict:
    spec_path, result_path = folder / "spec.json", folder / "result.json"
    spec_path.write_text(json.dumps(spec))
    subprocess.run(
        [sys.executable, "-c", RUNNER, str(spec_path), str(result_path)],
        check=True, env=ENV, timeout=400,
    )  # fmt: skip
    return json.loads(result_path.read_text()) if result_path.exists() else {}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, needs_tensorflow: None) -> dict:
    """Prune the sample MLP's variants here (no TF), export them all in one process."""
    folder = tmp_path_factory.mktemp("export-sparse")
    exports = {}
    for name, args in VARIANTS.items():
        pruned = folder / f"{name}.keras"
        result = runner.invoke(app, ["prune", str(MLP), "-o", str(pruned), *args])
        assert result.exit_code == 0, result.output
        exports[name] = (str(pruned), str(folder / f"{name}.tflite"))
    out = tf_run({"data": str(DATA), "exports": exports}, folder)
    for name, (source, target) in exports.items():
        out[name]["source"], out[name]["target"] = source, target
    return out


def layers(run: dict) -> list[dict]:
    return json.loads(run["stdout"])["layers"]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_report_matches_the_converters_schema(runs: dict, name: str) -> None:
    run = runs[name]
    rows = layers(run)
    assert [r["layer"] for r in rows] == ["hidden1", "hidden2", "head"]
    for row, op in zip(rows, run["ops"], strict=True):
        expected = (
            "sparse"
            if op["block_map"] and not op["densify"]
            else ("densified" if op["densify"] else "dense")
        )
        assert row["runs"] == expected, (name, row, op)
        assert row["op"] == "FULLY_CONNECTED"


def test_block_pruned_kernels_run_sparse_and_others_are_densified(runs: dict) -> None:
    assert {r["runs"] for r in layers(runs["blocks"])} == {"sparse"}
    for name in ("random", "out_blocks"):
        rows = layers(runs[name])
        assert {r["runs"] for r in rows} == {"densified"}, name
        assert all("--block 4x1" in r["reason"] for r in rows)
    rows = {r["layer"]: r for r in layers(runs["blocks_98"])}
    assert rows["hidden1"]["runs"] == "sparse" and rows["head"]["runs"] == "dense"
    assert not rows["head"]["pruned"] and "30%" in rows["head"]["reason"]


def test_require_sparse_exit_codes(runs: dict) -> None:
    assert runs["blocks"]["code"] == 0 and runs["blocks_98"]["code"] == 0
    for name in ("random", "out_blocks"):
        assert runs[name]["code"] == 1, name
        doc = json.loads(runs[name]["stdout"])
        assert len(doc["failures"]) == 3 and "densified" in doc["failures"][0]
        assert doc["check"]["max_abs_diff"] < 1e-4  # densified still predicts the same


def test_converter_agrees_with_inspects_verdict(runs: dict) -> None:
    """The rule inspect applies (zeros in whole 4x1 blocks > 90% of zeros) is what the
    converter did, kernel by kernel."""
    for name, run in runs.items():
        result = runner.invoke(app, ["inspect", run["source"], "--json"])
        doc = json.loads(result.stdout)
        verdicts = {
            w["name"].split("/")[0]: w["litert"]["runs_sparse"]
            for layer in doc["models"][0]["layers"]
            for w in layer["weights"]
            if w.get("litert")
        }
        for row in layers(run):
            assert verdicts[row["layer"]] is (row["runs"] == "sparse"), (name, row)


def test_reader_matches_the_generated_schema(runs: dict) -> None:
    for run in runs.values():
        model = read_tflite(Path(run["target"]).read_bytes())
        ours = [
            {"name": t.name, "shape": list(t.shape), "buffer": t.buffer,
             "sparse": t.sparsity is not None}
            for t in model.subgraphs[0].tensors
        ]  # fmt: skip
        assert ours == run["tensors"]


def test_corrupt_flatbuffers_raise_one_input_error(runs: dict) -> None:
    data = Path(runs["blocks"]["target"]).read_bytes()
    rng = np.random.default_rng(0)
    cuts = [8, 12, 64, len(data) // 3, len(data) // 2, len(data) - 1]
    samples = [data[:cut] for cut in cuts]
    for _ in range(150):
        flipped = bytearray(data)
        for position in rng.integers(8, min(len(data), 2048), size=4):
            flipped[position] = int(rng.integers(0, 256))
        samples.append(bytes(flipped))
    samples.append(b"\x00\x00\x00\x00TFL3" + b"\xff" * 32)
    samples.append(b"\xff\xff\xff\x7fTFL3")
    for sample in samples:
        try:
            read_tflite(sample, "x.tflite")
        except InputError as error:
            assert "x.tflite" in str(error)
