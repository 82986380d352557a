"""`sparseprune prune` and `prune_model`: exact counts, scopes, caps, patterns, masks, recipes.

Expectations come from the input weights read by `rawread` (an independent h5py reader) and the
documented rule: a tensor of n weights at sparsity S keeps round(n * (1 - S)) largest |w|.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES
from rawread import h5_weights, keras_optimizer, keras_weights
from typer.testing import CliRunner

from sparseprune.cli import app
from sparseprune.errors import InputError
from sparseprune.prune import prune_model
from sparseprune.prune.recipes import PruneSpec

runner = CliRunner()
MLP = SAMPLES / "mlp.keras"
KERNELS = ("hidden1", "hidden2", "head")


def keep(n: int, sparsity: float) -> int:
    return round(n * (1 - sparsity))  # no ties at .5 for these sizes


def prune(*args: str):
    result = runner.invoke(app, ["prune", *args])
    return result


def prune_json(*args: str) -> dict:
    result = prune(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out.keras"


def test_layer_scope_exact_and_keeps_largest(out: Path) -> None:
    prune_json(str(MLP), "-o", str(out), "--target", "0.8")
    before, after = keras_weights(MLP), keras_weights(out)
    for layer in KERNELS:
        kernel_in, kernel_out = before[layer][0], after[layer][0]
        assert np.count_nonzero(kernel_out) == keep(kernel_in.size, 0.8)
        kept = np.abs(kernel_in[kernel_out != 0])
        pruned = np.abs(kernel_in[kernel_out == 0])
        assert kept.min() >= pruned.max()
        assert np.array_equal(kernel_out[kernel_out != 0], kernel_in[kernel_out != 0])
        assert np.array_equal(before[layer][1], after[layer][1])  # bias untouched


def test_global_scope_one_threshold(out: Path) -> None:
    prune_json(str(MLP), "-o", str(out), "--target", "0.7", "--scope", "global")
    before, after = keras_weights(MLP), keras_weights(out)
    kept = np.concatenate([np.abs(before[k][0][after[k][0] != 0]) for k in KERNELS])
    pruned = np.concatenate([np.abs(before[k][0][after[k][0] == 0]) for k in KERNELS])
    total = sum(before[k][0].size for k in KERNELS)
    assert kept.size == keep(total, 0.7)
    assert kept.min() >= pruned.max()
    per_layer = {k: np.mean(after[k][0] == 0) for k in KERNELS}
    assert len({round(v, 3) for v in per_layer.values()}) > 1  # layers differ, unlike layer scope


def test_global_scope_caps_are_honoured(out: Path) -> None:
    doc = prune_json(
        str(MLP), "-o", str(out), "--target", "0.9", "--scope", "global", "--set", "head=0.3"
    )
    after = keras_weights(out)
    head = after["head"][0]
    assert np.count_nonzero(head == 0) == head.size - keep(head.size, 0.3)
    total = sum(after[k][0].size for k in KERNELS)
    assert sum(np.count_nonzero(after[k][0] == 0) for k in KERNELS) == total - keep(total, 0.9)
    assert doc["checks"]["passed"]


def test_per_layer_target_with_set(out: Path) -> None:
    prune_json(str(MLP), "-o", str(out), "--target", "0.8", "--set", "head=0.5")
    head = keras_weights(out)["head"][0]
    assert np.count_nonzero(head) == keep(head.size, 0.5)


def test_threshold_then_target(out: Path) -> None:
    before = keras_weights(MLP)
    threshold = float(np.quantile(np.abs(before["hidden1"][0]), 0.9))
    prune_json(str(MLP), "-o", str(out), "--threshold", str(threshold), "--target", "0.5")
    after = keras_weights(out)
    for layer in KERNELS:
        small = np.abs(before[layer][0]) <= threshold
        zeros = after[layer][0] == 0
        assert zeros[small].all()
        assert zeros.sum() == max(
            small.sum(), before[layer][0].size - keep(before[layer][0].size, 0.5)
        )


def test_pattern_two_of_four(out: Path) -> None:
    prune_json(str(MLP), "-o", str(out), "--pattern", "2:4")
    before, after = keras_weights(MLP), keras_weights(out)
    for layer in KERNELS:
        kernel, original = after[layer][0], before[layer][0]
        groups = (kernel == 0).T.reshape(kernel.shape[1], -1, 4)  # along the input axis
        assert (groups.sum(axis=2) >= 2).all()
        kept = np.abs(original).T.reshape(kernel.shape[1], -1, 4)
        zeros = groups
        assert (
            kept[~zeros].reshape(-1, 2).min(axis=1) >= kept[zeros].reshape(-1, 2).max(axis=1)
        ).all()


def test_exclude_leaves_layer_bit_identical(out: Path) -> None:
    prune_json(str(MLP), "-o", str(out), "--target", "0.9", "--exclude", "^head$")
    before, after = keras_weights(MLP), keras_weights(out)
    assert before["head"][0].tobytes() == after["head"][0].tobytes()
    assert np.mean(after["hidden1"][0] == 0) > 0.89


def test_layers_selects_only_matching(out: Path) -> None:
    prune_json(str(MLP), "-o", str(out), "--target", "0.9", "--layers", "hidden2")
    before, after = keras_weights(MLP), keras_weights(out)
    assert before["hidden1"][0].tobytes() == after["hidden1"][0].tobytes()
    assert np.count_nonzero(after["hidden2"][0]) == keep(8192, 0.9)


@pytest.mark.parametrize("option", ["--layers", "--exclude"])
def test_regex_matching_nothing_is_an_error(out: Path, option: str) -> None:
    result = prune(str(MLP), "-o", str(out), "--target", "0.5", option, "nope")
    assert result.exit_code == 2 and "matches no layer" in result.stderr


def test_include_bias(out: Path) -> None:
    prune_json(str(MLP), "-o", str(out), "--target", "0.5", "--include-bias")
    bias = keras_weights(out)["hidden1"][1]
    assert np.count_nonzero(bias) == keep(bias.size, 0.5)


def test_mask_file(tmp_path: Path, out: Path) -> None:
    rng = np.random.default_rng(1)
    mask = (rng.random((64, 128)) > 0.75).astype(np.int8)
    np.savez(tmp_path / "mask.npz", hidden1=mask)
    prune_json(str(MLP), "-o", str(out), "--mask", str(tmp_path / "mask.npz"))
    before, after = keras_weights(MLP), keras_weights(out)
    assert (after["hidden1"][0][mask == 0] == 0).all()
    assert np.array_equal(after["hidden1"][0][mask == 1], before["hidden1"][0][mask == 1])
    assert before["hidden2"][0].tobytes() == after["hidden2"][0].tobytes()


def test_mask_errors_name_layer_and_shapes(tmp_path: Path, out: Path) -> None:
    np.savez(tmp_path / "bad.npz", hidden1=np.ones((3, 3)))
    result = prune(str(MLP), "-o", str(out), "--mask", str(tmp_path / "bad.npz"))
    assert result.exit_code == 2 and "(3, 3)" in result.stderr and "(64, 128)" in result.stderr
    np.savez(tmp_path / "missing.npz", nosuch=np.ones((3, 3)))
    result = prune(str(MLP), "-o", str(out), "--mask", str(tmp_path / "missing.npz"))
    assert result.exit_code == 2 and "nosuch" in result.stderr


def test_unknown_class_skipped_unless_included(fixture_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "c.keras"
    doc = prune_json(str(fixture_dir / "custom.keras"), "-o", str(target), "--target", "0.5")
    skipped = {s["name"]: s["reason"] for s in doc["skipped"]}
    assert "--include-unknown" in skipped["scale/var0"]
    doc = prune_json(
        str(fixture_dir / "custom.keras"),
        "-o",
        str(target),
        "--target",
        "0.5",
        "--include-unknown",
        "--force",
    )
    scale = next(t for t in doc["tensors"] if t["name"] == "scale/var0")
    assert scale["zeros_after"] >= 8  # 16 weights at 50%


def test_recipe_and_override(tmp_path: Path, out: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text("target = 0.9\n[layer.head]\ntarget = 0.5\n")
    prune_json(str(MLP), "-o", str(out), "--config", str(recipe), "--target", "0.6")
    after = keras_weights(out)
    assert np.count_nonzero(after["hidden1"][0]) == keep(8192, 0.6)
    assert np.count_nonzero(after["head"][0]) == keep(640, 0.5)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("targett = 0.5", "targett"),
        ("target = 1.5", "'target'"),
        ("target = 0.5\n[layer.nosuch]\ntarget = 0.2", "layer.nosuch"),
        ("target = 0.5\n[layer.head]\nspeed = 2", "layer.head.speed"),
        ("target = 'x'", "'target'"),
        ("target = [", "not valid TOML"),
    ],
)
def test_bad_recipe_names_the_key(tmp_path: Path, out: Path, text: str, words: str) -> None:
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text)
    result = prune(str(MLP), "-o", str(out), "--config", str(recipe))
    assert result.exit_code == 2 and words in result.stderr, result.stderr


@pytest.mark.parametrize("recipe", sorted((SAMPLES.parent / "configs").glob("*.toml")))
def test_shipped_recipes(recipe: Path, out: Path) -> None:
    doc = prune_json(str(MLP), "-o", str(out), "--config", str(recipe))
    assert doc["checks"]["passed"] and doc["tensors"]


def test_nothing_to_do_is_usage_error(out: Path) -> None:
    result = prune(str(MLP), "-o", str(out))
    assert result.exit_code == 2 and "nothing to prune" in result.stderr


def test_target_out_of_range(out: Path) -> None:
    assert prune(str(MLP), "-o", str(out), "--target", "1.0").exit_code == 2


def test_json_sizes_are_measured(out: Path) -> None:
    doc = prune_json(str(MLP), "-o", str(out), "--target", "0.8")
    assert doc["output"]["size"] == out.stat().st_size
    assert doc["input"]["size"] == MLP.stat().st_size
    assert out.stat().st_size * 5 < MLP.stat().st_size
    zeros = {t["name"]: t["zeros_after"] for t in doc["tensors"]}
    after = keras_weights(out)
    assert zeros == {f"{k}/kernel": int(np.count_nonzero(after[k][0] == 0)) for k in KERNELS}
    assert doc["optimizer"] == "reset"
    assert 0 < doc["information_bound_bytes"] < doc["output"]["size"]


def test_optimizer_reset_by_default_and_kept_on_request(tmp_path: Path) -> None:
    before = keras_optimizer(MLP)
    assert any(np.count_nonzero(v) for v in before if v.ndim)  # trained Adam moments
    prune_json(str(MLP), "-o", str(tmp_path / "r.keras"), "--target", "0.5")
    reset = keras_optimizer(tmp_path / "r.keras")
    assert [v.shape for v in reset] == [v.shape for v in before]
    for old, new in zip(before, reset, strict=True):
        if new.ndim or np.issubdtype(new.dtype, np.integer):  # moments and the step counter
            assert not np.count_nonzero(new)
        else:  # scalar hyperparameters such as the learning rate are kept
            assert new == old
    doc = prune_json(
        str(MLP), "-o", str(tmp_path / "k.keras"), "--target", "0.5", "--keep-optimizer"
    )
    kept = keras_optimizer(tmp_path / "k.keras")
    assert all(np.array_equal(a, b) for a, b in zip(before, kept, strict=True))
    assert doc["optimizer"] == "kept"


def test_h5_output_smaller_and_exact(tmp_path: Path) -> None:
    target = tmp_path / "out.h5"
    prune_json(str(SAMPLES / "mlp.h5"), "-o", str(target), "--target", "0.8")
    after = h5_weights(target)
    assert np.count_nonzero(after["hidden1"][0]) == keep(8192, 0.8)
    assert target.stat().st_size * 3 < (SAMPLES / "mlp.h5").stat().st_size


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_byte_identical_reruns_and_input_unchanged(tmp_path: Path) -> None:
    """Two runs a second apart (HDF5 object timestamps would differ) give identical bytes."""
    names = ["mlp.keras", "mlp.h5", "mlp.weights.h5", "tf_keras_mlp.h5", "cnn.keras"]
    digests = {name: sha(SAMPLES / name) for name in names}
    outputs: dict[str, list[str]] = {name: [] for name in names}
    for run in range(2):
        if run:
            time.sleep(1.1)
        for name in names:
            suffix = ".weights.h5" if name.endswith(".weights.h5") else Path(name).suffix
            target = tmp_path / f"{run}-{name.split('.')[0]}{suffix}"
            prune_json(
                str(SAMPLES / name), "-o", str(target), "--target", "0.5", "--scope", "global"
            )
            outputs[name].append(sha(target))
    for name in names:
        assert outputs[name][0] == outputs[name][1], name
        assert sha(SAMPLES / name) == digests[name]


def test_output_permissions_follow_umask(out: Path) -> None:
    prune_json(str(MLP), "-o", str(out), "--target", "0.5")
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_default_output_name_and_force(tmp_path: Path) -> None:
    source = tmp_path / "m.weights.h5"
    source.write_bytes((SAMPLES / "mlp.weights.h5").read_bytes())
    assert prune(str(source), "--target", "0.5").exit_code == 0
    target = tmp_path / "m.pruned.weights.h5"
    assert target.exists()
    again = prune(str(source), "--target", "0.5")
    assert again.exit_code == 2 and "--force" in again.stderr
    assert prune(str(source), "--target", "0.5", "--force").exit_code == 0


def test_output_equal_to_input_refused(tmp_path: Path) -> None:
    source = tmp_path / "m.keras"
    source.write_bytes(MLP.read_bytes())
    result = prune(str(source), "-o", str(source), "--target", "0.5", "--force")
    assert result.exit_code == 2 and "is the input" in result.stderr
    assert sha(source) == sha(MLP)


def test_format_conversion_keras_to_h5(tmp_path: Path) -> None:
    target = tmp_path / "x.h5"
    doc = prune_json(str(MLP), "-o", str(target), "--target", "0.5")
    before, after = keras_weights(MLP), h5_weights(target)
    assert sorted(after) == sorted(before)
    for layer in KERNELS:
        assert np.count_nonzero(after[layer][0]) == keep(before[layer][0].size, 0.5)
        assert np.array_equal(after[layer][1], before[layer][1])
    assert doc["checks"]["passed"]


@pytest.mark.parametrize(
    ("name", "suffix", "words"),
    [
        ("mlp.weights.h5", ".keras", "weights only"),
        ("mlp.keras", ".weights.h5", "cannot be written"),
    ],
)
def test_format_conversion_refused(tmp_path: Path, name: str, suffix: str, words: str) -> None:
    target = tmp_path / f"x{suffix}"
    result = prune(str(SAMPLES / name), "-o", str(target), "--target", "0.5")
    assert result.exit_code == 2 and words in result.stderr, result.stderr
    assert not target.exists()


def test_failure_while_writing_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    import sparseprune.formats.writer as writer

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "_write_archive", explode)
    target = tmp_path / "out.keras"
    with pytest.raises(KeyboardInterrupt):
        prune_model(MLP, target, PruneSpec(target=0.5))
    assert list(tmp_path.iterdir()) == []


def test_existing_output_survives_a_failed_run(tmp_path: Path, monkeypatch) -> None:
    import sparseprune.formats.writer as writer

    target = tmp_path / "out.keras"
    target.write_bytes(b"old")
    monkeypatch.setattr(writer, "_write_archive", lambda *a: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(InputError, match=r"cannot write .*out\.keras: disk"):
        prune_model(MLP, target, PruneSpec(target=0.5), force=True)
    assert target.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1


def test_stdin_to_stdout_pipeline(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["prune", "-", "-o", "-", "--target", "0.8", "--json-file", str(tmp_path / "r.json")],
        input=MLP.read_bytes(),
    )
    assert result.exit_code == 0
    (tmp_path / "piped.keras").write_bytes(result.stdout_bytes)
    after = keras_weights(tmp_path / "piped.keras")
    assert np.count_nonzero(after["hidden1"][0]) == keep(8192, 0.8)
    assert json.loads((tmp_path / "r.json").read_text())["output"]["path"] == "<stdout>"


def test_stdin_needs_output(tmp_path: Path) -> None:
    result = runner.invoke(app, ["prune", "-", "--target", "0.5"], input=MLP.read_bytes())
    assert result.exit_code == 2 and "-o" in result.stderr


def test_library_rejects_bad_spec() -> None:
    with pytest.raises(InputError):
        PruneSpec(target=0.5, pattern=(2, 4)).validate()


def test_keras_bomb_guards_make_the_writer_store(tmp_path: Path, monkeypatch) -> None:
    """Where stock Keras would refuse a member or dataset as a decompression bomb, it is stored
    uncompressed instead (guards lowered here so a small, very sparse model trips them)."""
    import zipfile

    import h5py

    import sparseprune.formats.writer as writer

    monkeypatch.setattr(writer, "KERAS_ZIP_FLOOR", 1000)
    monkeypatch.setattr(writer, "KERAS_ZIP_RATIO", 8)  # config.json compresses ~5x: stays DEFLATEd
    out = tmp_path / "z.keras"
    prune_json(str(MLP), "-o", str(out), "--target", "0.99")
    with zipfile.ZipFile(out) as archive:
        weights = archive.getinfo("model.weights.h5")
        assert weights.compress_type == zipfile.ZIP_STORED  # would expand over 8x
        assert archive.getinfo("config.json").compress_type == zipfile.ZIP_DEFLATED
    monkeypatch.setattr(writer, "KERAS_H5_FLOOR", 1000)
    monkeypatch.setattr(writer, "KERAS_H5_RATIO", 5)
    target = tmp_path / "z.h5"
    prune_json(str(SAMPLES / "mlp.h5"), "-o", str(target), "--target", "0.99")
    with h5py.File(target) as f:
        kernel = f["model_weights/hidden1"]
        dataset = next(kernel[name] for name in _datasets(kernel) if name.endswith("kernel"))
        assert dataset.compression is None  # 99% zeros would exceed the lowered 5x guard


def _datasets(group) -> list[str]:
    names: list[str] = []
    group.visit(lambda name: names.append(name))
    return names
