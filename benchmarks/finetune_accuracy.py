"""Held-out accuracy of pruned digits models: one-shot, and fine-tuned by each method.

For the digits MLP (`sample_models/mlp.keras`) and the small digits CNN (`cnn.keras`) at
80/90/95% sparsity, prints one table: test accuracy of the one-shot prune, of `prune --epochs`
with `--method mask` (sparseprune.keras) and with `--method tfmot`, the epochs run and the median
seconds per epoch. Training sees only the training split (the trainer holds out its own
validation split from it for --restore-best); accuracy is measured on the test split, which no
run trains or selects on.

    python benchmarks/finetune_accuracy.py [--epochs 30] [--methods mask,tfmot]
        [--models mlp,cnn] [--targets 0.8,0.9,0.95] [--lr 1e-4] [--json]

`--lr 1e-3,3e-4,1e-4` runs each fine-tuning once per learning rate (how the default was chosen);
`--validation-split 0.2,0.05` once per held-out fraction of the mask method (how much of its gap
to TFMOT is the 20% it does not train on).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from harness import REPO

from sparseprune.numeric.schedule import TrainSpec
from sparseprune.prune import prune_model
from sparseprune.prune.recipes import PruneSpec

DATA = REPO / "sample_models" / "digits.npz"
MODELS = {"mlp": REPO / "sample_models" / "mlp.keras", "cnn": REPO / "sample_models" / "cnn.keras"}


def test_accuracy(path: Path) -> float:
    """Accuracy on the held-out digits split, computed from predictions with numpy."""
    import keras

    with np.load(DATA) as data:
        x, y = data["x_test"], data["y_test"]
    model = keras.models.load_model(path, compile=False)
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))


def training_only(scratch: Path) -> Path:
    """The training split alone, so validation (for --restore-best) comes out of it."""
    path = scratch / "digits-train.npz"
    with np.load(DATA) as data:
        np.savez(path, x=data["x_train"], y=data["y_train"])
    return path


def run(model: Path, method: str, target: float, train: TrainSpec | None, out: Path) -> dict:
    result = prune_model(model, out, PruneSpec(target=target), force=True, method=method,
                         train=train)  # fmt: skip
    training = result.training or {}
    per_epoch = training.get("seconds_per_epoch") or []
    return {
        "accuracy": test_accuracy(out),
        "epochs": training.get("epochs", 0),
        "seconds_per_epoch": statistics.median(per_epoch[1:] or per_epoch) if per_epoch else None,
        "restored_epoch": (training.get("restored") or {}).get("epoch"),
        "checks_passed": not result.failures,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--methods", default="mask,tfmot")
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--targets", default="0.8,0.9,0.95")
    parser.add_argument("--lr", default=None, help="comma-separated; default: the trainer's")
    parser.add_argument(
        "--validation-split",
        default=None,
        help="comma-separated fractions --method mask holds out for --restore-best (default "
        "the trainer's 0.2); the TFMOT bridge trains on the whole training split either way",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    targets = [float(t) for t in args.targets.split(",")]
    rates = [float(r) for r in args.lr.split(",")] if args.lr else [None]
    splits = (
        [float(v) for v in args.validation_split.split(",")] if args.validation_split else [None]
    )
    rows = []
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        data = training_only(scratch)
        for name in args.models.split(","):
            model = MODELS[name]
            dense = test_accuracy(model)
            for target in targets:
                row = {"model": name, "target": target, "dense": dense}
                row["one_shot"] = run(model, "mask", target, None, scratch / "o.keras")["accuracy"]
                for method in args.methods.split(","):
                    for lr, split in itertools.product(
                        rates, splits if method == "mask" else [None]
                    ):
                        held_out = {} if split is None else {"validation_split": split}
                        spec = TrainSpec(data=str(data), epochs=args.epochs, lr=lr, **held_out)
                        key = method + ("" if lr is None else f"@{lr:g}")
                        key += "" if split is None else f" val{split:g}"
                        out = scratch / f"{key.replace(' ', '-')}.keras"
                        row[key] = run(model, method, target, spec, out)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    keys = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    head = f"{'model':<5} {'sparsity':>8} {'dense':>7} {'one-shot':>8}"
    head += "".join(f" {k:>14} {'ep':>3} {'s/ep':>6}" for k in keys)
    print(head)
    for r in rows:
        line = f"{r['model']:<5} {r['target']:>8.0%} {r['dense']:>7.2%} {r['one_shot']:>8.2%}"
        for k in keys:
            cell = r[k]
            seconds = cell["seconds_per_epoch"] or 0.0
            line += f" {cell['accuracy']:>14.2%} {cell['epochs']:>3} {seconds:>6.3f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
