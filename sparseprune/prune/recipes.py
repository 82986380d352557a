"""A pruning recipe: TOML file and command-line options -> one validated `PruneSpec`.

Recipe keys mirror the `prune` options; `[layer.NAME]` sections set per-layer `target` and
`max_sparsity`. Command-line values override the recipe. Errors name the offending key.
"""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from sparseprune.choices import BlockPooling, Scope, Structure
from sparseprune.errors import InputError, describe
from sparseprune.prune.spec import (
    RULE_KEYS,
    LayerRule,
    PruneSpec,
    as_real,
    parse_block,
    parse_pattern,
    short,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_KEY_LINE = re.compile(r"^\s*(\[+[^\]]*\]+|[^=\s][^=]*?)\s*=", re.MULTILINE)


RECIPE_KEYS = {
    "target",
    "threshold",
    "scope",
    "layers",
    "exclude",
    "pattern",
    "mask",
    "include_bias",
    "include_unknown",
    "keep_optimizer",
    "structure",
    "block",
    "block_pooling",
    "layer",
}


def load_recipe(path: str | Path) -> PruneSpec:
    """Read a TOML recipe; unknown keys and out-of-range values are errors naming the key."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except RecursionError:
        raise InputError(
            f"recipe {source}: '{_deepest_key(text)}' nests arrays or tables too deeply; "
            "a recipe holds numbers, strings and [layer.NAME] tables."
        ) from None
    except FileNotFoundError as error:
        raise InputError(f"recipe {source} does not exist.") from error
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read recipe {source} ({describe(error)}).") from error
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"recipe {source} is not valid TOML ({describe(error)}).") from error
    unknown = sorted(set(data) - RECIPE_KEYS)
    if unknown:
        known = ", ".join(sorted(RECIPE_KEYS))
        raise InputError(f"recipe {source}: unknown key '{unknown[0]}'; known keys: {known}.")
    try:
        return _spec(data, source)
    except InputError as error:
        raise InputError(f"recipe {source}: {error}") from None


def _spec(data: dict[str, Any], source: Path) -> PruneSpec:
    values: dict[str, Any] = {
        "target": _number(data, "target"),
        "threshold": _number(data, "threshold"),
        "scope": _text(data, "scope") or Scope.LAYER,
        "layers": _text(data, "layers"),
        "exclude": _text(data, "exclude"),
        "pattern": parse_pattern(data["pattern"], "pattern") if "pattern" in data else None,
        "include_bias": _flag(data, "include_bias"),
        "include_unknown": _flag(data, "include_unknown"),
        "keep_optimizer": _flag(data, "keep_optimizer"),
        "structure": _text(data, "structure") or Structure.WEIGHTS,
        "block": parse_block(data["block"], "block") if "block" in data else None,
        "block_pooling": _text(data, "block_pooling") or BlockPooling.AVG,
        "rules": _rules(data.get("layer", {})),
    }
    mask = _text(data, "mask")
    if mask is not None:
        values["mask"] = str((source.parent / mask) if not Path(mask).is_absolute() else mask)
    return PruneSpec(**values).validate()


def merge(base: PruneSpec, overrides: dict[str, Any], sets: list[str]) -> PruneSpec:
    """Command-line values (those not None) override the recipe; `--set` adds layer rules."""
    spec = replace(base, **{k: v for k, v in overrides.items() if v is not None})
    rules = dict(spec.rules)
    for item in sets:
        layer, value = parse_set(item)
        old = rules.get(layer, LayerRule())
        rules[layer] = (
            replace(old, max_sparsity=value)
            if spec.scope is Scope.GLOBAL
            else replace(old, target=value)
        )
    return replace(spec, rules=rules).validate()


def parse_set(item: str) -> tuple[str, float]:
    layer, sep, value = item.rpartition("=")
    try:
        number = float(value)
    except ValueError:
        number = None
    if not sep or not layer or number is None:
        raise InputError(f"--set expects LAYER=SPARSITY (e.g. head=0.5), got '{item}'.")
    return layer, number


def _rules(table: Any) -> dict[str, LayerRule]:
    if not isinstance(table, dict):
        raise InputError("'layer' must be a table of [layer.NAME] sections.")
    rules = {}
    for name, section in table.items():
        if not isinstance(section, dict):
            raise InputError(f"'layer.{name}' must be a table with target / max_sparsity.")
        unknown = sorted(set(section) - RULE_KEYS)
        if unknown:
            raise InputError(
                f"unknown key 'layer.{name}.{unknown[0]}'; use target or max_sparsity."
            )
        rules[name] = LayerRule(
            target=_number(section, "target", f"layer.{name}."),
            max_sparsity=_number(section, "max_sparsity", f"layer.{name}."),
        )
    return rules


def _number(data: dict, key: str, prefix: str = "") -> float | None:
    value = data.get(key)
    return None if value is None else as_real(f"{prefix}{key}", value)


def _deepest_key(text: str) -> str:
    """The key on the line where brackets nest deepest (for errors after a RecursionError)."""
    depth = best = 0
    best_at = 0
    for position, char in enumerate(text):
        depth += (char in "[{") - (char in "]}")
        if depth > best:
            best, best_at = depth, position
    keys = [m for m in _KEY_LINE.finditer(text, 0, best_at)]
    return keys[-1].group(1).strip() if keys else "(top level)"


def _text(data: dict, key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise InputError(f"'{key}' must be a string, got {short(value)}.")
    return value


def _flag(data: dict, key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise InputError(f"'{key}' must be true or false, got {short(value)}.")
    return value
