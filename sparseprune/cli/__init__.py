"""The command line: `main()` is the `sparseprune` entry point.

The Typer app lives in `cli/typer_app.py` and is imported only when a call needs it: `cli/fast.py`
answers `inspect ... --json` first without Typer or rich (start-up time is most of a small
inspect). `from sparseprune.cli import app` still gives the app (for tests and embedding).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from sparseprune.cli.process import install_signal_handlers


def main() -> None:
    install_signal_handlers()
    code = importlib.import_module("sparseprune.cli.fast").run(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    importlib.import_module("sparseprune.cli.typer_app").run()


def __getattr__(name: str) -> Any:
    """`app`, `COMMANDS`, `PANELS`, ... from cli/typer_app.py, imported on first use."""
    if name.startswith("__"):
        raise AttributeError(name)
    module = importlib.import_module("sparseprune.cli.typer_app")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'sparseprune.cli' has no attribute {name!r}") from None
