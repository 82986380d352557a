"""Units that a merge ties across layers, ranked and zeroed together (`--structure units`).

A residual Add makes channel j of every producer feeding it one channel: shrink can remove it
only when it is dead in all of them. Like Torch-Pruning's dependency groups, the tied units of
one shrink group are one *class*; a class is ranked by the root mean square of its members' unit
norms and zeroed in every member at once. Ties may be partial (NASNet concatenates sums of
branches with their own inputs, so one class holds units of some members only); a class that
also holds units of a layer not pruned the same way (excluded, the model output, another method)
is never chosen, since zeroing it could not remove it (when that is every class, the layers are
ranked one by one, as without ties). Pure numpy over the shrink graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparseprune.choices import TensorMethod
from sparseprune.errors import InputError
from sparseprune.formats import ModelFile
from sparseprune.numeric import tied
from sparseprune.numeric.masks import prune_count
from sparseprune.numeric.tied import Tie, choose_classes, class_scores
from sparseprune.prune.plan import Plan, TensorPlan
from sparseprune.shrink.graph import Group, Node, build_graph, build_groups, channel_slots
from sparseprune.shrink.shapes import input_shapes


@dataclass
class Coupling:
    """Planned producers of one shrink group: per member, the class id of each unit."""

    items: list[TensorPlan]
    classes: list[np.ndarray]  # per member: class id (0..count-1) of each unit
    count: int
    blocked: np.ndarray  # per class: it also holds units of a layer outside `items`

    def scores(self, norms: list[np.ndarray]) -> np.ndarray:
        """Root mean square of each class's unit norms; never chosen (inf) where blocked/NaN."""
        return class_scores(norms, self.classes, self.count, self.blocked)

    @property
    def target(self) -> float:
        """Layer scope: the group follows its largest member target."""
        return max(item.target or 0.0 for item in self.items)

    def spread(self, gone: np.ndarray) -> list[np.ndarray]:
        """Chosen classes as each member's chosen units."""
        return [gone[ids] for ids in self.classes]


def couplings(model: ModelFile, plan: Plan, method: TensorMethod) -> list[Coupling]:
    """Every shrink group with more than one producer planned with `method`."""
    items = {p.tensor.layer: p for p in plan.tensors if p.method is method}
    if len(items) < 2 or model.config is None:
        return []
    try:
        graph = build_graph(model.config)
    except InputError:
        return []
    shapes = input_shapes(graph)
    channels = {n: (s[0][-1] if s and s[0] else None) for n, s in shapes.items()}
    found = []
    for group in build_groups(graph):
        if group.reason is None and sum(m.name in items for m in group.members) > 1:
            coupling = _coupling(model, group, items, channels)
            if coupling is not None:
                found.append(coupling)
    return found


def _coupling(
    model: ModelFile, group: Group, items: dict[str, TensorPlan], channels: dict
) -> Coupling | None:
    units = {m.name: _unit_count(model, m) for m in group.members}
    if None in units.values():
        return None
    slots, _, problem = channel_slots(group, units, channels)  # type: ignore[arg-type]
    if problem:
        return None
    planned = _tied([m.name for m in group.members if m.name in items], slots)
    if len(planned) < 2:
        return None
    roots = np.unique(np.concatenate([slots[name] for name in planned]))
    outside = [slots[m.name] for m in group.members if m.name not in items]
    blocked = np.isin(roots, np.concatenate(outside)) if outside else np.zeros(len(roots), bool)
    if blocked.all():  # nothing shrink could remove: each layer keeps its own ranking
        return None
    classes = [np.searchsorted(roots, slots[name]) for name in planned]
    return Coupling([items[name] for name in planned], classes, len(roots), blocked)


def _tied(names: list[str], slots: dict[str, np.ndarray]) -> list[str]:
    """The members sharing a channel with another member (DenseNet's concatenated convs share
    none: each keeps its own per-layer ranking)."""
    owners: dict[int, set[str]] = {}
    for name in names:
        for root in slots[name].tolist():
            owners.setdefault(root, set()).add(name)
    shared = set().union(*(o for o in owners.values() if len(o) > 1))
    return [name for name in names if name in shared]


def _unit_count(model: ModelFile, member: Node) -> int | None:
    role, axis = member.facts.kernel, member.facts.out_axis
    kernels = [t for t in model.model_tensors if t.layer == member.name and t.role == role]
    return kernels[0].shape[axis] if len(kernels) == 1 else None


def layer_choice(coupling: Coupling, norms: list[np.ndarray]) -> list[np.ndarray]:
    """Layer scope: the group loses the largest member target's share of its classes, lowest
    score first (ties: lower class id), never a member's last unit (shrink keeps one)."""
    scores = coupling.scores(norms)
    gone = choose_classes(scores, coupling.classes, prune_count(coupling.count, coupling.target))
    return coupling.spread(gone)


def global_choice(
    norms: list[np.ndarray], groups: list[list[int]], coupled: list[Coupling], count: int,
    caps: list[int],
) -> list[np.ndarray]:  # fmt: skip
    """Global scope (`tied.global_choice`): `groups[k]` gives the pool indices of `coupled[k]`'s
    members."""
    return tied.global_choice(norms, pool_ties(len(norms), groups, coupled), count, caps)


def pool_ties(size: int, groups: list[list[int]], coupled: list[Coupling]) -> list[Tie | None]:
    """Each pool member's place in its tied group (None: ranked unit by unit); the pool's count
    decides how many go, so a tie's own target is unused (0)."""
    ties: list[Tie | None] = [None] * size
    for k, (members, coupling) in enumerate(zip(groups, coupled, strict=True)):
        for i, ids in zip(members, coupling.classes, strict=True):
            ties[i] = Tie(k, ids, coupling.count, coupling.blocked, 0.0)
    return ties
