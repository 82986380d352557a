"""A brute-force block-pruning oracle written from TFMOT's definition, sharing no code with
sparseprune: tf.nn.pool(padding="SAME") scores (half the padding, rounded down, before the first
window; padding neither averaged nor maxed in), the `count` lowest blocks (ties: lower block
first), expanded from (0, 0) and cut to the kernel's shape."""

from __future__ import annotations

import numpy as np


def oracle_scores(kernel: np.ndarray, block: tuple[int, int], pooling: str) -> list[list[float]]:
    def windows(size: int, step: int) -> list[list[int]]:
        count = -(-size // step)
        before = (count * step - size) // 2
        return [
            [i for i in range(k * step - before, k * step - before + step) if 0 <= i < size]
            for k in range(count)
        ]

    rows, cols = windows(kernel.shape[0], block[0]), windows(kernel.shape[1], block[1])
    scores = []
    for row_window in rows:
        line = []
        for col_window in cols:
            cell = [abs(float(kernel[r, c])) for r in row_window for c in col_window]
            line.append(max(cell) if pooling == "max" else sum(cell) / len(cell))
        scores.append(line)
    return scores


def oracle_mask(kernel, block, count, pooling) -> np.ndarray:
    scores = oracle_scores(kernel, block, pooling)
    ranked = sorted(
        (np.float32(score), r * len(line) + c)
        for r, line in enumerate(scores)
        for c, score in enumerate(line)
    )
    cols = len(scores[0])
    mask = np.zeros(kernel.shape, dtype=bool)
    for _, flat in ranked[:count]:
        br, bc = divmod(flat, cols)
        for r in range(br * block[0], min((br + 1) * block[0], kernel.shape[0])):
            for c in range(bc * block[1], min((bc + 1) * block[1], kernel.shape[1])):
                mask[r, c] = True
    return mask


def all_zero_blocks(values: np.ndarray, block: tuple[int, int]) -> int:
    """Aligned blocks from (0, 0) whose weights are all zero (the last ones may be partial)."""
    rows, cols = -(-values.shape[0] // block[0]), -(-values.shape[1] // block[1])
    count = 0
    for br in range(rows):
        for bc in range(cols):
            tile = values[br * block[0] : (br + 1) * block[0], bc * block[1] : (bc + 1) * block[1]]
            count += int((tile == 0).all())
    return count
