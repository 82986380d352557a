"""`.keras` <-> `.h5` conversion of files tf_keras and Keras 3 wrote, checked by loading them.

A tf_keras file converts into a tf_keras file (what its users load; tf_keras cannot read Keras 3
files), a Keras 3 file into a Keras 3 file. `tests/fixtures/convert_models.py` saves the models
with tf_keras (TF_USE_LEGACY_KERAS=1) and Keras 3 in one subprocess; the commands run in-process
(no TensorFlow here); then ONE subprocess loads every output and its source with the same
library and compares `get_weights()` one by one and the outputs. Expectations never come from
sparseprune: weight values and order from the live layers, the loaded source files, and TFMOT's
registry for what pruning may touch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from clirun import invoke

from sparseprune.formats import open_model

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "fixtures" / "convert_models.py"
TF_KERAS = ("rnn", "attention", "nested", "conv", "sequential", "tk_custom")
KERAS3 = ("k3_custom",)
CUSTOM = {"tk_custom": "tf_keras", "k3_custom": "keras"}
# TFMOT's registry prunes these in the conv model (not DepthwiseConv2D, BN, PReLU, biases).
CONV_PRUNED = {"c/kernel", "ct/kernel", "sep/pointwise_kernel", "head/kernel"}


def _other(suffix: str) -> str:
    return ".h5" if suffix == ".keras" else ".keras"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, needs_tensorflow: None) -> Path:
    out = tmp_path_factory.mktemp("convert_models")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, str(SCRIPT), str(out)], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return out


# The session fixtures' older tf_keras layouts: Keras 2.0-era weight paths, `weight_names`
# split over attributes, tf_keras 2.13's `_layer_checkpoint_dependencies` archive (which the
# installed tf_keras no longer loads itself, so its converted `.h5` is compared with the file
# it was rewritten from).
OLDER = {
    "old_naming.h5": "old_naming.h5",
    "split_names.h5": "split_names.h5",
    "lcd.keras": "tk_seq.keras",
    "tk_func.h5": "tk_func.h5",
    "tk_func.keras": "tk_func.keras",
}


@pytest.fixture(scope="module")
def runs(built: Path, fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every conversion (and one pruning conversion) through the CLI, then every output loaded
    in one subprocess next to its source."""
    out = tmp_path_factory.mktemp("converted")
    records: dict = {}
    manifest: list[dict] = []
    for name, reference in OLDER.items():
        target = out / f"older_{name}{_other(Path(name).suffix)}"
        records[f"older:{name}"] = invoke("prune", str(fixture_dir / name), "-o", str(target),
                                           "--target", "0")  # fmt: skip
        manifest.append({"path": str(target), "reference": str(fixture_dir / reference),
                         "library": "tf_keras", "key": f"older:{name}"})  # fmt: skip
    for stem in (*TF_KERAS, *KERAS3):
        library = "keras" if stem in KERAS3 else "tf_keras"
        for suffix in (".keras", ".h5"):
            source, target = built / f"{stem}{suffix}", out / f"{stem}{suffix}{_other(suffix)}"
            records[f"{stem}{suffix}"] = invoke("prune", str(source), "-o", str(target),
                                                 "--target", "0")  # fmt: skip
            manifest.append({"path": str(target), "reference": str(source), "library": library})
            if stem in CUSTOM:
                manifest.append({"path": str(source), "library": library, "names": True,
                                 "key": f"names:{stem}{suffix}"})  # fmt: skip
    # Keras 3 reads some tf_keras `.h5` files (not RNNs, attention, nested or transposed
    # convolutions, whose tf_keras configs it rejects): a converted one as well as the source.
    manifest.append({"path": str(out / "sequential.keras.h5"), "library": "keras",
                     "reference": str(built / "sequential.h5"), "key": "keras3"})  # fmt: skip
    pruned = out / "conv_pruned.keras"
    records["pruned"] = invoke(
        "prune", str(built / "conv.h5"), "-o", str(pruned), "--target", "0.5"
    )
    manifest.append(
        {"path": str(pruned), "reference": str(built / "conv.h5"), "library": "tf_keras"}
    )
    for suffix in (".keras", ".h5"):
        source, target = built / f"tfmot{suffix}", out / f"tfmot{suffix}{_other(suffix)}"
        records[f"tfmot{suffix}"] = invoke("prune", str(source), "-o", str(target),
                                            "--target", "0")  # fmt: skip
        manifest.append({"path": str(target), "reference": str(source), "library": "tf_keras",
                         "tfmot": True})  # fmt: skip
    stripped = out / "tfmot_stripped.h5"
    records["strip"] = invoke("strip", str(built / "tfmot.h5"), "-o", str(stripped))
    records["stripped"] = invoke("prune", str(stripped), "-o", str(out / "tfmot_stripped.keras"),
                                  "--target", "0")  # fmt: skip
    manifest.append({"path": str(out / "tfmot_stripped.keras"), "reference": str(stripped),
                     "library": "tf_keras"})  # fmt: skip
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SCRIPT), "--check", str(path)], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return {"out": out, "records": records, "loaded": json.loads(done.stdout.splitlines()[-1])}


def _assert_exact(loaded: dict) -> None:
    assert loaded["ok"], loaded.get("error")
    assert loaded["same_count"] and loaded["identical"] and all(loaded["identical"])
    assert loaded["max_abs_diff"] == 0.0


CONVERTED = [f"{stem}{suffix}" for stem in (*TF_KERAS, *KERAS3) for suffix in (".keras", ".h5")]


@pytest.mark.parametrize("name", CONVERTED)
def test_conversion_loads_bit_identical_in_the_writers_keras(runs: dict, name: str) -> None:
    code, data, output = runs["records"][name]
    assert code == 0, output
    assert data is not None and data["checks"]["passed"], output
    target = runs["out"] / f"{name}{_other(Path(name).suffix)}"
    _assert_exact(runs["loaded"][str(target)])


@pytest.mark.parametrize("stem", TF_KERAS)
def test_tf_keras_files_stay_tf_keras_files(runs: dict, built: Path, stem: str) -> None:
    """Same writer version recorded; tf_keras's own config spellings and layout kept."""
    with zipfile.ZipFile(runs["out"] / f"{stem}.h5.keras") as archive:
        version = json.loads(archive.read("metadata.json"))["keras_version"]
        config = json.loads(archive.read("config.json"))
    with h5py.File(built / f"{stem}.h5") as source:
        assert version == source.attrs["keras_version"] and version.startswith("2.")
    assert config["module"].startswith(("tf_keras", "keras"))
    assert "batch_input_shape" in json.dumps(config)  # tf_keras's InputLayer spelling
    with zipfile.ZipFile(built / f"{stem}.keras") as source:
        version = json.loads(source.read("metadata.json"))["keras_version"]
    with h5py.File(runs["out"] / f"{stem}.keras.h5") as written:
        assert written.attrs["keras_version"] == version


def test_converted_tf_keras_h5_also_loads_in_keras3(runs: dict) -> None:
    _assert_exact(runs["loaded"]["keras3"])


def test_pruning_into_the_other_format_prunes_only_tfmot_kernels(runs: dict) -> None:
    code, data, output = runs["records"]["pruned"]
    assert code == 0 and data["checks"]["passed"], output
    assert {t["name"] for t in data["tensors"]} == CONV_PRUNED
    loaded = runs["loaded"][str(runs["out"] / "conv_pruned.keras")]
    assert loaded["ok"], loaded.get("error")
    assert loaded["identical"].count(False) == len(CONV_PRUNED)  # everything else bit-identical
    gained = sum(loaded["zeros"]) - sum(loaded["reference_zeros"])
    assert gained == sum(t["zeros_after"] - t["zeros_before"] for t in data["tensors"]) > 0


@pytest.mark.parametrize("stem", list(CUSTOM))
def test_custom_layer_variables_have_one_name_in_both_formats_and_live(
    runs: dict, built: Path, stem: str
) -> None:
    """`scaled/var0`, `scaled/var1` in `.keras`, `.h5` and a live model, each the variable
    at that position of the live layer's `weights` (the non-trainable one was created first)."""
    expected = json.loads((built / "expected.json").read_text())[f"{stem}.h5"]
    live = np.load(built / f"{stem}.npz")
    values = [live[f"arr_{i}"] for i in range(len(live.files))]
    assert expected["variable_names"] == ["w", "count"]
    for suffix in (".keras", ".h5"):
        with open_model(built / f"{stem}{suffix}") as model:
            mine = [t for t in model.model_tensors if t.layer == "scaled"]
            assert [t.name for t in mine] == ["scaled/var0", "scaled/var1"]
            for tensor, value in zip(mine, values, strict=True):
                assert np.array_equal(model.read(tensor), value)
            names = sorted(t.name for t in model.model_tensors)
        result = runs["loaded"][f"names:{stem}{suffix}"]
        assert result["ok"], result.get("error")
        assert sorted(result["names"]) == names


def test_custom_layer_with_sub_layer_named_alike_refused_before_writing(
    built: Path, tmp_path: Path
) -> None:
    for suffix in (".keras", ".h5"):
        with open_model(built / f"k3_block{suffix}") as model:
            names = [t.name for t in model.model_tensors if t.layer == "block"]
        assert names == ["block/var0", "block/inner/var0", "block/inner/var1"]
        target = tmp_path / f"block{_other(suffix)}"
        code, _, output = invoke(
            "prune", str(built / f"k3_block{suffix}"), "-o", str(target), "--target", "0"
        )
        assert code == 2 and not target.exists(), output
        assert "keeps variables in sub-layers" in output and "Traceback" not in output


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_tfmot_wrapped_files_convert_with_their_masks(runs: dict, built: Path, suffix: str) -> None:
    """Loaded under TFMOT's prune_scope(): kernels, masks, thresholds and steps bit-identical
    (tf_keras `.keras` saves each pruned kernel twice; the copy is written from the kernel)."""
    code, data, output = runs["records"][f"tfmot{suffix}"]
    assert code == 0 and data["checks"]["passed"], output
    loaded = runs["loaded"][str(runs["out"] / f"tfmot{suffix}{_other(suffix)}")]
    _assert_exact(loaded)
    # 2 x (kernel, bias, mask, threshold, pruning_step); BN: 4 + its wrapper's pruning_step
    assert len(loaded["identical"]) == 15


def test_stripped_tfmot_file_converts(runs: dict) -> None:
    for step in ("strip", "stripped"):
        assert runs["records"][step][0] == 0, runs["records"][step][2]
    _assert_exact(runs["loaded"][str(runs["out"] / "tfmot_stripped.keras")])


@pytest.mark.parametrize("name", list(OLDER))
def test_older_tf_keras_layouts_convert(runs: dict, name: str) -> None:
    code, data, output = runs["records"][f"older:{name}"]
    assert code == 0 and data["checks"]["passed"], output
    _assert_exact(runs["loaded"][f"older:{name}"])


def test_files_from_other_keras_versions_refused(built: Path, tmp_path: Path) -> None:
    old = tmp_path / "keras1.h5"
    shutil.copy(built / "sequential.h5", old)
    with h5py.File(old, "r+") as f:
        f.attrs["keras_version"] = "1.2.2"
    target = tmp_path / "keras1.keras"
    code, _, output = invoke("prune", str(old), "-o", str(target), "--target", "0")
    assert code == 2 and not target.exists() and "written by Keras 1.2.2" in output


def test_conversion_is_deterministic(built: Path, tmp_path: Path) -> None:
    for suffix in (".keras", ".h5"):
        first, second = tmp_path / f"a{_other(suffix)}", tmp_path / f"b{_other(suffix)}"
        for target in (first, second):
            source = str(built / f"rnn{suffix}")
            code, _, output = invoke("prune", source, "-o", str(target), "--target", "0")
            assert code == 0, output
        assert first.read_bytes() == second.read_bytes()
