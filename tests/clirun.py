"""Commands run in-process through Typer's runner with `--json`, for tests that run many of them.

`invoke(*args)` gives (exit code, the JSON document or None, stdout + stderr). An exception
other than the app's own exit is raised again, so a crash fails the test rather than reading as
an exit code.
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from sparseprune.cli import app

runner = CliRunner()


def invoke(*args: str) -> tuple[int, dict | None, str]:
    result = runner.invoke(app, [*args, "--json"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    try:
        data = json.loads(result.stdout) if result.stdout.strip() else None
    except ValueError:
        data = None
    return result.exit_code, data, f"{result.stdout}{result.stderr}"
