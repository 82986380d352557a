"""Run a `.tflite` once in a child process, so an interpreter crash is exit 2, not SIGSEGV.

`formats.tflite.check_tflite` refuses what the flatbuffer's structure shows to be broken; this
covers the rest (operator options, kernels that read past a tensor): the child loads the model,
allocates and invokes it once on random inputs, and a signal or error there becomes one
`InputError` in the parent. Called by `bench` before it times a `.tflite`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from sparseprune.errors import InputError
from sparseprune.formats.tflite import check_tflite

PROBE_SECONDS = 300
_CHILD = "from sparseprune.keras_ops.tflite_probe import run_once; run_once()"


def probe_tflite(path: str) -> None:
    """Refuse `path` if the structure is corrupt or the interpreter fails or dies running it."""
    check_tflite(path)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, path],
            capture_output=True,
            text=True,
            timeout=PROBE_SECONDS,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise InputError(
            f"{path}: the TFLite interpreter did not finish one run in {PROBE_SECONDS} s; "
            "the file is corrupt or far too large."
        ) from None
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise InputError(
            f"{path}: the TFLite interpreter crashed on it ({name}); the file is corrupt."
        )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        reason = lines[-1][len("error: ") :] if lines else f"exit code {done.returncode}"
        raise InputError(f"{path}: the TFLite interpreter cannot run it ({reason}).")


def run_once() -> None:
    """Child side: load, allocate, invoke once; any error is one `error:` line and exit 3."""
    import numpy as np

    from sparseprune.errors import describe
    from sparseprune.keras_ops.interpreters import make_interpreter

    try:
        interpreter = make_interpreter(path=sys.argv[1])
        rng = np.random.default_rng(0)
        for detail in interpreter.get_input_details():
            shape = [max(int(d), 1) for d in detail["shape"]]
            values = rng.normal(size=shape).astype(np.dtype(detail["dtype"]))
            interpreter.set_tensor(detail["index"], values)
        interpreter.invoke()
    except Exception as error:  # the interpreter raises many types for files it cannot run
        print(f"error: {describe(error)}", file=sys.stderr)
        sys.exit(3)
