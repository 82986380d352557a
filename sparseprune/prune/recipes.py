"""A pruning recipe: TOML file and command-line options -> one validated `PruneSpec`.

Recipe keys mirror the `prune` options; `[layer.NAME]` sections set per-layer `target` and
`max_sparsity`. Command-line values override the recipe. Errors name the offending key.
"""

from __future__ import annotations

import re
import reprlib
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from sparseprune.errors import InputError, describe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Scope = Literal["layer", "global"]
SCOPES = ("layer", "global")
# "weights": single weights by magnitude; "units": whole output units/filters by the L2 norm of
# their incoming kernel slice, then removed by shrink (fewer units = faster predictions).
Structure = Literal["weights", "units"]
STRUCTURES = ("weights", "units")
# How a block's weights are summarised for ranking (TFMOT's block_pooling_type, lower case).
BlockPooling = Literal["avg", "max"]
BLOCK_POOLINGS = ("avg", "max")
MAX_BLOCK_SIDE = 1024
# Values quoted in errors are cut short: a recipe may hold a 400-digit number or deep arrays.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxstring, _SHORT.maxother = 3, 4, 60, 60
_SHORT.maxlong = 40
_KEY_LINE = re.compile(r"^\s*(\[+[^\]]*\]+|[^=\s][^=]*?)\s*=", re.MULTILINE)


@dataclass(frozen=True)
class LayerRule:
    target: float | None = None
    max_sparsity: float | None = None


@dataclass(frozen=True)
class PruneSpec:
    """Everything that decides which weights become zero."""

    target: float | None = None
    threshold: float | None = None
    scope: Scope = "layer"
    layers: str | None = None
    exclude: str | None = None
    rules: dict[str, LayerRule] = field(default_factory=dict)
    pattern: tuple[int, int] | None = None
    mask: str | None = None
    include_bias: bool = False
    include_unknown: bool = False
    keep_optimizer: bool = False
    structure: Structure = "weights"
    # (rows, columns) of a 2-D kernel as Keras stores it: (4, 1) is 4 consecutive inputs of one
    # output unit of a Dense kernel (in, out), TFLite's 1x4 block in its (out, in) layout.
    block: tuple[int, int] | None = None
    block_pooling: BlockPooling = "avg"

    def rule(self, layer: str) -> LayerRule:
        return self.rules.get(layer, LayerRule())

    def validate(self) -> PruneSpec:
        _fraction("target", self.target)
        for name, rule in self.rules.items():
            _fraction(f"layer.{name}.target", rule.target)
            _fraction(f"layer.{name}.max_sparsity", rule.max_sparsity, upper_inclusive=True)
        if self.threshold is not None and not self.threshold >= 0:
            raise InputError(f"'threshold' must be >= 0, got {self.threshold}.")
        if self.scope not in SCOPES:
            raise InputError(f"'scope' must be 'layer' or 'global', got {short(self.scope)}.")
        if self.mask is not None and (self.target is not None or self.pattern is not None):
            raise InputError("'mask' replaces magnitude pruning; drop 'target' and 'pattern'.")
        if self.pattern is not None and self.target is not None:
            raise InputError("'pattern' fixes the sparsity at N/M; drop 'target'.")
        if self.pattern is not None and self.scope == "global":
            raise InputError("'pattern' works per tensor; use scope 'layer'.")
        _check_structure(self)
        _check_block(self)
        has_rule_target = any(r.target is not None for r in self.rules.values())
        if (
            all(v is None for v in (self.target, self.threshold, self.pattern, self.mask))
            and not has_rule_target
        ):
            raise InputError(
                "nothing to prune: give --target, --threshold, --pattern, --mask or a recipe."
            )
        return self


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
RULE_KEYS = {"target", "max_sparsity"}


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
        "scope": _text(data, "scope") or "layer",
        "layers": _text(data, "layers"),
        "exclude": _text(data, "exclude"),
        "pattern": parse_pattern(data["pattern"], "pattern") if "pattern" in data else None,
        "include_bias": _flag(data, "include_bias"),
        "include_unknown": _flag(data, "include_unknown"),
        "keep_optimizer": _flag(data, "keep_optimizer"),
        "structure": _text(data, "structure") or "weights",
        "block": parse_block(data["block"], "block") if "block" in data else None,
        "block_pooling": _text(data, "block_pooling") or "avg",
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
            if spec.scope == "global"
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


def parse_pattern(value: Any, key: str = "--pattern") -> tuple[int, int]:
    """'N:M' -> (N, M): at least N zeros in every M consecutive weights."""
    try:
        zeros, group = (int(part) for part in str(value).split(":"))
    except ValueError:
        raise InputError(f"'{key}' must look like N:M (e.g. 2:4), got {short(value)}.") from None
    if not 0 < zeros < group:
        raise InputError(f"'{key}' needs 0 < N < M, got {short(value)}.")
    return zeros, group


def parse_block(value: Any, key: str = "--block") -> tuple[int, int]:
    """'RxC' (or a TOML [R, C]) -> (R, C): rows x columns of the Keras kernel, e.g. 4x1."""
    if isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value):
        rows, cols = value
    else:
        text = str(value).lower().replace("×", "x")
        parts = text.split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() and len(p) < 10 for p in parts):
            raise InputError(f"'{key}' must look like RxC (e.g. 4x1), got {short(value)}.")
        rows, cols = (int(p) for p in parts)
    if not (1 <= rows <= MAX_BLOCK_SIDE and 1 <= cols <= MAX_BLOCK_SIDE):
        raise InputError(f"'{key}' needs sides from 1 to {MAX_BLOCK_SIDE}, got {short(value)}.")
    if rows * cols == 1:
        raise InputError(f"'{key}' 1x1 is single weights; drop it (or use e.g. 4x1).")
    return rows, cols


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


def _check_structure(spec: PruneSpec) -> None:
    """Units are chosen by norm at a fraction; single-weight rules would leave units half-pruned."""
    if spec.structure not in STRUCTURES:
        raise InputError(f"'structure' must be 'weights' or 'units', got {short(spec.structure)}.")
    if spec.structure != "units":
        return
    for key in ("threshold", "pattern", "mask"):
        if getattr(spec, key) is not None:
            raise InputError(
                f"'{key}' prunes single weights; structure 'units' takes 'target' (and per-layer "
                "target / max_sparsity as fractions of units)."
            )


def _check_block(spec: PruneSpec) -> None:
    """Blocks are ranked at a target fraction of blocks; single-weight rules would break them."""
    if spec.block_pooling not in BLOCK_POOLINGS:
        got = short(spec.block_pooling)
        raise InputError(f"'block_pooling' must be 'avg' or 'max', got {got}.")
    if spec.block is None:
        return
    if spec.structure == "units":
        raise InputError("'block' and structure 'units' are different structures; pick one.")
    for key in ("threshold", "pattern", "mask"):
        if getattr(spec, key) is not None:
            raise InputError(
                f"'{key}' prunes single weights; 'block' takes 'target' (and per-layer target / "
                "max_sparsity as fractions of blocks)."
            )


def _fraction(key: str, value: float | None, upper_inclusive: bool = False) -> None:
    if value is None:
        return
    ok = 0 <= value <= 1 if upper_inclusive else 0 <= value < 1
    if not ok:
        bound = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise InputError(f"'{key}' must be a sparsity in {bound}, got {value}.")


def _number(data: dict, key: str, prefix: str = "") -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"'{prefix}{key}' must be a number, got {short(value)}.")
    try:
        return float(value)
    except OverflowError:
        raise InputError(f"'{prefix}{key}' is out of range, got {short(value)}.") from None


def short(value: Any) -> str:
    """A value quoted in an error, cut to a few dozen characters."""
    return _SHORT.repr(value)


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
