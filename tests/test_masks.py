"""Mask rules against a brute-force oracle: sort every weight, prune the smallest, honour caps."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sparseprune.numeric.masks import (
    apply_global_cut,
    global_cut,
    keep_count,
    n_of_m,
    zero_smallest,
)

values = st.lists(
    st.sampled_from([0.0, 1e-20, -1e-20, 0.5, -0.5, 1.0, -2.0, 3.0, float("nan")]),
    min_size=1,
    max_size=40,
).map(lambda v: np.array(v, dtype=np.float32))


def oracle(tensors: list[np.ndarray], total: int, caps: list[int]) -> list[np.ndarray]:
    """Prune the `total` smallest (|w|, tensor, index) keys one by one, skipping full tensors."""
    order = sorted(
        (np.inf if np.isnan(v) else abs(float(v)), i, j)
        for i, tensor in enumerate(tensors)
        for j, v in enumerate(tensor)
    )
    out = [t.copy() for t in tensors]
    taken = [0] * len(tensors)
    left = min(total, sum(caps))
    for _, i, j in order:
        if left == 0:
            break
        if taken[i] < caps[i]:
            out[i][j] = 0
            taken[i] += 1
            left -= 1
    return out


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(values, min_size=1, max_size=4), st.data())
def test_global_cut_matches_oracle(tensors: list[np.ndarray], data: st.DataObject) -> None:
    caps = [data.draw(st.integers(0, t.size)) for t in tensors]
    total = data.draw(st.integers(0, sum(t.size for t in tensors)))
    selection = global_cut(lambda i: tensors[i], [t.size for t in tensors], total, caps)
    got = [apply_global_cut(t.copy(), i, selection) for i, t in enumerate(tensors)]
    for mine, expected in zip(got, oracle(tensors, total, caps), strict=True):
        assert np.array_equal(mine == 0, expected == 0)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(values, st.data())
def test_zero_smallest_matches_oracle(tensor: np.ndarray, data: st.DataObject) -> None:
    count = data.draw(st.integers(0, tensor.size))
    got = zero_smallest(tensor.copy(), count)
    assert np.array_equal(got == 0, oracle([tensor], count, [count])[0] == 0)


def test_keep_count_is_tfmot_rounding() -> None:
    # float32 n * (1 - s) rounded half to even, as tf.math.round does
    assert keep_count(8192, 0.8) == 1638
    assert keep_count(10, 0.25) == 8  # 7.5 -> 8 (even)
    assert keep_count(10, 0.35) == 6  # 6.5 -> 6 (even)
    assert keep_count(5, 0.0) == 5


def test_n_of_m_keeps_largest_in_each_group() -> None:
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(8, 3)).astype(np.float32)
    pruned = n_of_m(kernel.copy(), 2, 4, axis=0)
    for column in range(3):
        for start in (0, 4):
            group, original = pruned[start : start + 4, column], kernel[start : start + 4, column]
            assert np.count_nonzero(group == 0) == 2
            kept = np.abs(original[group != 0])
            assert kept.min() >= np.abs(original[group == 0]).max()
