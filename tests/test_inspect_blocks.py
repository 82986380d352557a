"""`inspect`: LiteRT's 4x1 zero blocks per Dense kernel and the converter's sparse/dense verdict.

Expected counts come from the written kernels read with `rawread` and the brute-force
`block_oracle`; the verdict is the converter's rule (zeros in whole blocks > 90% of all zeros,
at least ~30% zeros) computed here. No TensorFlow: prunes are one-shot on the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from block_oracle import all_zero_blocks
from conftest import SAMPLES
from rawread import keras_weights
from typer.testing import CliRunner

from sparseprune.cli import app
from sparseprune.numeric.stats import tensor_stats

runner = CliRunner()
MLP = SAMPLES / "mlp.keras"


def run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inspect-blocks")
    variants = {
        "blocks90": ["--target", "0.9", "--block", "4x1"],
        "random90": ["--target", "0.9"],
        "random98": ["--target", "0.98"],
        "out_blocks": ["--target", "0.9", "--block", "1x4"],  # 4 outputs of one input: no gain
        "blocks20": ["--target", "0.2", "--block", "4x1"],
    }
    paths = {}
    for name, args in variants.items():
        paths[name] = folder / f"{name}.keras"
        run("prune", str(MLP), "-o", str(paths[name]), *args)
    return paths


@pytest.mark.parametrize("variant", ["blocks90", "random90", "random98", "out_blocks", "blocks20"])
def test_block_stats_and_verdict_match_numpy(pruned: dict[str, Path], variant: str) -> None:
    path = pruned[variant]
    doc = json.loads(run("inspect", str(path), "--json"))
    weights = {w["name"]: w for layer in doc["models"][0]["layers"] for w in layer["weights"]}
    for layer, (kernel, _) in keras_weights(path).items():
        entry = weights[f"{layer}/kernel"]["litert"]
        blocks = -(-kernel.shape[0] // 4) * kernel.shape[1]
        zero_blocks = all_zero_blocks(kernel, (4, 1))
        assert (entry["zero_blocks"], entry["blocks"]) == (zero_blocks, blocks), layer
        random = np.count_nonzero(kernel == 0) / kernel.size
        expected = bool(random >= 0.3 and (zero_blocks / blocks) / random > 0.9)
        assert entry["runs_sparse"] is expected, (layer, entry)
    verdicts = {w["litert"]["runs_sparse"] for w in weights.values() if w.get("litert")}
    assert verdicts == {variant in ("blocks90", "random98")}


def test_table_names_the_verdict(pruned: dict[str, Path]) -> None:
    text = run("inspect", str(pruned["blocks90"]), str(pruned["random90"]))
    assert "4x1 zero" in text and "sparse" in text and "dense" in text


def test_blocks_spanning_slabs_are_counted_whole() -> None:
    """A kernel read in slabs of 3 rows: 4-row blocks span slabs; the last block is partial."""
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(10, 7)).astype(np.float32)
    kernel[np.repeat(rng.random((3, 7)) < 0.6, 4, axis=0)[:10]] = 0
    kernel[rng.random(kernel.shape) < 0.1] = 0
    slabs = [kernel[i : i + 3] for i in range(0, 10, 3)]
    stats = tensor_stats(iter(slabs), kernel.shape, count_blocks=True)
    assert stats.blocks is not None
    assert stats.blocks.zero_blocks == all_zero_blocks(kernel, (4, 1))
    assert stats.blocks.blocks == 3 * 7
