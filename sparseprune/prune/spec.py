"""`PruneSpec`: everything that decides which weights become zero, checked when it is made.

Ranges, names (the Enums in choices.py), regexes, N:M and RxC syntax and contradicting options
are refused with an InputError naming the field; recipes.py builds one from TOML and options.
"""

from __future__ import annotations

import os
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sparseprune.choices import BlockPooling, Scope, Structure, parse_fields
from sparseprune.errors import InputError

MAX_BLOCK_SIDE = 1024
RULE_KEYS = {"target", "max_sparsity"}
# Values quoted in errors are cut short: a recipe may hold a 400-digit number or deep arrays.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxstring, _SHORT.maxother = 3, 4, 60, 60
_SHORT.maxlong = 40


@dataclass(frozen=True)
class LayerRule:
    """A per-layer target (layer scope) and/or cap (global scope), both sparsities."""

    target: float | None = None
    max_sparsity: float | None = None


@dataclass(frozen=True)
class PruneSpec:
    """Everything that decides which weights become zero, checked when it is made.

    Strings are accepted for `scope` and `structure` and become their Enum; out-of-range
    numbers, unknown names and contradicting options raise InputError naming the field.
    `validate()` adds the one check a partial spec (a recipe before overrides) may fail:
    that something is pruned at all.
    """

    target: float | None = None
    threshold: float | None = None
    scope: Scope = Scope.LAYER
    layers: str | None = None
    exclude: str | None = None
    rules: Mapping[str, LayerRule] = field(default_factory=dict)
    pattern: tuple[int, int] | None = None
    mask: str | None = None
    include_bias: bool = False
    include_unknown: bool = False
    keep_optimizer: bool = False
    structure: Structure = Structure.WEIGHTS
    # (rows, columns) of a 2-D kernel as Keras stores it: (4, 1) is 4 consecutive inputs of one
    # output unit of a Dense kernel (in, out), TFLite's 1x4 block in its (out, in) layout.
    block: tuple[int, int] | None = None
    block_pooling: BlockPooling = BlockPooling.AVG

    def __post_init__(self) -> None:
        set_field = partial(object.__setattr__, self)
        parse_fields(self, {"scope": Scope, "structure": Structure, "block_pooling": BlockPooling})
        set_field("target", _fraction("target", self.target))
        set_field("threshold", _non_negative("threshold", self.threshold))
        set_field("rules", _checked_rules(self.rules))
        set_field("pattern", _checked_pattern(self.pattern))
        if self.block is not None:
            set_field(
                "block",
                parse_block(
                    list(self.block) if isinstance(self.block, tuple) else self.block, "block"
                ),
            )
        if self.mask is not None:
            set_field("mask", os.fspath(self.mask))
        for key in ("layers", "exclude"):
            _check_regex(key, getattr(self, key))
        for key in ("include_bias", "include_unknown", "keep_optimizer"):
            if not isinstance(getattr(self, key), bool):
                raise InputError(f"'{key}' must be True or False, got {short(getattr(self, key))}.")
        _check_combinations(self)

    def rule(self, layer: str) -> LayerRule:
        return self.rules.get(layer, LayerRule())

    def validate(self) -> PruneSpec:
        """Raise unless the spec prunes something; returns the spec for chaining."""
        has_rule_target = any(r.target is not None for r in self.rules.values())
        if (
            all(v is None for v in (self.target, self.threshold, self.pattern, self.mask))
            and not has_rule_target
        ):
            raise InputError(
                "nothing to prune: give --target, --threshold, --pattern, --mask or a recipe."
            )
        return self


def _check_combinations(spec: PruneSpec) -> None:
    if spec.mask is not None and (spec.target is not None or spec.pattern is not None):
        raise InputError("'mask' replaces magnitude pruning; drop 'target' and 'pattern'.")
    if spec.pattern is not None and spec.target is not None:
        raise InputError("'pattern' fixes the sparsity at N/M; drop 'target'.")
    if spec.pattern is not None and spec.scope is Scope.GLOBAL:
        raise InputError("'pattern' works per tensor; use scope 'layer'.")
    _check_structure(spec)
    _check_block(spec)


def _checked_rules(rules: Any) -> dict[str, LayerRule]:
    """Per-layer rules as LayerRule (a mapping {'target': ..} is accepted), ranges checked."""
    if not isinstance(rules, Mapping):
        raise InputError(f"'rules' must map layer names to LayerRule, got {short(rules)}.")
    checked = {}
    for name, rule in rules.items():
        if isinstance(rule, Mapping):
            unknown = sorted(set(rule) - RULE_KEYS)
            if unknown:
                raise InputError(
                    f"unknown key 'layer.{name}.{unknown[0]}'; use target or max_sparsity."
                )
            rule = LayerRule(**rule)
        if not isinstance(rule, LayerRule):
            raise InputError(f"'layer.{name}' must be a LayerRule, got {short(rule)}.")
        checked[str(name)] = LayerRule(
            _fraction(f"layer.{name}.target", rule.target),
            _fraction(f"layer.{name}.max_sparsity", rule.max_sparsity, upper_inclusive=True),
        )
    return checked


def _checked_pattern(pattern: Any) -> tuple[int, int] | None:
    if pattern is None:
        return None
    if isinstance(pattern, str):
        return parse_pattern(pattern, "pattern")
    try:
        zeros, group = (_integer(value) for value in pattern)
    except (TypeError, ValueError):
        raise InputError(
            f"'pattern' must be (N, M) or 'N:M', e.g. (2, 4); got {short(pattern)}."
        ) from None
    if not 0 < zeros < group:
        raise InputError(f"'pattern' needs 0 < N < M, got {short(pattern)}.")
    return zeros, group


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(value)
    return value


def _check_regex(key: str, pattern: Any) -> None:
    if pattern is None:
        return
    if not isinstance(pattern, str):
        raise InputError(f"'{key}' must be a regular expression string, got {short(pattern)}.")
    try:
        re.compile(pattern)
    except re.error as error:
        raise InputError(
            f"'{key}' '{pattern}' is not a valid regular expression ({error})."
        ) from None


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


def _check_structure(spec: PruneSpec) -> None:
    """Units are chosen by norm at a fraction; single-weight rules would leave units half-pruned."""
    if spec.structure is not Structure.UNITS:
        return
    for key in ("threshold", "pattern", "mask"):
        if getattr(spec, key) is not None:
            raise InputError(
                f"'{key}' prunes single weights; structure 'units' takes 'target' (and per-layer "
                "target / max_sparsity as fractions of units)."
            )


def _check_block(spec: PruneSpec) -> None:
    """Blocks are ranked at a target fraction of blocks; single-weight rules would break them."""
    if spec.block is None:
        return
    if spec.structure is Structure.UNITS:
        raise InputError("'block' and structure 'units' are different structures; pick one.")
    for key in ("threshold", "pattern", "mask"):
        if getattr(spec, key) is not None:
            raise InputError(
                f"'{key}' prunes single weights; 'block' takes 'target' (and per-layer target / "
                "max_sparsity as fractions of blocks)."
            )


def _fraction(key: str, value: Any, upper_inclusive: bool = False) -> float | None:
    """A sparsity: a number in [0, 1) (or [0, 1] for caps); None stays None."""
    if value is None:
        return None
    number = as_real(key, value)
    ok = 0 <= number <= 1 if upper_inclusive else 0 <= number < 1
    if not ok:
        bound = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise InputError(f"'{key}' must be a sparsity in {bound}, got {short(value)}.")
    return number


def _non_negative(key: str, value: Any) -> float | None:
    if value is None:
        return None
    number = as_real(key, value)
    if not number >= 0:
        raise InputError(f"'{key}' must be >= 0, got {short(value)}.")
    return number


def as_real(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"'{key}' must be a number, got {short(value)}.")
    try:
        return float(value)
    except OverflowError:
        raise InputError(f"'{key}' is out of range, got {short(value)}.") from None


def short(value: Any) -> str:
    """A value quoted in an error, cut to a few dozen characters."""
    return _SHORT.repr(value)
