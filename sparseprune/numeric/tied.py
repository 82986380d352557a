"""Units tied across kernels (a residual Add makes unit j of every producer one channel), ranked
and chosen together. Pure numpy: the one-shot prune (`prune/coupled.py`) and the trainer's
numpy side (`schedule.pruned_positions`) share it; `keras/masking.tied_unit_masks` (layer scope)
and `global_unit_masks` (global scope) are the same rules in keras.ops, inside the compiled train
step.

A *class* is one set of tied units; each member kernel gives every one of its units a class id.
A class scores the root mean square of its members' unit norms; a blocked class (it also holds
units of a layer not pruned the same way) or a NaN one is never chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tie:
    """One member kernel's place in a group of tied units."""

    group: int  # which group (members of one group share `count` and `blocked`)
    classes: np.ndarray  # class id (0..count-1) of each of this member's units
    count: int  # classes in the group
    blocked: np.ndarray  # per class: never chosen
    target: float  # the share of the group's classes pruned at the end of the schedule

    def one_per_class(self) -> bool:
        """Every class holds exactly one of this member's units (a residual Add's producers)."""
        return len(self.classes) == self.count and len(np.unique(self.classes)) == self.count


def class_scores(
    norms: Sequence[np.ndarray], classes: Sequence[np.ndarray], count: int, blocked: np.ndarray
) -> np.ndarray:
    """Root mean square of each class's unit norms; inf (never chosen) where blocked or NaN."""
    total = np.zeros(count)
    size = np.zeros(count)
    for ids, member in zip(classes, norms, strict=True):
        np.add.at(total, ids, np.asarray(member, np.float64) ** 2)
        np.add.at(size, ids, 1)
    rms = np.sqrt(total / np.maximum(size, 1))
    return np.where(blocked | ~np.isfinite(rms), np.inf, rms)


def choose_classes(scores: np.ndarray, classes: Sequence[np.ndarray], prune: int) -> np.ndarray:
    """The `prune` lowest-scoring classes (ties: lower class id), skipping any that would take a
    member's last unit (shrink keeps one); True per chosen class."""
    count = len(scores)
    left = [len(ids) - 1 for ids in classes]
    per_class = [np.bincount(ids, minlength=count) for ids in classes]
    gone = np.zeros(count, bool)
    for c in np.argsort(scores, kind="stable"):
        if gone.sum() >= prune or not np.isfinite(scores[c]):
            break
        if all(left[m] >= per_class[m][c] for m in range(len(left))):
            gone[c] = True
            left = [left[m] - per_class[m][c] for m in range(len(left))]
    return gone


def never_empties(classes: Sequence[np.ndarray], blocked: np.ndarray, prune: int) -> bool:
    """Whether choosing any `prune` classes leaves every member a unit, so the last-unit guard of
    `choose_classes` never binds (then a plain lowest-k choice, as in keras.ops, is the same)."""
    return all(blocked[np.unique(ids)].any() or len(np.unique(ids)) > prune for ids in classes)


def global_choice(
    norms: Sequence[np.ndarray], ties: Sequence[Tie | None], count: int, caps: Sequence[int]
) -> list[np.ndarray]:
    """Global scope over a pool of unit kernels (`norms[i]`: member i's unit norms; `ties[i]`:
    its place in a tied group, None for a kernel ranked unit by unit).

    One ranking of single units and whole classes by score, ties in pool order (a group's
    classes at its first member, by class id), taken until `count` units are chosen, an entry
    only if every member it touches stays within its cap; True per chosen unit of each member.
    """
    chosen = [np.zeros(len(n), bool) for n in norms]
    left = list(caps)
    taken = 0
    for score, _, parts in sorted(_entries(norms, ties), key=lambda e: (e[0], e[1])):
        if taken >= count or not np.isfinite(score):
            break
        if any(left[i] < len(units) for i, units in parts):
            continue
        for i, units in parts:
            chosen[i][units] = True
            left[i] -= len(units)
            taken += len(units)
    return chosen


Entry = tuple[float, int, list[tuple[int, np.ndarray]]]  # score, pool order, (member, units)


def _entries(norms: Sequence[np.ndarray], ties: Sequence[Tie | None]) -> list[Entry]:
    entries: list[Entry] = []
    groups: dict[int, list[int]] = {}
    for i, tie in enumerate(ties):
        if tie is not None:
            groups.setdefault(tie.group, []).append(i)
    for i, member in enumerate(norms):
        tie = ties[i]
        if tie is None:
            scores = np.where(np.isnan(member), np.inf, member)
            for u, score in enumerate(scores):
                entries.append((float(score), len(entries), [(i, np.array([u]))]))
        elif groups[tie.group][0] == i:  # a group's classes, once, at its first member
            members = groups[tie.group]
            group_ties = [ties[j] for j in members]
            classes = [t.classes for t in group_ties if t is not None]
            scores = class_scores([norms[j] for j in members], classes, tie.count, tie.blocked)
            for c, score in enumerate(scores):
                parts = [
                    (j, np.flatnonzero(ids == c)) for j, ids in zip(members, classes, strict=True)
                ]
                entries.append((float(score), len(entries), [(j, u) for j, u in parts if len(u)]))
    return entries
