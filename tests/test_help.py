"""`--help` for the app and every command: real processes, wide terminal, parsed panel by panel.

The command list and the panel assignments below are written out here, not read from the CLI
module, so a command that disappears from the app or an option that falls back into the plain
"Options" box fails a test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import SAMPLES

COMMANDS = ["inspect", "prune", "evaluate", "compare", "strip", "bench", "export", "shrink"]
ENV = {**os.environ, "TERMINAL_WIDTH": "200", "NO_COLOR": "1"}
TITLE = re.compile(r"^╭─ (.+?) ─")
OPTION = re.compile(r"^│\s+(--[a-z][a-z0-9-]*)")


def help_text(*args: str) -> str:
    command = [sys.executable, "-m", "sparseprune", *args, "--help"]
    result = subprocess.run(command, capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def panels(text: str) -> dict[str, list[str]]:
    """Box title -> the options listed in it, in order."""
    boxes: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if match := TITLE.match(line):
            current = boxes.setdefault(match.group(1), [])
        elif current is not None and (match := OPTION.match(line)):
            current.append(match.group(1))
    return boxes


def every_option(boxes: dict[str, list[str]]) -> list[str]:
    return [option for options in boxes.values() for option in options]


def test_app_help_lists_every_command_without_bool_metavars() -> None:
    text = help_text()
    listed = [line.split()[1] for line in text.splitlines() if re.match(r"^│ [a-z]+ ", line)]
    assert listed == COMMANDS
    assert "<bool>" not in text
    assert panels(text)["Options"] == [
        "--version", "--debug", "--install-completion", "--show-completion", "--help"
    ]


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command: str) -> None:
    text = help_text(command)
    assert f"Usage: sparseprune {command} [OPTIONS]" in text
    assert "<bool>" not in text  # flags show no type after them
    boxes = panels(text)
    assert "--install-completion" not in every_option(boxes)  # that is the app's option
    if "--json" in every_option(boxes):
        assert "--json" in boxes["Output"] and "--format" in boxes["Output"]


def test_prune_options_are_grouped_in_panels() -> None:
    boxes = panels(help_text("prune"))
    assert set(boxes) == {
        *("Arguments", "Options", "Selection", "Output"),
        *("Verification and data", "Fine-tuning (--epochs)"),
    }
    assert boxes["Options"] == ["--help"]
    assert {"--target", "--scope", "--pattern", "--block", "--config", "--method"} <= set(
        boxes["Selection"]
    )
    assert {"--output", "--json", "--json-file", "--force", "--keep-optimizer"} <= set(
        boxes["Output"]
    )
    assert {"--verify", "--data", "--unsafe"} <= set(boxes["Verification and data"])
    tuning = {"--epochs", "--schedule", "--initial-sparsity", "--begin-step", "--end-step"}
    tuning |= {"--frequency", "--power", "--lr", "--optimizer", "--seed", "--batch-size"}
    assert tuning <= set(boxes["Fine-tuning (--epochs)"])
    every = every_option(boxes)
    assert len(every) == len(set(every)) >= 38


def test_a_command_loads_only_its_own_module() -> None:
    code = (
        "import sys\n"
        "from sparseprune.cli import main\n"
        f"sys.argv = ['sparseprune', 'inspect', {str(SAMPLES / 'mlp.h5')!r}, '-f', 'csv']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = [m for m in sys.modules if m.startswith(('sparseprune.cli.', 'sparseprune.'))]\n"
        "print(sorted(loaded), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    loaded = result.stderr
    assert "sparseprune.cli.inspect_cmd" in loaded, result.stderr
    for other in ("prune_cmd", "bench_cmd", "export_cmd", "shrink_cmd", "strip_cmd"):
        assert f"sparseprune.cli.{other}" not in loaded
    assert "'sparseprune.prune'" not in loaded and "sparseprune.shrink.shrinking" not in loaded
