"""Every file a command writes follows the rules of -o, and the CLI fails in one line.

No TensorFlow here: models are written with h5py/zipfile (`handmade`), commands are the real CLI
(CliRunner in-process, or `python -m sparseprune` where signals, pipes and stdin matter).
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from handmade import CONFIG, weights_h5_bytes, write_keras
from sparseprune import InputError
from sparseprune.cli import app
from sparseprune.formats import atomic

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *words: str, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_keras(tmp_path / "m.keras")


def prune_args(model: Path, *extra: object) -> list[object]:
    return ["prune", model, "--target", "0.5", *extra]


# --- never the input: device + inode, not path text -------------------------------------------


@pytest.mark.parametrize("second_path", ["hardlink", "symlink"])
@pytest.mark.parametrize("option", ["-o", "--json-file"])
def test_second_path_to_the_input_is_refused(model: Path, second_path: str, option: str) -> None:
    other = model.parent / ("alias.keras" if option == "-o" else "alias.json")
    (os.link if second_path == "hardlink" else os.symlink)(model, other)
    before = model.read_bytes()
    extra = [option, other, "--force"]
    if option == "--json-file":
        extra += ["-o", model.parent / "out.keras"]
    assert_one_line_error(run(*prune_args(model, *extra)), "is the input")
    assert model.read_bytes() == before
    assert not (model.parent / "out.keras").exists()


@pytest.mark.plot
def test_plot_onto_the_input_is_refused(model: Path) -> None:
    alias = model.parent / "alias.png"
    os.symlink(model, alias)
    before = model.read_bytes()
    assert_one_line_error(run("inspect", model, "--plot", alias, "--force"), "is the input")
    assert model.read_bytes() == before


def test_json_file_equal_to_the_model_output_is_refused(model: Path) -> None:
    out = model.parent / "out.keras"
    assert_one_line_error(run(*prune_args(model, "-o", out, "--json-file", out)), "also the")
    assert not out.exists()


# --- never an existing file without --force ------------------------------------------------------


def test_existing_json_file_needs_force(model: Path) -> None:
    out, report = model.parent / "out.keras", model.parent / "r.json"
    report.write_text("keep me")
    assert_one_line_error(run(*prune_args(model, "-o", out, "--json-file", report)), "--force")
    assert report.read_text() == "keep me" and not out.exists()  # refused before any work
    result = run(*prune_args(model, "-o", out, "--json-file", report, "--force"))
    assert result.exit_code == 0, result.output
    assert str(out) in json.dumps(json.loads(report.read_text()))


@pytest.mark.plot
def test_existing_plot_needs_force(model: Path) -> None:
    plot = model.parent / "p.png"
    plot.write_bytes(b"keep")
    assert_one_line_error(run("inspect", model, "--plot", plot), "--force")
    assert plot.read_bytes() == b"keep"
    assert run("inspect", model, "--plot", plot, "--force").exit_code == 0
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert no_temp_files(model.parent)


def test_plot_must_be_a_png(model: Path) -> None:
    assert_one_line_error(run("inspect", model, "--plot", model.parent / "out.txt"), ".png")
    assert not (model.parent / "out.txt").exists()


@pytest.mark.parametrize("option", ["-o", "--json-file"])
def test_missing_folder_is_one_line(model: Path, option: str) -> None:
    missing = model.parent / "nope" / "x.json"
    extra = (
        [option, missing] if option == "--json-file" else [option, missing.with_suffix(".keras")]
    )
    if option == "--json-file":
        extra += ["-o", model.parent / "out.keras"]
    assert_one_line_error(run(*prune_args(model, *extra)), "does not exist", "nope")


# --- a file that appears while the command runs is not replaced ---------------------------------


def _appearing(monkeypatch: pytest.MonkeyPatch, content: bytes) -> None:
    """A rival writes the target between our check and our publish."""
    original = atomic.publish

    def rival_first(temp: Path, target: Path, force: bool, inputs=()) -> None:
        Path(target).write_bytes(content)
        original(temp, target, force, inputs)

    monkeypatch.setattr(atomic, "publish", rival_first)


def test_output_that_appears_during_the_run_is_kept(model, monkeypatch) -> None:
    _appearing(monkeypatch, b"rival")
    out = model.parent / "out.keras"
    assert_one_line_error(run(*prune_args(model, "-o", out)), "appeared while")
    assert out.read_bytes() == b"rival"
    assert no_temp_files(model.parent)


def test_json_file_that_appears_during_the_run_is_kept(model, monkeypatch) -> None:
    out, report = model.parent / "out.keras", model.parent / "r.json"
    original = atomic.publish

    def rival_on_json(temp, target, force, inputs=()):
        if Path(target) == report:
            report.write_text("rival")
        original(temp, target, force, inputs)

    monkeypatch.setattr(atomic, "publish", rival_on_json)
    assert_one_line_error(run(*prune_args(model, "-o", out, "--json-file", report)), "appeared")
    assert report.read_text() == "rival"


def test_with_force_the_late_file_is_replaced(model, monkeypatch) -> None:
    _appearing(monkeypatch, b"rival")
    out = model.parent / "out.keras"
    assert run(*prune_args(model, "-o", out, "--force")).exit_code == 0
    assert out.read_bytes()[:4] == b"PK\x03\x04"


@pytest.mark.parametrize("mechanism", ["renameat2", "link", "exclusive-create"])
def test_every_no_replace_mechanism_refuses(tmp_path, monkeypatch, mechanism: str) -> None:
    if mechanism != "renameat2":
        monkeypatch.setattr(atomic, "_libc_renameat2", lambda: None)
    elif atomic._libc_renameat2() is None:
        pytest.skip("this libc has no renameat2")
    if mechanism == "exclusive-create":

        def no_links(src, dst):
            raise OSError(errno.EPERM, "hard links not supported")

        monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "t.bin"
    with atomic.atomic_path(target, force=False) as temp:
        temp.write_bytes(b"first")
    assert target.read_bytes() == b"first"
    with (
        pytest.raises(InputError, match="appeared"),
        atomic.atomic_path(target, force=False) as temp,
    ):
        temp.write_bytes(b"second")
    assert target.read_bytes() == b"first"
    assert no_temp_files(tmp_path)


# --- read-only and full filesystems -------------------------------------------------------------


def test_full_disk_is_one_line_naming_the_output(model, monkeypatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    out, report = model.parent / "out.keras", model.parent / "r.json"
    line = assert_one_line_error(run(*prune_args(model, "-o", out)), "No space left")
    assert str(out) in line and ".tmp" not in line
    assert not out.exists() and no_temp_files(model.parent)
    monkeypatch.undo()
    assert run(*prune_args(model, "-o", out)).exit_code == 0
    real_fsync = os.fsync

    def full_for_json(fd: int) -> None:
        if ".r.json." in os.readlink(f"/proc/self/fd/{fd}"):
            full(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_for_json)
    line = assert_one_line_error(
        run(*prune_args(model, "-o", model.parent / "o2.keras", "--json-file", report)),
        "No space left",
    )
    assert str(report) in line and not report.exists()


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def big_model(path: Path) -> Path:
    """A handmade .keras whose kernel (random, so it does not compress) is about 256 KB."""

    def big(f: h5py.File) -> None:
        f["layers/dense/vars/0"][...] = 0  # keep the small kernel valid
        group = f.create_group("layers/dense_1/vars")
        group.attrs["name"] = "e"
        group["0"] = np.random.default_rng(0).standard_normal((256, 256)).astype("f4")

    config = copy.deepcopy(CONFIG)
    config["config"]["layers"].append(
        {
            "module": "keras.layers",
            "class_name": "Dense",
            "config": {"name": "e", "use_bias": False},
        }
    )
    return write_keras(
        path,
        [("config.json", json.dumps(config).encode()), ("model.weights.h5", weights_h5_bytes(big))],
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_real_full_and_read_only_filesystems(tmp_path: Path) -> None:
    source = big_model(tmp_path / "big.keras")
    with tmpfs(tmp_path / "full", "size=64k") as full:
        out = full / "out.keras"
        line = assert_one_line_error(run(*prune_args(source, "-o", out)), "No space left")
        assert str(out) in line
        assert list(full.iterdir()) == []
    with tmpfs(tmp_path / "ro", "ro,size=1m") as read_only:
        for option, name in (("-o", "out.keras"), ("--json-file", "r.json")):
            extra = [option, read_only / name]
            if option == "--json-file":
                extra += ["-o", tmp_path / "o.keras"]
            assert_one_line_error(run(*prune_args(source, *extra)), "Read-only file system")
        assert not (tmp_path / "o.keras").exists()  # refused before any work


# --- signals, pipes, stdin ------------------------------------------------------------------------

PAUSED_CLI = r"""
import signal, sys, time
# A job started in the background by a non-interactive shell inherits SIGINT ignored; Ctrl-C
# reaches an interactive process, which is what this test is about.
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from sparseprune.formats import atomic
original = atomic.publish
ready = Path(sys.argv[1])
def paused(temp, target, force, inputs=()):
    staged = ready.with_suffix(".staged")  # renamed into place: never read half-written
    staged.write_text(str(temp))
    staged.replace(ready)
    time.sleep(60)
    original(temp, target, force, inputs)
atomic.publish = paused
from sparseprune.cli import main
sys.argv = ["sparseprune", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize(
    ("sig", "code", "word"),
    [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")],
)
def test_signal_removes_the_temp_file(model: Path, sig: int, code: int, word: str) -> None:
    ready, out = model.parent / "ready", model.parent / "out.keras"
    child = subprocess.Popen(
        [sys.executable, "-c", PAUSED_CLI, str(ready), *map(str, prune_args(model, "-o", out))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        },
    )
    deadline = time.monotonic() + 60
    while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    temp = Path(ready.read_text())
    assert temp.exists()  # the work was written, only publishing was left
    child.send_signal(sig)
    _, err = child.communicate(timeout=60)
    assert child.returncode == code, err
    assert err.decode().strip().splitlines() == [f"error: {word}."]
    assert not temp.exists() and not out.exists()


def cli(*args: object, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "sparseprune", *map(str, args)]
    return subprocess.run(command, capture_output=kwargs.pop("capture", True), env=env, **kwargs)


@pytest.mark.parametrize("extra", [[], ["--json"], ["-f", "csv"]])
def test_closed_stdout_exits_quietly(model: Path, extra: list[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before we write: every write gets EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "sparseprune", "inspect", str(model), *extra],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    finally:
        os.close(write_end)
    assert done.returncode == 141 and done.stderr == b""


def test_inspect_stdin_closed() -> None:
    command = f"exec {sys.executable} -m sparseprune inspect - <&-"
    done = subprocess.run(
        ["sh", "-c", command], capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "standard input is closed" in lines[0]


# --- usage errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (["prune"], "Missing argument"),
        (["prune", "x.keras", "--bogus"], "No such option"),
        (["prune", "x.keras", "--scope", "nope"], "--scope"),
        (["inspect", "x.keras", "--threshold", "abc"], "--threshold"),
        (["nonsense"], "No such command"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], word: str) -> None:
    line = assert_one_line_error(run(*args), word)
    assert "--help" in line


@pytest.mark.parametrize("command", ["prune", "strip", "shrink"])
def test_empty_output_is_an_error(model: Path, command: str) -> None:
    extra = ["--target", "0.5"] if command == "prune" else []
    assert_one_line_error(run(command, model, *extra, "-o", ""), "empty")
    assert sorted(p.name for p in model.parent.iterdir()) == ["m.keras"]


# --- names from the file are text, never markup ---------------------------------------------


@pytest.mark.parametrize("name", ["[/]", "[bold]x", "[link=file:///etc]y"])
def test_markup_in_names_prints_literally(tmp_path: Path, name: str) -> None:
    config = copy.deepcopy(CONFIG)
    config["config"]["layers"][1]["config"]["name"] = name

    def rename(f: h5py.File) -> None:
        f["layers/dense/vars"].attrs["name"] = name

    source = write_keras(
        tmp_path / "m.keras",
        [
            ("config.json", json.dumps(config).encode()),
            ("model.weights.h5", weights_h5_bytes(rename)),
        ],
    )
    shown = run("inspect", source)
    assert shown.exit_code == 0 and name in shown.stdout, shown.output
    out = tmp_path / "p.keras"
    pruned = run("prune", source, "--target", "0.5", "-o", out)
    assert pruned.exit_code == 0, pruned.output
    assert f"{name}/kernel" in pruned.stdout
    shutil.rmtree(tmp_path)


# --- the TFLite output follows the same rules (refused before TensorFlow is imported) -------------


@pytest.mark.tensorflow
@pytest.mark.parametrize("second_path", ["hardlink", "symlink", "existing"])
def test_tflite_output_rules(model: Path, second_path: str) -> None:
    target = model.parent / "out.tflite"
    if second_path == "existing":
        target.write_bytes(b"keep")
    else:
        (os.link if second_path == "hardlink" else os.symlink)(model, target)
    before = model.read_bytes()
    word = "--force" if second_path == "existing" else "is the input"
    extra = [] if second_path == "existing" else ["--force"]
    assert_one_line_error(run("export", model, "-o", target, *extra), word)
    assert model.read_bytes() == before
    assert second_path != "existing" or target.read_bytes() == b"keep"
    heavy = ("tensorflow", "keras", "tf_keras")
    assert not [name for name in heavy if name in sys.modules]
