"""sparseprune: inspect and prune saved Keras models without running code from them.

The library is usable from Python; each CLI command is a thin layer over one function here.
"""

from sparseprune.errors import CheckFailed, InputError, SparsePruneError
from sparseprune.formats import ModelFile, open_model
from sparseprune.inspect.inspection import ModelReport, gate_failures, inspect_model

__version__ = "0.1.0"

__all__ = [
    "CheckFailed",
    "InputError",
    "ModelFile",
    "ModelReport",
    "SparsePruneError",
    "__version__",
    "gate_failures",
    "inspect_model",
    "open_model",
]
