"""LiteRT interpreters: which runtime runs a .tflite, with a pinned thread count.

`ai_edge_litert` (the maintained package, XNNPACK applied by default) comes first, then
`tf.lite.Interpreter`, then ai_edge_litert on its builtin kernels without XNNPACK. A model with
block-sparse int8 weights under float activations goes to the builtin kernels first, because
XNNPACK computes those wrong (export.litert.hybrid_sparse_layers).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from sparseprune.errors import InputError
from sparseprune.export.litert import hybrid_sparse_layers
from sparseprune.formats.tflite import read_tflite
from sparseprune.keras_ops.quiet import c_chatter_dropped

DEFAULT_RUNTIME = "ai_edge_litert.interpreter.Interpreter"  # XNNPACK applied by default
BUILTIN_RUNTIME = "ai_edge_litert (builtin kernels, no XNNPACK)"


def make_interpreter(
    path: str | None = None,
    content: bytes | None = None,
    threads: int = 1,
    runtime: str | None = None,
) -> Any:
    """A LiteRT interpreter with a pinned thread count: `ai_edge_litert` (the maintained
    package) when installed, else `tf.lite.Interpreter` (deprecated; same kernels). A model the
    first runtime cannot prepare (ai_edge_litert's XNNPACK refuses some sparse int8 graphs) is
    retried with the next; `interpreter.sparseprune_runtime` names the one that loaded it.
    `runtime` (DEFAULT_RUNTIME, BUILTIN_RUNTIME, "tf.lite.Interpreter") asks for that one only
    (benchmarks compare them)."""
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    candidates = [(n, f) for n, f in interpreter_runtimes() if runtime in (None, n)]
    if runtime is None and _has_hybrid_sparse(path, content):
        candidates.sort(key=lambda candidate: candidate[0] != BUILTIN_RUNTIME)
    if not candidates:
        raise InputError(f"LiteRT runtime {runtime!r} is not installed here.")
    errors = []
    with c_chatter_dropped(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, factory in candidates:
            try:
                interpreter = factory(model_path=path, model_content=content, num_threads=threads)
                interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as error:
                errors.append(f"{name}: {error}")
                continue
            interpreter.sparseprune_runtime = name
            return interpreter
        raise InputError(f"TFLite could not load {path or 'the model'}: {'; '.join(errors)}")


def _has_hybrid_sparse(path: str | None, content: bytes | None) -> bool:
    """Whether the model has block-sparse int8 weights under float activations, which XNNPACK
    gets wrong (see export.litert.hybrid_sparse_layers): such models run on builtin kernels."""
    try:
        data = content if content is not None else Path(str(path)).read_bytes()
        return bool(hybrid_sparse_layers(read_tflite(data)))
    except (OSError, InputError):
        return False  # the interpreter reports an unreadable model in its own words


def interpreter_runtimes() -> list[tuple[str, Any]]:
    """(name, Interpreter factory) of the LiteRT runtimes to try, preferred first."""
    runtimes: list[tuple[str, Any]] = []
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        Interpreter = OpResolverType = None
    if Interpreter is not None:
        runtimes.append((DEFAULT_RUNTIME, Interpreter))
    if importlib.util.find_spec("tensorflow") is not None:
        runtimes.append(("tf.lite.Interpreter", _tf_lite_interpreter))
    if Interpreter is not None:
        plain = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES

        def without_delegates(**kwargs: Any) -> Any:
            return Interpreter(**kwargs, experimental_op_resolver_type=plain)

        runtimes.append((BUILTIN_RUNTIME, without_delegates))
    if not runtimes:
        raise InputError("running a .tflite needs ai-edge-litert or tensorflow installed.")
    return runtimes


def _tf_lite_interpreter(**kwargs: Any) -> Any:
    """tf.lite's Interpreter, importing TensorFlow (seconds) only when it is really tried."""
    import tensorflow as tf

    return tf.lite.Interpreter(**kwargs)


def interpreter_runtime() -> tuple[str, Any]:
    """(name, Interpreter class) of the preferred LiteRT runtime of this process."""
    return interpreter_runtimes()[0]
