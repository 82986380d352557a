"""Accuracy cost of 4x1 blocks: the digits MLP fine-tuned at 90%, blocks vs single weights.

Measured in one run on `sample_models/mlp.keras` and `sample_models/digits.npz`, same schedule,
seed and epochs for both: test accuracy of dense, one-shot and fine-tuned 90% unstructured, and
one-shot and fine-tuned 90% with `--block 4x1`. Goal (issue 12): fine-tuned blocks within 1 point
of fine-tuned unstructured.

    python benchmarks/block_accuracy.py [--epochs 40] [--methods mask,tfmot] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from finetune_accuracy import DATA, MODEL, test_accuracy
from harness import table

from sparseprune.numeric.schedule import TrainSpec
from sparseprune.prune import prune_model
from sparseprune.prune.recipes import PruneSpec

TARGET = 0.9
GOAL = 0.01  # fine-tuned blocks may lose at most 1 point against fine-tuned unstructured
PATTERNS = {"unstructured": None, "4x1 blocks": (4, 1)}


def run(method: str, block, epochs: int | None, out: Path) -> dict:
    train = TrainSpec(data=str(DATA), epochs=epochs) if epochs else None
    spec = PruneSpec(target=TARGET, block=block)
    result = prune_model(MODEL, out, spec, force=True, method=method, train=train)
    return {"accuracy": test_accuracy(out), "checks_passed": not result.failures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--methods", default="mask")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows, failures = [], []
    dense = test_accuracy(MODEL)
    with tempfile.TemporaryDirectory() as scratch:
        for method in args.methods.split(","):
            tuned = {}
            for label, block in PATTERNS.items():
                for epochs in (None, args.epochs):
                    out = Path(scratch) / f"{method}-{label[:3]}-{epochs}.keras"
                    row = run(method, block, epochs, out)
                    kind = f"fine-tuned {epochs} epochs" if epochs else "one-shot"
                    rows.append({"method": method, "pattern": label, "kind": kind, **row})
                    if epochs:
                        tuned[label] = row["accuracy"]
            drop = tuned["unstructured"] - tuned["4x1 blocks"]
            if drop > GOAL:
                failures.append(f"{method}: blocks {drop * 100:.1f} points below unstructured")
    if args.json:
        print(json.dumps({"dense": dense, "rows": rows, "failures": failures}, indent=2))
    else:
        print(f"dense test accuracy {dense:.4f}; every row at {TARGET:.0%}")
        columns = [(t, "{}") for t in ("method", "pattern", "kind", "accuracy", "checks")]
        body = [
            (r["method"], r["pattern"], r["kind"], f"{r['accuracy']:.4f}", r["checks_passed"])
            for r in rows
        ]
        print(table(columns, body, left_columns=3))
        print("\n".join(f"GOAL MISSED: {f}" for f in failures) or "goal met")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
