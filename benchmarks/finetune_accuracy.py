"""Held-out accuracy of pruned digits models: one-shot, and fine-tuned by each method, over seeds.

For the digits MLP (`sample_models/mlp.keras`) and the small digits CNN (`cnn.keras`) at
80/90/95% sparsity, prints one table: test accuracy of the one-shot prune and of each fine-tuning
variant (mean, spread and minimum over `--seeds`; one seed's figure is mostly noise: the test
split has 360 images, one image = 0.28 points), the epochs run and the median seconds per epoch.
Training sees only the training split; accuracy is measured on the test split, which no run
trains or selects on.

A variant is a method with optional settings, `method[:key=value/key=value...]`:
  lr=F     learning rate as a fraction of the file's own (default 1: the trainer's default)
  end=F    the schedule ends at this fraction of all steps (default: the trainer's)
  val=F    the validation fraction the trainer holds out of the training split
  data=    split: the training split; the trainer holds out its validation split (default)
           all:   train on the whole training split, keep the final weights (no --restore-best;
                  what TFMOT does; the 'refit on all data' protocol)
           held:  the same seeded split --method mask makes, given to the trainer as its
                  validation data, so every variant trains on exactly the same samples
So `mask` vs `tfmot:data=held` compares the two trainers on identical training samples, and
`mask:data=all` vs `tfmot` on the whole training split.

    python benchmarks/finetune_accuracy.py [--epochs 30] [--seeds 0,1,2]
        [--variants mask,tfmot,tfmot:data=held] [--models mlp,cnn] [--targets 0.8,0.9,0.95]
        [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from harness import REPO

from sparseprune.data_sources import split_validation
from sparseprune.datasets import Dataset
from sparseprune.numeric.schedule import VALIDATION_SPLIT, TrainSpec
from sparseprune.prune import prune_model
from sparseprune.prune.recipes import PruneSpec

DATA = REPO / "sample_models" / "digits.npz"
MODELS = {"mlp": REPO / "sample_models" / "mlp.keras", "cnn": REPO / "sample_models" / "cnn.keras"}
KEYS = {"lr": float, "end": float, "val": float, "data": str}


def test_accuracy(path: Path) -> float:
    """Accuracy on the held-out digits split, computed from predictions with numpy."""
    import keras

    with np.load(DATA) as data:
        x, y = data["x_test"], data["y_test"]
    model = keras.models.load_model(path, compile=False)
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))


def parse_variant(text: str) -> tuple[str, dict]:
    method, _, rest = text.partition(":")
    settings: dict = {"data": "split"}
    for item in filter(None, rest.split("/")):
        key, _, value = item.partition("=")
        if key not in KEYS:
            raise SystemExit(f"unknown variant setting {key!r} in {text!r}")
        settings[key] = KEYS[key](value)
    if settings["data"] not in ("split", "all", "held"):
        raise SystemExit(f"data= must be split, all or held in {text!r}")
    return method, settings


def training_file(scratch: Path, mode: str, split: float, seed: int) -> tuple[Path, int]:
    """The data file a variant trains on, and how many samples it trains on."""
    with np.load(DATA) as data:
        x, y = data["x_train"], data["y_train"]
    path = scratch / f"train-{mode}-{split:g}-{seed}.npz"
    if mode == "split":
        np.savez(path, x=x, y=y)
        return path, len(x) - math.ceil(len(x) * split)
    if mode == "all":
        np.savez(path, x=x, y=y, x_val=x, y_val=y)
        return path, len(x)
    held = split_validation(Dataset(x, y, None, None, str(DATA)), split, seed)
    np.savez(path, x=held.x, y=held.y, x_val=held.x_val, y_val=held.y_val)
    return path, len(held.x)


def total_samples() -> int:
    with np.load(DATA) as data:
        return len(data["x_train"])


def train_spec(
    model: Path, method: str, settings: dict, epochs: int, seed: int, scratch: Path
) -> TrainSpec:
    from sparseprune.keras_ops.compile import DEFAULT_LR, saved_settings

    split = settings.get("val", VALIDATION_SPLIT)
    data, samples = training_file(scratch, settings["data"], split, seed)
    if method == "tfmot" and settings["data"] == "split":
        samples = total_samples()  # the TFMOT bridge holds nothing out
    options: dict = {"validation_split": split, "seed": seed}
    if "lr" in settings:
        options["lr"] = settings["lr"] * (saved_settings(str(model))["learning_rate"] or DEFAULT_LR)
    if "end" in settings:
        steps = epochs * -(-samples // 32)
        options["end_step"] = max(1, round(settings["end"] * steps))
    if settings["data"] == "all":
        options["restore_best"] = False
    return TrainSpec(data=str(data), epochs=epochs, **options)


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


def summary(runs: list[dict]) -> dict:
    accuracies = [r["accuracy"] for r in runs]
    seconds = [r["seconds_per_epoch"] for r in runs if r["seconds_per_epoch"] is not None]
    return {
        "mean": statistics.mean(accuracies),
        "sd": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "min": min(accuracies),
        "per_seed": accuracies,
        "restored_epochs": [r["restored_epoch"] for r in runs],
        "epochs": runs[0]["epochs"],
        "seconds_per_epoch": statistics.median(seconds) if seconds else None,
        "checks_passed": all(r["checks_passed"] for r in runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--variants", default="mask,tfmot,tfmot:data=held")
    parser.add_argument("--seeds", default="0,1,2", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--targets", default="0.8,0.9,0.95")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    targets = [float(t) for t in args.targets.split(",")]
    variants = args.variants.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        for name in args.models.split(","):
            model = MODELS[name]
            dense = test_accuracy(model)
            for target in targets:
                row: dict = {"model": name, "target": target, "dense": dense}
                row["one_shot"] = run(model, "mask", target, None, scratch / "o.keras")["accuracy"]
                for variant in variants:
                    method, settings = parse_variant(variant)
                    runs = []
                    for seed in args.seeds:
                        spec = train_spec(model, method, settings, args.epochs, seed, scratch)
                        runs.append(run(model, method, target, spec, scratch / "t.keras"))
                        print(json.dumps({"model": name, "target": target, "variant": variant,
                                          "seed": seed, **runs[-1]}),
                              file=sys.stderr, flush=True)  # fmt: skip
                    row[variant] = summary(runs)
                rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print_table(rows, variants, args.seeds)
    return 0


def print_table(rows: list[dict], variants: list[str], seeds: list[int]) -> None:
    print(f"test accuracy, mean +- sd (min) over seeds {','.join(map(str, seeds))}")
    head = f"{'model':<5} {'sparsity':>8} {'dense':>7} {'one-shot':>8}"
    head += "".join(f" {v:>24} {'s/ep':>6}" for v in variants)
    print(head)
    for r in rows:
        line = f"{r['model']:<5} {r['target']:>8.0%} {r['dense']:>7.2%} {r['one_shot']:>8.2%}"
        for v in variants:
            c = r[v]
            cell = f"{c['mean']:.2%} +-{c['sd'] * 100:.2f} ({c['min']:.2%})"
            line += f" {cell:>24} {c['seconds_per_epoch'] or 0.0:>6.3f}"
        print(line)


if __name__ == "__main__":
    sys.exit(main())
