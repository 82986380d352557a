"""Pruning inside your own Keras 3 training: TFMOT's API on TensorFlow, JAX and PyTorch.

Porting from TFMOT is changing the import::

    import sparseprune.keras as tfmot_sparsity   # was: tfmot.sparsity.keras

Imports Keras (the heavy side); nothing on the file-only side imports this package.
"""

# The gate (sorted first) must run before anything imports Keras.
from sparseprune.keras import _gate  # noqa: F401
from sparseprune.keras.api import (
    PruningPolicy,
    apply_masks,
    apply_masks_stateless,
    layer_sparsity,
    prune_low_magnitude,
    strip_pruning,
)
from sparseprune.keras.callbacks import PruningSummaries, UpdatePruningStep
from sparseprune.keras.rules import PrunableLayer, WeightRule
from sparseprune.keras.schedules import (
    ConstantSparsity,
    PolynomialDecay,
    PolynomialDecayToEnd,
    PruningSchedule,
)
from sparseprune.keras.wrapper import PruneLowMagnitude

__all__ = [
    "ConstantSparsity",
    "PolynomialDecay",
    "PolynomialDecayToEnd",
    "PrunableLayer",
    "PruneLowMagnitude",
    "PruningPolicy",
    "PruningSchedule",
    "PruningSummaries",
    "UpdatePruningStep",
    "WeightRule",
    "apply_masks",
    "apply_masks_stateless",
    "layer_sparsity",
    "prune_low_magnitude",
    "strip_pruning",
]
