"""Training and validation arrays from an `.npz` (never unpickled). No Keras import."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparseprune.errors import InputError, describe

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


def load_dataset(path: str | Path) -> Dataset:
    """`x`, `y` (or `x_train`, `y_train`) and optional `x_val`, `y_val` (or `x_test`, `y_test`)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise InputError(f"data file {path} does not exist.") from None
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise InputError(f"data file {path} is not a readable .npz ({describe(error)}).") from None
    train = _pair(arrays, TRAIN_KEYS)
    if train is None:
        raise InputError(f"data file {path} needs arrays 'x' and 'y' (or 'x_train', 'y_train').")
    validation = _pair(arrays, VALIDATION_KEYS) or (None, None)
    return Dataset(*train, *validation, source=str(path))


def _pair(arrays: dict, options: tuple) -> tuple[np.ndarray, np.ndarray] | None:
    for x_key, y_key in options:
        if x_key in arrays and y_key in arrays:
            if len(arrays[x_key]) != len(arrays[y_key]):
                raise InputError(f"'{x_key}' and '{y_key}' have different lengths.")
            return arrays[x_key], arrays[y_key]
    return None
