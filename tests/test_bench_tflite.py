"""`bench` on a `.tflite`: every failure is ONE stderr line on the real file descriptor 2, and
every interpreter run happens in a child process (probe and timing), so a crash is exit 2.

The commands run as real processes (`python -m sparseprune`): LiteRT prints from C straight to
fd 2, which CliRunner never sees. The file XNNPACK cannot reshape is a real export of the sample
MLP whose input shape signature is edited from (-1, 64) to (-1, 65): the stored shape (1, 64)
still loads, and bench's resize to (batch, 65) fails in XNNPACK. Crashes that happen only once a
file is resized, or only in a later process, cannot be made on demand from a real file, so those
tests replace the child's code (`tflite_probe.CHILD`) with bench's own child wrapped in a runner
that calls os.abort() under a stated condition; the parent side is the real one.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAMPLES

from sparseprune.errors import DEBUG_ENV, InputError
from sparseprune.keras_ops import quiet, tflite_probe
from sparseprune.keras_ops.timing import BenchSpec

ENV = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP", "SPARSEPRUNE"))}
FAST = ["--repeats", "2", "--warmup", "0"]
XNNPACK_INFO = "INFO: Created TensorFlow Lite XNNPACK delegate"

# bench's own child, with TfliteRunner.inputs aborting the process when CONDITION holds
# (names in scope: batch, threads, mode).
CRASHING_CHILD = """
import os, sys
from sparseprune.keras_ops import tflite_probe as probe
init, inputs = probe.TfliteRunner.__init__, probe.TfliteRunner.inputs
def recording_init(self, path, threads):
    init(self, path, threads)
    self.threads = threads
def crashing_inputs(self, batch):
    threads, mode = self.threads, sys.argv[2]
    if CONDITION:
        os.abort()
    return inputs(self, batch)
probe.TfliteRunner.__init__, probe.TfliteRunner.inputs = recording_init, crashing_inputs
probe.child_main()
"""


def crashing_child(condition: str) -> str:
    return CRASHING_CHILD.replace("CONDITION", condition)


def sparseprune(*args: str | Path, child: str | None = None) -> subprocess.CompletedProcess:
    """The CLI in a fresh process (real fd 2); `child` replaces tflite_probe.CHILD in it."""
    command = [sys.executable, "-m", "sparseprune", *map(str, args)]
    if child is not None:
        argv = ["sparseprune", *map(str, args)]
        command[1:] = [
            "-c",
            "import sys\nfrom sparseprune.keras_ops import tflite_probe\n"
            f"tflite_probe.CHILD = {child!r}\n"
            f"sys.argv = {argv!r}\nfrom sparseprune.cli import main\nmain()\n",
        ]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)


def with_input_signature(content: bytes, last_dim: int) -> bytes:
    """`content` with the first graph input's shape_signature ending in `last_dim`, located by
    walking the flatbuffer by hand (root -> subgraphs[0] -> inputs[0] -> tensors[i] field 7)."""

    def u32(pos: int) -> int:
        return int(struct.unpack_from("<I", content, pos)[0])

    def field(table: int, index: int) -> int:
        vtable = table - struct.unpack_from("<i", content, table)[0]
        offset = struct.unpack_from("<H", content, vtable + 4 + 2 * index)[0]
        assert offset, f"field {index} is absent"
        return table + offset

    def vector(table: int, index: int) -> tuple[int, int]:
        at = field(table, index)
        start = at + u32(at)
        return start + 4, u32(start)

    def table_at(table: int, index: int, item: int) -> int:
        start, _ = vector(table, index)
        return start + 4 * item + u32(start + 4 * item)

    subgraph = table_at(u32(0), 2, 0)
    inputs, _ = vector(subgraph, 1)
    tensor = table_at(subgraph, 0, u32(inputs))
    start, length = vector(tensor, 7)
    assert struct.unpack_from(f"<{length}i", content, start) == (-1, 64)
    edited = bytearray(content)
    struct.pack_into("<i", edited, start + 4 * (length - 1), last_dim)
    return bytes(edited)


@pytest.fixture(scope="module")
def tflite(tmp_path_factory: pytest.TempPathFactory, needs_tensorflow: None) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bench_tflite")
    intact = folder / "mlp.tflite"
    data = SAMPLES / "digits.npz"  # export then runs the file in LiteRT (in this process)
    done = sparseprune("export", SAMPLES / "mlp.keras", "-o", intact, "--data", data, "--json")
    assert done.returncode == 0, done.stderr
    (folder / "export.stderr").write_text(done.stderr)
    unshapeable = folder / "reshape.tflite"
    unshapeable.write_bytes(with_input_signature(intact.read_bytes(), 65))
    return {"intact": intact, "unshapeable": unshapeable, "export_stderr": folder / "export.stderr"}


def test_export_keeps_litert_chatter_off_stderr(tflite: dict[str, Path]) -> None:
    """export --data runs its .tflite in its own process (interpreters.make_interpreter)."""
    assert tflite["export_stderr"].read_text() == ""


def test_a_file_xnnpack_cannot_reshape_is_one_stderr_line(tflite: dict[str, Path]) -> None:
    done = sparseprune("bench", tflite["unshapeable"], *FAST, "--batch-size", "1,32")
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: ") and "at batch size 1" in done.stderr
    assert "reshape" in done.stderr and "Traceback" not in done.stderr


def test_debug_shows_what_litert_printed(tflite: dict[str, Path]) -> None:
    """The chatter the default run drops is real: --debug lets it (and a traceback) through."""
    done = sparseprune("--debug", "bench", tflite["unshapeable"], *FAST)
    assert done.returncode != 0 and XNNPACK_INFO in done.stderr
    assert "Traceback" in done.stderr and "reshape" in done.stderr.splitlines()[-1]


def test_a_normal_run_keeps_stderr_empty(tflite: dict[str, Path]) -> None:
    done = sparseprune("bench", tflite["intact"], *FAST, "--batch-size", "1,3", "--json")
    assert done.returncode == 0 and done.stderr == ""
    (model,) = json.loads(done.stdout)["models"]
    assert [row["batch_size"] for row in model["latency"]] == [1, 3]
    assert all(row["median_ms"] > 0 for row in model["latency"])


@pytest.mark.parametrize(
    ("sizes", "threads", "crash"),
    [
        ((1,), 1, None),
        ((1, 4), 1, "at batch size 4 with 1 thread(s)"),
        ((1,), 2, "at batch size 1 with 2 thread(s)"),
    ],
)
def test_the_probe_runs_every_batch_size_with_the_thread_count(
    tflite: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    sizes: tuple[int, ...],
    threads: int,
    crash: str | None,
) -> None:
    """A runner that dies only when resized past 1 or given 2 threads is caught by the probe."""
    monkeypatch.setattr(tflite_probe, "CHILD", crashing_child("batch > 1 or threads > 1"))
    spec = BenchSpec(batch_sizes=sizes, threads=threads)
    if crash is None:
        tflite_probe.probe_tflite(str(tflite["intact"]), spec)
        return
    with pytest.raises(InputError) as raised:
        tflite_probe.probe_tflite(str(tflite["intact"]), spec)
    assert f"crashed on it {crash} (SIGABRT)" in str(raised.value)


def test_a_crash_after_the_resize_is_exit_2_not_a_signal(tflite: dict[str, Path]) -> None:
    done = sparseprune(
        "bench", tflite["intact"], *FAST, "--batch-size", "1,8", child=crashing_child("batch > 1")
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: {tflite['intact']}: the TFLite interpreter crashed on it at batch size 8 with "
        "1 thread(s) (SIGABRT); the file is corrupt."
    ]


def test_a_crash_the_probe_did_not_see_is_caught_in_the_timing_child(
    tflite: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A corrupt file can crash on some runs only: the timing runs in a child process too."""
    monkeypatch.setattr(tflite_probe, "CHILD", crashing_child("mode == 'time'"))
    spec = BenchSpec(batch_sizes=(2,), repeats=2, warmup=0)
    tflite_probe.probe_tflite(str(tflite["intact"]), spec)
    with pytest.raises(InputError, match=r"crashed on it at batch size 2 .*\(SIGABRT\)"):
        tflite_probe.time_tflite(str(tflite["intact"]), spec)


@pytest.mark.parametrize(
    ("error", "shown"), [(None, False), (InputError("ours"), False), (ValueError("crash"), True)]
)
def test_c_chatter_is_replayed_only_for_an_unexpected_error(
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    error: Exception | None,
    shown: bool,
) -> None:
    """What C wrote to fd 2 explains a crash, but not a failure our own line already explains."""
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with contextlib.suppress(type(error) if error else ()), quiet.c_chatter_dropped():
        os.write(2, b"INFO: from C\n")
        if error is not None:
            raise error
    assert (capfd.readouterr().err == "INFO: from C\n") is shown


def test_serving_refuses_a_tflite_before_running_it(tflite: dict[str, Path]) -> None:
    """A child that always aborts: were the file probed first, the error would be a crash."""
    done = sparseprune("bench", tflite["intact"], "--serving", child="import os; os.abort()")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "not a .tflite" in lines[0], done.stderr
