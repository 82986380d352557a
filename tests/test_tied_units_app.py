"""Tied units follow the schedule on a real keras.applications graph (MobileNetV2, weights=None).

One TensorFlow subprocess runs `prune_model --structure units --layers '_project$' --epochs 2`
on MobileNetV2 (alpha 0.35, 32x32 inputs, 10 classes) with a handful of random images (only the
block projections are pruned, which keeps the train step small). Its residual Adds tie the
block projections in five groups, known from the architecture (not from sparseprune's graph
code): each group must end with the same zeroed channels in every member, half of them, while
the weight sparsity stays below the target after the first epoch and reaches it after the
second; shrink removes those channels from every member and the shrunk file loads and predicts.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_tied_units import report_of

SCRIPT = r"""
import json, sys
from pathlib import Path
import numpy as np
import keras
from sparseprune.numeric.schedule import TrainSpec
from sparseprune.prune import prune_model, structured
from sparseprune.prune.recipes import PruneSpec

out = Path(sys.argv[1])
model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), weights=None,
                                       classes=10)
model.save(out / "mobilenet.keras")
rng = np.random.default_rng(0)
x = rng.normal(size=(16, 32, 32, 3)).astype("float32")
np.savez(out / "data.npz", x=x, y=rng.integers(0, 10, 16))
zeroed = {}
shrink_into = structured.shrink_into
def spy(source, target, force, label):  # the zeroed model, before shrink removes units
    loaded = keras.models.load_model(source, compile=False)
    zeroed["kernels"] = {l.name: l.get_weights()[0] for l in loaded.layers
                         if l.name.endswith("_project")}
    return shrink_into(source, target, force, label)
structured.shrink_into = spy
seen = []
# 12 training images in batches of 4: 3 steps per epoch, the schedule ends at step 4 (epoch 2)
train = TrainSpec(data=str(out / "data.npz"), epochs=2, batch_size=4, end_step=4, frequency=1,
                  optimizer="sgd", loss="sparse_categorical_crossentropy",
                  validation_split=0.25)
result = prune_model(out / "mobilenet.keras", out / "pruned.keras",
                     PruneSpec(target=0.5, structure="units", layers="_project$"), train=train,
                     on_epoch=lambda u: seen.append(u["sparsity"]))
written = keras.models.load_model(out / "pruned.keras", compile=False)
report = {
    "sparsity_per_epoch": seen,
    "failures": result.failures,
    "zero": {name: [int(u) for u in np.flatnonzero((k == 0).all(axis=(0, 1, 2)))]
             for name, k in zeroed["kernels"].items()},
    "channels": {name: int(k.shape[-1]) for name, k in zeroed["kernels"].items()},
    "filters_after_shrink": {l.name: int(l.filters) for l in written.layers
                             if l.name.endswith("_project")},
    "predictions": written.predict(x[:4], verbose=0).tolist(),
}
print("REPORT" + json.dumps(report))
"""

# MobileNetV2's residual Adds (block_2_add, block_4_add, ...) tie these projections' channels.
GROUPS = [(1, 2), (3, 4, 5), (6, 7, 8, 9), (10, 11, 12), (13, 14, 15)]


@pytest.fixture(scope="module")
def report(tmp_path_factory, needs_tensorflow) -> dict:
    return report_of(SCRIPT, tmp_path_factory.mktemp("tied_app"), "tensorflow")


def test_mobilenet_follows_the_schedule(report: dict) -> None:
    assert not report["failures"], report["failures"]
    first, last = report["sparsity_per_epoch"]
    assert 0 < first < 0.5  # below the target after epoch 1: not fixed at the one-shot choice
    assert last == pytest.approx(0.5, abs=0.01)


def test_mobilenet_residual_groups_share_their_zeroed_channels(report: dict) -> None:
    zero, channels = report["zero"], report["channels"]
    for group in GROUPS:
        names = [f"block_{b}_project" for b in group]
        assert len(zero[names[0]]) == channels[names[0]] // 2, names
        assert all(zero[name] == zero[names[0]] for name in names), names


def test_mobilenet_shrinks_tied_channels_and_predicts(report: dict) -> None:
    after, channels = report["filters_after_shrink"], report["channels"]
    for group in GROUPS:  # a channel dead in every member of its group goes from all of them
        for name in [f"block_{b}_project" for b in group]:
            assert after[name] == channels[name] - len(report["zero"][name]), name
    predictions = np.asarray(report["predictions"])
    assert predictions.shape == (4, 10)
    assert np.allclose(predictions.sum(axis=1), 1.0, atol=1e-5)  # softmax rows
