"""`prune --structure units`: whole units ranked by L2 norm, zeroed, then shrunk away.

Expectations come from the input kernels read with `rawread` (h5py) and numpy norms computed here,
independently of `masks.py`; layer sizes are read from the output's config with zipfile. Keras
runs only in subprocesses (one load-and-predict check, one short fine-tune).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES
from rawread import h5_weights, keras_weights
from typer.testing import CliRunner

from sparseprune.cli import app
from sparseprune.errors import InputError
from sparseprune.numeric.masks import unit_positions
from sparseprune.numeric.schedule import MaskRules, TensorRule, pruned_positions
from sparseprune.prune.recipes import PruneSpec, load_recipe

runner = CliRunner()
MLP = SAMPLES / "mlp.keras"
DATA = SAMPLES / "digits.npz"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}

# Loads the input with the given units zeroed (the un-shrunk model, built here from the kept
# indices) and the shrunk output, and compares their predictions on the digits test set.
PREDICT = r"""
import json, sys
import keras
import numpy as np
source, written, keep_file, data = sys.argv[1:5]
keep = np.load(keep_file)
model = keras.models.load_model(source)
for name in keep.files:
    layer = model.get_layer(name)
    kernel, bias = layer.get_weights()
    drop = np.setdiff1d(np.arange(kernel.shape[-1]), keep[name])
    kernel[..., drop] = 0.0
    layer.set_weights([kernel, bias])
x = np.load(data)["x_test"]
shrunk = keras.models.load_model(written)
diff = np.abs(model.predict(x, verbose=0) - shrunk.predict(x, verbose=0))
print("REPORT" + json.dumps({"max": float(diff.max()), "params": shrunk.count_params()}))
"""


def prune_json(*args: str) -> dict:
    result = runner.invoke(app, ["prune", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def config_units(path: Path) -> dict[str, int]:
    """Units per Dense layer, read from the written archive's config.json."""
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    return {
        layer["config"]["name"]: layer["config"]["units"]
        for layer in config["config"]["layers"]
        if layer["class_name"] == "Dense"
    }


def largest_norms(kernel: np.ndarray, keep: int) -> np.ndarray:
    """Indices (ascending) of the `keep` units with the largest column L2 norms."""
    norms = np.linalg.norm(kernel.reshape(-1, kernel.shape[-1]).astype(np.float64), axis=0)
    return np.sort(np.argsort(-norms, kind="stable")[:keep])


@pytest.fixture(scope="module")
def layer_run(
    tmp_path_factory: pytest.TempPathFactory, needs_tensorflow: None
) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("units") / "units.keras"
    return out, prune_json(str(MLP), "-o", str(out), "--structure", "units", "--target", "0.5")


def test_layer_scope_sizes_and_kept_units(layer_run: tuple[Path, dict]) -> None:
    out, doc = layer_run
    assert config_units(out) == {
        "hidden1": round(128 * 0.5),
        "hidden2": round(64 * 0.5),
        "head": 10,
    }
    before, after = keras_weights(MLP), keras_weights(out)
    keep1 = largest_norms(before["hidden1"][0], 64)
    keep2 = largest_norms(before["hidden2"][0], 32)
    assert np.array_equal(after["hidden1"][0], before["hidden1"][0][:, keep1])
    assert np.array_equal(after["hidden1"][1], before["hidden1"][1][keep1])  # bias as it was
    assert np.array_equal(after["hidden2"][0], before["hidden2"][0][keep1][:, keep2])
    assert after["head"][0].shape == (32, 10)
    assert doc["checks"]["passed"]
    totals = doc["shrink"]["totals"]
    assert (totals["units_before"], totals["units_after"]) == (202, 106)
    assert totals["params_after"] == 64 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10
    assert totals["macs_after"] < totals["macs_before"]
    hidden = {t["name"]: t["units_pruned"] for t in doc["tensors"]}
    assert hidden == {"hidden1/kernel": 64, "hidden2/kernel": 32}


@pytest.mark.tensorflow
def test_predictions_match_zeroed_model(layer_run: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = layer_run
    before = keras_weights(MLP)
    keep = {
        "hidden1": largest_norms(before["hidden1"][0], 64),
        "hidden2": largest_norms(before["hidden2"][0], 32),
    }
    np.savez(tmp_path / "keep.npz", **keep)
    run = subprocess.run(
        [sys.executable, "-c", PREDICT, str(MLP), str(out), str(tmp_path / "keep.npz"), str(DATA)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.split("REPORT", 1)[1])
    assert report["max"] <= 1e-5
    assert report["params"] == 64 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10


def test_global_scope_with_cap(tmp_path: Path) -> None:
    out = tmp_path / "g.keras"
    args = ("--structure", "units", "--scope", "global", "--target", "0.5", "--set", "hidden1=0.4")
    doc = prune_json(str(MLP), "-o", str(out), *args)
    before = keras_weights(MLP)
    kernels = [before["hidden1"][0], before["hidden2"][0]]
    norms = [np.linalg.norm(k.astype(np.float64), axis=0).astype(np.float32) for k in kernels]
    order = sorted((float(n), layer, unit) for layer, ns in enumerate(norms) for unit, n in
                   enumerate(ns))  # fmt: skip
    caps, want = [128 - round(128 * 0.6), 64], 192 - round(192 * 0.5)
    removed: list[set[int]] = [set(), set()]
    for _, layer, unit in order:
        if sum(map(len, removed)) == want:
            break
        if len(removed[layer]) < caps[layer]:
            removed[layer].add(unit)
    assert len(removed[0]) == 51  # the cap binds: hidden1 (fan-in 64) has the smaller norms
    units = config_units(out)
    assert units == {"hidden1": 128 - 51, "hidden2": 64 - len(removed[1]), "head": 10}
    kept1 = np.array(sorted(set(range(128)) - removed[0]))
    kept2 = np.array(sorted(set(range(64)) - removed[1]))
    assert np.array_equal(keras_weights(out)["hidden1"][0], kernels[0][:, kept1])
    assert np.array_equal(keras_weights(out)["hidden2"][0], kernels[1][kept1][:, kept2])
    assert doc["checks"]["passed"]


def test_non_unit_tensors_skipped_with_reason(tmp_path: Path) -> None:
    doc = prune_json(
        str(MLP), "-o", str(tmp_path / "b.keras"), "--structure", "units", "--target", "0.25",
        "--include-bias",
    )  # fmt: skip
    reasons = {s["name"]: s["reason"] for s in doc["skipped"]}
    assert "no output units" in reasons["hidden1/bias"]
    assert "model's outputs" in reasons["head/kernel"]
    assert {t["name"] for t in doc["tensors"]} == {"hidden1/kernel", "hidden2/kernel"}


@pytest.mark.tensorflow
def test_tfmot_and_single_weight_rules_refused(tmp_path: Path) -> None:
    out = tmp_path / "t.keras"
    result = runner.invoke(
        app, ["prune", str(MLP), "-o", str(out), "--structure", "units", "--target", "0.5",
              "--method", "tfmot"],
    )  # fmt: skip
    assert result.exit_code == 2 and "--method mask" in result.output
    assert not out.exists()
    result = runner.invoke(
        app, ["prune", str(MLP), "-o", str(out), "--structure", "units", "--pattern", "2:4"]
    )
    assert result.exit_code == 2 and "pattern" in result.output
    result = runner.invoke(
        app, ["prune", str(MLP), "-o", str(out), "--structure", "units", "--target", "0.5"]
    )
    assert result.exit_code == 0
    again = runner.invoke(
        app, ["prune", str(MLP), "-o", str(out), "--structure", "units", "--target", "0.5"]
    )
    assert again.exit_code == 2 and "--force" in again.output


def test_recipe_structure_key(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('structure = "units"\ntarget = 0.5\n')
    assert load_recipe(recipe).structure == "units"
    recipe.write_text('structure = "rows"\ntarget = 0.5\n')
    with pytest.raises(InputError, match="structure"):
        load_recipe(recipe)
    with pytest.raises(InputError, match="threshold"):
        PruneSpec(structure="units", threshold=0.1).validate()


def test_unit_positions_ties_and_schedule() -> None:
    kernel = np.array([[3.0, 1.0, 1.0, 0.5], [4.0, 0.0, 0.0, 0.5]], dtype=np.float32)
    chosen = unit_positions(kernel, 2)  # norms 5, 1, 1, 0.707: unit 3, then the lower tie (1)
    assert chosen.all(axis=0).tolist() == [False, True, False, True]
    assert (chosen.any(axis=0) == chosen.all(axis=0)).all()  # whole columns only
    rules = MaskRules((TensorRule("k", "units", target=0.5),))
    assert pruned_positions({"k": kernel}, rules, lambda s: s)["k"].all(axis=0).sum() == 2
    assert not pruned_positions({"k": kernel}, rules, lambda s: 0.0)["k"].any()
    pooled = MaskRules((TensorRule("a", "global_units"), TensorRule("b", "global_units", cap=0.0)),
                       target=0.5)  # fmt: skip
    masks = pruned_positions({"a": kernel, "b": kernel * 0.01}, pooled, lambda s: s)
    assert masks["a"].all(axis=0).sum() == 4 and not masks["b"].any()  # b is capped at 0


@pytest.mark.parametrize(
    ("scope", "units"),
    [
        (("--target", "0.5"), {"hidden1": 64, "hidden2": 32, "head": 10}),
        (  # hidden1 capped at 51 units removed; the pool of 192 loses 96
            ("--target", "0.5", "--scope", "global", "--set", "hidden1=0.4"),
            {"hidden1": 77, "hidden2": 19, "head": 10},
        ),
    ],
    ids=["layer", "global-capped"],
)
@pytest.mark.tensorflow
def test_finetune_then_shrink(tmp_path: Path, scope: tuple[str, ...], units: dict) -> None:
    out = tmp_path / "ft.keras"
    run = subprocess.run(
        [sys.executable, "-m", "sparseprune", "prune", str(MLP), "-o", str(out), "--structure",
         "units", *scope, "--data", str(DATA), "--epochs", "2", "--json"],
        env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    doc = json.loads(run.stdout)
    assert config_units(out) == units
    assert doc["training"]["epochs"] == 2 and doc["training"]["after"]["accuracy"] > 0.8
    assert set(doc["training"]["before"]) >= {"loss", "accuracy"}
    assert doc["shrink"]["totals"]["units_after"] == 106 and doc["checks"]["passed"]


def test_h5_input_and_weights_only_refused(tmp_path: Path) -> None:
    out = tmp_path / "u.h5"
    prune_json(str(SAMPLES / "mlp.h5"), "-o", str(out), "--structure", "units", "--target", "0.5")
    shapes = {layer: weights[0].shape for layer, weights in h5_weights(out).items() if weights}
    assert shapes == {"hidden1": (64, 64), "hidden2": (64, 32), "head": (32, 10)}
    refused = runner.invoke(
        app, ["prune", str(SAMPLES / "mlp.weights.h5"), "-o", str(tmp_path / "w.weights.h5"),
              "--structure", "units", "--target", "0.5"],
    )  # fmt: skip
    assert refused.exit_code == 2 and "architecture" in refused.output


def test_one_shot_units_never_imports_keras(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from sparseprune.prune import prune_model\n"
        "from sparseprune.prune.recipes import PruneSpec\n"
        f"prune_model({str(MLP)!r}, {str(tmp_path / 'o.keras')!r},"
        " PruneSpec(target=0.5, structure='units'))\n"
        "heavy = {'tensorflow', 'keras', 'tf_keras'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    run = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
