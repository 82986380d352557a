"""Hostile files on the write path and bounded work: one clear line and exit 2, never a traceback.

Each reproduction is built with h5py / zipfile / numpy alone. The rules checked:
- what `prune` reads while writing (attributes, non-weight datasets, corrupt chunks, committed
  datatypes) fails as the reader does: exit 2, one line naming the file, nothing at `-o`;
- `.npz` inputs (masks, data) are checked before allocation: a plain `.npy`, a header declaring
  terabytes, object arrays;
- recipes with numbers or nesting no parser should trust are refused naming the key;
- work grows with the file, not with what it claims (many layers, shared HDF5 objects).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import SAMPLES
from typer.testing import CliRunner

from handmade import large_sparse_weights_h5, many_layers_keras, write_keras
from sparseprune import inspect_model
from sparseprune.cli import app
from sparseprune.datasets import load_dataset
from sparseprune.errors import InputError
from sparseprune.formats.npz import npz_keys, read_npz
from sparseprune.prune.recipes import load_recipe

runner = CliRunner()
H5 = SAMPLES / "mlp.h5"
KERAS = SAMPLES / "mlp.keras"
KERNEL = "model_weights/head/mlp/head/kernel"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_one_line_exit_2(result, *words: str) -> str:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def prune_refused(source: Path, tmp_path: Path, *words: str, suffix: str = ".h5") -> str:
    """`prune` exits 2 with one line, leaves the input as it was and writes nothing."""
    out = tmp_path / f"out{suffix}"
    before = sha256(source)
    result = runner.invoke(app, ["prune", str(source), "-o", str(out), "--target", "0.5"])
    line = assert_one_line_exit_2(result, *words)
    assert sha256(source) == before
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out")) == []
    return line


def copy_of(sample: Path, tmp_path: Path, name: str) -> Path:
    """A copy of a sample in its own folder (the test folder holds the outputs)."""
    source = tmp_path / "in" / name
    source.parent.mkdir()
    shutil.copy(sample, source)
    return source


def corrupt_chunk(path: Path, dataset: str) -> None:
    """Overwrite the middle of a gzip chunk: HDF5's filter fails when the chunk is read."""
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(0)
    with open(path, "r+b") as handle:
        handle.seek(info.byte_offset + 10)
        handle.write(b"\xff" * 40)


def regzip(f: h5py.File, path: str) -> None:
    data = f[path][()]
    del f[path]
    f.create_dataset(path, data=data, compression="gzip", chunks=data.shape)


# --------------------------------------------------------------------------- reads while writing


def test_corrupt_gzip_chunk_in_a_weight(tmp_path: Path) -> None:
    source = copy_of(H5, tmp_path, "gz.h5")
    with h5py.File(source, "a") as f:
        regzip(f, KERNEL)
    corrupt_chunk(source, KERNEL)
    prune_refused(source, tmp_path, "gz.h5", "head/kernel", "corrupt")


def test_corrupt_gzip_chunk_in_a_dataset_that_is_no_weight(tmp_path: Path) -> None:
    """`inspect` never reads it (exit 0); the writer must, and says so."""
    source = copy_of(H5, tmp_path, "extra.h5")
    with h5py.File(source, "a") as f:
        f.create_dataset("extra", data=np.ones((64, 64), np.float32), compression="gzip")
    corrupt_chunk(source, "extra")
    assert runner.invoke(app, ["inspect", str(source)]).exit_code == 0
    prune_refused(source, tmp_path, "extra.h5", "'/extra'", "corrupt")


def test_corrupt_attribute(tmp_path: Path) -> None:
    """A variable-length string attribute whose global heap is damaged."""
    source = copy_of(H5, tmp_path, "attr.h5")
    marker = "Q" * 200
    with h5py.File(source, "a") as f:
        f["model_weights"].attrs["note"] = np.array([marker], dtype=h5py.string_dtype())
    data = bytearray(source.read_bytes())
    heap = data.rfind(b"GCOL", 0, data.find(marker.encode()))
    assert heap > 0
    data[heap : heap + 4] = b"XXXX"
    source.write_bytes(bytes(data))
    prune_refused(source, tmp_path, "attr.h5", "attribute 'note'", "corrupt")


def test_committed_datatype(tmp_path: Path) -> None:
    source = copy_of(H5, tmp_path, "typed.h5")
    with h5py.File(source, "a") as f:
        f["float_type"] = np.dtype("float32")
        data = f[KERNEL][()]
        del f[KERNEL]
        f.create_dataset(KERNEL, data=data, dtype=f["float_type"])
    prune_refused(source, tmp_path, "typed.h5", "committed HDF5 datatype")


def test_corrupt_chunk_inside_a_keras_archive(tmp_path: Path) -> None:
    """The same guard covers `.keras` (the inner HDF5 file is read through the archive)."""
    scratch = tmp_path / "w.h5"
    with zipfile.ZipFile(KERAS) as archive:
        members = [(i.filename, archive.read(i)) for i in archive.infolist()]
    scratch.write_bytes(dict(members)["model.weights.h5"])
    with h5py.File(scratch, "a") as f:
        f.create_dataset("vars/extra", data=np.ones((64, 64), np.float32), compression="gzip")
    corrupt_chunk(scratch, "vars/extra")
    members = [(n, scratch.read_bytes() if n == "model.weights.h5" else b) for n, b in members]
    source = tmp_path / "in" / "gz.keras"
    source.parent.mkdir()
    write_keras(source, members)
    prune_refused(source, tmp_path, "gz.keras", "'/vars/extra'", suffix=".keras")


# --------------------------------------------------------------------------- .npz inputs


def npz_with_header(path: Path, shape: tuple[int, ...], payload: bytes = b"\0" * 64) -> Path:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": shape}
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", header.getvalue() + payload)
    return path


def test_npz_header_declaring_terabytes_is_refused_before_allocation(tmp_path: Path) -> None:
    bomb = npz_with_header(tmp_path / "tb.npz", (1 << 20, 1 << 20))
    with pytest.raises(InputError, match="declares 4,398,046,511,104 bytes"):
        read_npz(bomb)
    assert npz_keys(bomb) == ["x"]  # names are read without touching the data
    with pytest.raises(InputError, match="declares"):
        load_dataset(bomb)


def test_npz_header_one_value_short_is_refused(tmp_path: Path) -> None:
    short = npz_with_header(tmp_path / "s.npz", (4, 4), payload=b"\0" * 60)
    with pytest.raises(InputError, match="declares 64 bytes"):
        read_npz(short)


def test_npz_object_arrays_are_never_unpickled(tmp_path: Path) -> None:
    npy = tmp_path / "o.npy"
    np.save(npy, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(tmp_path / "o.npz", "w") as archive:
        archive.write(npy, "x.npy")
    with pytest.raises(InputError, match="Python objects"):
        read_npz(tmp_path / "o.npz")


def test_npz_reads_what_numpy_wrote(tmp_path: Path) -> None:
    arrays = {
        "c": np.arange(12.0).reshape(3, 4),
        "f": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
        "empty": np.zeros((0, 5), np.float32),
        "scalar": np.float32(3),
        "u": np.array([1, 2], dtype=">u4"),
    }
    np.savez(tmp_path / "a.npz", **arrays)
    np.savez_compressed(tmp_path / "b.npz", **arrays)
    for name in ("a.npz", "b.npz"):
        got = read_npz(tmp_path / name)
        assert sorted(got) == sorted(arrays)
        for key, want in arrays.items():
            assert got[key].dtype == want.dtype and got[key].shape == np.shape(want)
            assert np.array_equal(got[key], want)
            got[key].flags.writeable or pytest.fail(f"{key} is read-only")


@pytest.mark.parametrize("option", ["--mask", "--config"])
def test_plain_npy_or_terabyte_npz_as_mask(tmp_path: Path, option: str) -> None:
    npy = tmp_path / "m.npy"
    np.save(npy, np.ones((3, 3)))
    bomb = npz_with_header(tmp_path / "tb.npz", (1 << 20, 1 << 20))
    for mask, words in ((npy, ("m.npy", "single .npy", "numpy.savez")), (bomb, ("declares",))):
        if option == "--config":
            recipe = tmp_path / "r.toml"
            recipe.write_text(f'mask = "{mask.name}"\n')
            args = ["--config", str(recipe)]
        else:
            args = ["--mask", str(mask)]
        out = tmp_path / "out.h5"
        result = runner.invoke(app, ["prune", str(H5), "-o", str(out), *args])
        assert_one_line_exit_2(result, *words)
        assert not out.exists()


@pytest.mark.tensorflow
def test_plain_npy_as_verify_data_is_refused_before_writing(tmp_path: Path) -> None:
    """Checked without Keras and before anything is written."""
    npy = tmp_path / "x.npy"
    np.save(npy, np.ones((3, 3)))
    out = tmp_path / "out.h5"
    args = ["prune", str(H5), "-o", str(out), "--target", "0.5", "--verify", "--data", str(npy)]
    result = runner.invoke(app, args)
    assert_one_line_exit_2(result, "x.npy", "single .npy")
    assert not out.exists()


# --------------------------------------------------------------------------- recipes


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("target = " + "9" * 400, "'target'"),
        ("[layer.head]\ntarget = 1" + "0" * 400, "'layer.head.target'"),
        ("target = " + "[" * 5000 + "]" * 5000, "'target'"),
        ('scope = "layer"\nlayers = ' + "[" * 5000 + "]" * 5000, "'layers'"),
        ("threshold = " + "[" * 300 + "]" * 300, "'threshold'"),
        ("pattern = " + "[" * 300 + "]" * 300, "'pattern'"),
        ('block = "' + "1" * 5000 + 'x1"', "'block'"),
        ("block = [1" + "0" * 400 + ", 1]", "'block'"),
    ],
)
def test_recipe_with_huge_numbers_or_deep_arrays(tmp_path: Path, text: str, key: str) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(text + "\n")
    with pytest.raises(InputError) as caught:
        load_recipe(recipe)
    message = str(caught.value)
    assert key in message and "r.toml" in message and len(message) < 300, message
    result = runner.invoke(
        app, ["prune", str(H5), "-o", str(tmp_path / "o.h5"), "--config", str(recipe)]
    )
    assert_one_line_exit_2(result, key)


# --------------------------------------------------------------------------- bounded work


def test_many_layers_without_name_attributes_read_in_linear_time(tmp_path: Path) -> None:
    """Keys replayed from the config once per container: 4x the layers is not 16x the time.

    Both sizes are timed side by side in this process (CPU time), so machine load cancels out.
    Measured: the old quadratic reader 11x, this one 5x.
    """
    small = many_layers_keras(tmp_path / "small.keras", 200)
    large = many_layers_keras(tmp_path / "large.keras", 800)
    timings, reports = [], []
    for path in (small, large):
        start = time.process_time()
        reports.append(inspect_model(str(path)))
        timings.append(time.process_time() - start)
    assert len(reports[1].weights) == 1600
    by_layer = {w.tensor.layer: w for w in reports[1].weights if w.tensor.role == "kernel"}
    assert by_layer["d799"].tensor.path == "layers/dense_799/vars/0"
    assert by_layer["d0"].tensor.path == "layers/dense/vars/0"
    assert by_layer["d799"].stats.params == 4 and by_layer["d799"].stats.zeros == 0
    assert timings[1] < 8 * timings[0], timings


def test_hard_links_forming_a_dag_are_refused_at_once(tmp_path: Path) -> None:
    """40 levels of two links each: 2^40 paths. Refused on the first shared object."""
    path = tmp_path / "dag.weights.h5"
    with h5py.File(path, "w") as f:
        group = f.create_group("layers/dense/vars")
        group["0"] = np.zeros((2, 3), np.float32)
        top = f.create_group("dag")
        level = top
        for i in range(40):
            child = level.create_group(f"l{i}")
            level[f"again{i}"] = child
            level = child
    start = time.process_time()  # CPU time: a loaded machine (parallel tests) cannot fail it
    result = runner.invoke(app, ["inspect", str(path)])
    assert_one_line_exit_2(result, "dag.weights.h5", "linked from more than one place")
    assert time.process_time() - start < 10


def test_a_dataset_linked_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "twice.weights.h5"
    with h5py.File(path, "w") as f:
        group = f.create_group("layers/dense/vars")
        group["0"] = np.zeros((2, 3), np.float32)
        group["1"] = group["0"]
    result = runner.invoke(app, ["inspect", str(path)])
    assert_one_line_exit_2(result, "linked from more than one place")


def peak_rss_mib(*args: str) -> tuple[int, str, float]:
    """Run the CLI in a fresh process; its exit code, stderr and peak resident memory (MiB)."""
    script = (
        "import resource, sys\n"
        "from sparseprune.cli import app\n"
        "try:\n"
        "    app(sys.argv[1:], standalone_mode=True)\n"
        "except SystemExit as end:\n"
        "    code = end.code or 0\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print(f'PEAK {peak:.0f}', file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=600
    )
    lines = done.stderr.strip().splitlines()
    peak = float(lines[-1].split()[1])
    return done.returncode, "\n".join(lines[:-1]), peak


def test_large_assets_are_streamed_not_held(tmp_path: Path) -> None:
    """Six 64 MiB assets (DEFLATEd zeros, a 2 MB file): prune copies them in chunks.

    Holding them needs 384 MiB (measured before: 509 MiB peak; streamed: 66 MiB).
    """
    with zipfile.ZipFile(KERAS) as archive:
        members = [(i.filename, archive.read(i)) for i in archive.infolist()]
    source = tmp_path / "assets.keras"
    with zipfile.ZipFile(source, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
        block = b"\0" * (1 << 20)
        for i in range(6):
            with archive.open(f"assets/blob{i}.bin", "w") as sink:
                for _ in range(64):
                    sink.write(block)
    out = tmp_path / "out.keras"
    code, stderr, peak = peak_rss_mib("prune", str(source), "-o", str(out), "--target", "0.5")
    assert code == 0, stderr
    with zipfile.ZipFile(out) as written:
        sizes = {i.filename: i.file_size for i in written.infolist()}
        assert written.read("assets/blob5.bin") == b"\0" * (64 << 20)
    assert all(sizes[f"assets/blob{i}.bin"] == 64 << 20 for i in range(6))
    assert peak < 250, f"peak RSS {peak:.0f} MiB"


def test_huge_mostly_zero_tensor_is_pruned_in_bounded_memory(tmp_path: Path) -> None:
    """A 512 MiB kernel stored in ~8 MB: prune reads, prunes, writes and checks it slab by slab.

    The whole-tensor path needs several copies of the tensor (over 2 GiB); slabs keep the
    process near its baseline. Expectations: the dense rows' weights are counted with numpy.
    """
    rows, cols, dense_rows = 16384, 8192, 256
    source = large_sparse_weights_h5(tmp_path / "big.weights.h5", rows, cols, dense_rows)
    assert source.stat().st_size < 20 << 20
    with h5py.File(source) as f:
        dense = f["layers/dense/vars/0"][:dense_rows]
    out = tmp_path / "out.weights.h5"
    code, stderr, peak = peak_rss_mib(
        "prune", str(source), "-o", str(out), "--threshold", "0.5", "--json"
    )
    assert code == 0, stderr
    assert peak < 400, f"peak RSS {peak:.0f} MiB for a 512 MiB tensor"
    expected_zeros = rows * cols - int(np.count_nonzero(np.abs(dense) > 0.5))
    with h5py.File(out) as f:
        kernel = f["layers/dense/vars/0"]
        assert kernel.shape == (rows, cols) and kernel.chunks[0] < rows  # slab-sized chunks
        head = kernel[:dense_rows]
        zeros_head = int(np.count_nonzero(head == 0))
        assert np.array_equal(head[np.abs(dense) > 0.5], dense[np.abs(dense) > 0.5])
    assert zeros_head + (rows - dense_rows) * cols == expected_zeros


def _all_datasets(path: Path) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    with h5py.File(path) as f:
        f.visititems(
            lambda name, obj: (
                found.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return found


@pytest.mark.parametrize(
    "args",
    [
        ["--target", "0.7"],
        ["--target", "0.6", "--threshold", "0.02"],
        ["--scope", "global", "--target", "0.8", "--set", "hidden1=0.5"],
        ["--threshold", "0.05"],
        ["--mask", "MASK"],
        ["--target", "0.5", "--keep-optimizer"],
    ],
)
def test_slab_by_slab_prune_writes_what_the_whole_tensor_path_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    """With slabs of 1 KiB and the streaming limit at 4 KiB, every kernel of the sample is
    pruned slab by slab: the values written, every count reported and the checks are the same
    as with the whole-tensor path (ties broken at the same flat indices)."""
    import sparseprune.formats.h5safe as h5safe
    import sparseprune.formats.writer as writer
    import sparseprune.prune.streamed as streamed

    mask = tmp_path / "m.npz"
    rng = np.random.default_rng(0)
    np.savez(mask, hidden1=(rng.random((64, 128)) > 0.3).astype(np.float32))
    args = [str(mask) if a == "MASK" else a for a in args]

    def prune_json(out: Path) -> dict:
        result = runner.invoke(app, ["prune", str(H5), "-o", str(out), "--json", *args])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    whole = prune_json(tmp_path / "whole.h5")
    for module in (h5safe, writer):
        monkeypatch.setattr(module, "SLAB_BYTES", 1024)
    for module in (h5safe, writer, streamed):
        monkeypatch.setattr(module, "BLOCK_BYTES", 4096)
    slabbed = prune_json(tmp_path / "slabbed.h5")
    with h5py.File(tmp_path / "slabbed.h5") as f:
        hidden = f["model_weights/hidden1/mlp/hidden1/kernel"]
        assert hidden.chunks != hidden.shape  # really written slab by slab
    assert slabbed["tensors"] == whole["tensors"]
    assert slabbed["checks"] == whole["checks"] == {"passed": True, "failures": []}
    assert slabbed["information_bound_bytes"] == whole["information_bound_bytes"]
    before, after = _all_datasets(tmp_path / "whole.h5"), _all_datasets(tmp_path / "slabbed.h5")
    assert before.keys() == after.keys()
    for name, values in before.items():
        assert after[name].dtype == values.dtype
        assert np.array_equal(after[name], values, equal_nan=True), name
