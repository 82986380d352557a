"""Block masks (masks.py) against a brute-force oracle written from TFMOT's definition.

TFMOT scores blocks with tf.nn.pool(padding="SAME") (half the padding, rounded down, before the
first window; padding is neither averaged nor maxed in), keeps round(blocks * (1 - s)) blocks and
expands the block mask from (0, 0), cutting it to the kernel's shape.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from block_oracle import oracle_mask, oracle_scores

from sparseprune.numeric import masks

SHAPES = [(8, 3), (10, 4), (11, 5), (9, 7), (16, 16), (5, 2), (3, 9)]
BLOCKS = [(4, 1), (1, 4), (2, 2), (3, 2), (4, 4)]


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_block_mask_matches_oracle(pooling: str) -> None:
    rng = np.random.default_rng(0)
    for shape, block in itertools.product(SHAPES, BLOCKS):
        # small integers make many exact ties: the lower block index must go first
        kernel = rng.integers(-3, 4, size=shape).astype(np.float32)
        rows, cols = masks.block_grid(shape, block)
        for count in (0, 1, (rows * cols) // 2, rows * cols - 1, rows * cols):
            got = masks.block_positions(kernel, block, count, pooling)
            want = oracle_mask(kernel, block, count, pooling)
            assert np.array_equal(got, want), (shape, block, count, pooling)


def test_scores_match_oracle_and_nan_is_never_pruned() -> None:
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(10, 6)).astype(np.float32)
    for pooling in ("avg", "max"):
        got = masks.block_scores(kernel, (4, 2), pooling)
        want = np.asarray(oracle_scores(kernel, (4, 2), pooling), dtype=np.float32)
        np.testing.assert_allclose(got, want, rtol=1e-6)
    kernel[0, 0] = np.nan
    chosen = masks.block_positions(kernel, (4, 1), 17, "avg")  # all 18 blocks but one
    assert not chosen[:4, 0].any() and chosen.sum() == 60 - 4


def test_global_block_selection_matches_pooled_oracle() -> None:
    rng = np.random.default_rng(2)
    kernels = [rng.normal(size=shape).astype(np.float32) for shape in [(8, 4), (12, 3), (6, 5)]]
    block = (4, 1)
    scores = [masks.block_scores(k, block) for k in kernels]
    caps = [s.size for s in scores]
    caps[1] = 2  # the second kernel gives up at most two blocks
    selection = masks.global_block_cut(scores, 14, caps)
    got = [
        masks.global_block_positions(k, scores[i], i, selection, block)
        for i, k in enumerate(kernels)
    ]
    # oracle: rank every block of every kernel by (score, kernel, block), skipping capped ones
    ranked = sorted(
        (float(score), i, flat)
        for i, s in enumerate(scores)
        for flat, score in enumerate(s.reshape(-1))
    )
    taken = [0, 0, 0]
    chosen: list[set[int]] = [set(), set(), set()]
    for _, i, flat in ranked:
        if sum(taken) == 14:
            break
        if taken[i] < caps[i]:
            taken[i] += 1
            chosen[i].add(flat)
    for i, kernel in enumerate(kernels):
        flags = np.zeros(scores[i].size, dtype=bool)
        flags[sorted(chosen[i])] = True
        want = masks.expand_blocks(flags.reshape(scores[i].shape), block, kernel.shape)
        assert np.array_equal(got[i], want), i
    assert taken[1] == 2


def test_zero_blocks_counts_whole_blocks_only() -> None:
    rng = np.random.default_rng(3)
    for shape, block in itertools.product(SHAPES, BLOCKS):
        values = rng.normal(size=shape).astype(np.float32)
        values[rng.random(shape) < 0.6] = 0
        rows, cols = masks.block_grid(shape, block)
        expected = 0
        for br in range(rows):
            for bc in range(cols):
                tile = values[
                    br * block[0] : (br + 1) * block[0], bc * block[1] : (bc + 1) * block[1]
                ]
                expected += int((tile == 0).all())
        assert masks.zero_blocks(values, block) == (expected, rows * cols), (shape, block)
