"""The zoo: every command exact or clearly refusing on architectures the project did not write.

keras.applications (MobileNetV2, ResNet50, DenseNet121, EfficientNetB0, ConvNeXtTiny, Xception,
NASNetMobile; weights=None, smallest inputs), an Embedding + Bidirectional(LSTM) + GRU text model,
a MultiHeadAttention + LayerNormalization + Conv1D block, a TimeDistributed model, a registered
custom layer, keras_hub BERT and GPT-2 backbones from tiny configs, tf_keras CNN and LSTM files and
TFMOT-wrapped files, each in `.keras` and `.h5` (`tests/fixtures/zoo.py` builds them once per
session in one subprocess, conftest's `zoo_dir`, shared with tests/test_shrink_zoo.py, and records
expectations from the live models).

Expectations never come from sparseprune: parameter and zero counts per layer are Keras's own
(`layer.weights`), the prunable parameters are found by walking the live sub-layers by TFMOT's
registry classes, and outputs are loaded back with stock Keras in ONE subprocess per module
(`zoo_check.py`), which also runs `--verify`'s input synthesis on dict- and int-input models.
The pytest process never imports TensorFlow: commands run in-process through Typer's runner.
"""

from __future__ import annotations

import json
import os
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
FIXTURES = ROOT / "tests" / "fixtures"
CHECKER = FIXTURES / "zoo_check.py"
TARGET = 0.5

# Files stock Keras 3 cannot load back (tf_keras Functional `.keras`, TFMOT wrappers): loaded
# with tf_keras in the check process instead, or (TFMOT) only inspected.
TF_KERAS = ("tk_cnn", "tk_lstm")
# Conversion refusals that are expected, with the words the one-sentence reason must contain.
# (tf_keras files convert into tf_keras files, loaded back with tf_keras; the custom layer's
# variables are all its own, so it converts by position.)
REFUSED = {"bert": "lists no layers", "gpt2": "lists no layers"}
# Families whose --verify (and bench's input synthesis) is exercised in the check process:
# dict int inputs (keras_hub), int inputs read by an Embedding (Keras 3, tf_keras).
VERIFY = ("bert.keras", "gpt2.h5", "text.h5", "tk_lstm.h5", "tk_lstm.keras")
# What the commands do to each file besides inspect: "prune" (--target 0.5, same format),
# "convert" (--target 0 into the other format) or "cross" (--target 0.5 into the other format:
# pruning and conversion at once). Every output is loaded back in stock Keras unless its file is
# in UNLOADED. Default: prune and convert. The largest applications (4-28M parameters, 17-110 MB
# a file, hundreds of layers) get one run per file: ResNet50, DenseNet121 and Xception are pruned
# from each format into the other, ConvNeXt (LayerScale) and EfficientNet (Normalization) from
# `.keras` into `.h5` (stock Keras cannot load a ConvNeXt `.h5` it wrote itself: its LayerScale
# entry lacks the module; sparseprune's keeps it); NASNet's `.h5` is pruned and checked by the
# tool's own re-read (a NASNet load costs ~8 s). The rest are inspected only. MobileNetV2 runs
# every check in both formats.
RUNS = {
    "resnet50.h5": ("cross",),
    "resnet50.keras": ("cross",),
    "densenet121.h5": ("cross",),
    "densenet121.keras": ("cross",),
    "xception.h5": ("cross",),
    "xception.keras": ("cross",),
    "convnexttiny.keras": ("cross",),
    "convnexttiny.h5": (),
    "efficientnetb0.keras": ("cross",),
    "efficientnetb0.h5": (),
    "nasnetmobile.h5": ("prune",),
    "nasnetmobile.keras": (),
}
UNLOADED = ("nasnetmobile.h5",)
DEFAULT_RUNS = ("prune", "convert")


@pytest.fixture(scope="session")
def zoo(zoo_dir: Path) -> dict:
    return json.loads((zoo_dir / "zoo.json").read_text())


def _other(suffix: str) -> str:
    return ".h5" if suffix == ".keras" else ".keras"


def _runs_of(name: str) -> tuple[str, ...]:
    return () if name.startswith("tfmot/") else RUNS.get(name, DEFAULT_RUNS)


def _output(out: Path, name: str, run: str) -> Path:
    """Where a run writes: `pruned_<stem>.<suffix>`, `converted_<stem>.<other>`, or
    `pruned_<stem>_from_<suffix>.<other>` (a cross run)."""
    stem, suffix = Path(name.replace("/", "_")).stem, Path(name).suffix
    names = {
        "prune": f"pruned_{stem}{suffix}",
        "convert": f"converted_{stem}{_other(suffix)}",
        "cross": f"pruned_{stem}_from_{suffix[1:]}{_other(suffix)}",
    }
    return out / names[run]


@pytest.fixture(scope="module")
def runs(zoo_dir: Path, zoo: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run inspect, prune and conversion on the files in-process (as `RUNS` says), then load
    every output with stock Keras in ONE subprocess; everything the tests assert on."""
    out = tmp_path_factory.mktemp("zoo_out")
    found: dict[str, dict] = {}
    manifest = []
    for name in _files():
        source, entry = zoo_dir / name, zoo[name]
        library = "tf_keras" if entry["family"] in TF_KERAS else "keras"
        record: dict = {"inspect": invoke("inspect", str(source))}
        for run in _runs_of(name):
            target = _output(out, name, run)
            target_ratio = "0" if run == "convert" else str(TARGET)
            record[run] = invoke("prune", str(source), "-o", str(target), "--target", target_ratio)
            record[f"{run}_path"], record[f"{run}_exists"] = str(target), target.exists()
            if target.exists() and name not in UNLOADED:
                manifest.append({"path": str(target), "reference": str(source),
                                 "specs": entry["inputs"], "library": library,
                                 "outputs": run == "convert"})  # fmt: skip
        if name in _files("loaded"):
            manifest.append({"path": str(source), "library": library, "names": True,
                             "key": f"names:{name}"})  # fmt: skip
        if name in VERIFY:
            manifest.append({"path": record["prune_path"], "verify_against": str(source),
                             "key": f"verify:{name}"})  # fmt: skip
        found[name] = record
    manifest_path = out / "manifest.json"
    manifest_path.write_text(json.dumps(manifest))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(CHECKER), str(manifest_path)], env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    return {"files": found, "loaded": loaded}


def _files(kind: str | None = None) -> list[str]:
    """Zoo file names without building the zoo (collection must not start TensorFlow); with
    `kind` ("prune", "convert", "cross", "loaded": names checked), those that get it."""
    sys.path.insert(0, str(FIXTURES))
    import zoo as builder

    names = []
    chosen = os.environ.get("SPARSEPRUNE_ZOO_FAMILIES")  # e.g. "text,bert" while developing
    for family in chosen.split(",") if chosen else builder.ALL_FAMILIES:
        if family == "tfmot":
            names += [f"tfmot/tfmot_{m}{s}" for m in ("mlp", "cnn") for s in (".keras", ".h5")]
        else:
            names += [f"{family}.keras", f"{family}.h5"]
    if kind == "loaded":
        return [n for n in names if _runs_of(n) and n not in UNLOADED]
    return [n for n in names if kind is None or kind in _runs_of(n)]


def _pruned(runs: dict, name: str) -> tuple[tuple[int, dict | None, str], str]:
    """The prune result and output path of a file pruned in its own format or across."""
    record = runs["files"][name]
    run = "prune" if "prune" in record else "cross"
    return record[run], record[f"{run}_path"]


# --------------------------------------------------------------------------- inspect


@pytest.mark.parametrize("name", _files())
def test_reader_counts_what_keras_counts(zoo_dir: Path, zoo: dict, name: str) -> None:
    """Per layer: tensors, parameters, exact zeros and TFMOT-prunable parameters; unique names."""
    expected = zoo[name]
    got: dict[str, list[int]] = {}
    with open_model(zoo_dir / name) as model:
        names = [t.name for t in model.model_tensors]
        assert len(names) == len(set(names)), "duplicate tensor names"
        for tensor in model.model_tensors:
            layer = next(
                (
                    n
                    for n in expected["layers"]
                    if tensor.layer == n or tensor.layer.startswith(n + "/")
                ),
                tensor.layer,
            )
            row = got.setdefault(layer, [0, 0, 0, 0])
            values = model.read(tensor)
            row[0] += 1
            row[1] += tensor.params
            row[2] += int(np.count_nonzero(values == 0))
            row[3] += tensor.params if tensor.prunable else 0
    want = {
        layer: [e["tensors"], e["params"], e["zeros"], e["prunable_params"]]
        for layer, e in expected["layers"].items()
    }
    assert got == want


@pytest.mark.parametrize("name", _files())
def test_inspect_total_is_keras_count(runs: dict, zoo: dict, name: str) -> None:
    code, data, output = runs["files"][name]["inspect"]
    assert code == 0, output
    assert data["models"][0]["totals"]["params"] == zoo[name]["count_params"]


# --------------------------------------------------------------------------- prune


@pytest.mark.parametrize("name", sorted({*_files("prune"), *_files("cross")}))
def test_prune_reaches_every_tfmot_kernel_and_nothing_else(
    runs: dict, zoo: dict, name: str
) -> None:
    (code, data, output), path = _pruned(runs, name)
    assert code == 0, output
    assert data["checks"]["passed"], data["checks"]
    expected = sum(e["prunable_params"] for e in zoo[name]["layers"].values())
    assert sum(t["params"] for t in data["tensors"]) == expected
    for tensor in data["tensors"]:
        kept = round(tensor["params"] * (1 - TARGET))
        assert tensor["zeros_after"] >= tensor["params"] - kept, tensor["name"]
    if name in UNLOADED:
        return  # the tool's own re-read checked it
    loaded = runs["loaded"][path]
    assert loaded["ok"], loaded.get("error")
    assert loaded["same_count"]
    changed = sum(
        s for s, same in zip(loaded["sizes"], loaded["identical"], strict=True) if not same
    )
    assert changed == expected  # untouched weights are bit-identical in stock Keras
    assert all(loaded["kept_identical"])  # and so is every weight pruning kept
    assert sum(loaded["zeros"]) - sum(loaded["reference_zeros"]) == sum(
        t["zeros_after"] - t["zeros_before"] for t in data["tensors"]
    )


# --------------------------------------------------------------------------- convert


@pytest.mark.parametrize("name", _files("convert"))
def test_conversion_is_exact_or_refused_before_writing(runs: dict, zoo: dict, name: str) -> None:
    record = runs["files"][name]
    code, _, output = record["convert"]
    family = zoo[name]["family"]
    if family in REFUSED:
        assert code == 2 and not record["convert_exists"]
        assert REFUSED[family] in output and "Traceback" not in output
        return
    assert code == 0, output
    loaded = runs["loaded"][record["convert_path"]]
    assert loaded["ok"], loaded.get("error")
    assert loaded["same_count"] and all(loaded["identical"])
    assert loaded["max_abs_diff"] == 0.0


@pytest.mark.parametrize("name", _files("cross"))
def test_pruning_into_the_other_format_converts_exactly(runs: dict, name: str) -> None:
    """A cross run writes the other format (a zip for `.keras`, HDF5 for `.h5`), which stock
    Keras loads with the same weights in the same order: the pruned ones zeroed where pruning
    chose and bit-identical elsewhere, every other one bit-identical (the prune test counts)."""
    record = runs["files"][name]
    code, _, output = record["cross"]
    assert code == 0, output
    path = Path(record["cross_path"])
    assert zipfile.is_zipfile(path) == (path.suffix == ".keras")
    assert h5py.is_hdf5(path) == (path.suffix == ".h5")
    if name in UNLOADED:
        return  # the prune test checked the tool's own re-read
    loaded = runs["loaded"][record["cross_path"]]
    assert loaded["ok"], loaded.get("error")
    assert loaded["same_count"] and all(loaded["kept_identical"])
    assert any(loaded["identical"]) and not all(loaded["identical"])


# --------------------------------------------------------------------------- verify


@pytest.mark.parametrize("name", [n for n in VERIFY if n in _files()])
def test_verify_builds_inputs_from_the_model_specs(runs: dict, name: str) -> None:
    result = runs["loaded"][f"verify:{name}"]
    assert result["ok"], result.get("error")
    assert result["samples"] == 64 and result["inputs"] == "random"
    assert np.isfinite(result["max_abs_diff"]) and result["max_abs_diff"] > 0  # pruned: differs
    assert result["bench_inputs_ran"]


# --------------------------------------------------------------------------- live names


@pytest.mark.parametrize("name", _files("loaded"))
def test_live_weight_names_match_the_file_names(zoo_dir: Path, runs: dict, name: str) -> None:
    """Fine-tuning returns weights by name: a live model's names are the reader's names (a
    custom layer's variables are `projection/var0` in both formats and live)."""
    result = runs["loaded"][f"names:{name}"]
    assert result["ok"], result.get("error")
    with open_model(zoo_dir / name) as model:
        assert sorted(result["names"]) == sorted(t.name for t in model.model_tensors)
