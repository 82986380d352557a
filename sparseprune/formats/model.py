"""What a reader yields: layers and tensors described by the file, never code from it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

TensorKind = Literal["weight", "optimizer", "state"]

FORMAT_KERAS = "keras"  # .keras zip archive (Keras 3 or tf_keras writer)
FORMAT_H5 = "h5"  # legacy full-model HDF5
FORMAT_H5_WEIGHTS = "h5-weights"  # legacy save_weights HDF5 (no architecture)
FORMAT_WEIGHTS_H5 = "weights.h5"  # Keras 3 .weights.h5 (no architecture)


def clean_text(value: str) -> str:
    """Text from a file as printable UTF-8: lone surrogates (valid in JSON) become '?'."""
    return value.encode("utf-8", "replace").decode("utf-8")


@dataclass(frozen=True)
class LayerInfo:
    """A layer as the architecture config describes it. Nested layers are named `outer/inner`."""

    name: str
    class_name: str | None
    module: str | None = None
    config: dict = field(default_factory=dict, compare=False, repr=False)
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class TensorInfo:
    """One stored tensor. `path` addresses its dataset inside the weights HDF5 file."""

    path: str
    layer: str
    layer_class: str | None
    role: str
    shape: tuple[int, ...]
    dtype: str
    kind: TensorKind = "weight"
    prunable: bool = False

    @property
    def name(self) -> str:
        return f"{self.layer}/{self.role}"

    @property
    def params(self) -> int:
        return math.prod(self.shape)
