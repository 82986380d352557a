"""An independent, minimal reader for test expectations: weights by (layer, index), via h5py.

Deliberately shares no code with sparseprune, so tests compare against a second implementation.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import h5py
import numpy as np


def keras_weights(path: Path) -> dict[str, list[np.ndarray]]:
    """Keras 3 `.keras`: {real layer name: [var0, var1, ...]} using the `name` attribute."""
    with zipfile.ZipFile(path) as archive:
        data = archive.read("model.weights.h5")
    out: dict[str, list[np.ndarray]] = {}
    with h5py.File(io.BytesIO(data), "r") as f:

        def visit(name: str, obj: object) -> None:
            is_vars = isinstance(obj, h5py.Group) and name.endswith("/vars")
            if is_vars and name.startswith("layers") and len(obj):
                out[obj.attrs["name"]] = [obj[str(i)][()] for i in range(len(obj))]

        f.visititems(visit)
    return out


def h5_weights(path: Path) -> dict[str, list[np.ndarray]]:
    """Legacy `.h5`: {layer name: [weights in weight_names order]}."""
    out: dict[str, list[np.ndarray]] = {}
    with h5py.File(path, "r") as f:
        group = f.get("model_weights", f)
        for layer in group.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else layer
            names = group[layer].attrs["weight_names"]
            if len(names):
                out[layer] = [
                    group[layer][n.decode() if isinstance(n, bytes) else n][()] for n in names
                ]
    return out


def keras_optimizer(path: Path) -> list[np.ndarray]:
    """Keras 3 `.keras`: the optimizer's variables in order."""
    with zipfile.ZipFile(path) as archive:
        data = archive.read("model.weights.h5")
    with h5py.File(io.BytesIO(data), "r") as f:
        group = f["optimizer/vars"]
        return [group[str(i)][()] for i in range(len(group))]
