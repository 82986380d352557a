"""The public Python API: one import, checked specs, results with to_json(), README's example.

Expectations are computed independently: zero counts with `rawread` (plain h5py), the README
example is run as a user would, in a fresh process (it calls compare_models, which loads
Keras, so it never runs in the pytest process).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SAMPLES
from rawread import keras_weights
from typer.testing import CliRunner

import sparseprune
from sparseprune import (
    InputError,
    PruneSpec,
    Scope,
    Structure,
    TensorMethod,
    TrainMethod,
    inspect_model,
    prune_model,
    shrink_model,
)
from sparseprune.cli import app

MLP = SAMPLES / "mlp.keras"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
HEAVY = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization")
FUNCTIONS = (
    "inspect_model",
    "prune_model",
    "strip_model",
    "shrink_model",
    "evaluate_model",
    "compare_models",
    "bench_models",
    "bench_serving",
    "export_model",
)
# Positional parameters each function takes; everything else must be keyword-only.
POSITIONAL = {
    "inspect_model": ["path"],
    "prune_model": ["source", "output", "spec"],
    "strip_model": ["source", "output"],
    "shrink_model": ["source", "output"],
    "evaluate_model": ["path", "data"],
    "compare_models": ["a", "b"],
    "bench_models": ["paths"],
    "bench_serving": ["path"],
    "export_model": ["path", "output"],
}


def run_python(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=600
    )


@pytest.mark.tensorflow  # resolves the Keras-side names too
def test_import_is_light_and_every_public_name_resolves() -> None:
    code = f"""
import sys
import sparseprune
before = sorted(m for m in sys.modules if m.split(".")[0] in {(*HEAVY, "h5py")!r})
names = {{name: getattr(sparseprune, name) for name in sparseprune.__all__}}
after = [m for m in {HEAVY!r} if m in sys.modules]
print(before, after, len(names))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "[]", str(len(sparseprune.__all__))]


@pytest.mark.tensorflow  # resolves the Keras-side names too
def test_every_command_function_is_exported_with_keyword_only_options() -> None:
    for name in FUNCTIONS:
        function = getattr(sparseprune, name)
        parameters = inspect.signature(function).parameters.values()
        positional = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert positional == POSITIONAL[name], name
        assert all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in parameters)
        assert function.__doc__, name


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = sparseprune.no_such_thing


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"target": 1.5}, ["'target'", "[0, 1)", "1.5"]),
        ({"target": -0.1}, ["'target'", "[0, 1)"]),
        ({"target": "0.5"}, ["'target'", "number"]),
        ({"scope": "globl"}, ["'scope'", "'layer', 'global'", "'globl'"]),
        ({"structure": "unit"}, ["'structure'", "'weights', 'units'", "'unit'"]),
        ({"threshold": -1.0}, ["'threshold'", ">= 0"]),
        ({"pattern": (4, 4)}, ["'pattern'", "0 < N < M"]),
        ({"pattern": "2-4"}, ["'pattern'", "N:M"]),
        ({"rules": {"head": {"target": 1.0}}}, ["'layer.head.target'", "[0, 1)"]),
        ({"rules": {"head": {"max_sparsity": 1.5}}}, ["'layer.head.max_sparsity'", "[0, 1]"]),
        ({"rules": {"head": {"cap": 0.5}}}, ["layer.head.cap"]),
        ({"layers": "("}, ["'layers'", "regular expression"]),
        ({"include_bias": "yes"}, ["'include_bias'", "True or False"]),
        ({"target": 0.5, "pattern": (2, 4)}, ["'pattern'", "drop 'target'"]),
        ({"threshold": 0.1, "structure": "units"}, ["'threshold'", "units"]),
    ],
)
def test_prune_spec_is_checked_on_construction(options: dict, words: list[str]) -> None:
    with pytest.raises(InputError) as raised:
        PruneSpec(**options)
    assert all(word in str(raised.value) for word in words), str(raised.value)


def test_prune_spec_turns_names_into_enums() -> None:
    spec = PruneSpec(target=0.5, scope="global", structure="units", pattern=None)
    assert spec.scope is Scope.GLOBAL and spec.structure is Structure.UNITS
    assert PruneSpec(pattern="2:4").pattern == (2, 4)
    assert PruneSpec(target=0.5, rules={"head": {"target": 0.25}}).rule("head").target == 0.25
    with pytest.raises(InputError, match="nothing to prune"):
        PruneSpec().validate()


def test_prune_model_refuses_an_unknown_method_before_writing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="'method' must be one of 'mask', 'tfmot'"):
        prune_model(MLP, tmp_path / "o.keras", PruneSpec(target=0.5), method="tfmt")
    assert not (tmp_path / "o.keras").exists()
    with pytest.raises(InputError, match="PruneSpec"):
        prune_model(MLP, tmp_path / "o.keras", {"target": 0.5})  # type: ignore[arg-type]


def test_methods_are_enum_members_in_results(tmp_path: Path) -> None:
    spec = PruneSpec(target=0.5, scope=Scope.GLOBAL)
    result = prune_model(str(MLP), str(tmp_path / "g.keras"), spec)
    assert {t.method for t in result.pruned} == {TensorMethod.GLOBAL}
    zeros = sum(
        int(np.count_nonzero(w[0] == 0))
        for w in keras_weights(tmp_path / "g.keras").values()
        if w[0].ndim == 2
    )
    assert sum(t.zeros_after for t in result.pruned) == zeros
    assert TrainMethod("mask") is TrainMethod.MASK and f"{TensorMethod.GLOBAL}" == "global"


def test_paths_may_be_str_or_pathlike(tmp_path: Path) -> None:
    first = shrink_model(str(SAMPLES / "l1_mlp.keras"), str(tmp_path / "a.keras"))
    second = shrink_model(SAMPLES / "l1_mlp.keras", tmp_path / "b.keras")
    assert first.totals() == second.totals() and first.changed
    assert inspect_model(MLP).totals == inspect_model(str(MLP)).totals


def test_result_to_json_is_the_commands_json(tmp_path: Path) -> None:
    report = inspect_model(MLP, min_sparsity=0.99)
    cli = CliRunner().invoke(app, ["inspect", str(MLP), "--json", "--min-sparsity", "0.99"])
    assert cli.exit_code == 1
    assert json.loads(report.to_json()) == json.loads(cli.stdout) == report.to_dict()
    assert report.failures and report.failures == json.loads(cli.stdout)["models"][0]["failures"]


def test_to_json_writes_nan_weights_as_valid_json(fixture_dir: Path) -> None:
    report = inspect_model(fixture_dir / "nan.keras", threshold=float("inf"))
    document = json.loads(report.to_json(), parse_constant=lambda c: pytest.fail(c))
    weights = document["models"][0]["layers"][0]["weights"][0]
    assert (weights["nan"], weights["inf"]) == (2, 1)


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Python API section has one example"
    return blocks[0]


@pytest.mark.tensorflow  # resolves the Keras-side names too
def test_readme_python_api_example_runs(tmp_path: Path) -> None:
    shutil.copy(MLP, tmp_path / "mlp.keras")
    shutil.copy(SAMPLES / "digits.npz", tmp_path / "digits.npz")
    result = run_python(readme_example(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'scope' must be one of 'layer', 'global'; got 'globl'." in result.stdout
    written = json.loads((tmp_path / "prune.json").read_text())
    weights = keras_weights(tmp_path / "mlp80.keras")
    for tensor in written["tensors"]:
        layer = tensor["name"].split("/")[0]
        assert tensor["zeros_after"] == int(np.count_nonzero(weights[layer][0] == 0))
    head = next(t for t in written["tensors"] if t["name"] == "head/kernel")
    assert head["zeros_after"] <= head["params"] // 2  # the max_sparsity cap held


@pytest.mark.tensorflow  # BenchSpec lives on the Keras side
def test_train_and_bench_specs_are_checked_on_construction() -> None:
    from sparseprune import BenchSpec, TrainSpec
    from sparseprune.choices import Schedule

    with pytest.raises(InputError, match="'schedule' must be one of 'polynomial', 'constant'"):
        TrainSpec(data="d.npz", schedule="cosine")
    with pytest.raises(InputError, match="'strategy'"):
        TrainSpec(data="d.npz", strategy="tpu")
    with pytest.raises(InputError, match="--epochs"):
        TrainSpec(data="d.npz", epochs=0)
    assert TrainSpec(data=Path("d.npz"), schedule="constant").schedule is Schedule.CONSTANT
    with pytest.raises(InputError, match="--repeats"):
        BenchSpec(repeats=1)
    assert BenchSpec(batch_sizes=[1, 32, 1]).batch_sizes == (1, 32)


def test_terminal_escapes_from_libraries_never_reach_a_message(monkeypatch, tmp_path) -> None:
    from sparseprune.cli import inspect_cmd
    from sparseprune.errors import describe

    styled = ValueError("\x1b[1mCould not locate class\x1b[0m '\x1b[31mFoo\x1b[0m'")
    assert describe(styled) == "Could not locate class 'Foo'"

    def keras_like(*args, **kwargs):
        raise InputError(f"Keras could not load m.keras: {styled}")

    monkeypatch.setattr(inspect_cmd, "inspect_model", keras_like)
    result = CliRunner().invoke(app, ["inspect", str(MLP)])
    assert result.exit_code == 2 and "\x1b" not in result.stderr
    assert "Could not locate class 'Foo'" in result.stderr


def test_sizes_are_said_the_right_way_round() -> None:
    from sparseprune.render.sizes import size_change

    assert size_change(232367, 232369) == "232,367 -> 232,369 bytes (1.00x larger, +2 bytes)"
    assert size_change(232369, 6443) == "232,369 -> 6,443 bytes (36.07x smaller)"
    assert size_change(100, 100) == "100 -> 100 bytes (same size)"


@pytest.mark.tensorflow  # keras_ops sits behind the [tensorflow] gate; nothing here imports TF
def test_prune_model_runs_custom_objects_only_when_unsafe(tmp_path: Path) -> None:
    """`custom_objects` is handled by prune_model itself (the CLI passes --custom-objects on)."""
    marker, script = tmp_path / "ran", tmp_path / "layers.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(InputError, match="--unsafe"):
        prune_model(MLP, tmp_path / "a.keras", PruneSpec(target=0.5), custom_objects=script)
    assert not marker.exists() and not (tmp_path / "a.keras").exists()
    with pytest.raises(InputError, match="expects a Python file"):
        prune_model(MLP, tmp_path / "a.keras", PruneSpec(target=0.5), custom_objects=MLP,
                    unsafe=True)  # fmt: skip
    spec = PruneSpec(target=0.5)
    result = prune_model(MLP, tmp_path / "b.keras", spec, custom_objects=script, unsafe=True)
    assert marker.exists() and not result.failures
    kernel = keras_weights(tmp_path / "b.keras")["hidden1"][0]
    assert np.count_nonzero(kernel == 0) == kernel.size // 2
    assert "tensorflow" not in sys.modules
