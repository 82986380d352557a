"""Units tied across kernels follow the pruning schedule (`prune --structure units --epochs N`).

ONE subprocess per backend (TensorFlow, JAX, PyTorch). Expectations are computed there with plain
numpy (unit L2 norms, root mean square per class, a stable argsort), never with sparseprune's
mask code:
- `tied_units` rules mask the classes with the lowest scores in every member at once, for
  shuffled class ids, a blocked class and a transposed convolution (units on axis -2);
- through `prune_model`, a residual Add's producers are pruned gradually (below the target after
  the first epoch, as the schedule says, not fixed from step 0) and end with identical zeroed
  units in every member.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ENV = {
    **os.environ,
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "CUDA_VISIBLE_DEVICES": "",
    "OMP_NUM_THREADS": "1",
}

SCRIPT = r"""
import json, sys
from pathlib import Path
import numpy as np
import keras
L = keras.layers
from sparseprune.keras import ConstantSparsity
from sparseprune.keras.rules import WeightRule
from sparseprune.keras.wrapper import PruneLowMagnitude

out = Path(sys.argv[1])
rng = np.random.default_rng(0)
keras.utils.set_random_seed(0)
report = {}

# 1. The rule itself: three members of one group, checked after one training step.
i = keras.Input((4, 4, 3))
a = L.Conv2D(6, 1, name="a")(i)
b = L.Conv2D(6, 1, name="b")(i)
t = L.Conv2DTranspose(6, 1, name="t")(i)
h = L.GlobalAveragePooling2D()(L.Add()([a, b, t]))
model = keras.Model(i, L.Dense(2, name="head")(h))
classes = {"a": (0, 1, 2, 3, 4, 5), "b": (5, 4, 3, 2, 1, 0), "t": (2, 0, 1, 5, 3, 4)}
axes = {"a": -1, "b": -1, "t": -2}
blocked = (1,)
def wrap(layer):
    if layer.name not in classes:
        return layer
    rule = WeightRule("tied_units", schedule=ConstantSparsity(0.5, 0, frequency=1),
                      pool="group", classes=classes[layer.name], blocked=blocked,
                      unit_axis=axes[layer.name])
    return PruneLowMagnitude(layer, rules={"kernel": rule})
pruned = keras.models.clone_model(model, clone_function=wrap)
kernels = {}
for layer in pruned.layers:
    if layer.name.startswith("prune_low_magnitude_"):
        name = layer.layer.name
        kernel = rng.normal(size=layer.layer.kernel.shape).astype("float32")
        layer.layer.kernel.assign(kernel)
        kernels[name] = kernel
pruned.compile("sgd", "sparse_categorical_crossentropy")
pruned.train_on_batch(rng.normal(size=(2, 4, 4, 3)).astype("float32"), np.array([0, 1]))
squares, sizes = np.zeros(6), np.zeros(6)
for name, kernel in kernels.items():
    units = np.moveaxis(kernel, axes[name], -1).reshape(-1, 6).astype(np.float64)
    for unit, c in enumerate(classes[name]):
        squares[c] += (units[:, unit] ** 2).sum()
        sizes[c] += 1
scores = np.sqrt(squares / sizes)
scores[list(blocked)] = np.inf
gone = set(np.argsort(scores, kind="stable")[:3].tolist())  # 6 classes at 0.5
masks = {}
for layer in pruned.layers:
    if layer.name.startswith("prune_low_magnitude_"):
        name = layer.layer.name
        mask = np.moveaxis(keras.ops.convert_to_numpy(layer.pairs[0][1].value), axes[name], -1)
        flat = mask.reshape(-1, 6)
        whole = bool(((flat == 0).all(axis=0) | (flat == 1).all(axis=0)).all())
        zero = [int(u) for u in np.flatnonzero((flat == 0).all(axis=0))]
        want = sorted(u for u, c in enumerate(classes[name]) if c in gone)
        masks[name] = {"whole_units": whole, "zero": zero, "expected": want}
report["rule"] = masks

# 2. Through prune_model: a residual Add's producers, pruned while training.
if keras.backend.backend() == "tensorflow":
    from sparseprune.numeric.schedule import TrainSpec
    from sparseprune.prune import prune_model
    from sparseprune.prune.recipes import PruneSpec
    i = keras.Input((6,))
    s = L.Dense(8, name="stem")(i)
    r = L.Dense(8, name="branch")(L.Dense(8, activation="relu", name="inner")(s))
    h = L.ReLU()(L.Add(name="add")([s, r]))
    model = keras.Model(i, L.Dense(3, name="head")(h))
    source = out / "residual.keras"
    model.save(source)
    x = rng.normal(size=(96, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0)
    np.savez(out / "data.npz", x=x, y=y)
    from sparseprune.prune import structured
    zeroed = {}
    shrink_into = structured.shrink_into
    def spy(source, target, force, label):  # the zeroed model, before shrink removes units
        zeroed.update({l.name: l.get_weights()[0] for l in
                       keras.models.load_model(source, compile=False).layers
                       if isinstance(l, L.Dense)})
        return shrink_into(source, target, force, label)
    structured.shrink_into = spy
    seen = []
    train = TrainSpec(data=str(out / "data.npz"), epochs=3, batch_size=16, end_step=12,
                      frequency=1, loss="sparse_categorical_crossentropy")
    spec = PruneSpec(target=0.5, structure="units", exclude="inner")
    result = prune_model(source, out / "pruned.keras", spec, train=train,
                         on_epoch=lambda u: seen.append(u["sparsity"]))
    written = keras.models.load_model(out / "pruned.keras", compile=False)
    report["cli"] = {
        "sparsity_per_epoch": seen,
        "failures": result.failures,
        "zero_units": {name: [int(u) for u in np.flatnonzero((k == 0).all(axis=0))]
                       for name, k in zeroed.items()},
        "units_after_shrink": {l.name: int(l.units) for l in written.layers
                                if isinstance(l, L.Dense)},
    }
print("REPORT" + json.dumps(report))
"""


@pytest.fixture(scope="module", params=["tensorflow", "jax", "torch"])
def report(request, tmp_path_factory, needs_tensorflow) -> dict:
    out = tmp_path_factory.mktemp(f"tied_{request.param}")
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out)],
        env={**ENV, "KERAS_BACKEND": request.param},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.split("REPORT", 1)[1])


def test_tied_rule_prunes_the_lowest_classes_in_every_member(report: dict) -> None:
    masks = report["rule"]
    for name, got in masks.items():
        assert got["whole_units"], name
        assert got["zero"] == got["expected"], name
        assert len(got["zero"]) == 3, name


def test_residual_producers_follow_the_schedule_and_stay_tied(report: dict) -> None:
    if "cli" not in report:
        pytest.skip("prune_model trains on the TensorFlow backend in this check")
    got = report["cli"]
    assert not got["failures"], got["failures"]
    first, *_, last = got["sparsity_per_epoch"]
    assert 0 < first < 0.5  # only the tied pair is pruned: fixed masks would be at 0.5 here
    assert last == pytest.approx(0.5)
    zero = got["zero_units"]
    assert len(zero["stem"]) == 4 and zero["stem"] == zero["branch"]
    # stem and branch lose the same 4 channels, so shrink removes them from both
    assert got["units_after_shrink"]["stem"] == got["units_after_shrink"]["branch"] == 4
