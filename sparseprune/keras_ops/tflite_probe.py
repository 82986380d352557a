"""bench runs a `.tflite` only in child processes, so an interpreter crash is exit 2, not SIGSEGV.

`formats.tflite.check_tflite` refuses what the flatbuffer's structure shows to be broken; the
rest (operator options, kernels that read past a tensor, shapes XNNPACK cannot reshape) shows
only when the file runs. So:

- `probe_tflite` (bench's preflight, before anything is timed): one child runs bench's own
  runner path once at every batch size, resized, with bench's thread count. A file that fails
  or crashes only once resized is refused here, before another model's timing is paid for.
- `time_tflite`: the timing itself runs in a second child. Passing the probe does not make the
  next process safe: a corrupt file can crash the interpreter on some runs only (a fuzzed file
  of tests/test_fuzz_commands.py crashes interpreter creation on about half of them).

A child's stderr (LiteRT's C-level INFO line, XNNPACK's errors, a traceback) reaches the user
only under --debug; a failure is one `InputError` in the parent, saying where it failed.
Neither side imports TensorFlow unless ai_edge_litert cannot load the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from typing import Any

import numpy as np

from sparseprune.errors import InputError
from sparseprune.formats.tflite import check_tflite
from sparseprune.keras_ops.quiet import debug_enabled
from sparseprune.keras_ops.timing import SEED, BenchSpec, Runner, run_batch, time_batch

PROBE_SECONDS = 300
FREE_DIMENSION = 8  # stands in for a None dimension other than the batch
CHILD = "from sparseprune.keras_ops.tflite_probe import child_main; child_main()"
STAGE = "sparseprune-stage: "  # the child's progress, so a crash can say where it happened
RESULT = "sparseprune-result: "


def probe_tflite(path: str, spec: BenchSpec) -> None:
    """Refuse `path` if its structure is corrupt, or if bench's runner fails or dies running it
    once at any of `spec`'s batch sizes with `spec.threads`."""
    check_tflite(path)
    _run_child(path, spec, "probe", PROBE_SECONDS)


def time_tflite(path: str, spec: BenchSpec) -> list[dict[str, Any]]:
    """bench's latency rows for `path`, one per batch size, timed in a child process."""
    return list(_run_child(path, spec, "time", None))


def _run_child(path: str, spec: BenchSpec, mode: str, timeout: float | None) -> Any:
    """Run `mode` in a child; its result, or one InputError saying what went wrong where."""
    command = [sys.executable, "-X", "faulthandler", "-c", CHILD, path, mode, _spec_json(spec)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        done = subprocess.run(
            command, capture_output=True, encoding="utf-8", errors="replace",
            timeout=timeout, env=env,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise InputError(
            f"{path}: the TFLite interpreter did not finish one run per batch size in "
            f"{timeout:.0f} s; the file is corrupt or far too large."
        ) from None
    if debug_enabled():
        sys.stderr.write(done.stderr)
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise InputError(
            f"{path}: the TFLite interpreter crashed on it {_last_stage(done.stderr)} ({name}); "
            "the file is corrupt."
        )
    results = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not results:
        lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        reason = lines[-1][len("error: ") :] if lines else f"exit code {done.returncode}"
        raise InputError(f"{path}: the TFLite interpreter cannot run it ({reason}).")
    return json.loads(results[-1][len(RESULT) :])


def _spec_json(spec: BenchSpec) -> str:
    return json.dumps(dataclasses.asdict(spec))


def _last_stage(stderr: str) -> str:
    stages = [line[len(STAGE) :] for line in stderr.splitlines() if line.startswith(STAGE)]
    return stages[-1] if stages else "while starting"


# --------------------------------------------------------------------------- the child side


def child_main() -> None:
    """Child: argv = path, 'probe' | 'time', the BenchSpec as JSON. Prints one RESULT line;
    any error is one `error:` line on stderr (and its traceback under --debug) and exit 3."""
    from sparseprune.errors import describe

    path, mode, settings = sys.argv[1:4]
    try:
        result = run_tflite(path, _spec_from(settings), timed=mode == "time")
    except Exception as error:  # the interpreter raises many types for files it cannot run
        if debug_enabled():
            import traceback

            traceback.print_exc()
        print(f"error: {describe(error)}", file=sys.stderr)
        sys.exit(3)
    print(RESULT + json.dumps(result), flush=True)


def _spec_from(settings: str) -> BenchSpec:
    fields = json.loads(settings)
    return BenchSpec(**{**fields, "batch_sizes": tuple(fields["batch_sizes"])})


def run_tflite(path: str, spec: BenchSpec, timed: bool) -> list[dict[str, Any]] | None:
    """bench's TFLite path: one interpreter, resized to each batch size in turn; timed rows,
    or (probe) one untimed call per batch size."""
    _stage("while creating the interpreter")
    runner = TfliteRunner(path, spec.threads)
    rows = []
    for batch in spec.batch_sizes:
        _stage(f"at batch size {batch} with {spec.threads} thread(s)")
        if timed:
            rows.append(time_batch(runner, batch, spec))
        else:
            run_batch(runner, batch, warmup=0, repeats=1)
    return rows if timed else None


def _stage(where: str) -> None:
    print(STAGE + where, file=sys.stderr, flush=True)


class TfliteRunner(Runner):
    """A LiteRT interpreter with bench's thread count, resized to each batch size."""

    def __init__(self, path: str, threads: int) -> None:
        from sparseprune.keras_ops.interpreters import make_interpreter

        self.interpreter = make_interpreter(path=path, threads=threads)

    def inputs(self, batch: int) -> Any:
        for detail in self.interpreter.get_input_details():
            shape = [batch, *[int(d) for d in detail["shape_signature"][1:]]]
            self.interpreter.resize_tensor_input(detail["index"], shape)
        self.interpreter.allocate_tensors()
        rng = np.random.default_rng(SEED)
        return [
            _random(rng, list(d["shape"]), np.dtype(d["dtype"]).name)
            for d in self.interpreter.get_input_details()
        ]

    def __call__(self, inputs: Any) -> Any:
        for detail, array in zip(self.interpreter.get_input_details(), inputs, strict=True):
            self.interpreter.set_tensor(detail["index"], array)
        self.interpreter.invoke()
        return [
            self.interpreter.get_tensor(d["index"]) for d in self.interpreter.get_output_details()
        ]


def _random(rng: np.random.Generator, shape: list[Any], dtype: str) -> np.ndarray:
    shape = [FREE_DIMENSION if d is None or d < 0 else int(d) for d in shape]
    name = dtype.split(".")[-1].strip("'>")
    if "int" in name:
        return rng.integers(0, 8, size=shape).astype(name)
    return rng.normal(size=shape).astype(name if name.startswith("float") else "float32")
