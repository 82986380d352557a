"""Build the small sample models shipped in ``sample_models/``.

Run from the repository root::

    python sample_models/make_samples.py            # writes next to this script
    python sample_models/make_samples.py --out DIR  # writes somewhere else

The models are trained on scikit-learn's bundled ``load_digits`` (8x8 images, 10 classes; nothing is
downloaded). Seeds are fixed and TensorFlow op determinism is on, so running it twice produces the
same weights (the files' bytes still differ: ``.keras`` archives carry a save date).

Outputs:

- ``digits.npz``: ``x_train``, ``y_train``, ``x_test``, ``y_test`` (float32 pixels scaled to
  [0, 1], shape (n, 64); int64 labels; stratified 80/20 split, ``random_state=0``), plus
  ``x``/``y`` (= train) and ``x_val``/``y_val`` (= test) for fine-tuning commands.
- ``mlp.keras``: Keras 3 MLP 64 -> hidden1(128) -> hidden2(64) -> head(10), Adam state included.
- ``mlp.h5``: the same trained model, legacy HDF5 written by Keras 3.
- ``mlp.weights.h5``: the same model's Keras 3 weights-only file.
- ``cnn.keras``: Keras 3 CNN conv1 -> bn1 -> max pooling -> conv2 -> global average pooling -> head.
  Its first layer reshapes the flat 64 pixels to 8x8x1, so it takes the same ``digits.npz`` arrays.
- ``tf_keras_mlp.h5``: the MLP built and trained with tf_keras, legacy HDF5 written by tf_keras.
- ``l1_mlp.keras``: the MLP trained with a proximal L1 step (soft thresholding after every optimizer
  update), so that over 90% of its kernel weights are exactly zero.

Takes about a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf
import tf_keras
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
SEED = 0
BATCH_SIZE = 32
MLP_EPOCHS = 30
CNN_EPOCHS = 20
L1_EPOCHS = 50
LEARNING_RATE = 1e-3
# Soft-threshold strength: after every Adam step each kernel weight moves towards 0 by
# LEARNING_RATE * L1_LAMBDA and stops there. 0.6 gives ~95% zeros at ~92% test accuracy; at 1.0
# accuracy collapses.
L1_LAMBDA = 0.6
NEAR_ZERO = 1e-15
MAX_FILE_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class Digits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def seed_everything() -> None:
    """Reset every random generator, so each model is reproducible on its own."""
    random.seed(SEED)
    np.random.seed(SEED)
    keras.utils.set_random_seed(SEED)
    tf_keras.utils.set_random_seed(SEED)


def load_data() -> Digits:
    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=SEED
    )
    return Digits(x_train, y_train, x_test, y_test)


def save_digits(data: Digits, path: Path) -> None:
    np.savez_compressed(
        path,
        x_train=data.x_train,
        y_train=data.y_train,
        x_test=data.x_test,
        y_test=data.y_test,
        x=data.x_train,
        y=data.y_train,
        x_val=data.x_test,
        y_val=data.y_test,
    )


# --------------------------------------------------------------------------- models


def build_mlp(k: ModuleType) -> Any:
    """The MLP, built with `k` = ``keras`` (Keras 3) or ``tf_keras`` (same API for this model)."""
    layers = k.layers
    return k.Sequential(
        [
            k.Input((64,), name="pixels"),
            layers.Dense(128, activation="relu", name="hidden1"),
            layers.Dense(64, activation="relu", name="hidden2"),
            layers.Dense(10, activation="softmax", name="head"),
        ],
        name="mlp",
    )


def build_cnn() -> keras.Model:
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((64,), name="pixels"),
            layers.Reshape((8, 8, 1), name="to_image"),
            layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            layers.BatchNormalization(name="bn1"),
            layers.MaxPooling2D(name="pool1"),
            layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            layers.GlobalAveragePooling2D(name="gap"),
            layers.Dense(10, activation="softmax", name="head"),
        ],
        name="cnn",
    )


def compile_model(model: Any, k: ModuleType) -> None:
    model.compile(
        optimizer=k.optimizers.Adam(learning_rate=LEARNING_RATE),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def train(model: Any, data: Digits, epochs: int, callbacks: list[Any] | None = None) -> None:
    model.fit(
        data.x_train,
        data.y_train,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        verbose=0,
        callbacks=callbacks,
    )


def accuracy(model: Any, data: Digits) -> float:
    probs = model.predict(data.x_test, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(probs, axis=1) == data.y_test))


class SoftThreshold(keras.callbacks.Callback):
    """Proximal L1 step: after each batch, w <- sign(w) * max(|w| - threshold, 0) on kernels.

    A plain L1 penalty with Adam leaves weights hovering around zero; this step makes them exact
    zeros (the proximal operator of ``threshold * |w|``).
    """

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        for layer in self.model.layers:
            kernel = getattr(layer, "kernel", None)
            if kernel is None:
                continue
            w = keras.ops.convert_to_numpy(kernel)
            kernel.assign(np.sign(w) * np.maximum(np.abs(w) - self.threshold, 0.0))


def kernel_sparsity(model: keras.Model) -> float:
    """Fraction of all Dense kernel weights with |w| <= 1e-15."""
    kernels = [keras.ops.convert_to_numpy(layer.kernel).ravel() for layer in model.layers]
    flat = np.concatenate(kernels)
    return float(np.mean(np.abs(flat) <= NEAR_ZERO))


# --------------------------------------------------------------------------- steps


def report(path: Path, acc: float, extra: str = "") -> None:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise SystemExit(f"{path.name} is {size} bytes, over the 2 MB limit")
    print(f"{path.name:20s} {size / 1024:8.1f} KiB  test accuracy {acc:.4f}{extra}")


def make_mlp(data: Digits, out: Path) -> None:
    seed_everything()
    model = build_mlp(keras)
    compile_model(model, keras)
    train(model, data, MLP_EPOCHS)
    model.save(out / "mlp.keras")
    model.save(out / "mlp.h5")
    model.save_weights(out / "mlp.weights.h5")

    report(out / "mlp.keras", accuracy(keras.models.load_model(out / "mlp.keras"), data))
    report(out / "mlp.h5", accuracy(keras.models.load_model(out / "mlp.h5", compile=False), data))
    fresh = build_mlp(keras)
    compile_model(fresh, keras)
    fresh.load_weights(out / "mlp.weights.h5")
    report(out / "mlp.weights.h5", accuracy(fresh, data))


def make_cnn(data: Digits, out: Path) -> None:
    seed_everything()
    model = build_cnn()
    compile_model(model, keras)
    train(model, data, CNN_EPOCHS)
    model.save(out / "cnn.keras")
    report(out / "cnn.keras", accuracy(keras.models.load_model(out / "cnn.keras"), data))


def make_tf_keras_mlp(data: Digits, out: Path) -> None:
    seed_everything()
    model = build_mlp(tf_keras)
    compile_model(model, tf_keras)
    train(model, data, MLP_EPOCHS)
    path = out / "tf_keras_mlp.h5"
    model.save(path)
    report(path, accuracy(tf_keras.models.load_model(path), data))


def make_l1_mlp(data: Digits, out: Path) -> None:
    seed_everything()
    model = build_mlp(keras)
    compile_model(model, keras)
    train(model, data, L1_EPOCHS, callbacks=[SoftThreshold(LEARNING_RATE * L1_LAMBDA)])
    sparsity = kernel_sparsity(model)
    if sparsity <= 0.90:
        raise SystemExit(f"l1_mlp: only {sparsity:.1%} of kernel weights are near zero")
    path = out / "l1_mlp.keras"
    model.save(path)
    report(path, accuracy(keras.models.load_model(path), data), f"  kernel zeros {sparsity:.2%}")


def quiet() -> None:
    warnings.filterwarnings("ignore")
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the sparseprune sample models.")
    parser.add_argument(
        "--out", type=Path, default=HERE, help="output folder (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    quiet()
    tf.config.experimental.enable_op_determinism()
    start = time.monotonic()

    data = load_data()
    save_digits(data, out / "digits.npz")
    print(f"{'digits.npz':20s} {(out / 'digits.npz').stat().st_size / 1024:8.1f} KiB")
    make_mlp(data, out)
    make_cnn(data, out)
    make_tf_keras_mlp(data, out)
    make_l1_mlp(data, out)
    print(f"done in {time.monotonic() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
