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


def many_layers_keras(path: Path, layers: int) -> Path:
    """A Sequential `.keras` of `layers` Dense(2) layers laid out as tf_keras / Keras < 3.6 save
    it: `layers/dense_<i>/vars/<j>` without `name` attributes, so keys are replayed from config."""
    dense = [
        {
            "module": "keras.layers",
            "class_name": "Dense",
            "config": {"name": f"d{i}", "units": 2, "use_bias": True},
        }
        for i in range(layers)
    ]
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "deep", "layers": dense},
    }
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        for i in range(layers):
            group = f.create_group(f"layers/{'dense' if i == 0 else f'dense_{i}'}/vars")
            group["0"] = np.full((2, 2), i + 1, dtype=np.float32)
            group["1"] = np.zeros(2, dtype=np.float32)
    return write_keras(
        path,
        [
            ("metadata.json", b'{"keras_version": "3.5.0"}'),
            ("config.json", json.dumps(config).encode()),
            ("model.weights.h5", buffer.getvalue()),
        ],
    )


def large_sparse_weights_h5(path: Path, rows: int, cols: int, dense_rows: int) -> Path:
    """A `.weights.h5` whose one Dense kernel (rows x cols float32) is zero past `dense_rows`
    rows, stored gzip-compressed in row chunks: a file of a few MB declaring a huge tensor.
    Written slab by slab, so making it needs no memory of the tensor's size."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        group = f.create_group("layers/dense/vars")
        group.attrs["name"] = "big"
        step = max(1, (8 << 20) // (cols * 4))
        kernel = group.create_dataset(
            "0", (rows, cols), np.float32, chunks=(min(step, rows), cols), compression="gzip"
        )
        for start in range(0, rows, step):
            stop = min(start + step, rows)
            block = np.zeros((stop - start, cols), np.float32)
            live = max(0, min(stop, dense_rows) - start)
            block[:live] = rng.normal(size=(live, cols)).astype(np.float32)
            kernel[start:stop] = block
        group["1"] = np.zeros(cols, np.float32)
    return path
