"""Runs first when `sparseprune.keras` is imported: the extras gate, then the quiet TF import.

Without Keras the import fails with one line naming the extra to install (MissingExtra), not a
ModuleNotFoundError from deep inside. JAX and PyTorch users need no TensorFlow, so only Keras is
required; when TensorFlow is installed, its start-up noise is kept off fd 2 as on the CLI
(`sparseprune.keras_ops.quiet`; SPARSEPRUNE_DEBUG=1 shows it).
"""

from __future__ import annotations

import importlib.util

from sparseprune.extras import require

require("keras", "sparseprune.keras")
if importlib.util.find_spec("tensorflow") is not None:
    from sparseprune.keras_ops import quiet  # the package's gate passes: TF and Keras are here

    quiet.install()
