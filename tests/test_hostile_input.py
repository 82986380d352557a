"""Broken or hostile files: one clear line on stderr, exit 2, no traceback, nothing executed."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from handmade import CONFIG, KERNEL, weights_h5_bytes, write_h5, write_keras
from sparseprune import InputError, inspect_model
from sparseprune.cli import app

runner = CliRunner()


def run_inspect(path: Path | str):
    return runner.invoke(app, ["inspect", str(path)])


def assert_refused(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    message = result.stderr.strip()
    assert message.startswith("error:") and "Traceback" not in result.output
    for word in words:
        assert word in message, message


def test_handmade_file_is_read_correctly(tmp_path: Path) -> None:
    report = inspect_model(str(write_keras(tmp_path / "ok.keras")), show_all=True)
    kernel, bias = report.weights
    assert (kernel.tensor.layer, kernel.tensor.role, kernel.tensor.prunable) == (
        "d",
        "kernel",
        True,
    )
    assert (kernel.stats.zeros, kernel.stats.near_zero) == (3, 4)
    assert kernel.stats.dead_units == 1  # column 0 is all zero
    assert (bias.stats.zeros, bias.tensor.prunable) == (2, False)


def test_missing_path(tmp_path: Path) -> None:
    assert_refused(run_inspect(tmp_path / "nope.keras"), "does not exist")


def test_directory(tmp_path: Path) -> None:
    assert_refused(run_inspect(tmp_path), "is a directory")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.h5").write_bytes(b"")
    assert_refused(run_inspect(tmp_path / "e.h5"), "empty")


def test_random_bytes(tmp_path: Path) -> None:
    (tmp_path / "r.keras").write_bytes(np.random.default_rng(0).bytes(4096))
    assert_refused(run_inspect(tmp_path / "r.keras"), "neither a Keras archive")


def test_truncated_hdf5(tmp_path: Path) -> None:
    data = weights_h5_bytes()
    (tmp_path / "t.h5").write_bytes(data[: len(data) // 2])
    assert_refused(run_inspect(tmp_path / "t.h5"))


def test_zip_without_model(tmp_path: Path) -> None:
    path = write_keras(tmp_path / "z.keras", [("readme.txt", b"hello")])
    assert_refused(run_inspect(path), "config.json")


def test_zip_without_weights(tmp_path: Path) -> None:
    path = write_keras(tmp_path / "z.keras", [("config.json", json.dumps(CONFIG).encode())])
    assert_refused(run_inspect(path), "model.weights.h5")


def test_duplicate_zip_members(tmp_path: Path) -> None:
    path = write_keras(tmp_path / "dup.keras")
    with pytest.warns(UserWarning), zipfile.ZipFile(path, "a") as archive:
        archive.writestr("config.json", b"{}")
    assert_refused(run_inspect(path), "two zip members")


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/evil", "a/../../b"])
def test_unsafe_member_paths(tmp_path: Path, name: str) -> None:
    path = write_keras(tmp_path / "p.keras")
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(zipfile.ZipInfo(name), b"x")
    assert_refused(run_inspect(path), "unsafe path")


def _external_link(f: h5py.File) -> None:
    f["layers/dense/vars/2"] = h5py.ExternalLink("/etc/passwd", "/x")


def _soft_link(f: h5py.File) -> None:
    f["layers/dense/vars/2"] = h5py.SoftLink("/layers/dense/vars/0")


def _external_storage(f: h5py.File) -> None:
    f.create_dataset(
        "layers/other/vars/0", shape=(4,), dtype="f4", external=[("/etc/hosts", 0, 16)]
    )


def _virtual(f: h5py.File) -> None:
    layout = h5py.VirtualLayout(shape=(3,), dtype="f4")
    layout[:] = h5py.VirtualSource(".", "layers/dense/vars/1", shape=(3,))
    f.create_virtual_dataset("layers/other/vars/0", layout)


def _shape_bomb(f: h5py.File) -> None:
    f.create_dataset(
        "layers/other/vars/0", shape=(1 << 30,), dtype="f4", chunks=(1 << 20,), compression="gzip"
    )


def _strings(f: h5py.File) -> None:
    f["layers/other/vars/0"] = np.array([b"abc", b"def"])


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (_external_link, ["external link"]),
        (_soft_link, ["soft link"]),
        (_external_storage, ["external files"]),
        (_virtual, ["virtual"]),
        (_shape_bomb, ["shape bomb"]),
        (_strings, ["non-numeric"]),
    ],
)
def test_hostile_hdf5(tmp_path: Path, mutate, words: list[str]) -> None:
    assert_refused(run_inspect(write_h5(tmp_path / "bad.weights.h5", mutate)), *words)
    inner = weights_h5_bytes(mutate)
    path = write_keras(
        tmp_path / "bad.keras",
        [("config.json", json.dumps(CONFIG).encode()), ("model.weights.h5", inner)],
    )
    assert_refused(run_inspect(path), *words)


def test_not_a_keras_hdf5(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["data"] = np.zeros(3)
    assert_refused(run_inspect(tmp_path / "x.h5"), "not a Keras model")


def test_library_raises_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        inspect_model(str(tmp_path / "missing.h5"))


def test_input_file_is_not_modified(tmp_path: Path) -> None:
    path = write_keras(tmp_path / "ok.keras")
    before = path.read_bytes()
    assert run_inspect(path).exit_code == 0
    assert path.read_bytes() == before
    assert KERNEL.shape == (2, 3)


def test_unprintable_layer_name_is_reported_not_a_crash(tmp_path: Path) -> None:
    """JSON allows lone surrogates ("\\udc80"); they must not crash printing."""
    config = json.loads(json.dumps(CONFIG))
    config["config"]["layers"][1]["config"]["name"] = "d\udc80x"

    def drop_name(f: h5py.File) -> None:
        del f["layers/dense/vars"].attrs["name"]

    path = write_keras(
        tmp_path / "s.keras",
        [
            ("config.json", json.dumps(config).encode()),
            ("model.weights.h5", weights_h5_bytes(drop_name)),
        ],
    )
    result = run_inspect(path)
    assert result.exit_code == 0 and "d?x" in result.stdout


def test_shrink_survives_output_layers_that_are_not_a_list(tmp_path: Path) -> None:
    """`output_layers: 7` once raised TypeError out of the shrink graph builder."""
    config = json.loads(json.dumps(CONFIG))
    config["class_name"] = "Functional"
    config["config"].update(input_layers=[["in", 0, 0]], output_layers=7)
    source = write_keras(
        tmp_path / "odd.keras",
        [
            ("metadata.json", b'{"keras_version": "3.15.1"}'),
            ("config.json", json.dumps(config).encode()),
            ("model.weights.h5", weights_h5_bytes()),
        ],
    )
    result = runner.invoke(app, ["shrink", str(source), "-o", str(tmp_path / "out.keras")])
    assert result.exit_code in (0, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
