"""`PruneLowMagnitude`: a wrapper layer whose call masks the wrapped layer's weights.

Why a wrapper and not a callback or a constraint: the mask is applied in the forward pass
(`w * mask` is what the wrapped layer sees, through a `keras.StatelessScope`), and masks and the
step counter are non-trainable variables updated inside `call`. Everything is therefore part of
the compiled train step on TensorFlow (`tf.function`, XLA), JAX (`jit`, stateless) and PyTorch,
works with `steps_per_execution` and distribution strategies (variables aggregate
`only_first_replica`: every replica computes the same mask), and the gradient of a pruned weight
is exactly zero. A variable constraint would not do: on JAX it would read the mask as a constant
captured at trace time. The raw variables keep their values under the mask; `strip_pruning` and
`apply_masks` fold the masks in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops
from keras.src.backend.common.masking import get_keras_mask
from keras.src.backend.common.stateless_scope import in_stateless_scope

from sparseprune.keras import backend_ops, masking
from sparseprune.keras.rules import WeightRule, is_supported, pool, prunable_weights, role
from sparseprune.keras.schedules import (
    PACKAGE,
    ConstantSparsity,
    PruningSchedule,
    deserialize,
    serialize,
)
from sparseprune.numeric.masks import prune_count


@keras.saving.register_keras_serializable(PACKAGE)
class PruneLowMagnitude(keras.layers.Wrapper):
    """Prunes the wrapped layer's weights during training (TFMOT's wrapper, every backend)."""

    def __init__(
        self,
        layer: keras.layers.Layer,
        pruning_schedule: PruningSchedule | dict | None = None,
        block_size: Sequence[int] = (1, 1),
        block_pooling_type: str = "AVG",
        sparsity_m_by_n: Sequence[int] | None = None,
        rules: Mapping[str, WeightRule | dict] | None = None,
        masks: dict[str, np.ndarray] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
        super().__init__(layer, **kwargs)
        self.pruning_schedule = deserialize(pruning_schedule or ConstantSparsity(0.5, 0))
        self.block_size = _two_ints(block_size, "block_size")
        if block_pooling_type not in ("AVG", "MAX"):
            raise ValueError(f"block_pooling_type must be 'AVG' or 'MAX', got {block_pooling_type}")
        self.block_pooling_type = block_pooling_type
        self.sparsity_m_by_n = (
            _two_ints(sparsity_m_by_n, "sparsity_m_by_n") if sparsity_m_by_n else None
        )
        if self.sparsity_m_by_n and self.sparsity_m_by_n[0] >= self.sparsity_m_by_n[1]:
            raise ValueError(f"sparsity_m_by_n {self.sparsity_m_by_n}: m must be less than n.")
        self.rules = (
            None
            if rules is None
            else {
                name: r if isinstance(r, WeightRule) else WeightRule.from_config(r)
                for name, r in rules.items()
            }
        )
        self._initial_masks = dict(masks or {})
        if self.rules is None and not is_supported(layer):
            raise ValueError(
                f"layer {layer.name} ({type(layer).__name__}) is not prunable: use a layer with "
                "a kernel (Dense, Conv, Embedding, RNN, ...) or implement PrunableLayer."
            )
        self.pairs: list[tuple[Any, Any, WeightRule]] = []
        self._direct = False

    # ---------------------------------------------------------------- build
    def build(self, input_shape: Any = None) -> None:
        super().build(input_shape)
        chosen = self._chosen_rules()
        for variable, rule in chosen:
            name = role(variable)
            mask = self.add_weight(
                name=f"{name}_mask",
                shape=variable.shape,
                dtype=variable.dtype,
                initializer="ones",
                trainable=False,
                aggregation="only_first_replica",
            )
            if name in self._initial_masks:
                mask.assign(_given_mask(self._initial_masks[name], variable.shape))
            self.pairs.append((variable, mask, rule))
            if rule.pool is not None:
                pool(rule.pool).register(self, name, rule.cap)
        self.pruning_step = self.add_weight(
            name="pruning_step",
            shape=(),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )
        self._direct = self._calls_directly()
        self.built = True

    def _chosen_rules(self) -> list[tuple[Any, WeightRule]]:
        if self.rules is not None:
            by_role = {role(v): v for v in self.layer.weights}
            missing = [name for name in self.rules if name not in by_role]
            if missing:
                raise ValueError(f"layer {self.layer.name} has no weight named {missing[0]}")
            return [
                (by_role[n], r.with_schedule(self.pruning_schedule)) for n, r in self.rules.items()
            ]
        rule = WeightRule(
            schedule=self.pruning_schedule,
            block=self.block_size if self.block_size != (1, 1) else None,
            block_pooling=self.block_pooling_type,
            m_by_n=self.sparsity_m_by_n,
        )
        variables = prunable_weights(self.layer) or []
        if rule.block is not None:
            for variable in variables:
                if len([d for d in variable.shape if d != 1]) != 2:
                    raise ValueError(
                        "Block Sparsity can only be used for layers which have 2-dimensional "
                        f"weights ({self.layer.name}/{role(variable)} is {variable.shape})."
                    )
        return [(variable, rule) for variable in variables]

    # ---------------------------------------------------------------- call
    def call(self, inputs: Any, training: bool | None = None, **kwargs: Any) -> Any:
        if training:
            self._update_masks()
        return self._masked_call(inputs, training=training, **kwargs)

    def compute_output_spec(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("training", None)
        return self.layer.compute_output_spec(inputs, *args, **kwargs)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)

    def _masked_call(self, inputs: Any, **kwargs: Any) -> Any:
        """Call the wrapped layer seeing `w * mask` for each pruned `w`."""
        outer = in_stateless_scope()
        if self._direct and not outer and get_keras_mask(inputs) is None:
            return self._direct_masked_call(inputs, kwargs)
        masked = {id(w): backend_ops.masked_value(w, m) for w, m, _ in self.pairs}
        variables = self.layer.variables
        mapping = [(v, masked.get(id(v), v.value)) for v in variables if outer or id(v) in masked]
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            outputs = self.layer(inputs, **kwargs)
        given = {id(k): value for k, value in mapping}
        for v in variables:  # carry the wrapped layer's own updates (e.g. statistics) out
            value = scope.get_current_value(v)
            if id(v) not in masked and value is not None and value is not given.get(id(v)):
                v.assign(value)
        for loss in scope.losses:
            self.add_loss(loss)
        return outputs

    def _direct_masked_call(self, inputs: Any, kwargs: dict) -> Any:
        """The PyTorch fast path (see `_calls_directly`): a built-in kernel layer's `call`
        updates no variable and adds no loss, and it was built with all its variables, so
        the scope maps only the masked weights and nothing is carried out of it."""
        mapping = [(w, backend_ops.masked_value(w, m)) for w, m, _ in self.pairs]
        with keras.StatelessScope(state_mapping=mapping, initialize_variables=False):
            return self.layer.call(inputs, **self._direct_kwargs(kwargs))

    def _direct_kwargs(self, kwargs: dict) -> dict:
        if self.layer._call_has_training_arg:
            return kwargs
        return {k: v for k, v in kwargs.items() if k != "training"}

    def _calls_directly(self) -> bool:
        """Whether `call` may run the wrapped layer's `call` without its `__call__` (as TFMOT's
        wrapper always does). Only on PyTorch, which pays Keras' `__call__` (~80 us) per layer
        and step (TF and JAX trace it once), and only for built-in kernels whose `__call__`
        would add nothing to what this wrapper's own `__call__` already did: the same dtype
        policy, no activity regularizer, no Keras mask argument, no torch hooks."""
        layer = self.layer
        return (
            keras.backend.backend() == "torch"
            and type(layer) in backend_ops.DIRECT_CALL_CLASSES
            and layer.built
            and layer.dtype_policy.name == self.dtype_policy.name
            and layer.autocast == self.autocast
            and getattr(layer, "activity_regularizer", None) is None
            and not layer._call_has_mask_arg
            and not (layer._forward_hooks or layer._forward_pre_hooks)
        )

    # ---------------------------------------------------------------- masks
    def _update_masks(self) -> None:
        if keras.backend.backend() == "torch" and not in_stateless_scope():
            self._update_masks_eagerly()
            return
        step = ops.convert_to_tensor(self.pruning_step)  # one read, shared by every rule
        for schedule, members in self._schedule_groups():

            def new_masks(schedule=schedule, members=members):
                sparsity = schedule.sparsity(step)  # evaluated on update steps only
                return [
                    ops.cast(self._compute_mask(w, m, r, sparsity), m.dtype) for w, m, r in members
                ]

            masks = [m for _, m, _ in members]
            backend_ops.assign_if(schedule.should_prune(step), masks, new_masks)
        self.pruning_step.assign(step + 1)

    def _schedule_groups(self) -> list[tuple[PruningSchedule, list]]:
        """The updated pairs grouped by schedule object, so each schedule's predicate and
        update branch run once per step however many weights share it. A pool's pairs are all
        updated by its leader (`_led_pairs`), in the leader's group."""
        groups: dict[int, tuple[PruningSchedule, list]] = {}
        for weight, mask, rule in self.pairs:
            if rule.method == "fixed":
                continue
            assert rule.schedule is not None  # _chosen_rules gives every rule a schedule
            updated = [(weight, mask, rule)] if rule.pool is None else self._led_pairs(weight, rule)
            if updated:
                groups.setdefault(id(rule.schedule), (rule.schedule, []))[1].extend(updated)
        return list(groups.values())

    def _led_pairs(self, weight: Any, rule: WeightRule) -> list[tuple[Any, Any, WeightRule]]:
        """Every member's pair of `weight`'s pool when `weight` leads it (is its first live
        member), else none. One branch computes all of a pool's masks from the same state
        before any is assigned: a member updated earlier in the step would otherwise change
        what later members rank (a tied class half zeroed scores lower and can move the
        boundary of the count), and the selection is computed once, not once per member."""
        assert rule.pool is not None
        members = pool(rule.pool).live_members()
        leader, name, _ = members[0]
        if leader is not self or name != role(weight):
            return []
        return [member.pair(member_role) for member, member_role, _ in members]

    def _update_masks_eagerly(self) -> None:
        """PyTorch runs the step eagerly: decide in Python and touch tensors only on update
        steps. The step counter is read and advanced in place on the torch tensor: through
        Keras' assign it cost more than the masking itself on small layers."""
        import torch

        counter = self.pruning_step.value
        step = int(counter.item())
        for schedule, members in self._schedule_groups():
            target = schedule.update_at(step)
            if target is not None:
                sparsity = ops.convert_to_tensor(target, "float32")  # one per update (pools)
                masks = [self._compute_mask(w, m, r, sparsity) for w, m, r in members]
                for (_, mask, _), keep in zip(members, masks, strict=True):
                    mask.assign(ops.cast(keep, mask.dtype))
        with torch.no_grad():
            counter.add_(1)

    def _compute_mask(self, weight: Any, mask: Any, rule: WeightRule, sparsity: Any) -> Any:
        values = ops.multiply(weight.value, ops.cast(mask.value, weight.dtype))
        if rule.method == "magnitude":
            keep = self._magnitude(values, rule, sparsity)
        elif rule.method == "units":
            keep = masking.unit_mask(values, sparsity, rule.unit_axis)
        elif rule.method == "tied_units":
            keep = self._tied_share(weight, rule, sparsity)
        elif rule.method in ("global", "global_units"):
            keep = self._pool_share(weight, rule, sparsity)
        else:  # threshold only
            keep = ops.ones(values.shape, "float32")
        if rule.threshold is not None:
            keep = keep * masking.threshold_mask(values, rule.threshold)
        return keep

    @staticmethod
    def _magnitude(values: Any, rule: WeightRule, sparsity: Any) -> Any:
        if rule.m_by_n is not None:
            return masking.m_by_n_mask(values, rule.m_by_n[0], rule.m_by_n[1])
        if rule.block is not None:
            shape = values.shape
            squeezed = ops.reshape(values, [d for d in shape if d != 1])
            keep = masking.block_mask(squeezed, sparsity, rule.block, rule.block_pooling)
            return ops.reshape(keep, shape)
        return masking.magnitude_mask(values, sparsity)

    def _pool_share(self, weight: Any, rule: WeightRule, sparsity: Any) -> Any:
        """Our share of the pool's selection, computed once per update for all members."""
        assert rule.pool is not None  # WeightRule requires a pool name for global methods
        members = [(w.pair(name), cap) for w, name, cap in pool(rule.pool).live_members()]
        mine = next(i for i, ((w, _, _), _) in enumerate(members) if w is weight)
        selection = pool(rule.pool).selection(sparsity, lambda: _pool_keeps(members, sparsity))
        keep = selection[mine]
        if rule.method == "global_units":
            return masking.spread_units(keep, weight.shape, rule.unit_axis)
        if rule.block is not None:
            shape = [d for d in weight.shape if d != 1]
            grid = [-(-shape[0] // rule.block[0]), -(-shape[1] // rule.block[1])]
            spread = masking.expand_blocks(ops.reshape(keep, grid), rule.block, shape)
            return ops.reshape(spread, weight.shape)
        return ops.reshape(keep, weight.shape)

    def _tied_share(self, weight: Any, rule: WeightRule, sparsity: Any) -> Any:
        """Our share of the tied group's classes, ranked once per update for all members."""
        assert rule.pool is not None and rule.classes is not None  # WeightRule checks both
        live = [wrapper.pair(name) for wrapper, name, _ in pool(rule.pool).live_members()]
        mine = next(i for i, (w, _, _) in enumerate(live) if w is weight)

        def compute() -> list:  # once per update: the masked values are read only here
            members = [(ops.multiply(w.value, ops.cast(m.value, w.dtype)), r.classes, r.unit_axis)
                       for w, m, r in live]  # fmt: skip
            return masking.tied_unit_masks(members, rule.blocked, sparsity)

        return pool(rule.pool).selection(sparsity, compute)[mine]

    def pair(self, name: str) -> tuple[Any, Any, WeightRule]:
        for weight, mask, rule in self.pairs:
            if role(weight) == name:
                return weight, mask, rule
        raise KeyError(name)

    # ---------------------------------------------------------------- config
    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "pruning_schedule": serialize(self.pruning_schedule),
                "block_size": list(self.block_size),
                "block_pooling_type": self.block_pooling_type,
                "sparsity_m_by_n": list(self.sparsity_m_by_n) if self.sparsity_m_by_n else None,
                "rules": None
                if self.rules is None
                else {name: rule.to_config() for name, rule in self.rules.items()},
            }
        )
        return config


def _two_ints(value: Sequence[int], name: str) -> tuple[int, int]:
    """A pair of ints, checked as TFMOT checks block_size and sparsity_m_by_n."""
    if len(value) != 2:
        raise ValueError(f"{name} must be two integers, got {tuple(value)}.")
    return int(value[0]), int(value[1])


def _pool_scores(values: Any, rule: WeightRule) -> Any:
    """What a weight or block pool ranks for one member: block scores or |w|."""
    if rule.block is not None:
        squeezed = ops.reshape(values, [d for d in values.shape if d != 1])
        return masking.block_scores(squeezed, rule.block, rule.block_pooling)
    return masking.magnitude_scores(values)


def _pool_keeps(members: list, sparsity: Any) -> list[Any]:
    """A global pool's selection as one flat keep vector per member: per weight, per block,
    or per unit (by norm alone, or with tied members' classes as entries)."""
    if members[0][0][2].method == "global_units":
        return _unit_pool_keeps(members, sparsity)
    scores, caps = [], []
    for (w, m, member_rule), cap in members:
        values = ops.multiply(w.value, ops.cast(m.value, w.dtype))
        score = ops.reshape(_pool_scores(values, member_rule), (-1,))
        scores.append(score)
        caps.append(None if cap is None else prune_count(int(score.shape[0]), cap))
    return masking.global_masks(scores, sparsity, caps)


def _unit_pool_keeps(members: list, sparsity: Any) -> list[Any]:
    norms, ties, caps = [], [], []
    for (w, m, member_rule), cap in members:
        values = ops.multiply(w.value, ops.cast(m.value, w.dtype))
        norms.append(masking.unit_norms(ops.moveaxis(values, member_rule.unit_axis, -1)))
        tied = member_rule.group is not None and member_rule.classes is not None
        ties.append((member_rule.group, member_rule.classes, member_rule.blocked) if tied else None)
        caps.append(None if cap is None else prune_count(int(norms[-1].shape[0]), cap))
    if any(t is not None for t in ties):
        return masking.global_unit_masks(norms, ties, caps, sparsity)
    return masking.global_masks(norms, sparsity, caps)


def _given_mask(values: np.ndarray, shape: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.shape != tuple(shape):
        raise ValueError(f"mask of shape {array.shape} does not fit a weight of shape {shape}")
    return (array != 0).astype("float32")


def wrappers(model: Any) -> list[PruneLowMagnitude]:
    """Every PruneLowMagnitude inside a model or layer, nested models included."""
    layers = model._flatten_layers(include_self=True, recursive=True)
    return [layer for layer in layers if isinstance(layer, PruneLowMagnitude)]
