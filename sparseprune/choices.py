"""Every closed set of names the library accepts, as Enums: one spelling, checked at the edge.

Members are also `str`, so they compare equal to their value, serialize to JSON as it and work as
Typer choices. `parse` turns user input (a member or its string) into a member, or raises an
InputError naming the field and the allowed values.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from enum import Enum
from typing import TypeVar

from sparseprune.errors import InputError

C = TypeVar("C", bound="Choice")


class Choice(str, Enum):
    """A str-valued Enum whose str() and format() are its value on every Python version."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def parse(cls: type[C], value: object, field: str) -> C:
        """`value` as a member of this choice; anything else is an InputError naming `field`."""
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(repr(member.value) for member in cls)
            got = reprlib.repr(value)
            raise InputError(f"'{field}' must be one of {allowed}; got {got}.") from None


def parse_fields(spec: object, choices: Mapping[str, type[Choice]]) -> None:
    """Each named field of a (frozen) dataclass as its Choice member, in `__post_init__`:
    the one place a spec's names are checked, each error naming its field."""
    for name, choice in choices.items():
        object.__setattr__(spec, name, choice.parse(getattr(spec, name), name))


class Scope(Choice):
    """layer: each tensor reaches the target; global: one magnitude threshold over all."""

    LAYER = "layer"
    GLOBAL = "global"


class Structure(Choice):
    """weights: single weights by |w|; units: whole units/filters by L2 norm, then shrink."""

    WEIGHTS = "weights"
    UNITS = "units"


class TrainMethod(Choice):
    """How weights are pruned while training: native Keras masks or TFMOT (worker process)."""

    MASK = "mask"
    TFMOT = "tfmot"


class TensorMethod(Choice):
    """What the pruning plan does to one tensor (shown per tensor in prune's output)."""

    TARGET = "target"  # its own target sparsity (layer scope or a per-layer rule)
    GLOBAL = "global"  # one threshold shared by the global pool
    THRESHOLD = "threshold"  # every |w| <= T
    PATTERN = "pattern"  # N:M groups
    MASK = "mask"  # a given 0/1 mask
    UNITS = "units"  # whole units to its own target
    GLOBAL_UNITS = "global_units"  # whole units ranked across the pool
    BLOCKS = "blocks"  # whole RxC blocks to its own target
    GLOBAL_BLOCKS = "global_blocks"  # whole blocks ranked across the pool


UNIT_METHODS = (TensorMethod.UNITS, TensorMethod.GLOBAL_UNITS)
BLOCK_METHODS = (TensorMethod.BLOCKS, TensorMethod.GLOBAL_BLOCKS)


class BlockPooling(Choice):
    """How a block's weights are summarised for ranking (TFMOT's block_pooling_type)."""

    AVG = "avg"
    MAX = "max"


class Schedule(Choice):
    POLYNOMIAL = "polynomial"
    CONSTANT = "constant"


class Strategy(Choice):
    NONE = "none"
    MIRRORED = "mirrored"
    MULTIWORKER = "multiworker"


class Quantize(Choice):
    """TFLite weight quantization of `export`."""

    INT8 = "int8"
    FLOAT16 = "float16"


class OutputFormat(Choice):
    """How a command prints its result on stdout."""

    TABLE = "table"
    JSON = "json"
    CSV = "csv"
    MARKDOWN = "markdown"
