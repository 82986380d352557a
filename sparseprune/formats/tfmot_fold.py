"""A TFMOT `PruneLowMagnitude` wrapper, and its masks folded into the weights they prune.

Layout-free: formats/tfmot_unwrap.py finds the wrappers' variables in a legacy `.h5` or a `.keras`
file and hands each (weight, mask) pair to a `MaskFolder`, which checks the mask is a 0/1 array of
the weight's shape and copies the weight multiplied by it (what TFMOT's `weight_mask_op` assigns).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import h5py
import numpy as np

from sparseprune.errors import InputError
from sparseprune.formats.h5safe import read_array, reading
from sparseprune.formats.model import TensorInfo
from sparseprune.formats.writer import TreeCopier

WRAPPER_CLASS = "PruneLowMagnitude"
WRAPPER_ROLES = frozenset({"mask", "threshold", "pruning_step"})


@dataclass(frozen=True)
class Wrapper:
    """A `PruneLowMagnitude` layer of the config and the layer it wraps."""

    scope: tuple[str, ...]  # the nested models holding it; () at the top level
    name: str  # prune_low_magnitude_dense
    inner_name: str  # dense
    inner_class: str | None

    @property
    def path(self) -> str:
        return "/".join((*self.scope, self.name))

    @property
    def layer(self) -> str:
        return "/".join((*self.scope, self.inner_name))


@dataclass(frozen=True)
class Fold:
    """A weight its mask was folded into; paths address datasets in the weights HDF5 files."""

    wrapper: Wrapper
    source_path: str
    mask_path: str
    output_path: str
    masked: int  # weights the mask sets to zero


def fold_mask(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """weight * mask in the weight's dtype: exactly what TFMOT's `weight_mask_op` assigns."""
    return np.asarray(values * mask, dtype=values.dtype)


class MaskFolder:
    """Copies HDF5 objects; weights registered with `add` are written multiplied by their mask."""

    def __init__(self, label: str, compress: bool) -> None:
        self.label = label
        self.folds: list[Fold] = []
        self._masks: dict[str, np.ndarray] = {}
        self._tensors: dict[str, TensorInfo] = {}
        self.copier = TreeCopier(self._tensors, self._fold, False, None, label)
        self.copier.compress = compress

    def add(
        self, wrapper: Wrapper, weight: h5py.Dataset, mask: h5py.Dataset, output_path: str
    ) -> None:
        with reading(self.label, f"dataset '{mask.name}'"):
            values = read_array(mask)
        if values.shape != weight.shape or not np.isin(values, (0, 1)).all():
            raise InputError(
                f"{self.label}: the mask of '{wrapper.layer}' is not a 0/1 array of the weight's "
                f"shape {weight.shape}; refusing to fold it."
            )
        path = weight.name.lstrip("/")
        self._masks[path] = values
        self._tensors[path] = TensorInfo(
            path, wrapper.layer, wrapper.inner_class, "", weight.shape, str(weight.dtype)
        )
        masked = int(np.count_nonzero(values == 0))
        self.folds.append(Fold(wrapper, path, mask.name.lstrip("/"), output_path, masked))

    def _fold(self, tensor: TensorInfo, values: np.ndarray) -> np.ndarray:
        return fold_mask(values, self._masks.pop(tensor.path))

    def copy(self, item: h5py.HLObject, dest: h5py.Group, name: str) -> None:
        self.copier.copy_item(item, dest, name)


def pick_in_order(
    count: int, tests: Sequence[Callable[[int], bool]], wrapper: Wrapper, label: str
) -> list[int]:
    """For each test in turn, the first candidate after the previous pick that passes it."""
    picks: list[int] = []
    for test in tests:
        start = picks[-1] + 1 if picks else 0
        found = next((i for i in range(start, count) if test(i)), None)
        if found is None:
            raise InputError(
                f"{label}: cannot tell which weight of '{wrapper.layer}' each pruning mask "
                "belongs to; unsupported wrapper layout."
            )
        picks.append(found)
    return picks
