"""`prune --block RxC`: whole blocks of 2-D kernels, ranked by mean (or max) |w| as TFMOT does.

Expectations come from the input kernels read with `rawread` (h5py) and the brute-force oracle in
`block_oracle.py` (no sparseprune code). TFMOT itself (through `--method tfmot`, in its worker
process) must zero exactly the same weights, including on kernels whose sizes are not multiples
of the block (TFMOT pads). Keras runs only in subprocesses: one builds the odd-sized model, one
fine-tunes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from block_oracle import all_zero_blocks, oracle_mask, oracle_scores
from conftest import SAMPLES
from rawread import keras_weights
from typer.testing import CliRunner

from sparseprune.cli import app

runner = CliRunner()
MLP = SAMPLES / "mlp.keras"
CNN = SAMPLES / "cnn.keras"
DATA = SAMPLES / "digits.npz"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}

# 10 -> 7 -> 6: no kernel side is a multiple of 4 (TFMOT pads the block grid).
BUILD_ODD = r"""
import sys
import keras
keras.utils.set_random_seed(3)
model = keras.Sequential(
    [keras.Input((10,)), keras.layers.Dense(7, name="a"), keras.layers.Dense(6, name="b")]
)
model.save(sys.argv[1])
"""


def prune_json(*args: str) -> dict:
    result = runner.invoke(app, ["prune", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def refused(*args: str) -> str:
    result = runner.invoke(app, ["prune", *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


def blocks_to_prune(blocks: int, target: float) -> int:
    """TFMOT's k = round(n * (1 - s)) kept, in float32."""
    return blocks - int(np.round(np.float32(blocks) * (np.float32(1) - np.float32(target))))


def grid(shape: tuple[int, ...], block: tuple[int, int]) -> int:
    return -(-shape[0] // block[0]) * -(-shape[1] // block[1])


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory, needs_tensorflow: None) -> Path:
    path = tmp_path_factory.mktemp("odd") / "odd.keras"
    subprocess.run([sys.executable, "-c", BUILD_ODD, str(path)], check=True, env=ENV)
    return path


@pytest.mark.parametrize(
    ("model", "block", "pooling", "target"),
    [("mlp", (4, 1), "avg", 0.7), ("odd", (4, 1), "avg", 0.6), ("odd", (3, 2), "max", 0.5)],
)
def test_layer_scope_matches_oracle(odd, tmp_path, model, block, pooling, target) -> None:
    source = MLP if model == "mlp" else odd
    out = tmp_path / "out.keras"
    doc = prune_json(
        str(source), "-o", str(out), "--target", str(target),
        "--block", f"{block[0]}x{block[1]}", "--block-pooling", pooling,
    )  # fmt: skip
    assert doc["checks"]["passed"]
    before, after = keras_weights(source), keras_weights(out)
    by_name = {t["name"]: t for t in doc["tensors"]}
    for layer, (kernel, bias) in before.items():
        count = blocks_to_prune(grid(kernel.shape, block), target)
        mask = oracle_mask(kernel, block, count, pooling)
        assert np.array_equal(after[layer][0], np.where(mask, 0, kernel)), layer
        assert np.array_equal(after[layer][1], bias)  # biases are not block-pruned
        entry = by_name[f"{layer}/kernel"]
        assert entry["method"] == "blocks"
        assert entry["blocks_pruned"] == count
        assert entry["blocks_zero_after"] == all_zero_blocks(after[layer][0], block)
        assert entry["blocks_total"] == grid(kernel.shape, block)


def test_global_scope_with_a_cap_matches_pooled_oracle(tmp_path: Path) -> None:
    out = tmp_path / "g.keras"
    doc = prune_json(
        str(MLP), "-o", str(out), "--block", "4x1", "--target", "0.8",
        "--scope", "global", "--set", "hidden2=0.5",
    )  # fmt: skip
    assert doc["checks"]["passed"]
    before, after = keras_weights(MLP), keras_weights(out)
    names = ["hidden1", "hidden2", "head"]  # the model's order: ties go to the earlier layer
    scores = {n: np.asarray(oracle_scores(before[n][0], (4, 1), "avg"), np.float32) for n in names}
    sizes = {n: scores[n].size for n in names}
    caps = dict(sizes, hidden2=blocks_to_prune(sizes["hidden2"], 0.5))
    wanted = blocks_to_prune(sum(sizes.values()), 0.8)
    ranked = sorted(
        (float(s), i, flat) for i, n in enumerate(names) for flat, s in enumerate(scores[n].ravel())
    )
    taken = dict.fromkeys(names, 0)
    chosen: dict[str, list[int]] = {n: [] for n in names}
    for _, i, flat in ranked:
        name = names[i]
        if sum(taken.values()) == wanted:
            break
        if taken[name] < caps[name]:
            taken[name] += 1
            chosen[name].append(flat)
    assert taken["hidden2"] == caps["hidden2"]  # the cap binds
    for name in names:
        kernel = before[name][0]
        flags = np.zeros(sizes[name], dtype=bool)
        flags[chosen[name]] = True
        mask = np.repeat(flags.reshape(scores[name].shape), 4, axis=0)[: kernel.shape[0]]
        assert np.array_equal(after[name][0], np.where(mask, 0, kernel)), name
    methods = {t["name"]: t["method"] for t in doc["tensors"]}
    assert set(methods.values()) == {"global_blocks"}


def test_recipe_blocks_and_per_layer_target(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        'target = 0.75\nblock = [2, 2]\nblock_pooling = "max"\n[layer.head]\ntarget = 0.5\n'
    )
    out = tmp_path / "r.keras"
    doc = prune_json(str(MLP), "-o", str(out), "--config", str(recipe))
    assert doc["checks"]["passed"]
    before, after = keras_weights(MLP), keras_weights(out)
    for layer, target in (("hidden1", 0.75), ("hidden2", 0.75), ("head", 0.5)):
        kernel = before[layer][0]
        count = blocks_to_prune(grid(kernel.shape, (2, 2)), target)
        mask = oracle_mask(kernel, (2, 2), count, "max")
        assert np.array_equal(after[layer][0], np.where(mask, 0, kernel)), layer


@pytest.mark.tensorflow
def test_refusals_name_the_reason(tmp_path: Path) -> None:
    out = str(tmp_path / "x.keras")
    assert "convolutions" in refused(str(CNN), "-o", out, "--target", "0.9", "--block", "4x1",
                                     "--layers", "conv")  # fmt: skip
    assert "1x1" in refused(str(MLP), "-o", out, "--target", "0.9", "--block", "1x1")
    assert "RxC" in refused(str(MLP), "-o", out, "--target", "0.9", "--block", "4x")
    assert "from 1 to" in refused(str(MLP), "-o", out, "--target", "0.9", "--block", "0x4")
    assert "single weights" in refused(str(MLP), "-o", out, "--pattern", "2:4", "--block", "4x1")
    assert "single weights" in refused(
        str(MLP), "-o", out, "--target", "0.5", "--threshold", "0.01", "--block", "4x1"
    )
    assert "pick one" in refused(
        str(MLP), "-o", out, "--target", "0.5", "--structure", "units", "--block", "4x1"
    )
    assert "global scope" in refused(
        str(MLP), "-o", out, "--target", "0.5", "--block", "4x1", "--scope", "global",
        "--method", "tfmot",
    )  # fmt: skip
    recipe = tmp_path / "bad.toml"
    recipe.write_text('target = 0.5\nblock = [4, "a"]\n')
    assert "block" in refused(str(MLP), "-o", out, "--config", str(recipe))
    assert not Path(out).exists()


def test_cnn_dense_head_is_pruned_and_convs_skipped(tmp_path: Path) -> None:
    out = tmp_path / "c.keras"
    doc = prune_json(str(CNN), "-o", str(out), "--target", "0.5", "--block", "4x1")
    assert [t["name"] for t in doc["tensors"]] == ["head/kernel"]
    reasons = {s["name"]: s["reason"] for s in doc["skipped"]}
    assert "convolutions" in reasons["conv1/kernel"] and "shrink" in reasons["conv1/kernel"]


def test_tfmot_block_size_zeroes_the_same_weights(odd: Path, tmp_path: Path) -> None:
    """TFMOT's own block code and the file-level rule agree to the byte. A 4x3 block pads the
    10x7 kernel on both axes with padding before the first window (TFMOT's SAME pooling)."""
    by_tfmot, by_file = tmp_path / "t.keras", tmp_path / "f.keras"
    args = ["--target", "0.6", "--block", "4x3"]
    doc = prune_json(str(odd), "-o", str(by_tfmot), *args, "--method", "tfmot")
    prune_json(str(odd), "-o", str(by_file), *args)
    assert doc["training"]["method"] == "tfmot" and doc["checks"]["passed"]
    assert by_tfmot.read_bytes() == by_file.read_bytes()


@pytest.mark.tensorflow
def test_native_fine_tuning_keeps_whole_blocks(tmp_path: Path) -> None:
    out = tmp_path / "ft.keras"
    run = subprocess.run(
        [sys.executable, "-m", "sparseprune", "prune", str(MLP), "-o", str(out), "--block",
         "4x1", "--target", "0.9", "--epochs", "1", "--data", str(DATA), "--json"],
        capture_output=True, text=True, env=ENV, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["training"]["method"] == "mask" and doc["checks"]["passed"]
    for layer, (kernel, _) in keras_weights(out).items():
        blocks = grid(kernel.shape, (4, 1))
        assert all_zero_blocks(kernel, (4, 1)) == blocks_to_prune(blocks, 0.9), layer
        # every zero is part of a whole zero block: no single zeros left behind
        assert np.count_nonzero(kernel == 0) == 4 * blocks_to_prune(blocks, 0.9), layer
