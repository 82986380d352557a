"""Units tied across kernels follow the pruning schedule (`prune --structure units --epochs N`).

ONE subprocess per backend (TensorFlow, JAX, PyTorch). Expectations are computed there with plain
numpy (unit L2 norms, root mean square per class, a stable argsort), never with sparseprune's
mask code:
- `tied_units` rules mask the classes with the lowest scores in every member at once, for
  shuffled class ids, a blocked class and a transposed convolution (units on axis -2);
- where the one-shot greedy skips (a layer-scope group whose last-unit guard binds; a global unit
  pool whose caps bind), the in-graph choice is the same greedy's, with tied, transposed and
  single kernels in one global pool;
- through `prune_model`, a residual Add's producers are pruned gradually (below the target after
  the first epoch, as the schedule says, not fixed from step 0) and end with identical zeroed
  units in every member, in layer and in global scope.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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

# 2. The greedy rules with skips, checked after one training step against a plain numpy greedy:
# a layer-scope group whose last-unit guard binds (member g2 holds classes 0 and 1 only, both
# the weakest), and global unit pools with tied, transposed and single kernels, with caps that
# bind (pool p) and without caps (pool q).
def greedy(entries, count, room, by_units):
    # entries: (score, [(member, [units])]) in pool order; taken while less than `count` is
    # taken (units, or entries when not by_units), skipping one that overfills a member's room
    left, taken, chosen = dict(room), 0, []
    for e in sorted(range(len(entries)), key=lambda e: (entries[e][0], e)):
        score, parts = entries[e]
        if taken >= count or not np.isfinite(score):
            break
        if any(left.get(m, np.inf) < len(u) for m, u in parts):
            continue
        for m, u in parts:
            left[m] = left.get(m, np.inf) - len(u)
        taken += sum(len(u) for _, u in parts) if by_units else 1
        chosen.append(e)
    return chosen

def unit_view(kernel, axis):
    moved = np.moveaxis(kernel, axis, -1)
    return moved.reshape(-1, moved.shape[-1]).astype(np.float64)

i = keras.Input((4, 4, 3))
spec = {  # name: (filters, pool, unit axis, classes, blocked, cap)
    "g1": (6, "g", -1, (0, 1, 2, 3, 4, 5), (), None),
    "g2": (2, "g", -1, (0, 1), (), None),
}
for pool_name, caps in (("p", {"u": 0.2, "a": 0.34}), ("q", {})):
    spec.update({
        f"u{pool_name}": (5, pool_name, -1, None, (), caps.get("u")),
        f"a{pool_name}": (6, pool_name, -1, (0, 1, 2, 3, 4, 5), (2,), caps.get("a")),
        f"b{pool_name}": (6, pool_name, -1, (5, 4, 3, 2, 1, 0), (2,), None),
        f"t{pool_name}": (4, pool_name, -2, None, (), None),
    })
outputs = []
for name, (filters, _, axis, _, _, _) in spec.items():
    layer = L.Conv2DTranspose if axis == -2 else L.Conv2D
    outputs.append(L.GlobalAveragePooling2D()(layer(filters, 1, name=name)(i)))
model = keras.Model(i, L.Dense(2, name="head")(L.Concatenate()(outputs)))
def wrap(layer):
    if layer.name not in spec:
        return layer
    filters, pool_name, axis, ids, blocked, cap = spec[layer.name]
    schedule = ConstantSparsity(0.5, 0, frequency=1)
    if pool_name == "g":
        rule = WeightRule("tied_units", schedule=schedule, pool="g", classes=ids)
    else:
        tie = {} if ids is None else {"classes": ids, "blocked": blocked, "group": 0}
        rule = WeightRule("global_units", schedule=schedule, pool=pool_name, cap=cap,
                          unit_axis=axis, **tie)
    return PruneLowMagnitude(layer, rules={"kernel": rule})
pruned = keras.models.clone_model(model, clone_function=wrap)
units = {}
for layer in pruned.layers:
    if isinstance(layer, PruneLowMagnitude):
        name = layer.layer.name
        kernel = rng.normal(size=layer.layer.kernel.shape).astype("float32")
        if name == "g2":
            kernel *= 0.01
        if name == "g1":
            kernel[..., :2] *= 0.01
        layer.layer.kernel.assign(kernel)
        units[name] = unit_view(kernel, spec[name][2])
pruned.compile("sgd", "sparse_categorical_crossentropy")
pruned.train_on_batch(rng.normal(size=(2, 4, 4, 3)).astype("float32"), np.array([0, 1]))
expected = {name: [] for name in spec}
# the guarded group: classes by RMS, 3 of 6 classes at 0.5, neither member may lose every unit
rms = [np.sqrt(np.mean([(units[m][:, spec[m][3].index(c)] ** 2).sum()
                        for m in ("g1", "g2") if c in spec[m][3]])) for c in range(6)]
entries = [(rms[c], [(m, [spec[m][3].index(c)]) for m in ("g1", "g2") if c in spec[m][3]])
           for c in range(6)]
for e in greedy(entries, 3, {"g1": 5, "g2": 1}, by_units=False):
    for m, u in entries[e][1]:
        expected[m] += u
for pool_name in ("p", "q"):
    members = [m for m in spec if spec[m][1] == pool_name]
    tied = [m for m in members if spec[m][3] is not None]
    entries = []
    for m in members:
        if m in tied and m == tied[0]:
            for c in range(6):
                parts = [(t, [spec[t][3].index(c)]) for t in tied]
                score = np.sqrt(np.mean([(units[t][:, u] ** 2).sum() for t, (u,) in parts]))
                entries.append((np.inf if c in spec[m][4] else score, parts))
        elif m not in tied:
            for unit in range(units[m].shape[1]):
                entries.append((np.sqrt((units[m][:, unit] ** 2).sum()), [(m, [unit])]))
    total = sum(units[m].shape[1] for m in members)
    room = {m: units[m].shape[1] - int(np.round(units[m].shape[1] * (1 - spec[m][5])))
            for m in members if spec[m][5] is not None}
    for e in greedy(entries, total - int(np.round(total * 0.5)), room, by_units=True):
        for m, u in entries[e][1]:
            expected[m] += u
report["greedy"] = {}
for layer in pruned.layers:
    if isinstance(layer, PruneLowMagnitude):
        name = layer.layer.name
        mask = unit_view(keras.ops.convert_to_numpy(layer.pairs[0][1].value), spec[name][2])
        report["greedy"][name] = {
            "whole_units": bool(((mask == 0).all(axis=0) | (mask == 1).all(axis=0)).all()),
            "zero": [int(u) for u in np.flatnonzero((mask == 0).all(axis=0))],
            "expected": sorted(int(u) for u in expected[name]),
        }

# 3. Through prune_model: a residual Add's producers, pruned while training (layer scope, and
# global scope where the tied pair competes with the untied inner layer's single units).
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
    train = TrainSpec(data=str(out / "data.npz"), epochs=3, batch_size=16, end_step=12,
                      frequency=1, loss="sparse_categorical_crossentropy")
    for scope, exclude in (("layer", "inner"), ("global", None)):
        seen = []
        spec = PruneSpec(target=0.5, structure="units", exclude=exclude, scope=scope)
        result = prune_model(source, out / f"pruned_{scope}.keras", spec, train=train,
                             on_epoch=lambda u: seen.append(u["sparsity"]))
        written = keras.models.load_model(out / f"pruned_{scope}.keras", compile=False)
        report[f"cli_{scope}"] = {
            "sparsity_per_epoch": seen,
            "failures": result.failures,
            "zero_units": {name: [int(u) for u in np.flatnonzero((k == 0).all(axis=0))]
                           for name, k in zeroed.items()},
            "units_after_shrink": {l.name: int(l.units) for l in written.layers
                                    if isinstance(l, L.Dense)},
            "predicts": list(written.predict(x[:2], verbose=0).shape),
        }
print("REPORT" + json.dumps(report))
"""


def report_of(script: str, out: Path, backend: str) -> dict:
    """Run `script` on `backend` in a subprocess; the JSON it prints after REPORT."""
    run = subprocess.run(
        [sys.executable, "-c", script, str(out)],
        env={**ENV, "KERAS_BACKEND": backend},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.split("REPORT", 1)[1])


@pytest.fixture(scope="module", params=["tensorflow", "jax", "torch"])
def report(request, tmp_path_factory, needs_tensorflow) -> dict:
    return report_of(SCRIPT, tmp_path_factory.mktemp(f"tied_{request.param}"), request.param)


def test_tied_rule_prunes_the_lowest_classes_in_every_member(report: dict) -> None:
    masks = report["rule"]
    for name, got in masks.items():
        assert got["whole_units"], name
        assert got["zero"] == got["expected"], name
        assert len(got["zero"]) == 3, name


def test_greedy_rules_with_guard_and_caps_match_numpy(report: dict) -> None:
    masks = report["greedy"]
    assert len(masks["g2"]["expected"]) == 1  # the guard binds: g2 keeps one of its 2 units
    assert masks["tp"]["expected"] == [0, 1, 2, 3]  # the caps bind: the pool fills up with t
    for name, got in masks.items():
        assert got["whole_units"], name
        assert got["zero"] == got["expected"], name


def test_residual_producers_follow_the_schedule_and_stay_tied(report: dict) -> None:
    if "cli_layer" not in report:
        pytest.skip("prune_model trains on the TensorFlow backend in this check")
    got = report["cli_layer"]
    assert not got["failures"], got["failures"]
    first, *_, last = got["sparsity_per_epoch"]
    assert 0 < first < 0.5  # only the tied pair is pruned: fixed masks would be at 0.5 here
    assert last == pytest.approx(0.5)
    zero = got["zero_units"]
    assert len(zero["stem"]) == 4 and zero["stem"] == zero["branch"]
    # stem and branch lose the same 4 channels, so shrink removes them from both
    assert got["units_after_shrink"]["stem"] == got["units_after_shrink"]["branch"] == 4


def test_global_scope_tied_units_follow_the_schedule(report: dict) -> None:
    if "cli_global" not in report:
        pytest.skip("prune_model trains on the TensorFlow backend in this check")
    got = report["cli_global"]
    assert not got["failures"], got["failures"]  # includes the pool's count and the re-read
    first, *_, last = got["sparsity_per_epoch"]
    assert 0 < first < last  # held at the one-shot choice, the first epoch would end at `last`
    zero = got["zero_units"]
    assert zero["stem"] == zero["branch"]  # a tied class goes from both members
    # 24 pooled units at 0.5: 12, or 13 when a 2-unit class is taken at 11
    assert 12 <= len(zero["stem"]) * 2 + len(zero["inner"]) <= 13
    after = got["units_after_shrink"]
    assert after["stem"] == after["branch"] == 8 - len(zero["stem"])
    assert got["predicts"] == [2, 3]
