"""Training and validation arrays from an `.npz` (never unpickled). No Keras import."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparseprune.errors import InputError
from sparseprune.formats.npz import read_npz

TRAIN_KEYS = (("x", "y"), ("x_train", "y_train"))
VALIDATION_KEYS = (("x_val", "y_val"), ("x_test", "y_test"))


@dataclass
class Dataset:
    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    source: str

    @property
    def validation(self) -> tuple[np.ndarray, np.ndarray]:
        """The validation split, or the training data when the file has none."""
        if self.x_val is not None and self.y_val is not None:
            return self.x_val, self.y_val
        return self.x, self.y


def validation_metrics(model, data: Dataset) -> dict[str, float]:
    """Loss and metrics of a compiled model on the validation split (before/after summaries)."""
    x, y = data.validation
    results = model.evaluate(x, y, verbose=0, return_dict=True)
    return {key: float(value) for key, value in results.items()}


def load_dataset(path: str | Path) -> Dataset:
    """`x`, `y` (or `x_train`, `y_train`) and optional `x_val`, `y_val` (or `x_test`, `y_test`)."""
    arrays = read_npz(path)
    train = _pair(path, arrays, TRAIN_KEYS)
    if train is None:
        raise InputError(f"data file {path} needs arrays 'x' and 'y' (or 'x_train', 'y_train').")
    validation = _pair(path, arrays, VALIDATION_KEYS)
    x_val, y_val = validation[:2] if validation else (None, None)
    return Dataset(train[0], train[1], x_val, y_val, source=str(path))


def load_split(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, str]:
    """(x, y, "file:key") of the held-out split: x_val/y_val, else x_test/y_test, else x/y."""
    arrays = read_npz(path)
    found = _pair(path, arrays, (*VALIDATION_KEYS, TRAIN_KEYS[0]))
    if found is None:
        expected = ", ".join(f"{x}/{y}" for x, y in (*VALIDATION_KEYS, TRAIN_KEYS[0]))
        names = ", ".join(sorted(arrays)[:12]) or "nothing"
        raise InputError(f"data file {path} needs arrays {expected}; it has {names}.")
    return found[0], found[1], f"{path}:{found[2]}"


def _pair(
    path: str | os.PathLike[str], arrays: dict[str, np.ndarray], options: tuple
) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The first (x, y, x_key) pair present, checked; None if no pair is complete."""
    for x_key, y_key in options:
        if x_key in arrays and y_key in arrays:
            x, y = arrays[x_key], arrays[y_key]
            _check_pair(path, x_key, y_key, x, y)
            return x, y, x_key
    return None


def _check_pair(
    path: str | os.PathLike[str], x_key: str, y_key: str, x: np.ndarray, y: np.ndarray
) -> None:
    if x.ndim == 0 or y.ndim == 0 or len(x) == 0:
        raise InputError(f"data file {path}: '{x_key}' and '{y_key}' hold no samples.")
    if len(x) != len(y):
        raise InputError(
            f"data file {path}: '{x_key}' has {len(x)} samples but '{y_key}' has {len(y)}."
        )
    if not (np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.number)):
        raise InputError(f"data file {path}: '{x_key}' and '{y_key}' must be numeric arrays.")
