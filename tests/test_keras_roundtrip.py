"""Pruned outputs load in stock Keras with the pruned values, and without warnings.

All loading happens in one subprocess (`tests/fixtures/load_check.py`), so TensorFlow is imported
once and never in the test process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLES
from typer.testing import CliRunner

from sparseprune.cli import app

runner = CliRunner()

# (source, library that loads it, compile=True?, model to load weights-only files into[, suffix])
# A fifth element converts the file to another format (.keras <-> .h5, Keras 3 files only).
CASES = [
    ("fx:k3_seq.keras", "keras", True, None),
    ("fx:k3_func.keras", "keras", False, None),
    ("fx:k3_rnn.keras", "keras", False, None),
    ("fx:k3_seq.h5", "keras", False, None),
    ("fx:k3_func.h5", "keras", False, None),
    ("fx:tk_seq.h5", "tf_keras", True, None),
    ("fx:tk_func.h5", "tf_keras", False, None),
    ("fx:tk_seq.keras", "tf_keras", True, None),
    ("fx:old_naming.h5", "tf_keras", False, None),
    ("fx:split_names.h5", "tf_keras", False, None),
    ("fx:k3_seq.weights.h5", "keras", False, "fx:k3_seq.keras"),
    ("fx:tk_seq_weights.h5", "tf_keras", False, "fx:tk_seq.h5"),
    ("sm:mlp.keras", "keras", True, None),
    ("sm:mlp.h5", "keras", False, None),
    ("sm:tf_keras_mlp.h5", "tf_keras", True, None),
    ("sm:cnn.keras", "keras", True, None),
    ("sm:mlp.weights.h5", "keras", False, "sm:mlp.keras"),
    ("fx:k3_seq.keras", "keras", False, None, ".h5"),
    ("fx:k3_func.keras", "keras", False, None, ".h5"),
    ("fx:k3_rnn.keras", "keras", False, None, ".h5"),
    ("fx:k3_seq.h5", "keras", False, None, ".keras"),
    ("fx:k3_func.h5", "keras", False, None, ".keras"),
    ("sm:cnn.keras", "keras", False, None, ".h5"),
    ("sm:mlp.h5", "keras", False, None, ".keras"),
]
IDS = [c[0] + (f"->{c[4]}" if len(c) > 4 else "") for c in CASES]


def _resolve(spec: str, fixture_dir: Path) -> Path:
    kind, name = spec.split(":")
    return (fixture_dir if kind == "fx" else SAMPLES) / name


def _output_name(source: Path, convert_to: str | None) -> str:
    name = source.name
    suffix = ".weights.h5" if name.endswith(".weights.h5") else source.suffix
    stem = name[: len(name) - len(suffix)] + (f".from-{suffix[1:]}" if convert_to else "")
    return stem + ".pruned" + (convert_to or suffix)


@pytest.fixture(scope="module")
def loaded(fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out_dir = tmp_path_factory.mktemp("pruned")
    manifest, reports = [], {}
    for case_id, (spec, library, compile_, weights_into, *convert) in zip(IDS, CASES, strict=True):
        source = _resolve(spec, fixture_dir)
        target = out_dir / _output_name(source, convert[0] if convert else None)
        result = runner.invoke(
            app, ["prune", str(source), "-o", str(target), "--target", "0.6", "--json"]
        )
        assert result.exit_code == 0, (spec, result.output)
        reports[case_id] = json.loads(result.stdout)
        base = str(_resolve(weights_into, fixture_dir)) if weights_into else None
        manifest.append(
            {"path": str(target), "library": library, "compile": compile_, "weights_into": base}
        )
    (out_dir / "manifest.json").write_text(json.dumps(manifest))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "fixtures" / "load_check.py"),
            str(out_dir / "manifest.json"),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    results = json.loads(completed.stdout)
    return {
        case_id: (reports[case_id], results[entry["path"]])
        for case_id, entry in zip(IDS, manifest, strict=True)
    }


@pytest.mark.parametrize(("case_id", "case"), list(zip(IDS, CASES, strict=True)), ids=IDS)
def test_output_loads_with_pruned_values(case_id: str, case: tuple, loaded: dict) -> None:
    compile_ = case[2]
    report, result = loaded[case_id]
    assert result["ok"], result.get("error")
    assert result["warnings"] == []
    if compile_:
        assert result["compiled"]
    for tensor in report["tensors"]:
        layer = result["layers"][tensor["layer"]]
        assert [tensor["shape"], tensor["zeros_after"]] in layer, tensor["name"]
        assert tensor["zeros_after"] >= round(tensor["params"] * 0.6) - 1
