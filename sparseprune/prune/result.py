"""What `prune_model` returns: one outcome per tensor, measured from the written file."""

from __future__ import annotations

from dataclasses import dataclass, field

from sparseprune.choices import TensorMethod
from sparseprune.formats import TensorInfo
from sparseprune.schema import JsonResult


@dataclass
class TensorOutcome:
    tensor: TensorInfo
    method: TensorMethod | None
    target: float | None
    zeros_before: int
    zeros_after: int = 0
    expected_zeros: int | None = None
    skip_reason: str | None = None
    units_pruned: int | None = None  # structure units: units chosen (whole slices zeroed)
    units_zero_after: int | None = None  # all-zero units measured in the zeroed file
    blocks_pruned: int | None = None  # --block: blocks chosen (whole blocks zeroed)
    blocks_zero_after: int | None = None  # all-zero blocks measured in the written file
    blocks_total: int | None = None


@dataclass
class PruneResult(JsonResult):
    DOCUMENT = "sparseprune.render.prune_output"

    input: str
    output: str
    format: str
    input_size: int
    output_size: int = 0
    bound_bytes: float = 0.0
    optimizer: str = "none"  # "reset" | "kept" | "none"
    tensors: list[TensorOutcome] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    verification: dict | None = None
    training: dict | None = None
    shrink: dict | None = None  # structure units: shrink's units/params/MACs before and after

    @property
    def pruned(self) -> list[TensorOutcome]:
        return [t for t in self.tensors if t.method is not None]
