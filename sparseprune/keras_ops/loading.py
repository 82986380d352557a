"""Load a model with stock Keras, safely: refuse files that hold code unless the user opts in."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sparseprune.errors import InputError, describe
from sparseprune.formats import ModelFile, open_model
from sparseprune.formats.model import FORMAT_H5, FORMAT_KERAS

# The suffix Keras must see for each format sparseprune read: Keras picks its reader by suffix.
KERAS_SUFFIX = {FORMAT_KERAS: ".keras", FORMAT_H5: ".h5"}
REFUSED_FLAGS = ("lambda", "custom_module")


def check_loadable(path: str, unsafe: bool) -> str | None:
    """Return the file's Keras version; refuse weights-only files and (unless unsafe) code."""
    with open_model(path) as model:
        return _checked(model, path, unsafe)


def _checked(model: ModelFile, label: str, unsafe: bool) -> str | None:
    if model.format not in KERAS_SUFFIX:
        raise InputError(f"{label} holds weights only; loading it needs the architecture.")
    found = model.flags()  # scan_config over the whole architecture, every nesting
    risky = [place for flag in REFUSED_FLAGS for place in found.get(flag, [])]
    if risky and not unsafe:
        raise InputError(
            f"{label} has layers that run code or come from outside Keras "
            f"({', '.join(dict.fromkeys(risky))}); loading it with Keras could execute code. "
            "Pass --unsafe only if you trust it."
        )
    return model.writer


@contextlib.contextmanager
def checked_copy(path: str, unsafe: bool) -> Iterator[tuple[str, str | None]]:
    """A private copy of `path`, checked, named with the suffix of the format it was read as.

    Keras then loads exactly the bytes that were scanned (no change between check and load)
    and decides the format as sparseprune did (by magic bytes), not by the user's file name.
    """
    with tempfile.TemporaryDirectory(prefix="sparseprune-load-") as scratch:
        copy = Path(scratch) / "model"
        try:
            shutil.copyfile(path, copy)
        except OSError as error:
            raise InputError(f"cannot read {path}: {describe(error)}") from error
        with open_model(copy, path) as model:
            writer = _checked(model, path, unsafe)
            suffix = KERAS_SUFFIX[model.format]
        named = copy.rename(copy.with_suffix(suffix))
        yield str(named), writer


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
    with checked_copy(path, unsafe) as (copy, writer):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        if writer is not None and writer.startswith("2."):
            import tf_keras as library
        else:
            import keras as library
        kwargs = {"compile": False}
        if copy.endswith(".keras") or library.__name__ == "keras":
            kwargs["safe_mode"] = not unsafe
        try:
            return library.models.load_model(copy, **kwargs)
        except Exception as error:  # Keras raises many types for files it cannot rebuild
            found = _keras_hub_class(error) if library.__name__ == "keras" else None
            if found is None:
                raise InputError(f"Keras could not load {path}: {describe(error)}") from error
        try:  # a keras_hub class named without its module (the copy still exists here)
            return library.models.load_model(copy, custom_objects=found, **kwargs)
        except Exception as retry:
            raise InputError(f"Keras could not load {path}: {describe(retry)}") from retry


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
