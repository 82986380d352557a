"""Optional dependencies: the one gate that names the extra a user must install.

The core install (h5py, numpy, typer, rich) runs inspect, one-shot prune, strip and shrink. What
needs a live model (evaluate, compare's outputs, bench, export, --verify, fine-tuning) needs the
`tensorflow` extra; `--plot` needs the `plot` extra. Checking with `find_spec` imports nothing, so
the gate is free to call before any work is done or any file written.
"""

from __future__ import annotations

import importlib.util

from sparseprune.errors import InputError

# extra -> modules it provides that the gate checks (the extra installs more, e.g. ai-edge-litert).
EXTRAS: dict[str, tuple[str, ...]] = {
    "tensorflow": ("tensorflow", "keras"),
    "keras": ("keras",),  # sparseprune.keras: Keras 3 on any backend (JAX, PyTorch need no TF)
    "tfmot": ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization"),
    "plot": ("matplotlib",),
}
# Which pip extra installs the modules of each gate ("tfmot" comes with the tensorflow extra).
PIP_EXTRA = {
    "tensorflow": "tensorflow",
    "keras": "tensorflow",
    "tfmot": "tensorflow",
    "plot": "plot",
}


class MissingExtra(InputError):
    """A feature's optional dependency is not installed (exit 2, like any other bad request)."""


def missing_modules(extra: str) -> list[str]:
    return [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]


def install_hint(extra: str, feature: str, missing: str) -> str:
    return (
        f"{feature} needs the [{PIP_EXTRA[extra]}] extra ('{missing}' is not installed): "
        f"pip install 'sparseprune[{PIP_EXTRA[extra]}]'."
    )


def require(extra: str, feature: str = "this command") -> None:
    """Raise MissingExtra, in one line naming the extra to install, unless `extra` is present."""
    missing = missing_modules(extra)
    if missing:
        raise MissingExtra(install_hint(extra, feature, missing[0]))


def extra_for_module(module: str | None) -> str | None:
    """The extra that provides `module` (a ModuleNotFoundError's name), if any."""
    root = (module or "").split(".")[0]
    for extra in ("tensorflow", "tfmot", "plot"):  # the smallest extra that has it first
        if root in EXTRAS[extra]:
            return extra
    return "tensorflow" if root == "ai_edge_litert" else None
