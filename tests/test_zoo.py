"""The zoo: every command exact or clearly refusing on architectures the project did not write.

keras.applications (MobileNetV2, ResNet50, DenseNet121, EfficientNetB0, ConvNeXtTiny, Xception,
NASNetMobile; weights=None, smallest inputs), an Embedding + Bidirectional(LSTM) + GRU text model,
a MultiHeadAttention + LayerNormalization + Conv1D block, a TimeDistributed model, a registered
custom layer, keras_hub BERT and GPT-2 backbones from tiny configs, tf_keras CNN and LSTM files and
TFMOT-wrapped files, each in `.keras` and `.h5` (`tests/fixtures/zoo.py` builds them once per
session in one subprocess and records expectations from the live models).

Expectations never come from sparseprune: parameter and zero counts per layer are Keras's own
(`layer.weights`), the prunable parameters are found by walking the live sub-layers by TFMOT's
registry classes, and outputs are loaded back with stock Keras in ONE subprocess per module
(`zoo_check.py`), which also runs `--verify`'s input synthesis on dict- and int-input models.
The pytest process never imports TensorFlow: commands run in-process through Typer's runner.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sparseprune.cli import app
from sparseprune.formats import open_model

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
BUILDER = FIXTURES / "zoo.py"
CHECKER = FIXTURES / "zoo_check.py"
TARGET = 0.5
runner = CliRunner()

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
# The largest applications (4-28M parameters, 17-110 MB a file, hundreds of layers) would take
# most of the suite's budget to prune, convert and load back in both formats. They are inspected
# in both formats, pruned as `.h5` (checked by the tool's own re-read of the output), and the
# two with classes nothing smaller has (ConvNeXt's LayerScale, EfficientNet's Normalization) are
# converted `.keras` -> `.h5` and loaded back. MobileNetV2 runs every check in both formats.
LARGE = ("resnet50", "convnexttiny", "xception", "densenet121", "nasnetmobile", "efficientnetb0")
LARGE_CONVERTED = ("convnexttiny.keras", "efficientnetb0.keras")  # LayerScale, Normalization


def _cache_key() -> str:
    digest = hashlib.sha256()
    for name in ("zoo.py", "custom_layers.py", "make_tfmot_fixtures.py"):
        digest.update((FIXTURES / name).read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zoo, built once (a few hundred MB). Set SPARSEPRUNE_ZOO_CACHE to a folder to keep it
    between runs (keyed by the builder's source), SPARSEPRUNE_ZOO_FAMILIES=text,bert to test a
    few families while developing; other test modules may reuse this fixture."""
    cache = os.environ.get("SPARSEPRUNE_ZOO_CACHE")
    out = Path(cache) / _cache_key() if cache else tmp_path_factory.mktemp("zoo")
    if not (out / "zoo.json").is_file():
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
        subprocess.run([sys.executable, str(BUILDER), str(out)], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return out


@pytest.fixture(scope="session")
def zoo(zoo_dir: Path) -> dict:
    return json.loads((zoo_dir / "zoo.json").read_text())


def _invoke(*args: str) -> tuple[int, dict | None, str]:
    result = runner.invoke(app, [*args, "--json"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    try:
        data = json.loads(result.stdout) if result.stdout.strip() else None
    except ValueError:
        data = None
    try:
        errors = result.stderr
    except ValueError:  # older Click mixes stderr into output
        errors = ""
    return result.exit_code, data, f"{result.output}{errors}"


def _other(suffix: str) -> str:
    return ".h5" if suffix == ".keras" else ".keras"


@pytest.fixture(scope="module")
def runs(zoo_dir: Path, zoo: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run inspect, prune and conversion on every file in-process, then load every output
    with stock Keras in ONE subprocess; everything the tests assert on."""
    out = tmp_path_factory.mktemp("zoo_out")
    found: dict[str, dict] = {}
    manifest = []
    for name, entry in sorted(zoo.items()):
        if name not in _files():
            continue
        source = zoo_dir / name
        stem, suffix = Path(name).stem, Path(name).suffix
        safe = name.replace("/", "_")
        record: dict = {"inspect": _invoke("inspect", str(source))}
        library = "tf_keras" if entry["family"] in TF_KERAS else "keras"
        if entry["writer"] != "tfmot":
            pruned = out / f"pruned_{safe}"
            record["prune"] = _invoke("prune", str(source), "-o", str(pruned), "--target", "0.5")
            converted = out / f"converted_{Path(safe).stem}{_other(suffix)}"
            record["convert"] = _invoke("prune", str(source), "-o", str(converted), "--target", "0")
            record["converted_exists"] = converted.exists()
            for path in (pruned, converted):
                if path.exists():
                    manifest.append({"path": str(path), "reference": str(source),
                                     "specs": entry["inputs"], "library": library})  # fmt: skip
            manifest.append({"path": str(source), "library": library, "names": True,
                             "key": f"names:{name}"})  # fmt: skip
            if name in VERIFY:
                manifest.append({"path": str(pruned), "verify_against": str(source),
                                 "key": f"verify:{name}"})  # fmt: skip
        record["pruned_path"] = str(out / f"pruned_{safe}")
        record["converted_path"] = str(out / f"converted_{Path(safe).stem}{_other(suffix)}")
        found[name] = record
        _ = stem
    manifest_path = out / "manifest.json"
    manifest_path.write_text(json.dumps(manifest))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(CHECKER), str(manifest_path)], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    return {"files": found, "loaded": loaded}


def _files(kind: str | None = None) -> list[str]:
    """Zoo file names without building the zoo (collection must not start TensorFlow)."""
    sys.path.insert(0, str(FIXTURES))
    import zoo as builder

    names = []
    chosen = os.environ.get("SPARSEPRUNE_ZOO_FAMILIES")  # e.g. "text,bert" while developing
    for family in chosen.split(",") if chosen else builder.ALL_FAMILIES:
        if family == "tfmot":
            names += [f"tfmot/tfmot_{m}{s}" for m in ("mlp", "cnn") for s in (".keras", ".h5")]
        else:
            names += [f"{family}.keras", f"{family}.h5"]
    if kind in ("prunable", "pruned", "converted", "loaded"):
        names = [n for n in names if not n.startswith("tfmot/")]
    large = [n for n in names if Path(n).stem in LARGE]
    if kind == "pruned":
        names = [n for n in names if n not in large or n.endswith(".h5")]
    elif kind == "converted":
        names = [n for n in names if n not in large or n in LARGE_CONVERTED]
    elif kind == "loaded":
        names = [n for n in names if n not in large]
    return names


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


@pytest.mark.parametrize("name", _files("pruned"))
def test_prune_reaches_every_tfmot_kernel_and_nothing_else(
    runs: dict, zoo: dict, name: str
) -> None:
    code, data, output = runs["files"][name]["prune"]
    assert code == 0, output
    assert data["checks"]["passed"], data["checks"]
    expected = sum(e["prunable_params"] for e in zoo[name]["layers"].values())
    assert sum(t["params"] for t in data["tensors"]) == expected
    for tensor in data["tensors"]:
        kept = round(tensor["params"] * (1 - TARGET))
        assert tensor["zeros_after"] >= tensor["params"] - kept, tensor["name"]
    if zoo[name]["family"] in LARGE:
        return  # the tool's own re-read checked it; loading 100 MB files costs the budget
    loaded = runs["loaded"][runs["files"][name]["pruned_path"]]
    assert loaded["ok"], loaded.get("error")
    assert loaded["same_count"]
    changed = sum(
        s for s, same in zip(loaded["sizes"], loaded["identical"], strict=True) if not same
    )
    assert changed == expected  # untouched weights are bit-identical in stock Keras
    assert sum(loaded["zeros"]) - sum(loaded["reference_zeros"]) == sum(
        t["zeros_after"] - t["zeros_before"] for t in data["tensors"]
    )


# --------------------------------------------------------------------------- convert


@pytest.mark.parametrize("name", _files("converted"))
def test_conversion_is_exact_or_refused_before_writing(runs: dict, zoo: dict, name: str) -> None:
    record = runs["files"][name]
    code, _, output = record["convert"]
    family = zoo[name]["family"]
    if family in REFUSED:
        assert code == 2 and not record["converted_exists"]
        assert REFUSED[family] in output and "Traceback" not in output
        return
    assert code == 0, output
    loaded = runs["loaded"][record["converted_path"]]
    assert loaded["ok"], loaded.get("error")
    assert loaded["same_count"] and all(loaded["identical"])
    assert loaded["max_abs_diff"] == 0.0


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
