"""Keep TensorFlow's start-up noise off the user's terminal (unless --debug).

Importing TensorFlow prints ~6 lines from C++ (absl) straight to file descriptor 2 before any
Python logging is set up ("oneDNN custom operations", "Could not find cuda drivers", "All log
messages before absl::InitializeLog"), some even with TF_CPP_MIN_LOG_LEVEL=3. So the env vars are
set before the import AND the import itself runs with fd 2 pointed at a scratch file: a finder
on `sys.meta_path` wraps the loader of the first heavy module imported, whoever imports it. If the
import fails, what it printed is replayed so nothing is lost. Python-side loggers (tf, absl) are
set to ERROR after the import. `c_chatter_dropped` does the same for LiteRT's C-level lines
around interpreter creation, dropping them also when the failure is reported as our own error.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from sparseprune.errors import DEBUG_ENV, SparsePruneError

# Top-level modules whose first import loads TensorFlow's shared libraries.
NOISY = frozenset({"tensorflow", "tf_keras", "tensorflow_model_optimization", "ai_edge_litert"})
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # C++ INFO/WARNING/ERROR logs after absl is initialised
    "TF_CPP_MIN_VLOG_LEVEL": "0",
    "GRPC_VERBOSITY": "ERROR",
}
PYTHON_LOGGERS = ("tensorflow", "absl", "h5py._conv")


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


@contextlib.contextmanager
def fd2_captured(
    replay: Callable[[BaseException], bool] = lambda error: True,
) -> Iterator[None]:
    """Point file descriptor 2 at a scratch file; replay it only if the block raises an error
    `replay` accepts (by default any), so nothing that explains a crash is lost."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException as error:
            _restore(saved)
            if replay(error):
                sink.seek(0)
                os.write(2, sink.read())
            raise
        _restore(saved)


@contextlib.contextmanager
def c_chatter_dropped() -> Iterator[None]:
    """LiteRT prints from C straight to fd 2 ("INFO: Created TensorFlow Lite XNNPACK delegate",
    XNNPACK's reshape errors): kept off the terminal on success and when the block fails with
    our own error (its one line says what is wrong), replayed before any other exception;
    left alone under --debug."""
    if debug_enabled():
        yield
        return
    with fd2_captured(replay=lambda error: not isinstance(error, SparsePruneError)):
        yield


def _restore(saved: int) -> None:
    with contextlib.suppress(ValueError, OSError):
        sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


class _QuietLoader(importlib.abc.Loader):
    """The real loader of a noisy module, run with fd 2 captured."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with fd2_captured():
            self._loader.exec_module(module)
        _quiet_python_loggers()

    def __getattr__(self, name: str) -> Any:  # get_data, is_package, resource readers...
        return getattr(self._loader, name)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of noisy top-level modules; everything else is left to other finders."""

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in NOISY:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def _quiet_python_loggers() -> None:
    for name in PYTHON_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def install() -> None:
    """Set the env vars and the import finder, once; nothing happens under --debug."""
    if debug_enabled() or any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    sys.meta_path.insert(0, _QuietFinder())
