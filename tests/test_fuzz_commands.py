"""Every command that reads a model, run on mutated copies of real files: the safety contract.

For each mutated file and each command (`inspect`, `prune`, `strip`, `shrink` in this process;
`evaluate`, `compare`, `bench`, `export` in ONE TensorFlow subprocess), whatever the outcome:

- the exit code is 0, 1 or 2 and no exception escapes (no "Traceback" anywhere in the output);
- exit 2 prints one `error:` line on stderr;
- the input file is byte-identical afterwards (hash compared);
- on exit 2 nothing is left at the output path (and no temp file beside it).

Mutations: truncation, flipped bytes (anywhere, or in the inner HDF5 file of a `.keras`),
corrupt gzip chunks, attributes set to odd values, datasets deleted or replaced by other shapes
and dtypes, committed datatypes. TFMOT-wrapped files (made once per module by
`tests/fixtures/make_tfmot_fixtures.py`) are bases too, so `strip` does real work.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import SAMPLES
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from test_fuzz import h5_objects, member, mutate_h5, replace_member
from typer.testing import CliRunner

from sparseprune.cli import app

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
WEIGHTS_MEMBER = "model.weights.h5"
SAMPLE_BASES = ("mlp.keras", "cnn.keras", "mlp.h5", "tf_keras_mlp.h5", "mlp.weights.h5")
TFMOT_BASES = ("tfmot_mlp.h5", "tfmot_mlp.keras")
FILE_COMMANDS = ("inspect", "prune", "strip", "shrink")
FUZZ = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # shrinking a file costs minutes
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
runner = CliRunner()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Bases(dict):
    """name -> bytes of each base file; a short repr, as hypothesis prints its arguments."""

    def __repr__(self) -> str:
        return f"Bases({', '.join(self)})"


@pytest.fixture(scope="module")
def bases(tfmot_dir: Path) -> Bases:
    """The sample files, plus TFMOT-wrapped files for `strip` (conftest's session `tfmot_dir`)."""
    found = Bases({name: (SAMPLES / name).read_bytes() for name in SAMPLE_BASES})
    found.update({name: (tfmot_dir / name).read_bytes() for name in TFMOT_BASES})
    return found


# --------------------------------------------------------------------------- mutations


def suffix_of(name: str) -> str:
    return ".keras" if name.endswith(".keras") else ".h5"


def h5_of(data: bytes, name: str) -> tuple[bytes, Callable[[bytes], bytes]]:
    if not name.endswith(".keras"):
        return data, lambda edited: edited
    return member(data, WEIGHTS_MEMBER), lambda edited: replace_member(
        data, WEIGHTS_MEMBER, edited, zipfile.ZIP_STORED
    )


def gzip_and_corrupt(data: bytes, path: str, where: int) -> bytes:
    """Store `path` gzip-compressed, then damage its chunk."""

    def mutate(f: h5py.File) -> None:
        values = f[path][()]
        del f[path]
        f.create_dataset(path, data=values, compression="gzip", chunks=values.shape or None)

    rewritten = mutate_h5(data, mutate)
    with h5py.File(io.BytesIO(rewritten), "r") as f:
        dataset = f[path]
        if not dataset.chunks:
            return rewritten
        info = dataset.id.get_chunk_info(0)
    corrupted = bytearray(rewritten)
    start = info.byte_offset + where % max(info.size, 1)
    corrupted[start : start + 16] = b"\xa5" * len(corrupted[start : start + 16])
    return bytes(corrupted)


ODD_VALUES = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.binary(max_size=40),
    st.text(max_size=40),
    st.just(np.array([1.5, float("nan")])),
    st.just(np.zeros((2, 2), np.int8)),
)


def chunkable(data: bytes, paths: list[str]) -> list[str]:
    """The datasets gzip can store: chunked storage needs at least one axis, none of length 0
    (a scalar such as an optimizer's iteration count cannot be chunked)."""
    with h5py.File(io.BytesIO(data), "r") as f:
        return [p for p in paths if f[p].shape and all(f[p].shape)]


@st.composite
def h5_mutation(draw, data: bytes) -> Callable[[h5py.File], None] | tuple[str, int]:
    objects = [o for o in h5_objects(data) if o[0] != "/"]
    datasets = chunkable(data, [p for p, kind in objects if kind == "dataset"])
    action = draw(
        st.sampled_from(["attribute", "delete", "replace", "datatype", "gzip chunk"]),
        label="action",
    )
    if action == "gzip chunk" and datasets:
        return draw(st.sampled_from(datasets)), draw(st.integers(0, 1 << 16))
    path = draw(st.sampled_from([p for p, _ in objects] or ["/"]), label="object")
    attr = draw(st.sampled_from(["name", "weight_names", "layer_names", "keras_version", "x"]))
    value = draw(ODD_VALUES, label="value")
    shape = draw(st.sampled_from([(), (0,), (3,), (2, 5), (1, 1, 1)]), label="shape")
    dtype = draw(st.sampled_from(["float32", "float16", "int8", "uint64", "bool"]))

    def mutate(f: h5py.File) -> None:
        if action == "attribute":
            f[path].attrs[attr] = value
        elif action == "delete":
            del f[path]
        elif action == "replace" and path in datasets:
            del f[path]
            f[path] = np.ones(shape, dtype=dtype)
        elif action == "datatype":
            f["shared_type"] = np.dtype(dtype)

    return mutate


def mutated(base: bytes, name: str, data: st.DataObject) -> bytes:
    kind = data.draw(st.sampled_from(["truncate", "flip", "flip inner", "hdf5"]), label="kind")
    if kind == "truncate":
        return base[: data.draw(st.integers(0, len(base) - 1), label="cut")]
    if kind == "flip" or (kind == "flip inner" and not name.endswith(".keras")):
        return flip(base, data)
    h5, put_back = h5_of(base, name)
    if kind == "flip inner":
        return put_back(flip(h5, data))
    mutation = data.draw(h5_mutation(h5), label="mutation")
    if isinstance(mutation, tuple):
        return put_back(gzip_and_corrupt(h5, *mutation))
    return put_back(mutate_h5(h5, mutation))


def flip(data: bytes, draw: st.DataObject) -> bytes:
    out = bytearray(data)
    positions = draw.draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8))
    for position in positions:
        out[position] ^= draw.draw(st.integers(1, 255), label="xor")
    return bytes(out)


# --------------------------------------------------------------------------- the contract


def command_args(command: str, path: Path, out: Path) -> list[str]:
    if command == "inspect":
        return ["inspect", str(path), "--json"]
    extra = ["--target", "0.5"] if command == "prune" else []
    return [command, str(path), "-o", str(out), *extra]


def assert_contract(code: int, output: str, stderr: str, crashed: str, what: str) -> None:
    assert not crashed, f"{what}: uncaught {crashed}"
    assert "Traceback" not in output, f"{what}:\n{output}"
    assert code in (0, 1, 2), f"{what}: exit code {code}:\n{output}"
    if code == 2:
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{what}:\n{stderr}"


def run_file_commands(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / f"fuzzed{suffix}"
        path.write_bytes(data)
        before = sha256(data)
        for command in FILE_COMMANDS:
            out = folder / "out" / f"written{suffix}"
            out.parent.mkdir(exist_ok=True)
            result = runner.invoke(app, command_args(command, path, out))
            crashed = ""
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                crashed = repr(result.exception)
            assert_contract(result.exit_code, result.output, result.stderr, crashed, command)
            assert sha256(path.read_bytes()) == before, f"{command} modified its input"
            if result.exit_code == 2:
                assert list(out.parent.iterdir()) == [], f"{command} left output on exit 2"
            for leftover in out.parent.iterdir():
                leftover.unlink()


@pytest.mark.parametrize("group", ["samples", "tfmot"])
@FUZZ
@given(data=st.data())
def test_file_commands_on_mutated_files(bases: Bases, group: str, data) -> None:
    names = SAMPLE_BASES if group == "samples" else TFMOT_BASES
    name = data.draw(st.sampled_from(names), label="base")
    run_file_commands(mutated(bases[name], name, data), suffix_of(name))


def test_intact_tfmot_files_are_stripped(bases: Bases, tmp_path: Path) -> None:
    """The fuzz bases work: `strip` succeeds on each intact TFMOT file."""
    for name in TFMOT_BASES:
        path = tmp_path / name
        path.write_bytes(bases[name])
        result = runner.invoke(app, ["strip", str(path), "-o", str(tmp_path / f"s.{name}")])
        assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------- Keras commands

KERAS_RUNNER = r"""
import hashlib, json, random, sys, traceback
from pathlib import Path
from typer.testing import CliRunner
from sparseprune.cli import app

spec = json.loads(Path(sys.argv[1]).read_text())
runner = CliRunner()
runs = []

def run(args, watched, out=None):
    if out is not None:
        Path(out).unlink(missing_ok=True)
    result = runner.invoke(app, args)
    crashed = ""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        crashed = "".join(traceback.format_exception(*result.exc_info))
    runs.append({"args": args, "code": result.exit_code, "output": result.output,
                 "stderr": result.stderr, "crashed": crashed, "watched": watched, "out": out,
                 "left": sorted(p.name for p in Path(out).parent.iterdir()) if out else []})

folder = Path(spec["folder"])
# A real .tflite first (export of the intact model), then truncated and flipped copies of it.
tflite = folder / "intact.tflite"
run(["export", spec["intact"], "-o", str(tflite)], spec["intact"], str(tflite))
content = tflite.read_bytes()
rng = random.Random(8)
for i in range(spec["tflite_mutations"]):
    data = bytearray(content)
    if i % 2 == 0:
        data = data[: rng.randrange(8, len(data))]
    else:
        for _ in range(rng.randrange(1, 40)):
            data[rng.randrange(8, len(data))] = rng.randrange(256)
    path = folder / f"mutated{i}.tflite"
    path.write_bytes(bytes(data))
    spec["files"].append(str(path))
for path in spec["files"]:
    data = spec["data"]
    out = str(folder / "out" / "written.tflite")
    if not path.endswith(".tflite"):
        run(["evaluate", path, "--data", data], path)
        run(["compare", spec["intact"], path, "--data", data], path)
        run(["export", path, "-o", out], path, out)
    run(["bench", path, "--repeats", "2", "--warmup", "0", "--batch-size", "1"], path)
    Path(out).unlink(missing_ok=True)
for data in spec["bad_data"]:  # an .npz whose header declares terabytes, a plain .npy
    out = str(folder / "out" / "written.tflite")
    run(["evaluate", spec["intact"], "--data", data], data)
    run(["export", spec["intact"], "-o", out, "--data", data, "--quantize", "int8"], data, out)
Path(sys.argv[2]).write_text(json.dumps(runs))
"""


def keras_mutations(bases: Bases, count: int) -> list[tuple[str, bytes]]:
    """A fixed set of mutated Keras files (seeded), across the three full-model layouts."""
    rng = random.Random(20)
    out = []
    for i in range(count):
        name = ("mlp.keras", "mlp.h5", "tf_keras_mlp.h5")[i % 3]
        data = bases[name]
        kind = i // 3 % 3
        if kind == 0:
            changed = data[: rng.randrange(len(data) // 2, len(data))]
        elif kind == 1:
            h5, put_back = h5_of(data, name)
            kernels = [
                p
                for p, k in h5_objects(h5)
                if k == "dataset" and ("kernel" in p or p.endswith("/vars/0"))
            ]
            changed = put_back(gzip_and_corrupt(h5, rng.choice(kernels), rng.randrange(1 << 12)))
        else:
            h5, put_back = h5_of(data, name)
            edited = bytearray(h5)
            for _ in range(4):
                edited[rng.randrange(len(edited))] ^= 0xFF
            changed = put_back(bytes(edited))
        out.append((f"k{i}{suffix_of(name)}", changed))
    return out


def test_keras_commands_on_mutated_files(bases: Bases, tmp_path: Path) -> None:
    folder = tmp_path / "work"
    (folder / "out").mkdir(parents=True)
    files = []
    for name, data in keras_mutations(bases, 6):
        path = folder / name
        path.write_bytes(data)
        files.append(str(path))
    intact = folder / "intact.keras"
    intact.write_bytes(bases["mlp.keras"])
    hashes = {p: sha256(Path(p).read_bytes()) for p in [*files, str(intact)]}
    bad_data = [str(folder / "tb.npz"), str(folder / "x.npy")]
    header = io.BytesIO()
    fields = {"descr": "<f4", "fortran_order": False, "shape": (1 << 20, 1 << 20)}
    np.lib.format.write_array_header_1_0(header, fields)
    with zipfile.ZipFile(bad_data[0], "w") as archive:
        archive.writestr("x_val.npy", header.getvalue() + b"\0" * 64)
    np.save(bad_data[1], np.ones((4, 64), np.float32))
    spec = {
        "bad_data": bad_data,
        "folder": str(folder),
        "intact": str(intact),
        "files": files,
        "data": str(SAMPLES / "digits.npz"),
        "tflite_mutations": 4,
    }
    spec_path, result_path = tmp_path / "spec.json", tmp_path / "runs.json"
    spec_path.write_text(json.dumps(spec))
    done = subprocess.run(
        [sys.executable, "-c", KERAS_RUNNER, str(spec_path), str(result_path)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(result_path.read_text())
    assert runs[0]["code"] == 0, runs[0]["output"]  # the intact export
    commands = {run["args"][0] for run in runs}
    assert commands == {"evaluate", "compare", "bench", "export"}
    tflite_runs = [r for r in runs if r["args"][0] == "bench" and r["watched"].endswith(".tflite")]
    assert len(tflite_runs) == 4 and any(r["code"] == 2 for r in tflite_runs)
    refused = [r for r in runs if r["watched"] in bad_data]
    assert len(refused) == 4 and all(r["code"] == 2 for r in refused), refused
    for run in runs:
        what = " ".join(Path(a).name if "/" in a else a for a in run["args"])
        assert_contract(run["code"], run["output"], run["stderr"], run["crashed"], what)
        watched = run["watched"]
        if watched in hashes:
            assert sha256(Path(watched).read_bytes()) == hashes[watched], f"{what} changed input"
        if run["code"] == 2:
            assert run["left"] == [], f"{what} left {run['left']} on exit 2"
