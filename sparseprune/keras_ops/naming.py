"""Names for a live Keras model's weights that match the file reader's `TensorInfo.name`.

`layer/role`, with nested models as `outer/inner/role`. The role is the layer table's canonical
role for the variable at that position (`mha/query/kernel`, `bilstm/forward_layer/kernel`, an RNN
cell's `lstm/kernel`), as the file readers name it; a class the table does not know gets
`var0`, `var1`, ... per sub-layer (as both readers name them), else the variables' own names.
This is how trained weights find their place in the file again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sparseprune.layers.slots import numbered_roles, slots
from sparseprune.layers.table import is_known


def named_weights(model: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(name, variable) for every weight, nested models flattened, in layer order."""
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.weights:  # a nested model
            yield from named_weights(layer, f"{prefix}{layer.name}/")
            continue
        for role, variable in zip(_roles(layer), layer.weights, strict=True):
            yield f"{prefix}{layer.name}/{role}", variable


def _roles(layer: Any) -> list[str]:
    """Canonical roles by position from the layer table, when it knows the layer's class."""
    try:
        config = layer.get_config()
    except Exception:
        config = {}
    keras2 = type(layer).__module__.startswith("tf_keras")  # tf_keras names a few differently
    found = [
        s
        for s in slots(type(layer).__name__, config if isinstance(config, dict) else {}, keras2)
        or []
        if s.alias is None
    ]
    for candidate in (found, [s for s in found if not s.optional]):  # parts built per call
        if candidate and len(candidate) == len(layer.weights):
            return [slot.role for slot in candidate]
    if not is_known(type(layer).__name__):  # numbered as both file readers number them
        paths = [(getattr(v, "path", None) or v.name).split(":")[0] for v in layer.weights]
        numbered = numbered_roles(layer.name, paths)
        if numbered is not None:
            return numbered
    return [_role(variable) for variable in layer.weights]


def _role(variable: Any) -> str:
    path = getattr(variable, "path", None) or variable.name
    return path.split("/")[-1].split(":")[0]


def weights_by_file_name(model: Any) -> dict[str, Any]:
    """Variables by every name the file reader may use: real roles, and `varN` by position
    in the layer (where a custom layer's sub-layer attribute differs from its name)."""
    out: dict[str, Any] = {}
    position: dict[str, int] = {}
    for name, variable in named_weights(model):
        layer = name.rsplit("/", 1)[0]
        index = position.get(layer, 0)
        position[layer] = index + 1
        out[name] = variable
        out.setdefault(f"{layer}/var{index}", variable)
    return out
