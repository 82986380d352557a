"""Load a model with stock Keras, safely: refuse files that hold code unless the user opts in."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from sparseprune.errors import InputError, describe
from sparseprune.formats import open_model
from sparseprune.formats.model import FORMAT_H5, FORMAT_KERAS


def check_loadable(path: str, unsafe: bool) -> str | None:
    """Return the file's Keras version; refuse weights-only files and (unless unsafe) code."""
    with open_model(path) as model:
        if model.format not in (FORMAT_KERAS, FORMAT_H5):
            raise InputError(f"{path} holds weights only; loading it needs the architecture.")
        risky = {k: v for k, v in model.flags().items() if k in ("lambda", "custom_module")}
        if risky and not unsafe:
            names = ", ".join(n for names in risky.values() for n in names)
            raise InputError(
                f"{path} has layers that run code or come from outside Keras ({names}); "
                "loading it with Keras could execute code. Pass --unsafe only if you trust it."
            )
        return model.writer


def import_custom_objects(path: str, unsafe: bool) -> None:
    """Run the user's own Python file so its `@register_keras_serializable` classes exist.

    Keras 3 never imports custom classes named in a model file; they must be registered in the
    loading process. This executes code, so it is only done on request and with --unsafe.
    """
    if not unsafe:
        raise InputError("--custom-objects runs Python code; pass --unsafe to allow it.")
    source = Path(path)
    if source.suffix != ".py" or not source.is_file():
        raise InputError(f"--custom-objects expects a Python file, got {path}.")
    spec = importlib.util.spec_from_file_location(f"sparseprune_custom_{source.stem}", source)
    if spec is None or spec.loader is None:
        raise InputError(f"cannot import {path}.")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the user's code may raise anything
        raise InputError(f"importing {path} failed: {describe(error)}") from error


def load_keras_model(path: str, unsafe: bool = False) -> Any:
    """Load with Keras 3, or with tf_keras for files tf_keras wrote (Keras 3 can't load all)."""
    writer = check_loadable(path, unsafe)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if writer is not None and writer.startswith("2."):
        import tf_keras as library
    else:
        import keras as library
    kwargs = {"compile": False}
    if path.endswith(".keras") or library.__name__ == "keras":
        kwargs["safe_mode"] = not unsafe
    try:
        return library.models.load_model(path, **kwargs)
    except Exception as error:  # Keras raises many types for files it cannot rebuild
        found = _keras_hub_class(error) if library.__name__ == "keras" else None
        if found is not None:
            try:
                return library.models.load_model(path, custom_objects=found, **kwargs)
            except Exception as retry:
                raise InputError(f"Keras could not load {path}: {describe(retry)}") from retry
        raise InputError(f"Keras could not load {path}: {describe(error)}") from error


def _keras_hub_class(error: BaseException) -> dict[str, Any] | None:
    """A legacy `.h5` config names keras_hub classes without their module (`GPT2Backbone`);
    the installed keras_hub package registers them as `keras_hub>Name`. Importing an installed
    library runs no code from the file. {name: class} if that is what was missing."""
    text = str(error)
    if "Unknown layer: '" not in text or importlib.util.find_spec("keras_hub") is None:
        return None
    import keras
    import keras_hub  # noqa: F401  (registers its classes as keras_hub>Name)

    name = text.split("Unknown layer: '", 1)[1].split("'", 1)[0]
    found = keras.saving.get_registered_object(f"keras_hub>{name}")
    return {name: found} if found is not None else None
