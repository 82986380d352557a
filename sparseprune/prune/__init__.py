"""One-shot pruning on the file: plan which weights to zero, write, re-read and verify."""

from sparseprune.prune.result import PruneResult, TensorOutcome
from sparseprune.prune.run import default_output, output_suffix, prune_model

__all__ = ["PruneResult", "TensorOutcome", "default_output", "output_suffix", "prune_model"]
