"""`sparseprune strip` / `strip_model`: TFMOT-pruned files lose their wrappers, load without TFMOT.

The files come from `tests/fixtures/make_tfmot_fixtures.py`, run once per session in a subprocess
(importing TFMOT switches a process to legacy Keras). Expectations are what TFMOT's own
`strip_pruning` makes of the same live models: its weights (`expected.npz`) and the file tf_keras
writes for it (`ref_*`), read here with plain h5py, sharing no code with sparseprune.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from sparseprune.cli.strip_cmd import strip
from sparseprune.errors import InputError
from sparseprune.strip.stripping import strip_model, unwrap_config

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "fixtures" / "make_tfmot_fixtures.py"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
HEAVY = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization")
FILES = ("mlp.h5", "mlp.keras", "cnn.h5", "cnn.keras")
UNWRAPPED = {  # (wrapper, layer) in config order; Flatten and `head` of cnn were never wrapped
    "mlp": [
        ("prune_low_magnitude_hidden", "hidden"),
        ("prune_low_magnitude_drop", "drop"),
        ("prune_low_magnitude_head", "head"),
    ],
    "cnn": [
        ("prune_low_magnitude_conv", "conv"),
        ("prune_low_magnitude_hidden", "hidden"),
        ("block/prune_low_magnitude_inner", "block/inner"),
    ],
}
WRAPPER_WORDS = ("prune_low_magnitude", "PruneLowMagnitude", "mask", "threshold", "pruning_step")

# The command is registered in sparseprune.cli by its maintainer; tests use their own app.
app = typer.Typer(pretty_exceptions_enable=False)
app.callback()(lambda: None)
app.command("strip")(strip)
runner = CliRunner()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def stripped(tfmot_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Each fixture file stripped through the CLI: {name: (output, JSON report, input hashes)}."""
    out = tmp_path_factory.mktemp("stripped")
    results = {}
    for name in FILES:
        source, target = tfmot_dir / f"tfmot_{name}", out / f"stripped_{name}"
        before = sha256(source)
        result = runner.invoke(app, ["strip", str(source), "-o", str(target), "--json"])
        assert result.exit_code == 0, result.output
        results[name] = (target, json.loads(result.stdout), (before, sha256(source)))
    return results


@contextmanager
def weights_file(path: Path) -> Iterator[h5py.File]:
    """The HDF5 file holding the weights: the file itself, or a .keras archive's member."""
    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as archive:
            data = archive.read("model.weights.h5")
        with h5py.File(io.BytesIO(data), "r") as f:
            yield f
    else:
        with h5py.File(path, "r") as f:
            yield f


def names(attr: object) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in np.atleast_1d(attr)]


def tree(path: Path, root: str) -> dict[str, object]:
    """{path: array} for every dataset under `root`, {path: names} for name-list attributes."""
    found: dict[str, object] = {}
    with weights_file(path) as f:

        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset):
                found[name] = obj[()]
            else:
                for key in ("layer_names", "weight_names"):
                    if key in obj.attrs:
                        found[f"{name}@{key}"] = names(obj.attrs[key])

        visit("", f[root])
        f[root].visititems(visit)
    return found


def config_text(path: Path) -> str:
    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as archive:
            return archive.read("config.json").decode()
    with h5py.File(path, "r") as f:
        return str(f.attrs["model_config"])


def model_root(name: str) -> str:
    return "layers" if name.endswith(".keras") else "model_weights"


@pytest.mark.parametrize("name", FILES)
def test_report_lists_unwrapped_layers_and_folded_masks(name: str, stripped: dict) -> None:
    target, report, _ = stripped[name]
    assert report["checks"] == {"passed": True, "failures": []}
    assert report["output"]["size"] == target.stat().st_size
    layers = report["layers"]
    assert [(x["wrapper"], x["layer"]) for x in layers] == UNWRAPPED[name.split(".")[0]]
    kernels = [w for layer in layers for w in layer["weights"]]
    assert [w["name"] for w in kernels] == [f"{x['layer']}/kernel" for x in layers if x["weights"]]
    for weight in kernels:  # ConstantSparsity(0.5) on even sizes: exactly half masked
        assert weight["masked"] == weight["params"] // 2 == weight["zeros"]


@pytest.mark.parametrize("name", FILES)
def test_weights_and_layout_equal_strip_pruning(name: str, stripped: dict, tfmot_dir: Path) -> None:
    """Same dataset paths, dtypes, bit-identical values and name lists as tf_keras writes for
    `strip_pruning(model)` (which also proves the .keras storage keys were renumbered)."""
    got = tree(stripped[name][0], model_root(name))
    want = tree(tfmot_dir / f"ref_{name}", model_root(name))
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        if isinstance(value, np.ndarray):
            assert got[key].dtype == value.dtype, key
            assert np.array_equal(got[key], value), key
        else:
            assert got[key] == value, key


@pytest.mark.parametrize("name", FILES)
def test_no_wrapper_left_and_everything_else_unchanged(
    name: str, stripped: dict, tfmot_dir: Path
) -> None:
    target = stripped[name][0]
    text = config_text(target)
    assert "PruneLowMagnitude" not in text and "prune_low_magnitude" not in text
    assert '"pruning_schedule"' not in text
    after = tree(target, "/")
    assert not [key for key in after if any(word in key for word in WRAPPER_WORDS)]
    before = tree(tfmot_dir / f"tfmot_{name}", "/")
    others = [k for k in before if not k.startswith(model_root(name)) and "@" not in k]
    assert others, "optimizer state expected in the fixture"
    for key in others:  # optimizer slots and metrics: copied bit for bit
        assert np.array_equal(after[key], before[key]), key


def test_input_files_unchanged(stripped: dict) -> None:
    for _, _, (before, after) in stripped.values():
        assert before == after


def test_outputs_load_with_tf_keras_without_tfmot(stripped: dict, tfmot_dir: Path) -> None:
    """One subprocess: tf_keras loads each stripped file (compiled) without TFMOT imported and
    predicts what TFMOT's stripped model predicts; the unstripped input does not load."""
    unstripped = tfmot_dir / "tfmot_mlp.h5"
    paths = [str(stripped[name][0]) for name in FILES] + [str(unstripped)]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check", str(tfmot_dir / "expected.npz"), *paths],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["tfmot_imported"] is False
    for name in FILES:
        loaded = report["files"][str(stripped[name][0])]
        assert loaded["ok"], loaded.get("error")
        assert loaded["max_abs_diff"] <= 1e-6
        assert loaded["weights_equal"] and loaded["compiled"]
    assert "Unknown layer" in report["files"][str(unstripped)]["error"]


def test_library_result_and_deterministic_output(tfmot_dir: Path, tmp_path: Path) -> None:
    source = tfmot_dir / "tfmot_cnn.keras"
    first = strip_model(source, tmp_path / "a.keras")
    strip_model(source, tmp_path / "b.keras")
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    assert first.failures == [] and first.format == "keras"
    assert first.dropped_variables == 9  # 3 wrappers x (mask, threshold, pruning_step)
    assert first.output_size == (tmp_path / "a.keras").stat().st_size < first.input_size


def test_file_without_wrappers_is_exit_2(tfmot_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.keras"
    result = runner.invoke(app, ["strip", str(tfmot_dir / "ref_cnn.keras"), "-o", str(target)])
    assert result.exit_code == 2
    assert "has no pruning wrappers" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not target.exists()


def test_existing_output_needs_force(tfmot_dir: Path, tmp_path: Path) -> None:
    source, target = tfmot_dir / "tfmot_mlp.h5", tmp_path / "out.h5"
    target.write_bytes(b"keep me")
    result = runner.invoke(app, ["strip", str(source), "-o", str(target)])
    assert result.exit_code == 2 and "--force" in result.output
    assert target.read_bytes() == b"keep me"
    result = runner.invoke(app, ["strip", str(source), "-o", str(target), "--force"])
    assert result.exit_code == 0, result.output
    assert target.read_bytes() != b"keep me"


@pytest.mark.parametrize(
    ("source", "output", "message"),
    [
        ("tfmot_mlp.h5", "out.keras", "strip keeps the format"),
        ("tfmot_mlp.keras", "out.h5", "strip keeps the format"),
        ("tfmot_mlp.h5", "tfmot_mlp.h5", "is the input file"),
        ("tfmot_mlp.h5", "-", "give -o a .keras or .h5 path"),
    ],
)
def test_bad_output_is_exit_2(
    tfmot_dir: Path, tmp_path: Path, source: str, output: str, message: str
) -> None:
    out = {source: str(tfmot_dir / source), "-": "-"}.get(output, str(tmp_path / output))
    result = runner.invoke(app, ["strip", str(tfmot_dir / source), "-o", out])
    assert result.exit_code == 2 and message in result.output


def test_weights_only_and_non_binary_masks_are_refused(tfmot_dir: Path, tmp_path: Path) -> None:
    weights_only = tmp_path / "weights.h5"
    with h5py.File(tfmot_dir / "tfmot_mlp.h5", "r") as src, h5py.File(weights_only, "w") as dst:
        for key in src["model_weights"]:
            src.copy(src["model_weights"][key], dst, key)
        dst.attrs["layer_names"] = src["model_weights"].attrs["layer_names"]
    with pytest.raises(InputError, match="holds weights only"):
        strip_model(weights_only, tmp_path / "o.h5")
    bad_mask = tmp_path / "bad.h5"
    bad_mask.write_bytes((tfmot_dir / "tfmot_mlp.h5").read_bytes())
    mask = "model_weights/prune_low_magnitude_head/prune_low_magnitude_head/mask:0"
    with h5py.File(bad_mask, "r+") as f:
        f[mask][0, 0] = 0.5
    with pytest.raises(InputError, match="not a 0/1 array"):
        strip_model(bad_mask, tmp_path / "o2.h5")
    assert not (tmp_path / "o2.h5").exists()


def test_unwrap_config_renames_functional_references() -> None:
    def wrapper(inner: str, inbound: list) -> dict:
        layer = {"class_name": "Dense", "config": {"name": inner, "units": 2}}
        return {
            "class_name": "PruneLowMagnitude",
            "config": {"name": f"plm_{inner}", "layer": layer, "batch_input_shape": [None, 3]},
            "name": f"plm_{inner}",
            "inbound_nodes": inbound,
        }

    config = {
        "class_name": "Functional",
        "config": {
            "name": "m",
            "layers": [
                {"class_name": "InputLayer", "config": {"name": "x"}, "inbound_nodes": []},
                wrapper("a", [[["x", 0, 0, {}]]]),
                wrapper("b", [[["plm_a", 0, 0, {"mask": ["plm_a", 0, 0]}]]]),
            ],
            "input_layers": [["x", 0, 0]],
            "output_layers": [["plm_b", 0, 0], ["plm_a", 0, 0]],
        },
    }
    unwrapped, wrappers = unwrap_config(config, "m")
    assert [(w.name, w.inner_name, w.inner_class) for w in wrappers] == [
        ("plm_a", "a", "Dense"),
        ("plm_b", "b", "Dense"),
    ]
    layers = unwrapped["config"]["layers"]
    assert layers[2] == {
        "class_name": "Dense",
        "config": {"name": "b", "units": 2, "batch_input_shape": [None, 3]},
        "name": "b",
        "inbound_nodes": [[["a", 0, 0, {"mask": ["a", 0, 0]}]]],
    }
    assert unwrapped["config"]["output_layers"] == [["b", 0, 0], ["a", 0, 0]]
    assert config["config"]["layers"][1]["class_name"] == "PruneLowMagnitude"  # not modified
    config["config"]["layers"][0]["config"]["name"] = "a"
    with pytest.raises(InputError, match="two layers named 'a'"):
        unwrap_config(config, "m")


def test_strip_never_imports_tensorflow(tfmot_dir: Path, tmp_path: Path) -> None:
    code = f"""
import sys
from sparseprune.strip.stripping import strip_model
strip_model({str(tfmot_dir / "tfmot_cnn.h5")!r}, {str(tmp_path / "o.h5")!r})
print([m for m in {HEAVY!r} if m in sys.modules])
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ---- output options, one test each (the contract every command shares) -------------------


@pytest.fixture(scope="module")
def strip_formats(tfmot_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`strip tfmot_mlp.h5` once per output option; ConstantSparsity(0.5) masked half of each."""
    out = tmp_path_factory.mktemp("strip_formats")
    options = {
        **{fmt: ["--format", fmt] for fmt in ("table", "json", "csv", "markdown")},
        "json_flag": ["--json"],
        "json_file": ["--format", "csv", "--json-file", str(out / "r.json")],
    }
    runs = {}
    for name, extra in options.items():
        target = out / f"{name}.h5"
        result = runner.invoke(
            app, ["strip", str(tfmot_dir / "tfmot_mlp.h5"), "-o", str(target), *extra]
        )
        assert result.exit_code == 0, result.output
        runs[name] = result.stdout
    return {"runs": runs, "json_file": out / "r.json"}


HALF_MASKED = {"hidden/kernel", "head/kernel"}


def test_strip_format_table(strip_formats: dict) -> None:
    stdout = strip_formats["runs"]["table"]
    assert "prune_low_magnitude_hidden" in stdout and "50.0%" in stdout


def test_strip_format_json(strip_formats: dict) -> None:
    document = json.loads(strip_formats["runs"]["json"])
    weights = {w["name"]: w for layer in document["layers"] for w in layer["weights"]}
    assert set(weights) == HALF_MASKED
    assert all(w["zeros"] == w["masked"] == w["params"] // 2 for w in weights.values())


def test_strip_format_csv(strip_formats: dict) -> None:
    import csv

    rows = list(csv.DictReader(io.StringIO(strip_formats["runs"]["csv"])))
    assert {row["weight"] for row in rows} == HALF_MASKED
    assert all(int(row["zeros"]) * 2 == int(row["params"]) for row in rows)


def test_strip_format_markdown(strip_formats: dict) -> None:
    lines = [
        line for line in strip_formats["runs"]["markdown"].splitlines() if line.startswith("|")
    ]
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[2:]]
    assert {row[3] for row in cells} == HALF_MASKED
    assert all(int(row[7]) * 2 == int(row[5]) for row in cells)


def test_strip_json_flag(strip_formats: dict) -> None:
    flag = json.loads(strip_formats["runs"]["json_flag"])
    assert flag["layers"] == json.loads(strip_formats["runs"]["json"])["layers"]


def test_strip_json_file(strip_formats: dict) -> None:
    assert strip_formats["runs"]["json_file"].startswith("wrapper,layer")
    document = json.loads(strip_formats["json_file"].read_text())
    weights = {w["name"]: w for layer in document["layers"] for w in layer["weights"]}
    assert set(weights) == HALF_MASKED
