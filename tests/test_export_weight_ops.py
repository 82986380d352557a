"""`export`'s per-op report beyond Dense: EinsumDense (lowered to FULLY_CONNECTED with its kernel
reshaped, or to BATCH_MATMUL when the kernel has a batch axis), MultiHeadAttention's four
projections (same shapes, told apart by name; its activation matmuls are not weights),
convolutions (Conv1D, Conv2DTranspose, Conv3D) and Embedding lookups; and `--pruned-at`.

One TensorFlow subprocess builds the models with numpy-made zeros, exports each through the CLI
and reads every converted graph with ai_edge_litert's generated schema (the converter's own
reader): which ops consume a constant, whether a DENSIFY feeds it, its block map. The zero
fractions expected per row are numpy's, computed there from the weights set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}

RUNNER = r"""
import json, sys
import numpy as np
import keras
from typer.testing import CliRunner
from ai_edge_litert import schema_py_generated as schema
from sparseprune.cli import app

folder = sys.argv[1]
rng = np.random.default_rng(0)
L = keras.layers


def unstructured(v, keep=0.1):
    cut = np.quantile(np.abs(v), 1 - keep)
    return np.where(np.abs(v) >= cut, v, 0).astype(v.dtype)


def blocks_4x1(v, inputs, keep=0.1):  # whole (4, 1) blocks of the (inputs, outputs) view
    view = v.reshape(inputs, -1)
    mask = rng.random((inputs // 4, view.shape[1])) < keep
    return (view * np.repeat(mask, 4, axis=0)).reshape(v.shape).astype(v.dtype)


def einsum_model():
    x = keras.Input((5, 64))
    attended = L.MultiHeadAttention(2, 16, name="mha")(x, x)
    ed3 = L.EinsumDense("abc,cde->abde", (None, 2, 16), name="ed3")(attended)
    bmm = L.EinsumDense("abc,bcd->abd", (5, 8), name="bmm")(x)
    edt = L.EinsumDense("abc,dc->abd", (None, 8), name="edt")(x)
    return keras.Model(x, [ed3, bmm, edt])


def misc_model():
    tokens = keras.Input((6,), dtype="int32")
    h = L.Embedding(50, 8, name="emb")(tokens)
    h = L.Conv1D(4, 3, name="conv1")(h)
    return keras.Model(tokens, L.Dense(3, name="head")(L.Flatten()(h)))


def deconv_model():
    x = keras.Input((6, 6, 3))
    return keras.Model(x, L.Conv2DTranspose(4, 3, name="deconv")(x))


def conv3d_model():
    x = keras.Input((4, 4, 4, 2))
    return keras.Model(x, L.Conv3D(4, 3, name="c3d")(x))


def zero_kernels(model):
    zeros = {}
    for layer in model.layers:
        for w in layer.weights:
            if not w.path.endswith(("kernel", "embeddings")):
                continue
            v = np.asarray(w.numpy())
            v = blocks_4x1(v, 64) if layer.name == "ed3" else unstructured(v)
            w.assign(v)
            name = w.path.rsplit("/", 1)[0]
            zeros[name] = float(np.mean(v == 0))
            if layer.name == "ed3":
                view = v.reshape(16, 4, 32)
                zeros["ed3 blocks"] = float(np.mean(np.all(view == 0, axis=1)))
    return zeros


def graph_ops(data):
    fb = schema.ModelT.InitFromPackedBuf(data, 0)
    graph = fb.subgraphs[0]
    producers = {o: op for op in graph.operators for o in op.outputs}
    inputs = set(int(i) for i in graph.inputs)
    code = lambda op: max(fb.operatorCodes[op.opcodeIndex].builtinCode,
                          fb.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops = []
    for op in graph.operators:
        ops.append({"op": names[code(op)], "inputs": []})
        for index in op.inputs:
            index = int(index)
            densify = False
            while index >= 0 and index in producers and names[code(producers[index])] in (
                "DENSIFY", "DEQUANTIZE"
            ):
                densify = densify or names[code(producers[index])] == "DENSIFY"
                index = int(producers[index].inputs[0])
            t = graph.tensors[index] if index >= 0 else None
            ops[-1]["inputs"].append(None if t is None else {
                "tensor": t.name.decode(),
                "constant": index not in producers and index not in inputs,
                "densify": densify,
                "block_map": [] if t.sparsity is None or t.sparsity.blockMap is None
                             else [int(b) for b in t.sparsity.blockMap],
            })
    return ops


out = {}
for name, build in [("einsum", einsum_model), ("misc", misc_model), ("deconv", deconv_model),
                    ("conv3d", conv3d_model)]:
    model = build()
    zeros = zero_kernels(model)
    source, target = f"{folder}/{name}.keras", f"{folder}/{name}.tflite"
    model.save(source)
    result = CliRunner().invoke(app, ["export", source, "-o", target, "--json", "--require-sparse"])
    out[name] = {"code": result.exit_code, "stdout": result.stdout, "zeros": zeros,
                 "ops": graph_ops(open(target, "rb").read())}
    if name == "misc":
        again = CliRunner().invoke(app, ["export", source, "-o", target, "--json", "--force",
                                         "--require-sparse", "--pruned-at", "0.95"])
        out["misc_pruned_at"] = {"code": again.exit_code, "stdout": again.stdout}
        bad = CliRunner().invoke(app, ["export", source, "-o", target, "--force",
                                       "--pruned-at", "0"])
        out["misc_bad"] = {"code": bad.exit_code, "output": bad.output}

# dynamic-range int8 with 1x16 blocks: XNNPACK computes it wrong, so the product must not use it
import tensorflow as tf
from sparseprune.export.litert import hybrid_sparse_layers
from sparseprune.formats.tflite import read_tflite
from sparseprune.keras_ops.interpreters import make_interpreter
kernel = (rng.standard_normal((256, 64)) / 16).astype("float32")
kernel = kernel * np.repeat(rng.random((16, 64)) < 0.1, 16, axis=0)
hybrid = keras.Sequential([keras.Input((256,)), L.Dense(64, name="hyb")])
hybrid.layers[0].set_weights([kernel, np.zeros(64, "float32")])
converter = tf.lite.TFLiteConverter.from_keras_model(hybrid)
converter.optimizations = [tf.lite.Optimize.DEFAULT, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
content = bytes(converter.convert())
interpreter = make_interpreter(content=content)
x = rng.normal(size=(1, 256)).astype("float32")
interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
interpreter.invoke()
y = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
expected = x @ kernel
out["hybrid"] = {"runtime": interpreter.sparseprune_runtime, "ops": graph_ops(content),
                 "diff": float(np.abs(y - expected).max()), "scale": float(np.abs(expected).max()),
                 "found": hybrid_sparse_layers(read_tflite(content))}
open(f"{folder}/result.json", "w").write(json.dumps(out))
"""

WEIGHT_INPUT = {"FULLY_CONNECTED": 1, "BATCH_MATMUL": 1, "CONV_2D": 1, "CONV_3D": 1,
                "TRANSPOSE_CONV": 1, "GATHER": 0}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, needs_tensorflow: None) -> dict:
    folder = tmp_path_factory.mktemp("export-ops")
    subprocess.run([sys.executable, "-c", RUNNER, str(folder)], check=True, env=ENV, timeout=400)
    return json.loads((folder / "result.json").read_text())


def rows(run: dict) -> list[dict]:
    return json.loads(run["stdout"])["layers"]


def schema_weights(run: dict) -> list[tuple[str, dict]]:
    """(op, weight input) for every op of the graph that consumes a stored constant."""
    found = []
    for op in run["ops"]:
        index = WEIGHT_INPUT.get(op["op"])
        if index is None or index >= len(op["inputs"]) or op["inputs"][index] is None:
            continue
        if op["inputs"][index]["constant"]:
            found.append((op["op"], op["inputs"][index]))
    return found


@pytest.mark.parametrize("name", ["einsum", "misc", "deconv", "conv3d"])
def test_every_weight_op_is_reported_as_the_schema_shows(runs: dict, name: str) -> None:
    run = runs[name]
    expected = schema_weights(run)
    assert [(r["op"], r["tensor"]) for r in rows(run)] == [(o, w["tensor"]) for o, w in expected]
    for row, (_, weight) in zip(rows(run), expected, strict=True):
        runs_as = "sparse" if weight["block_map"] and not weight["densify"] else (
            "densified" if weight["densify"] else "dense"
        )  # fmt: skip
        assert row["runs"] == runs_as, row


def test_einsum_dense_and_attention_kernels_are_matched_by_name_and_layout(runs: dict) -> None:
    run = runs["einsum"]
    by_layer = {r["layer"]: r for r in rows(run)}
    projections = {f"mha/{p}" for p in ("query", "key", "value", "attention_output")}
    assert set(by_layer) == projections | {"ed3", "bmm", "edt"}
    assert len(rows(run)) == 7  # the two activation BATCH_MATMULs of attention are not weights
    for layer, row in by_layer.items():
        assert row["zero_fraction"] == pytest.approx(run["zeros"][layer]), layer
    assert by_layer["ed3"]["runs"] == "sparse" and by_layer["ed3"]["op"] == "FULLY_CONNECTED"
    assert by_layer["ed3"]["block_fraction"] == pytest.approx(run["zeros"]["ed3 blocks"])
    assert by_layer["bmm"]["op"] == "BATCH_MATMUL" and by_layer["bmm"]["runs"] == "dense"
    assert "BATCH_MATMUL has no sparse kernel" in by_layer["bmm"]["reason"]
    assert by_layer["edt"]["op"] == "FULLY_CONNECTED"  # its (out, in) kernel, not transposed
    for layer in projections | {"edt"}:
        assert by_layer[layer]["runs"] == "densified", by_layer[layer]
        assert "--block 4x1" in by_layer[layer]["reason"]


def test_require_sparse_names_every_pruned_weight_that_runs_dense(runs: dict) -> None:
    run = runs["einsum"]
    assert run["code"] == 1
    failures = json.loads(run["stdout"])["failures"]
    named = {f.split(":")[0] for f in failures}
    assert named == {"mha/query", "mha/key", "mha/value", "mha/attention_output", "bmm", "edt"}


def test_convolutions_and_lookups_are_reported_dense_with_the_reason(runs: dict) -> None:
    misc = {r["layer"]: r for r in rows(runs["misc"])}
    assert misc["emb"]["op"] == "GATHER" and misc["emb"]["runs"] == "dense"
    assert "lookup table" in misc["emb"]["reason"]
    assert misc["conv1"]["op"] == "CONV_2D" and misc["conv1"]["runs"] in ("densified", "dense")
    (deconv,) = rows(runs["deconv"])
    (conv3d,) = rows(runs["conv3d"])
    assert (deconv["op"], deconv["layer"]) == ("TRANSPOSE_CONV", "deconv")
    assert (conv3d["op"], conv3d["layer"]) == ("CONV_3D", "c3d")
    for name, row in [("misc", misc["emb"]), ("misc", misc["conv1"]), ("deconv", deconv),
                      ("conv3d", conv3d)]:  # fmt: skip
        assert row["zero_fraction"] == pytest.approx(runs[name]["zeros"][row["layer"]])


def test_pruned_at_sets_which_kernels_require_sparse_checks(runs: dict) -> None:
    assert runs["misc"]["code"] == 1
    assert len(json.loads(runs["misc"]["stdout"])["failures"]) == 3  # emb, conv1, head at 90%
    document = json.loads(runs["misc_pruned_at"]["stdout"])
    assert runs["misc_pruned_at"]["code"] == 0 and document["failures"] == []
    assert not any(r["pruned"] for r in document["layers"])
    assert (
        runs["misc_bad"]["code"] == 2
        and "--pruned-at must be in (0, 1]" in (runs["misc_bad"]["output"])
    )


def test_dynamic_range_int8_block_sparse_runs_on_builtin_kernels(runs: dict) -> None:
    """XNNPACK gets float-activation FULLY_CONNECTED with 1x16 block-sparse int8 weights wrong
    (max |diff| ~4 on a 1024-wide layer), so make_interpreter puts the builtin kernels first."""
    hybrid = runs["hybrid"]
    (fc,) = [op for op in hybrid["ops"] if op["op"] == "FULLY_CONNECTED"]
    assert fc["inputs"][1]["block_map"] and not fc["inputs"][1]["densify"]
    assert hybrid["found"] == [fc["inputs"][1]["tensor"]]
    assert hybrid["runtime"] == "ai_edge_litert (builtin kernels, no XNNPACK)"
    assert hybrid["diff"] < 0.03 * hybrid["scale"]  # int8 weight rounding only


def test_a_gather_from_a_constant_that_is_no_kernel_is_not_reported() -> None:
    """Graphs gather from shape tables too; only a GATHER whose table is a Keras kernel is a
    weight row. A FULLY_CONNECTED weight with no matching kernel is still listed (layer None)."""
    from sparseprune.export.litert import layer_runs
    from sparseprune.formats.tflite import Operator, Subgraph, Tensor, TfliteModel

    tensors = tuple(
        Tensor(i, name, shape, dtype, i, None)
        for i, (name, shape, dtype) in enumerate([
            ("x", (1, 4), "float32"), ("table", (4,), "int32"), ("idx", (1,), "int32"),
            ("picked", (1,), "int32"), ("w", (3, 4), "float32"), ("y", (1, 3), "float32"),
        ])
    )  # fmt: skip
    ops = (Operator("GATHER", (1, 2), (3,)), Operator("FULLY_CONNECTED", (0, 4), (5,)))
    graph = Subgraph(tensors, ops, inputs=(0, 2), outputs=(3, 5))
    (row,) = layer_runs(TfliteModel(3, (graph,), (0,) * 6), [])
    assert (row.op, row.tensor, row.layer, row.runs) == ("FULLY_CONNECTED", "w", None, "dense")
