"""Global pools during training (`pruned_positions`): the scheduled count and per-member caps.

Weights, units and blocks share one rule: the pool loses round(total x sparsity) items, smallest
first, but a member with a cap loses at most its cap fraction of its own items. The values are
built so that the expected choice can be read off by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from sparseprune.numeric.schedule import MaskRules, TensorRule, pruned_positions

SMALL = np.full((4, 4), 0.01, dtype=np.float32)  # every item of `a` is smaller than any of `b`
LARGE = np.arange(1, 17, dtype=np.float32).reshape(4, 4)


@pytest.mark.parametrize(
    ("method", "block", "items"),
    [("global", None, 16), ("global_units", None, 4), ("global_blocks", (2, 2), 4)],
)
@pytest.mark.parametrize(("cap", "progress"), [(None, 1.0), (0.25, 1.0), (0.0, 1.0), (0.5, 0.5)])
def test_a_cap_moves_the_pool_count_to_the_other_members(
    method: str, block: tuple[int, int] | None, items: int, cap: float | None, progress: float
) -> None:
    rules = MaskRules(
        (TensorRule("a", method, cap=cap), TensorRule("b", method)), target=0.5, block=block
    )
    masks = pruned_positions({"a": SMALL, "b": LARGE}, rules, lambda s: s * progress)
    wanted = round(2 * items * 0.5 * progress)  # the pool's count at this point
    a_limit = items if cap is None else round(items * cap)
    a_items, b_items = min(wanted, a_limit), wanted - min(wanted, a_limit)
    per_item = 16 // items  # weights per item: 1, a column of 4, a 2x2 block
    assert int(masks["a"].sum()) == a_items * per_item
    assert int(masks["b"].sum()) == b_items * per_item
    if b_items and method == "global":  # b loses its smallest weights: 1, 2, ...
        assert sorted(LARGE[masks["b"]].tolist()) == list(range(1, b_items + 1))
