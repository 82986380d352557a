"""Property-based fuzzing of `sparseprune inspect` with corrupted copies of real model files.

Every test takes a real model file from `sample_models/` (while some are not generated yet, those
skip and `handmade.py`'s files stand in), corrupts it in one way, runs the CLI and checks the
contract:

- the exit code is 0 or 2, nothing else; no exception escapes (only `SystemExit`), no "Traceback";
- exit 2 prints exactly one line, `error: <message>`, on stderr, and the `--json` document lists
  the same message under `errors`;
- exit 0 prints a JSON report that parses and is internally consistent (per-weight counts within
  bounds, totals equal to the sums of the weights), and the table/CSV/Markdown renderers agree on
  the exit code;
- where the corruption must not change what is read (an extra zip member, a dropped
  `metadata.json`, re-compressed members), the report equals the one of the intact file;
- where it must be refused (duplicate members, a missing `config.json`, links), it is refused;
- a weight replaced by arbitrary values (any dtype, NaN/Inf, integer extremes) is counted exactly;
- names that are not valid text (invalid UTF-8 in HDF5, lone surrogates in JSON) render.

Base files are read once per module and mutated in memory; mutated bytes are written to a
`tempfile.TemporaryDirectory()` (function-scoped `tmp_path` does not mix with hypothesis).
"""

from __future__ import annotations

import functools
import io
import json
import math
import signal
import tempfile
import traceback
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from rich.console import Console
from typer.testing import CliRunner

from handmade import weights_h5_bytes, write_keras
from sparseprune import inspect_model
from sparseprune.cli import app
from sparseprune.cli import common as cli_common

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
KERAS_SAMPLES = ("mlp.keras", "cnn.keras")
LEGACY_SAMPLES = ("mlp.h5", "tf_keras_mlp.h5")
WEIGHTS_SAMPLES = ("mlp.weights.h5",)
HANDMADE_KERAS = "handmade.keras"
HANDMADE_WEIGHTS = "handmade.weights.h5"
WEIGHTS_MEMBER = "model.weights.h5"
FORMATS = ("keras", "h5", "h5-weights", "weights.h5")
HANG_SECONDS = 30


def _with_fallback(samples: tuple[str, ...], handmade: str) -> tuple[str, ...]:
    """The sample files; the hand-made stand-in too while any of them is missing (they skip)."""
    if all((SAMPLES / name).is_file() for name in samples):
        return samples
    return (*samples, handmade)


KERAS_BASES = _with_fallback(KERAS_SAMPLES, HANDMADE_KERAS)
WEIGHTS_BASES = _with_fallback(WEIGHTS_SAMPLES, HANDMADE_WEIGHTS)
ALL_BASES = (*KERAS_BASES, *LEGACY_SAMPLES, *WEIGHTS_BASES)
# The most productive tests run once per layout, so each gets its full budget of examples.
FAMILIES = {"keras": KERAS_BASES, "legacy-h5": LEGACY_SAMPLES, "weights-h5": WEIGHTS_BASES}
# Files holding an architecture config (config.json or a `model_config` attribute).
CONFIG_BASES = (*KERAS_BASES, *LEGACY_SAMPLES)

# To hunt for new bugs locally, use e.g. max_examples=500 and derandomize=False.
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

runner = CliRunner()


# --------------------------------------------------------------------------- base files


@functools.cache
def _base_bytes(name: str) -> bytes | None:
    if name == HANDMADE_KERAS:
        with tempfile.TemporaryDirectory() as tmp:
            return write_keras(Path(tmp) / name).read_bytes()
    if name == HANDMADE_WEIGHTS:
        return weights_h5_bytes()
    path = SAMPLES / name
    return path.read_bytes() if path.is_file() else None


def draw_base(data: st.DataObject, names: tuple[str, ...]) -> str:
    """One of `names` that exists; skip when none was generated."""
    present = [name for name in names if _base_bytes(name) is not None]
    if not present:
        pytest.skip(f"none of sample_models/{{{', '.join(names)}}} exists")
    return data.draw(st.sampled_from(present), label="base file")


def base(name: str) -> bytes:
    """The intact bytes of a base file; skip the test if the sample was not generated."""
    data = _base_bytes(name)
    if data is None:
        pytest.skip(f"sample_models/{name} does not exist (run the sample generator)")
    return data


@functools.cache
def _baseline(name: str) -> dict:
    """The `--json --all` model report of the intact file (without path and size)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(base(name))
        result = invoke(str(path), "--json", "--all")
    assert_contract(result, str(path))
    assert result.exit_code == 0, result.output
    return comparable(json.loads(result.stdout)["models"][0])


def comparable(model: dict) -> dict:
    """A model report without what depends on where and how big the file is."""
    return {k: v for k, v in model.items() if k not in ("path", "file_size")}


# --------------------------------------------------------------------------- running the CLI


class Hang(Exception):
    """Raised by the alarm when one CLI run takes longer than HANG_SECONDS."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise Hang(f"sparseprune inspect did not finish within {HANG_SECONDS} s")


def invoke(*args: str, stdin: bytes | None = None):
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(HANG_SECONDS)
    try:
        result = runner.invoke(app, ["inspect", *args], input=stdin)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        _drop_stale_console_output()
    return result


def _drop_stale_console_output() -> None:
    """Keep examples independent: a render that crashed mid-write leaves its text in the
    module-level rich consoles' buffers, and every later run in this process would re-raise."""
    for value in vars(cli_common).values():
        buffer = getattr(value, "_buffer", None) if isinstance(value, Console) else None
        if isinstance(buffer, list):
            del buffer[:]


def _traceback(result) -> str:
    if result.exc_info is None:
        return ""
    return "".join(traceback.format_exception(*result.exc_info))


def assert_contract(result, label: str) -> None:
    """Exit 0, or exit 2 with exactly one `error:` line on stderr; never a crash."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {type(result.exception).__name__}:\n{_traceback(result)}"
    )
    assert "Traceback" not in result.output, result.output
    assert result.exit_code in (0, 2), f"exit code {result.exit_code}:\n{result.output}"
    if result.exit_code == 2:
        lines = result.stderr.splitlines()
        assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{result.stderr}"
        assert lines[0].startswith("error: "), result.stderr
        assert label in lines[0] or "<stdin>" in lines[0], result.stderr
    else:
        assert "error:" not in result.stderr, result.stderr


def run_checked(
    data: bytes,
    suffix: str,
    *,
    threshold: float | None = None,
    other_format: str = "table",
    stdin: bool = False,
) -> dict | None:
    """Run `inspect --json --all` (and one other output format) on `data`; check the contract.

    Returns the JSON model report on exit 0, None on exit 2.
    """
    options = ["--all"] if threshold is None else ["--all", "--threshold", repr(threshold)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzzed{suffix}"
        path.write_bytes(data)
        target, label, feed = ("-", "<stdin>", data) if stdin else (str(path), str(path), None)
        result = invoke(target, "--json", *options, stdin=feed)
        assert_contract(result, label)
        document = json.loads(result.stdout)
        if result.exit_code == 2:
            assert document["models"] == [], document
            message = result.stderr.strip().removeprefix("error: ")
            assert document["errors"] == [{"path": target, "error": message}], (
                f"stderr and --json disagree on the error:\n{result.stderr}\n{document['errors']}"
            )
            report = None
        else:
            assert document["errors"] == [], document
            (report,) = document["models"]
            check_report(report, label, len(data), threshold)
            # The error path is the same for every format; the renderers only run on success.
            rendered = invoke(target, "--format", other_format, *options, stdin=feed)
            assert_contract(rendered, label)
            assert rendered.exit_code == 0, (
                f"--json exited 0 but --format {other_format} exited "
                f"{rendered.exit_code}:\n{rendered.output}"
            )
    return report


def check_report(report: dict, label: str, size: int, threshold: float | None) -> None:
    """Per-weight counts within bounds and totals equal to the sums of the weights."""
    assert report["path"] == label
    assert report["format"] in FORMATS
    assert report["file_size"] == size
    assert report["threshold"] == (1e-15 if threshold is None else threshold)
    assert report["keras_version"] is None or isinstance(report["keras_version"], str)
    sums = dict.fromkeys(("params", "near_zero", "prunable_params", "prunable_near_zero"), 0)
    for layer in report["layers"]:
        assert isinstance(layer["name"], str)
        assert layer["class"] is None or isinstance(layer["class"], str)
        assert layer["weights"], layer
        for weight in layer["weights"]:
            shape = weight["shape"]
            assert all(isinstance(d, int) and d >= 0 for d in shape), weight
            params = weight["params"]
            assert params == math.prod(shape), weight
            assert 0 <= weight["zeros"] <= weight["near_zero"] <= params, weight
            assert weight["nan"] >= 0 and weight["inf"] >= 0, weight
            assert weight["near_zero"] + weight["nan"] + weight["inf"] <= params, weight
            units = shape[-1] if len(shape) >= 2 else 0
            assert 0 <= weight["dead_units"] <= units, weight
            assert isinstance(weight["prunable"], bool)
            sums["params"] += params
            sums["near_zero"] += weight["near_zero"]
            if weight["prunable"]:
                sums["prunable_params"] += params
                sums["prunable_near_zero"] += weight["near_zero"]
    totals = report["totals"]
    for key, value in sums.items():
        assert totals[key] == value, (key, totals, sums)
    assert totals["prunable_params"] <= totals["params"]
    for fraction, near, params in (
        ("sparsity", "near_zero", "params"),
        ("prunable_sparsity", "prunable_near_zero", "prunable_params"),
    ):
        expected = totals[near] / totals[params] if totals[params] else 0.0
        assert math.isclose(totals[fraction], expected), totals
        assert 0.0 <= totals[fraction] <= 1.0
    assert report["optimizer"]["tensors"] >= 0 and report["optimizer"]["params"] >= 0
    for flag, names in report["flags"].items():
        assert isinstance(flag, str) and all(isinstance(n, str) for n in names)
    assert report["failures"] == []


# --------------------------------------------------------------------------- zip helpers


def zip_members(data: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info, archive.read(info)) for info in archive.infolist()]


def build_zip(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, payload in members:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = compression
            archive.writestr(info, payload)
    return buffer.getvalue()


def replace_member(data: bytes, name: str, payload: bytes, compression: int) -> bytes:
    members = [(i.filename, payload if i.filename == name else b) for i, b in zip_members(data)]
    return build_zip(members, compression)


def member(data: bytes, name: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.read(name)


# --------------------------------------------------------------------------- HDF5 helpers


def h5_objects(data: bytes) -> list[tuple[str, str]]:
    """(path, "group" | "dataset") of every object, the root included."""
    found = [("/", "group")]
    with h5py.File(io.BytesIO(data), "r") as f:

        def visit(name: str, obj: object) -> None:
            kind = "dataset" if isinstance(obj, h5py.Dataset) else "group"
            found.append((f"/{name}", kind))

        f.visititems(visit)
    return found


def mutate_h5(data: bytes, mutate: Callable[[h5py.File], None]) -> bytes:
    buffer = io.BytesIO(data)
    with h5py.File(buffer, "r+") as f:
        mutate(f)
    return buffer.getvalue()


def h5_part(name: str) -> tuple[bytes, Callable[[bytes], bytes]]:
    """The HDF5 bytes of a base file and a function that puts edited HDF5 bytes back."""
    data = base(name)
    if not name.endswith(".keras"):
        return data, lambda edited: edited
    return member(data, WEIGHTS_MEMBER), lambda edited: replace_member(
        data, WEIGHTS_MEMBER, edited, zipfile.ZIP_STORED
    )


def suffix_of(name: str) -> str:
    return ".keras" if name.endswith(".keras") else ".h5"


# --------------------------------------------------------------------------- strategies

# Keras writes stored or DEFLATE members; other methods must be read the same or refused.
KERAS_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
COMPRESSIONS = st.sampled_from(
    [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]
)
# Text that tends to break things: markup, paths, separators, control characters, long names.
NASTY_TEXT = st.sampled_from(
    [
        "",
        " ",
        "/",
        "//",
        ".",
        "..",
        "../x",
        "a/b",
        "vars",
        "layers",
        "0",
        "-1",
        "dense",
        "hidden",
        "kernel",
        "Dense",
        "Sequential",
        "Functional",
        "Lambda",
        "[/]",
        "[bold]",
        "[/red]x",
        ":x:",
        "%s%n",
        "{}",
        "\n",
        "a\nb",
        "\r",
        "\t",
        "\x1b[31m",
        "é😀",
        "x" * 300,
        "keras.layers",
        "myproj>Scale",
    ]
)
TEXT = st.one_of(
    NASTY_TEXT,
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12),
)
# JSON may also carry lone surrogates ("\udcf6"), which HDF5 names get from invalid UTF-8.
JSON_TEXT = st.one_of(TEXT, st.sampled_from(["\udcf6", "dense\ud800"]))
JSON_KEYS = st.one_of(
    st.sampled_from(
        [
            "class_name",
            "config",
            "layers",
            "name",
            "module",
            "registered_name",
            "use_bias",
            "units",
            "layer",
            "build_config",
            "inbound_nodes",
            "keras_version",
        ]
    ),
    JSON_TEXT,
)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    JSON_TEXT,
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(JSON_KEYS, children, max_size=4)
    ),
    max_leaves=24,
)


@st.composite
def deep_json(draw) -> str:
    """Deeply nested JSON: lists, objects, or a chain of models inside models."""
    depth = draw(st.integers(1, 5000))
    kind = draw(st.sampled_from(["list", "object", "models"]))
    if kind == "list":
        return "[" * depth + "]" * depth
    if kind == "object":
        return '{"a": ' * depth + "1" + "}" * depth
    depth = min(depth, 200)
    layer = '{"class_name": "Sequential", "config": {"name": "m", "layers": ['
    return layer * depth + "]}}" * depth


def json_paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path (tuple of keys/indices) into a JSON document, the root included."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from json_paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from json_paths(child, (*prefix, index))


def replaced(document: Any, path: tuple, new: Any, delete: bool) -> Any:
    if not path:
        return new
    document = json.loads(json.dumps(document))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return document


@st.composite
def mutated_config(draw, text: str) -> bytes:
    """A config.json derived from a real one: a value replaced/deleted, or garbage."""
    how = draw(st.sampled_from(["replace", "replace", "replace", "random", "deep", "bytes"]))
    if how == "random":
        return json.dumps(draw(JSON_VALUES)).encode()
    if how == "deep":
        return draw(deep_json()).encode()
    if how == "bytes":
        return draw(st.binary(max_size=64))
    document = json.loads(text)
    paths = list(json_paths(document))
    edits = draw(st.integers(1, 3))
    for _ in range(edits):
        paths = list(json_paths(document))
        path = draw(st.sampled_from(paths))
        delete = bool(path) and draw(st.booleans())
        document = replaced(document, path, draw(JSON_VALUES), delete)
    return json.dumps(document).encode()


INT_DTYPES = st.sampled_from(["i1", "i2", "i4", "i8", "u1", "u8"])
STRING_ARRAYS = st.lists(TEXT, max_size=4).map(lambda xs: np.array(xs, dtype=h5py.string_dtype()))
NUL_FREE_BYTES = st.lists(
    st.binary(min_size=1, max_size=8).filter(lambda b: b"\x00" not in b), max_size=4
)
ATTR_VALUES = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    hnp.arrays(INT_DTYPES, hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3)),
    st.binary(min_size=1, max_size=32).map(np.void),
    st.binary(min_size=1, max_size=32).filter(lambda b: b"\x00" not in b),
    TEXT,
    STRING_ARRAYS,
    STRING_ARRAYS.map(lambda a: a.reshape(1, -1) if a.size else a),
    NUL_FREE_BYTES.map(lambda xs: np.array(xs, dtype="S")),
    # Variable-length strings that are not UTF-8: h5py reads them back with surrogate escapes.
    NUL_FREE_BYTES.map(lambda xs: np.array(xs, dtype=h5py.string_dtype())),
    st.floats(),
    st.booleans(),
)
ATTR_NAMES = (
    "layer_names",
    "weight_names",
    "layer_names0",
    "weight_names0",
    "weight_names1",
    "name",
    "dtype",
    "model_config",
    "keras_version",
    "backend",
)
WEIGHT_DTYPES = st.sampled_from(["f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u8", "?"])


def weight_arrays(dtype: str) -> st.SearchStrategy[np.ndarray]:
    elements = None
    if dtype.startswith("f"):
        elements = st.one_of(
            st.floats(width=int(dtype[1]) * 8),
            st.sampled_from([0.0, -0.0, 1e-20, -1e-20, 1e-15, 1e-30, 5e-324]).map(
                lambda x, d=dtype: float(np.array(x, dtype=d))
            ),
        )
    shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)
    return hnp.arrays(np.dtype(dtype), shapes, elements=elements)


# --------------------------------------------------------------------------- byte-level tests


@pytest.mark.parametrize("name", ALL_BASES)
def test_intact_base_file_is_read(name: str) -> None:
    report = _baseline(name)
    assert report["layers"], report
    assert run_checked(base(name), suffix_of(name), stdin=True) is not None


@FUZZ
@given(data=st.data())
def test_truncated(data: st.DataObject) -> None:
    name = draw_base(data, ALL_BASES)
    intact = base(name)
    cut = data.draw(
        st.one_of(
            st.integers(0, len(intact) - 1),
            st.integers(max(0, len(intact) - 2048), len(intact) - 1),
        ),
        label="cut",
    )
    stdin = data.draw(st.booleans(), label="stdin")
    run_checked(intact[:cut], suffix_of(name), stdin=stdin)


def _positions(size: int) -> st.SearchStrategy[int]:
    """Byte offsets, biased toward headers and trailers (zip directory, HDF5 superblock)."""
    return st.one_of(
        st.integers(0, size - 1),
        st.integers(0, min(size, 4096) - 1),
        st.integers(max(0, size - 1024), size - 1),
    )


def flip_bytes(intact: bytes, data: st.DataObject) -> bytes:
    edits = data.draw(
        st.lists(st.tuples(_positions(len(intact)), st.integers(1, 255)), min_size=1, max_size=8),
        label="xor edits",
    )
    buffer = bytearray(intact)
    for position, mask in edits:
        buffer[position] ^= mask
    return bytes(buffer)


@pytest.mark.parametrize("family", FAMILIES)
@FUZZ
@given(data=st.data())
def test_flipped_bytes(family: str, data: st.DataObject) -> None:
    name = draw_base(data, FAMILIES[family])
    corrupted = flip_bytes(base(name), data)
    other = data.draw(st.sampled_from(["table", "csv", "markdown"]), label="format")
    run_checked(corrupted, suffix_of(name), other_format=other)


@FUZZ
@given(data=st.data())
def test_flipped_bytes_in_a_member(data: st.DataObject) -> None:
    """Corrupt one member's bytes but write a valid zip, possibly compressed."""
    name = draw_base(data, KERAS_BASES)
    members = zip_members(base(name))
    index = data.draw(st.integers(0, len(members) - 1), label="member")
    payload = members[index][1]
    assume(payload)
    corrupted = flip_bytes(payload, data)
    compression = data.draw(COMPRESSIONS, label="compression")
    rebuilt = [(i.filename, corrupted if n == index else b) for n, (i, b) in enumerate(members)]
    run_checked(build_zip(rebuilt, compression), ".keras")


@FUZZ
@given(data=st.data())
def test_flipped_bytes_in_compressed_archive(data: st.DataObject) -> None:
    """Re-compress every member, then corrupt the compressed archive's bytes."""
    name = draw_base(data, KERAS_BASES)
    members = [(i.filename, b) for i, b in zip_members(base(name))]
    compression = data.draw(COMPRESSIONS.filter(bool), label="compression")
    run_checked(flip_bytes(build_zip(members, compression), data), ".keras")


# --------------------------------------------------------------------------- zip structure


@FUZZ
@given(data=st.data())
def test_recompressed_archive_reads_the_same(data: st.DataObject) -> None:
    name = draw_base(data, KERAS_BASES)
    members = [(i.filename, b) for i, b in zip_members(base(name))]
    compression = data.draw(COMPRESSIONS, label="compression")
    report = run_checked(build_zip(members, compression), ".keras")
    if compression in KERAS_COMPRESSIONS:
        assert report is not None, f"compression method {compression} was refused"
    if report is not None:
        assert comparable(report) == _baseline(name)


@FUZZ
@given(data=st.data())
def test_dropped_member(data: st.DataObject) -> None:
    name = draw_base(data, KERAS_BASES)
    members = zip_members(base(name))
    dropped = data.draw(st.sampled_from([i.filename for i, _ in members]), label="dropped")
    compression = data.draw(COMPRESSIONS, label="compression")
    kept = [(i.filename, b) for i, b in members if i.filename != dropped]
    report = run_checked(build_zip(kept, compression), ".keras")
    if dropped in ("config.json", WEIGHTS_MEMBER):
        assert report is None, f"a .keras without {dropped} was accepted"
    elif report is not None or compression in KERAS_COMPRESSIONS:
        assert report is not None, f"dropping {dropped} made the archive unreadable"
        expected = _baseline(name)
        assert comparable(report) == {**expected, "keras_version": report["keras_version"]}


@FUZZ
@given(data=st.data())
def test_duplicated_member(data: st.DataObject) -> None:
    name = draw_base(data, KERAS_BASES)
    members = [(i.filename, b) for i, b in zip_members(base(name))]
    index = data.draw(st.integers(0, len(members) - 1), label="duplicated")
    copy_name, payload = members[index]
    payload = data.draw(st.sampled_from([payload, b"", b"{}"]), label="copy payload")
    position = data.draw(st.integers(0, len(members)), label="position")
    members.insert(position, (copy_name, payload))
    compression = data.draw(COMPRESSIONS, label="compression")
    with pytest.warns(UserWarning, match="Duplicate name"):
        archive = build_zip(members, compression)
    assert run_checked(archive, ".keras") is None, "an archive with duplicate members was read"
    if compression in KERAS_COMPRESSIONS:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "dup.keras"
            path.write_bytes(archive)
            assert "two zip members" in invoke(str(path)).stderr


@FUZZ
@given(data=st.data())
def test_extra_member(data: st.DataObject) -> None:
    """An unrelated member is ignored; an unsafe member name is refused."""
    name = draw_base(data, KERAS_BASES)
    members = [(i.filename, b) for i, b in zip_members(base(name))]
    extra = data.draw(
        st.one_of(
            NASTY_TEXT.filter(bool),
            st.sampled_from(["/abs", "\\abs", "C:x", "a/../../b", "..\\x", "assets/x.bin"]),
            st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=16),
        ),
        label="extra name",
    )
    assume(extra not in {n for n, _ in members})
    position = data.draw(st.integers(0, len(members)), label="position")
    members.insert(position, (extra, data.draw(st.binary(max_size=64), label="payload")))
    report = run_checked(build_zip(members, data.draw(COMPRESSIONS)), ".keras")
    if report is not None:
        assert comparable(report) == _baseline(name)


# --------------------------------------------------------------------------- configs


@FUZZ
@given(data=st.data())
def test_mutated_config(data: st.DataObject) -> None:
    """config.json (or a legacy file's `model_config`) with values replaced by random JSON."""
    name = draw_base(data, CONFIG_BASES)
    if name.endswith(".keras"):
        intact = base(name)
        config = data.draw(mutated_config(member(intact, "config.json").decode()), label="config")
        compression = data.draw(COMPRESSIONS, label="compression")
        corrupted = replace_member(intact, "config.json", config, compression)
    else:
        intact = base(name)
        with h5py.File(io.BytesIO(intact), "r") as f:
            text = f.attrs["model_config"]
        config = data.draw(mutated_config(text), label="config")
        store = data.draw(st.sampled_from(["text", "bytes", "opaque"]), label="stored as")
        value: Any = config.decode("utf-8", "replace").replace("\x00", "")
        if store == "bytes":
            value = config.replace(b"\x00", b"") or b" "
        elif store == "opaque" and config:
            value = np.void(config)

        def mutate(f: h5py.File) -> None:
            f.attrs["model_config"] = value

        corrupted = mutate_h5(intact, mutate)
    run_checked(corrupted, suffix_of(name))


# --------------------------------------------------------------------------- HDF5 content


@st.composite
def attribute_edit(draw, objects: list[tuple[str, str]], existing: dict[str, list[str]]):
    path = draw(st.sampled_from([p for p, _ in objects]), label="object")
    names = sorted(set(existing.get(path, [])) | set(ATTR_NAMES))
    attr = draw(st.sampled_from(names), label="attribute")
    value = draw(st.one_of(st.none(), ATTR_VALUES), label="value (None deletes)")
    return path, attr, value


def _existing_attrs(data: bytes) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with h5py.File(io.BytesIO(data), "r") as f:
        out["/"] = list(f.attrs)

        def visit(name: str, obj: Any) -> None:
            out[f"/{name}"] = list(obj.attrs)

        f.visititems(visit)
    return out


@pytest.mark.parametrize("family", FAMILIES)
@FUZZ
@given(data=st.data())
def test_corrupted_hdf5_attributes(family: str, data: st.DataObject) -> None:
    """`layer_names`, `weight_names`, `name`, ... set to ints, random bytes, odd text, deleted."""
    name = draw_base(data, FAMILIES[family])
    h5, put_back = h5_part(name)
    objects = h5_objects(h5)
    existing = _existing_attrs(h5)
    # Most draws target the attributes the readers rely on.
    edits = data.draw(st.lists(attribute_edit(objects, existing), min_size=1, max_size=3))

    def mutate(f: h5py.File) -> None:
        for path, attr, value in edits:
            attrs = f[path].attrs
            if value is None:
                if attr in attrs:
                    del attrs[attr]
            else:
                attrs[attr] = value

    run_checked(put_back(mutate_h5(h5, mutate)), suffix_of(name))


@pytest.mark.parametrize("family", FAMILIES)
@FUZZ
@given(data=st.data())
def test_corrupted_hdf5_structure(family: str, data: st.DataObject) -> None:
    """Delete an object, swap a group and a dataset, or add a link somewhere."""
    name = draw_base(data, FAMILIES[family])
    h5, put_back = h5_part(name)
    objects = [o for o in h5_objects(h5) if o[0] != "/"]
    path, kind = data.draw(st.sampled_from(objects), label="object")
    action = data.draw(
        st.sampled_from(["delete", "swap", "soft link", "external link", "string data"]),
        label="action",
    )
    target = data.draw(st.sampled_from([p for p, _ in objects]), label="link target")

    def mutate(f: h5py.File) -> None:
        if action != "external link":
            del f[path]
        if action == "swap":
            if kind == "dataset":
                f.create_group(path)
            else:
                f[path] = np.zeros(3, np.float32)
        elif action == "soft link":
            f[path] = h5py.SoftLink(target)
        elif action == "external link":
            parent = path if kind == "group" else path.rsplit("/", 1)[0] or "/"
            f[parent].create_group("linkhost")["x"] = h5py.ExternalLink("/etc/passwd", "/x")
        elif action == "string data":
            f[path] = np.array([b"abc", b"de"])

    report = run_checked(put_back(mutate_h5(h5, mutate)), suffix_of(name))
    if action in ("soft link", "external link", "string data"):
        assert report is None, f"{action} at {path} was accepted"


@FUZZ
@given(data=st.data(), dtype=WEIGHT_DTYPES)
def test_replaced_weight_is_counted_exactly(data: st.DataObject, dtype: str) -> None:
    """Replace one weight dataset with arbitrary values; the counts must match numpy's."""
    name = draw_base(data, ALL_BASES)
    h5, put_back = h5_part(name)
    datasets = [p for p, kind in h5_objects(h5) if kind == "dataset"]
    path = data.draw(st.sampled_from(datasets), label="dataset")
    values = data.draw(weight_arrays(dtype), label="values")
    threshold = data.draw(st.sampled_from([None, 0.0, 1e-15, 0.5, 1e300]), label="threshold")

    def mutate(f: h5py.File) -> None:
        del f[path]
        f[path] = values

    corrupted = put_back(mutate_h5(h5, mutate))
    report = run_checked(corrupted, suffix_of(name), threshold=threshold)
    if report is None:
        return
    # Find the replaced tensor through the library, which knows each tensor's dataset path.
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / f"w{suffix_of(name)}"
        file.write_bytes(corrupted)
        limit = 1e-15 if threshold is None else threshold
        library = inspect_model(str(file), threshold=limit, show_all=True)
    matches = [w for w in library.weights if w.tensor.path == path.lstrip("/")]
    if not matches:
        return  # an optimizer slot or an unlisted dataset: not a model weight
    (weight,) = matches
    as_float = values.astype(np.float64) if values.dtype.kind != "b" else values.astype(int)
    magnitude = np.abs(values.astype(object)) if values.dtype.kind in "iu" else np.abs(as_float)
    expected = {
        "params": values.size,
        "zeros": int(np.count_nonzero(values == 0)),
        "near_zero": int(np.count_nonzero(magnitude <= limit)),
        "nan": int(np.count_nonzero(np.isnan(as_float))),
        "inf": int(np.count_nonzero(np.isinf(as_float))),
    }
    stats = weight.stats
    got = {key: getattr(stats, key) for key in expected}
    assert got == expected, f"{dtype} {values.shape} {values!r}"
    assert weight.tensor.shape == values.shape


# --------------------------------------------------------------------------- several files


@FUZZ
@given(data=st.data())
def test_one_bad_file_among_good_ones(data: st.DataObject) -> None:
    """A corrupt file next to intact ones: good reports are unaffected, exit 2 if any fails."""
    name = draw_base(data, ALL_BASES)
    intact = base(name)
    corrupted = flip_bytes(intact, data) if data.draw(st.booleans()) else intact[: len(intact) // 2]
    with tempfile.TemporaryDirectory() as tmp:
        good = Path(tmp) / f"good{suffix_of(name)}"
        bad = Path(tmp) / f"bad{suffix_of(name)}"
        good.write_bytes(intact)
        bad.write_bytes(corrupted)
        order = data.draw(st.permutations([str(good), str(bad), str(good)]), label="order")
        result = invoke(*order, "--json", "--all")
    assert result.exception is None or isinstance(result.exception, SystemExit), _traceback(result)
    assert "Traceback" not in result.output
    document = json.loads(result.stdout)
    assert all(
        comparable(m) == _baseline(name) for m in document["models"] if m["path"] == str(good)
    )
    if document["errors"]:
        assert result.exit_code == 2
        assert [e["path"] for e in document["errors"]] == [str(bad)]
        assert len(document["models"]) == 2
        lines = result.stderr.splitlines()
        assert lines == [f"error: {document['errors'][0]['error']}"], result.stderr
    else:
        assert result.exit_code == 0 and len(document["models"]) == 3


# --------------------------------------------------------------------------- names, not text


def _vars_name_not_utf8(name: str) -> bytes:
    """A Keras 3 `vars` group whose `name` attribute is not UTF-8 (h5py reads 'dense\\udcf6')."""
    h5, put_back = h5_part(name)

    def mutate(f: h5py.File) -> None:
        paths: list[str] = []
        f.visit(lambda path: paths.append(path) if path.endswith("/vars") else None)
        f[paths[0]].attrs["name"] = b"dense\xf6"

    return put_back(mutate_h5(h5, mutate))


def _class_name_surrogate(name: str) -> bytes:
    """A config whose first Dense layer's class_name holds a lone surrogate ("\\udcf6")."""

    def edit(config: dict) -> bytes:
        dense = '"class_name": "Dense"'
        text = json.dumps(config).replace(dense, dense[:-1] + '\\udcf6"', 1)
        assert text != json.dumps(config)
        return text.encode()

    intact = base(name)
    if name.endswith(".keras"):
        config = json.loads(member(intact, "config.json"))
        return replace_member(intact, "config.json", edit(config), zipfile.ZIP_STORED)
    with h5py.File(io.BytesIO(intact), "r") as f:
        config = json.loads(f.attrs["model_config"])

    def mutate(f: h5py.File) -> None:
        f.attrs["model_config"] = edit(config).decode()

    return mutate_h5(intact, mutate)


@pytest.mark.parametrize(
    ("name", "corrupt"),
    [
        *((n, _vars_name_not_utf8) for n in (*KERAS_BASES, *WEIGHTS_BASES)),
        *((n, _class_name_surrogate) for n in (*KERAS_SAMPLES, *LEGACY_SAMPLES)),
    ],
)
def test_names_that_are_not_valid_text(name: str, corrupt: Callable[[str], bytes]) -> None:
    """Names decoded from bytes that are not UTF-8 must not crash any renderer."""
    corrupted = corrupt(name)
    for output in ("table", "csv", "markdown"):
        run_checked(corrupted, suffix_of(name), other_format=output)
