"""Which weights a wrapper prunes and how: data, serialized in the layer's config.

`WeightRule` says how one variable of a wrapped layer is masked; `prunable_weights` finds the
variables TFMOT prunes by default for Keras 3's built-in layers (the same table as the file side,
`sparseprune.registry`), or asks a `PrunableLayer`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from sparseprune.keras.schedules import PruningSchedule, deserialize, serialize

METHODS = ("magnitude", "units", "fixed", "threshold", "global", "global_units", "tied_units")
POOLED_METHODS = ("global", "global_units", "tied_units")  # ranked with other members

# Keras 3 class -> attribute paths of the variables TFMOT prunes by default.
PRUNABLE_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "Dense": ("kernel",),
    "EinsumDense": ("kernel",),
    "Conv1D": ("kernel",),
    "Conv2D": ("kernel",),
    "Conv3D": ("kernel",),
    "Conv1DTranspose": ("kernel",),
    "Conv2DTranspose": ("kernel",),
    "Conv3DTranspose": ("kernel",),
    "DepthwiseConv1D": ("depthwise_kernel",),
    "DepthwiseConv2D": ("depthwise_kernel",),
    "SeparableConv1D": ("pointwise_kernel",),
    "SeparableConv2D": ("pointwise_kernel",),
    "Embedding": ("embeddings",),
    "SimpleRNN": ("cell.kernel", "cell.recurrent_kernel"),
    "LSTM": ("cell.kernel", "cell.recurrent_kernel"),
    "GRU": ("cell.kernel", "cell.recurrent_kernel"),
}


class PrunableLayer:
    """Mixin for custom layers: return the variables to prune from `get_prunable_weights()`."""

    def get_prunable_weights(self) -> list[Any]:
        raise NotImplementedError("a PrunableLayer must implement get_prunable_weights()")


def role(variable: Any) -> str:
    """A variable's own name inside its layer (`kernel`, `recurrent_kernel`, ...)."""
    path = getattr(variable, "path", None) or variable.name
    return path.split("/")[-1].split(":")[0]


def is_supported(layer: Any) -> bool:
    """True for PrunableLayers and the built-in classes of the table (no need to be built)."""
    return hasattr(layer, "get_prunable_weights") or type(layer).__name__ in PRUNABLE_ATTRIBUTES


def prunable_weights(layer: Any) -> list[Any] | None:
    """The variables TFMOT would prune, or None when the layer class is not supported."""
    if isinstance(layer, PrunableLayer) or hasattr(layer, "get_prunable_weights"):
        return list(layer.get_prunable_weights())
    attributes = PRUNABLE_ATTRIBUTES.get(type(layer).__name__)
    if attributes is None:
        return None
    out = []
    for attribute in attributes:
        value = layer
        for part in attribute.split("."):
            value = getattr(value, part)
        out.append(value)
    return out


@dataclass(frozen=True)
class WeightRule:
    """How one variable is masked. `schedule` None means the wrapper's schedule."""

    method: str = "magnitude"
    schedule: PruningSchedule | None = None
    block: tuple[int, int] | None = None
    block_pooling: str = "AVG"
    m_by_n: tuple[int, int] | None = None
    threshold: float | None = None
    pool: str | None = None  # global pools: a name shared by the member rules
    cap: float | None = None  # most this variable may give up in a pool (fraction)
    unit_axis: int = -1  # units, tied_units: the output-unit axis (-2: transposed conv)
    classes: tuple[int, ...] | None = None  # tied_units: class id of each unit in the pool
    blocked: tuple[int, ...] = ()  # tied_units: classes never pruned (shared outside the pool)
    group: int | None = None  # global_units: the tied group `classes` belongs to (None: untied)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"rule method must be one of {', '.join(METHODS)}, got {self.method}")
        if self.method == "tied_units" and self.classes is None:
            raise ValueError("a 'tied_units' rule needs classes=(class id of each unit).")
        if self.group is not None and (self.method != "global_units" or self.classes is None):
            raise ValueError("group=G ties a 'global_units' rule's classes=(...) to group G.")
        if self.method in POOLED_METHODS and not self.pool:
            # No default pool: one shared by every nameless rule would rank the weights of
            # unrelated models together (prune_low_magnitude names one pool per call).
            raise ValueError(
                f"a {self.method!r} rule needs pool=NAME, shared by the rules ranked together "
                "(or use prune_low_magnitude(..., pruning_scope='global'))."
            )

    def to_config(self) -> dict:
        config = asdict(self)
        config["schedule"] = serialize(self.schedule) if self.schedule is not None else None
        return config

    @classmethod
    def from_config(cls, config: dict) -> WeightRule:
        config = dict(config)
        if config.get("schedule") is not None:
            config["schedule"] = deserialize(config["schedule"])
        for key in ("block", "m_by_n", "classes", "blocked"):
            if config.get(key) is not None:
                config[key] = tuple(config[key])
        return cls(**config)

    def with_schedule(self, schedule: PruningSchedule) -> WeightRule:
        return self if self.schedule is not None else replace(self, schedule=schedule)


class GlobalPool:
    """Members of one global selection: (wrapper, role, cap) in registration order.

    The first live member leads: at update steps it computes the selection over all members
    and every member's share, so no layer needs a reference to the model. A second registration
    of a member with the same name (the model was loaded again) starts a new member list.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: list[tuple[weakref.ref, str, float | None]] = []
        self._last: tuple[Any, list] | None = None  # (sparsity, selection) of the last update

    def selection(self, sparsity: Any, compute: Callable[[], list]) -> list:
        """The selection at `sparsity` (the tensor of one update step), computed once however
        many members ask; the entry keeps `sparsity` alive so its identity stays unique. A
        Python number may repeat across steps and traces, so it is never reused."""
        if isinstance(sparsity, (int, float)):
            return compute()
        if self._last is None or self._last[0] is not sparsity:
            self._last = (sparsity, compute())
        return self._last[1]

    def register(self, wrapper: Any, weight_role: str, cap: float | None) -> None:
        alive = [(ref, r, c) for ref, r, c in self.members if ref() is not None]
        if any(
            (live := ref()) is not None and live.name == wrapper.name and r == weight_role
            for ref, r, _ in alive
        ):
            alive = []
        self.members = [*alive, (weakref.ref(wrapper), weight_role, cap)]

    def live_members(self) -> list[tuple[Any, str, float | None]]:
        return [(ref(), r, c) for ref, r, c in self.members if ref() is not None]


POOLS: dict[str, GlobalPool] = {}


def pool(name: str) -> GlobalPool:
    return POOLS.setdefault(name, GlobalPool(name))
