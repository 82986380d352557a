"""Work bounded by the file, not by what it claims: peak memory and time on hostile-sized inputs.

    python benchmarks/bounded_work.py              # 4 GiB zero tensor, 4,000 layers, DAG (~5 min)
    python benchmarks/bounded_work.py --gib 0.5    # a 512 MiB tensor instead (~1 min)
    python benchmarks/bounded_work.py --skip-big   # layers and DAG only

Figures (each a whole process under the shared harness: elapsed seconds, peak RSS in MiB):

- `prune --threshold 0.5` and `inspect` on a `.weights.h5` whose one kernel declares `--gib` GiB
  of float32 zeros, stored gzip-compressed in row chunks (the file is a few MB);
- `inspect` of a Keras < 3.6 style `.keras` of 1,000 and 4,000 Dense layers without `name`
  attributes (storage keys replayed from the config), and the ratio of the two times;
- `inspect` refusing a 40-level HDF5 DAG of hard links (2^40 paths).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import measure_once, table

from handmade import large_sparse_weights_h5, many_layers_keras

CLI = [sys.executable, "-m", "sparseprune"]


def zero_tensor_file(path: Path, gib: float) -> tuple[Path, int]:
    """A square-ish float32 kernel of `gib` GiB, all zero, gzip'd in ~8 MiB row chunks."""
    cols = 16384
    rows = max(1, int(gib * (1 << 30)) // (cols * 4))
    return large_sparse_weights_h5(path, rows, cols, dense_rows=0), rows * cols * 4


def dag_file(path: Path, depth: int = 40) -> Path:
    with h5py.File(path, "w") as f:
        f.create_group("layers/dense/vars")["0"] = np.zeros((2, 3), np.float32)
        level = f.create_group("dag")
        for i in range(depth):
            child = level.create_group(f"l{i}")
            level[f"again{i}"] = child
            level = child
    return path


def run(command: list[str], workdir: Path, expect_refusal: bool = False) -> tuple[float, float]:
    try:
        figures, _ = measure_once(command, workdir)
    except RuntimeError:
        if not expect_refusal:
            raise
        return math.nan, math.nan
    return figures.seconds, figures.rss_mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=4.0, help="declared size of the zero tensor")
    parser.add_argument("--skip-big", action="store_true", help="skip the zero-tensor figures")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bounded-") as scratch:
        work = Path(scratch)
        if not args.skip_big:
            source, declared = zero_tensor_file(work / "zeros.weights.h5", args.gib)
            size = source.stat().st_size
            label = f"{declared / (1 << 30):.2f} GiB zero tensor in {size / (1 << 20):.1f} MiB"
            out = work / "out.weights.h5"
            for name, command in (
                ("inspect", [*CLI, "inspect", str(source), "--json"]),
                ("prune", [*CLI, "prune", str(source), "-o", str(out), "--threshold", "0.5"]),
            ):
                seconds, peak = run(command, work)
                rows.append((f"{name}: {label}", f"{seconds:.1f}", f"{peak:.0f}"))
        times = {}
        for layers in (1000, 4000):
            path = many_layers_keras(work / f"layers{layers}.keras", layers)
            times[layers], peak = run([*CLI, "inspect", str(path), "--json"], work)
            rows.append(
                (
                    f"inspect: {layers:,} layers, no name attributes",
                    f"{times[layers]:.1f}",
                    f"{peak:.0f}",
                )
            )
        rows.append(
            (
                "  time ratio 4,000 / 1,000 layers (linear: ~4)",
                f"{times[4000] / times[1000]:.1f}",
                "",
            )
        )
        dag = dag_file(work / "dag.weights.h5")
        seconds, peak = run([*CLI, "inspect", str(dag)], work, expect_refusal=True)
        rows.append(
            (
                f"inspect refuses a 40-level DAG ({dag.stat().st_size:,} bytes)",
                "refused" if math.isnan(seconds) else f"{seconds:.1f}",
                "",
            )
        )
    print(table([("case", "{}"), ("seconds", "{}"), ("peak RSS MiB", "{}")], rows, left_columns=1))


if __name__ == "__main__":
    main()
