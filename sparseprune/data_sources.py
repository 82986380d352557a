"""Training data for `prune --epochs`: an `.npz`, a folder of images in class sub-folders, or a
`.csv` with `--label COLUMN`; a validation split is taken when the data has none.

Images are read with Pillow (decoded as pixels only, size-checked before decoding, resized to the
model's input size, values 0-255 as `keras.utils.image_dataset_from_directory` gives them);
CSV cells are parsed as numbers only. No Keras import here.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from sparseprune.datasets import Dataset, load_dataset
from sparseprune.errors import InputError, describe
from sparseprune.numeric.schedule import TrainSpec

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif"})
MAX_IMAGE_PIXELS = 64 * 1024 * 1024  # per image, checked from the header before decoding
MAX_CSV_BYTES = 1 << 30


def load_training_data(train: TrainSpec, model: Any = None) -> Dataset:
    """The data `train.data` names, with a validation split (the file's, else a seeded one)."""
    path = Path(train.data)
    if path.is_dir():
        data = load_image_folder(path, _image_shape(model))
    elif path.suffix.lower() == ".csv":
        data = load_csv(path, train.label)
    else:
        if train.label is not None:
            raise InputError("--label names a CSV column; --data is not a .csv file.")
        data = load_dataset(path)
    if data.x_val is None:
        data = split_validation(data, train.validation_split, train.seed)
    return data


def split_validation(data: Dataset, fraction: float, seed: int) -> Dataset:
    """Hold out `fraction` of the samples (at least one), chosen by a seeded permutation."""
    if len(data.x) < 2:
        raise InputError(f"data {data.source} has {len(data.x)} sample; at least 2 are needed.")
    held = min(len(data.x) - 1, max(1, math.ceil(len(data.x) * fraction)))
    order = np.random.default_rng(seed).permutation(len(data.x))
    train, val = order[held:], order[:held]
    return Dataset(data.x[train], data.y[train], data.x[val], data.y[val], data.source)


def load_image_folder(root: Path, shape: tuple[int | None, int | None, int]) -> Dataset:
    """Class sub-folders in sorted order are labels 0, 1, ...; every image becomes one sample."""
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise InputError(f"image folder {root} needs at least two class sub-folders.")
    images, labels = [], []
    for label, folder in enumerate(classes):
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        for file in files:
            images.append(_read_image(file, shape))
            labels.append(label)
    if not images:
        raise InputError(f"image folder {root} holds no .png/.jpg/.bmp/.gif images.")
    sizes = {image.shape for image in images}
    if len(sizes) > 1:
        raise InputError(
            f"images in {root} have different sizes ({', '.join(map(str, sorted(sizes)[:3]))}) "
            "and the model's input does not fix one."
        )
    return Dataset(np.stack(images), np.asarray(labels, dtype=np.int32), None, None, str(root))


def _read_image(path: Path, shape: tuple[int | None, int | None, int]) -> np.ndarray:
    from PIL import Image

    height, width, channels = shape
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise InputError(f"image {path} is {image.width}x{image.height}: too large.")
            pixels = image.convert("L" if channels == 1 else "RGB")
            if height and width and pixels.size != (width, height):
                pixels = pixels.resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(pixels, dtype=np.float32)
    except InputError:
        raise
    except Exception as error:  # Pillow raises many types for broken files
        raise InputError(f"cannot read image {path} ({describe(error)}).") from None
    return array[..., None] if array.ndim == 2 else array


def _image_shape(model: Any) -> tuple[int | None, int | None, int]:
    """(height, width, channels) of the model's image input; channels default to 3."""
    shape = getattr(model, "input_shape", None)
    if not isinstance(shape, tuple) or len(shape) != 4:
        raise InputError("an image folder needs a model whose input is (height, width, channels).")
    return shape[1], shape[2], int(shape[3] or 3)


def load_csv(path: Path, label: str | None) -> Dataset:
    """Numeric feature columns plus the `label` column (numbers, or names mapped to 0, 1, ...)."""
    if label is None:
        raise InputError(f"{path} is a CSV: name its label column with --label COLUMN.")
    try:
        if path.stat().st_size > MAX_CSV_BYTES:
            raise InputError(f"{path} is larger than 1 GiB; convert it to .npz.")
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise InputError(f"data file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"cannot read {path} as CSV ({describe(error)}).") from None
    if len(rows) < 2:
        raise InputError(f"{path} needs a header row and at least one data row.")
    header, body = [h.strip() for h in rows[0]], [r for r in rows[1:] if r]
    if label not in header:
        raise InputError(f"{path} has no column {label!r}; its columns are {', '.join(header)}.")
    column = header.index(label)
    features = [i for i in range(len(header)) if i != column]
    x = np.empty((len(body), len(features)), dtype=np.float32)
    for row_number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise InputError(f"{path} line {row_number} has {len(row)} cells, not {len(header)}.")
        for j, i in enumerate(features):
            x[row_number - 2, j] = _number(row[i], path, row_number, header[i])
    return Dataset(x, _labels([row[column].strip() for row in body]), None, None, str(path))


def _number(cell: str, path: Path, line: int, name: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise InputError(
            f"{path} line {line}, column {name!r}: {cell!r} is not a number."
        ) from None


def _labels(cells: list[str]) -> np.ndarray:
    """Integer labels as given; any other labels become indices of their sorted names."""
    try:
        values = np.array([float(c) for c in cells])
        if np.all(values == np.round(values)):
            return values.astype(np.int32)
        return values.astype(np.float32)
    except ValueError:
        names = sorted(set(cells))
        index = {name: i for i, name in enumerate(names)}
        return np.array([index[c] for c in cells], dtype=np.int32)
