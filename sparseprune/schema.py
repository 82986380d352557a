"""The JSON output contract, defined once: schema version, valid JSON only, `to_json()`.

Every command's `--json` document and every result's `to_json()` go through `dumps`: it adds
`schema_version`, turns NaN/Infinity (a diverged loss, NaN weights) into null, which JSON can
spell, and refuses anything else that is not JSON. The layout of each document lives in
`render/<command>_output.py` (`document(result)`); results find theirs through `DOCUMENT`.
"""

from __future__ import annotations

import importlib
import json
import math
from enum import Enum
from pathlib import PurePath
from typing import Any, ClassVar

SCHEMA_VERSION = 1


def finite(value: Any) -> Any:
    """A JSON-ready copy: NaN/Inf become None, tuples lists, Enums and paths their strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        return {str(key): finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return finite(value.item())
    return value


def document(body: dict[str, Any]) -> dict[str, Any]:
    """`body` under the schema version, JSON-ready."""
    return finite({"schema_version": SCHEMA_VERSION, **body})


def dumps(body: dict[str, Any]) -> str:
    """The one way a document becomes text: versioned, finite, indented, deterministic."""
    return json.dumps(document(body), indent=2, allow_nan=False)


class JsonResult:
    """Mixin for result dataclasses: `to_dict()` / `to_json()` give the command's --json output.

    `DOCUMENT` names the render module whose `document(result)` lays the result out; it is
    imported on first use, so results stay cheap to import.
    """

    DOCUMENT: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON document as Python data (schema_version included)."""
        return document(importlib.import_module(self.DOCUMENT).document(self))

    def to_json(self) -> str:
        """The JSON document as text, exactly what the command prints with --json."""
        return dumps(importlib.import_module(self.DOCUMENT).document(self))
