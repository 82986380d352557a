"""Small model files written with h5py/zipfile alone, for hostile-input tests (no TensorFlow)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np

CONFIG = {
    "module": "keras",
    "class_name": "Sequential",
    "config": {
        "name": "tiny",
        "layers": [
            {"module": "keras.layers", "class_name": "InputLayer", "config": {"name": "in"}},
            {
                "module": "keras.layers",
                "class_name": "Dense",
                "config": {"name": "d", "use_bias": True},
            },
        ],
    },
}
KERNEL = np.array([[0.0, 1e-20, 0.5], [0.0, -2.0, 0.0]], dtype=np.float32)
BIAS = np.array([0.0, 0.1, 0.0], dtype=np.float32)


def weights_h5_bytes(mutate=None) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        group = f.create_group("layers/dense/vars")
        group.attrs["name"] = "d"
        group["0"] = KERNEL
        group["1"] = BIAS
        if mutate:
            mutate(f)
    return buffer.getvalue()


def write_keras(path: Path, members: list[tuple[str, bytes]] | None = None) -> Path:
    members = members or [
        ("metadata.json", b'{"keras_version": "3.15.1"}'),
        ("config.json", json.dumps(CONFIG).encode()),
        ("model.weights.h5", weights_h5_bytes()),
    ]
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
    return path


def write_h5(path: Path, mutate) -> Path:
    path.write_bytes(weights_h5_bytes(mutate))
    return path
