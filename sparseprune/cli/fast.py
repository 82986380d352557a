"""`sparseprune inspect ... --json` without Typer or rich: the start-up path CI gates pay for.

Typer (>= 0.20 validates every option through pydantic) and rich cost more start-up time than
reading a small model, so the commonest machine call is parsed here from a table of inspect's
options. Only calls this table understands completely are taken: JSON on stdout, files (not
`-`), options spelled `--name value` or `--name=value` (or `-t`/`-f` then a value) with values
in their simple forms and ranges. Anything else (--help, --plot, --debug, a typo, a value the
table does not read the same way Typer would) returns None and the Typer app runs as usual, and
so does any error before output starts: its message and exit code come from the app, which
repeats the call from the beginning (nothing has been written yet). The output is the one the
app prints (`tests/test_fast_inspect.py` compares both, byte for byte).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparseprune.cli.process import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    Terminated,
    quiet_broken_pipe,
)

_NUMBER = re.compile(r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?")


def _number(low: float, high: float | None) -> Callable[[str], float | None]:
    """A float in [low, high] written plainly (digits, a point, an exponent), else None."""

    def parse(text: str) -> float | None:
        if not _NUMBER.fullmatch(text):
            return None
        value = float(text)
        return value if low <= value and (high is None or value <= high) else None

    return parse


def _json_only(text: str) -> str | None:
    return text if text == "json" else None


def _text(text: str) -> str | None:
    return text or None


def _path(text: str) -> Path | None:
    return Path(text) if text else None


# option -> (field of InspectCall, value parser or None for a flag). Inspect's own defaults are
# the field defaults below; an option missing here (--plot) sends the call to Typer.
OPTIONS: dict[str, tuple[str, Callable[[str], Any] | None]] = {
    "--json": ("as_json", None),
    "--format": ("output_format", _json_only),
    "-f": ("output_format", _json_only),
    "--threshold": ("threshold", _number(0.0, None)),
    "-t": ("threshold", _number(0.0, None)),
    "--all": ("show_all", None),
    "--layers": ("layers", _text),
    "--json-file": ("json_file", _path),
    "--min-sparsity": ("min_sparsity", _number(0.0, 1.0)),
    "--max-sparsity": ("max_sparsity", _number(0.0, 1.0)),
    "--force": ("force", None),
}


@dataclass
class InspectCall:
    """One `inspect` call as the fast path understood it."""

    models: list[str] = field(default_factory=list)
    threshold: float | None = None  # None: inspect's default
    show_all: bool = False
    layers: str | None = None
    output_format: str = "table"
    as_json: bool = False
    json_file: Path | None = None
    min_sparsity: float | None = None
    max_sparsity: float | None = None
    force: bool = False


def parse(argv: list[str]) -> InspectCall | None:
    """`argv` (after the program name) as an inspect call printing JSON, or None."""
    if not argv or argv[0] != "inspect":
        return None
    call, args = InspectCall(), iter(argv[1:])
    for arg in args:
        if not arg.startswith("-"):
            call.models.append(arg)
            continue
        name, has_value, inline = arg.partition("=")
        if name not in OPTIONS or (has_value and not name.startswith("--")):
            return None
        attribute, reader = OPTIONS[name]
        if reader is None:
            if has_value:
                return None
            setattr(call, attribute, True)
            continue
        text = inline if has_value else next(args, None)
        value = None if text is None or text.startswith("-") else reader(text)
        if value is None:
            return None
        setattr(call, attribute, value)
    machine = call.as_json or call.output_format == "json"
    return call if call.models and machine else None


def run(argv: list[str]) -> int | None:
    """Run `argv` if it is a call this path takes; its exit code, or None for the Typer app."""
    call = parse(argv)
    if call is None:
        return None
    try:
        text, failures = _inspect(call)
    except (KeyboardInterrupt, Terminated) as interrupt:
        return _interrupted(interrupt)
    except Exception:  # the app repeats the call and reports the error itself
        return None
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        return quiet_broken_pipe()
    return _end_on_failures(failures) if failures else 0


def _inspect(call: InspectCall) -> tuple[str, list[str]]:
    """The JSON document (also published to --json-file) and the failed checks."""
    from sparseprune.inspect.inspection import inspect_model
    from sparseprune.numeric.stats import DEFAULT_THRESHOLD
    from sparseprune.render.inspect_output import to_json

    if call.json_file is not None:  # formats/atomic.py only then (tempfile: start-up time)
        from sparseprune.formats.atomic import check_output_path

        check_output_path(call.json_file, call.force, call.models, ())
    threshold = DEFAULT_THRESHOLD if call.threshold is None else call.threshold
    reports = [
        inspect_model(
            model,
            threshold=threshold,
            layers=call.layers,
            show_all=call.show_all,
            min_sparsity=call.min_sparsity,
            max_sparsity=call.max_sparsity,
            label=model,
        )
        for model in call.models
    ]
    text = to_json(reports, [])
    if call.json_file is not None:
        from sparseprune.formats.atomic import write_text_output

        write_text_output(call.json_file, text + "\n", force=call.force, inputs=call.models)
    return text, [failure for report in reports for failure in report.failures]


def _end_on_failures(failures: list[str]) -> int:
    """The app's `check failed:` lines and exit 1 (Typer is imported only now)."""
    import typer

    from sparseprune.cli.common import end_on_failures

    try:
        end_on_failures(failures)
    except typer.Exit as end:
        return end.exit_code
    return 0


def _interrupted(interrupt: BaseException) -> int:
    """The app's one line for Ctrl-C or SIGTERM during the work, and its exit code."""
    from sparseprune.cli.common import fail

    if isinstance(interrupt, Terminated):
        return fail("terminated.", EXIT_TERMINATED).exit_code
    return fail("interrupted.", EXIT_INTERRUPTED).exit_code
