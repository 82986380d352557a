"""TFMOT's pruning API for Keras 3: wrap, strip, fold masks; global targets and fixed masks.

`prune_low_magnitude(model)` returns a clone of a Sequential or functional model whose prunable
layers are wrapped (the layers themselves are shared, as in TFMOT). Subclassed models wrap their
layers where they create them: `self.dense = prune_low_magnitude(keras.layers.Dense(10))`.
"""

from __future__ import annotations

import uuid
from typing import Any

import keras
import numpy as np

from sparseprune.keras.rules import WeightRule, is_supported, prunable_weights, role
from sparseprune.keras.schedules import ConstantSparsity, PruningSchedule
from sparseprune.keras.wrapper import PruneLowMagnitude, wrappers


class PruningPolicy:
    """Decides which layers get wrapped (TFMOT's `pruning_policy` hook)."""

    def allow_pruning(self, layer: Any) -> bool:
        return True

    def ensure_model_supports_pruning(self, model: Any) -> None:
        return None


def prune_low_magnitude(
    to_prune: Any,
    pruning_schedule: PruningSchedule | None = None,
    block_size: tuple[int, int] = (1, 1),
    block_pooling_type: str = "AVG",
    pruning_policy: PruningPolicy | None = None,
    sparsity_m_by_n: tuple[int, int] | None = None,
    *,
    masks: dict[str, np.ndarray] | np.ndarray | None = None,
    pruning_scope: str = "layer",
    max_sparsity: dict[str, float] | None = None,
    **kwargs: Any,
) -> Any:
    """Wrap a layer, a list of layers, or a Sequential/functional model for pruning.

    Beyond TFMOT: `masks` fixes the connectivity of named layers (0 = pruned, never updated);
    `pruning_scope="global"` ranks every wrapped weight together against the schedule's target,
    with `max_sparsity` capping what a layer may give up.
    """
    schedule = pruning_schedule or ConstantSparsity(0.5, 0)
    if pruning_scope not in ("layer", "global"):
        raise ValueError(f"pruning_scope must be 'layer' or 'global', got {pruning_scope!r}")
    settings = {
        "pruning_schedule": schedule,
        "block_size": tuple(block_size),
        "block_pooling_type": block_pooling_type,
        "sparsity_m_by_n": sparsity_m_by_n,
        **kwargs,
    }
    pool = f"global-{uuid.uuid4().hex[:12]}" if pruning_scope == "global" else None
    caps = dict(max_sparsity or {})
    if isinstance(to_prune, list):
        return [_wrap_layer(layer, settings, masks, pool, caps) for layer in to_prune]
    if isinstance(to_prune, keras.Model):
        return _prune_model(to_prune, settings, pruning_policy, masks, pool, caps)
    if isinstance(to_prune, keras.layers.Layer):
        given = {to_prune.name: masks} if isinstance(masks, np.ndarray) else masks
        return _wrap_layer(to_prune, settings, given, pool, caps)
    raise ValueError(f"prune_low_magnitude takes a keras Layer, list or Model, got {to_prune!r}")


def _prune_model(model, settings, policy, masks, pool, caps):
    if not _is_graph_model(model):
        raise ValueError(
            "prune_low_magnitude takes a Sequential or functional model; for a subclassed model "
            "wrap its layers where they are created: prune_low_magnitude(keras.layers.Dense(...))."
        )
    if policy is not None:
        policy.ensure_model_supports_pruning(model)

    def wrap(layer):
        if isinstance(layer, PruneLowMagnitude):
            raise ValueError(f"layer {layer.name} is already wrapped for pruning.")
        if isinstance(layer, keras.Model) and _is_graph_model(layer):
            return _prune_model(layer, settings, policy, masks, pool, caps)
        if policy is not None and not policy.allow_pruning(layer):
            return layer
        if not is_supported(layer) or (layer.built and not prunable_weights(layer)):
            return layer
        return _wrap_layer(layer, settings, masks, pool, caps)

    return keras.models.clone_model(model, clone_function=wrap)


def _wrap_layer(layer, settings, masks, pool, caps) -> PruneLowMagnitude:
    if isinstance(layer, PruneLowMagnitude):
        raise ValueError(f"layer {layer.name} is already wrapped for pruning.")
    given = (masks or {}).get(layer.name)
    if given is None and pool is None:
        return PruneLowMagnitude(layer, **settings)
    if not layer.built:
        raise ValueError(
            f"layer {layer.name} must be built before a fixed mask or a global target is set."
        )
    variables = prunable_weights(layer) or []
    if not variables:
        raise ValueError(f"layer {layer.name} has no prunable weights.")
    rules, initial = {}, {}
    for index, variable in enumerate(variables):
        if given is not None and index == 0:
            rules[role(variable)] = WeightRule(method="fixed")
            initial[role(variable)] = np.asarray(given)
        else:
            rules[role(variable)] = WeightRule(method="global", pool=pool, cap=caps.get(layer.name))
    return PruneLowMagnitude(layer, rules=rules, masks=initial, **settings)


def _is_graph_model(model: Any) -> bool:
    return (
        isinstance(model, keras.Sequential)
        or type(model).__name__ == "Functional"
        or (getattr(model, "_is_graph_network", False))
    )


def strip_pruning(model: Any) -> Any:
    """The model with every wrapper replaced by its layer, masks folded into the weights.

    The result holds only the original layer classes: saved, it loads with stock Keras.
    """
    if isinstance(model, PruneLowMagnitude):
        fold_masks(model)
        return model.layer
    if not isinstance(model, keras.Model) or not _is_graph_model(model):
        raise ValueError(
            "strip_pruning takes a Sequential or functional model (or one wrapper layer); in a "
            "subclassed model replace each wrapper by strip_pruning(wrapper)."
        )

    def unwrap(layer):
        if isinstance(layer, PruneLowMagnitude):
            fold_masks(layer)
            return layer.layer
        if isinstance(layer, keras.Model) and _is_graph_model(layer):
            return strip_pruning(layer)
        return layer

    return keras.models.clone_model(model, clone_function=unwrap)


def fold_masks(wrapper: PruneLowMagnitude) -> None:
    """w <- w * mask for each pruned weight of one wrapper (pruned values become +0.0)."""
    for weight, mask, _ in wrapper.pairs:
        values = np.asarray(keras.ops.convert_to_numpy(weight.value))
        keep = np.asarray(keras.ops.convert_to_numpy(mask.value)) != 0
        weight.assign(np.where(keep, values, np.zeros((), values.dtype)))


def apply_masks(model: Any) -> None:
    """Fold every mask into its weight, in place: call after an optimizer step in a custom
    loop when the raw variables themselves must hold zeros (the forward pass masks anyway)."""
    for wrapper in wrappers(model):
        fold_masks(wrapper)


def apply_masks_stateless(
    model: Any, trainable_values: list[Any], non_trainable_values: list[Any]
) -> list[Any]:
    """JAX-style loops: new trainable values with every mask applied, nothing assigned.

    `trainable_values` / `non_trainable_values` follow `model.trainable_variables` /
    `model.non_trainable_variables` (as `model.stateless_call` takes them).
    """
    trainable = {id(v): i for i, v in enumerate(model.trainable_variables)}
    others = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
    out = list(trainable_values)
    for wrapper in wrappers(model):
        for weight, mask, _ in wrapper.pairs:
            index = trainable.get(id(weight))
            if index is None:
                continue
            value = non_trainable_values[others[id(mask)]]
            out[index] = keras.ops.multiply(out[index], keras.ops.cast(value, out[index].dtype))
    return out


def _masked_counts(wrapper: Any) -> tuple[int, int]:
    """(masked, total) weights of one wrapper, measured from its mask variables."""
    pruned = total = 0
    for _, mask, _ in wrapper.pairs:
        values = np.asarray(keras.ops.convert_to_numpy(mask.value))
        pruned += int(np.count_nonzero(values == 0))
        total += values.size
    return pruned, total


def layer_sparsity(model: Any) -> dict[str, float]:
    """Fraction of masked weights per wrapped layer, measured from the mask variables."""
    out = {}
    for wrapper in wrappers(model):
        pruned, total = _masked_counts(wrapper)
        out[wrapper.layer.name] = pruned / total if total else 0.0
    return out


def masked_fraction(model: Any) -> float:
    """Masked weights over all wrapped weights: the model's sparsity, weighted by tensor size."""
    counts = [_masked_counts(wrapper) for wrapper in wrappers(model)]
    total = sum(t for _, t in counts)
    return sum(p for p, _ in counts) / total if total else 0.0
