"""The layer graph of a saved model's config, and how channels flow from one layer to the next.

Used by `shrink`: removing an output unit of a layer means changing every tensor that carries that
channel, up to the layers that consume it with a weight matrix. Which layers pass a channel through,
which consume it, and which couple channels of several tensors is declared in the tables below;
anything else stops the walk with a reason (never a guess). Config JSON is read as data only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from sparseprune.errors import InputError
from sparseprune.registry import LAYERS, classes_with

# Layer facts come from the one layer table (`registry.LAYERS`, its `channels` column).
# Layers whose output units are removable: class -> config key of the unit count.
PRODUCERS: dict[str, str] = {
    c: r.units_key for c in classes_with("produce") if (r := LAYERS[c]).units_key
}
# Layers that consume channels through the input axis (-2) of their kernel.
CONSUMERS = frozenset(PRODUCERS)
# Per-channel layers without weights: a channel stays one channel, a constant stays constant.
SPATIAL = classes_with("spatial")
# Per-channel layers that apply an elementwise function (the constant goes through it).
ELEMENTWISE = classes_with("elementwise")
# Per-channel affine layers with one weight entry per channel.
AFFINE = classes_with("affine")
# How per-channel constants combine in a merge (NaN, "varies", propagates). Elementwise merges
# tie channel j of every input to channel j of the output; Concatenate lays them side by side.
COMBINE: dict[str, Callable[[list[np.ndarray]], np.ndarray]] = {
    "Add": lambda xs: np.sum(xs, axis=0),
    "Subtract": lambda xs: xs[0] - xs[1],
    "Multiply": lambda xs: np.prod(xs, axis=0),
    "Average": lambda xs: np.mean(xs, axis=0),
    "Maximum": lambda xs: np.max(xs, axis=0),
    "Minimum": lambda xs: np.min(xs, axis=0),
    "Concatenate": np.concatenate,  # channel-axis only (see layer_problem): side by side
}
MERGES = {c: COMBINE[c] for c in classes_with("merge") | classes_with("concat")}


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805
# Keras's elementwise activations by config name (float64 reference for one constant).
ACTIVATIONS: dict[str, Callable[[float], float]] = {
    "linear": lambda x: x,
    "relu": lambda x: max(x, 0.0),
    "relu6": lambda x: min(max(x, 0.0), 6.0),
    "sigmoid": _sigmoid,
    "tanh": math.tanh,
    "softplus": _softplus,
    "softsign": lambda x: x / (1.0 + abs(x)),
    "elu": lambda x: x if x > 0 else math.expm1(x),
    "selu": lambda x: _SELU_SCALE * (x if x > 0 else _SELU_ALPHA * math.expm1(x)),
    "gelu": lambda x: 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0))),
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "exponential": math.exp,
    "hard_sigmoid": lambda x: min(max(x + 3.0, 0.0), 6.0) / 6.0,
    "hard_silu": lambda x: x * min(max(x + 3.0, 0.0), 6.0) / 6.0,
    "hard_swish": lambda x: x * min(max(x + 3.0, 0.0), 6.0) / 6.0,
    "leaky_relu": lambda x: x if x >= 0 else 0.2 * x,
    "mish": lambda x: x * math.tanh(_softplus(x)),
}


@dataclass(eq=False)  # hashed by identity: one node per layer
class Node:
    """One layer of the top-level model: its config entry (edited in place) and its inputs."""

    name: str
    class_name: str
    entry: dict
    inputs: list[str] = field(default_factory=list)
    calls: int = 1

    @property
    def config(self) -> dict:
        value = self.entry.get("config")
        return value if isinstance(value, dict) else {}


@dataclass
class Graph:
    """Layers in topological (config) order, who consumes whom, and the model's outputs."""

    nodes: dict[str, Node]
    consumers: dict[str, list[str]]
    outputs: set[str]


@dataclass
class Group:
    """Producers whose output channels are one channel space (tied by Add, Multiply, ...), the
    per-channel layers and merges carrying it (`inner`, in graph order), and the weighted
    consumers reading it: (consumer, name of the tensor it reads). `reason` blocks the group."""

    members: list[Node]
    inner: list[Node]
    uses: list[tuple[Node, str]]
    reason: str | None = None


def build_graph(config: dict) -> Graph:
    """The graph of a Sequential or Functional config; an `InputError` for anything else."""
    kind = config.get("class_name")
    body = config.get("config") if isinstance(config.get("config"), dict) else {}
    entries = [e for e in body.get("layers", []) if isinstance(e, dict)]
    if kind == "Sequential":
        nodes = _sequential_nodes(entries)
        outputs = {list(nodes)[-1]} if nodes else set()
    elif kind in ("Functional", "Model") and "input_layers" in body:
        nodes = _functional_nodes(entries)
        outputs = {ref[0] for ref in _refs(body.get("output_layers"))}
    else:
        raise InputError(f"shrink handles Sequential and Functional models, not {kind!r}.")
    consumers: dict[str, list[str]] = {name: [] for name in nodes}
    for node in nodes.values():
        for source in dict.fromkeys(node.inputs):
            if source not in consumers:
                raise InputError(f"layer '{node.name}' reads '{source}', which comes later.")
            consumers[source].append(node.name)
    return Graph(nodes, consumers, outputs)


def _sequential_nodes(entries: list[dict]) -> dict[str, Node]:
    nodes: dict[str, Node] = {}
    previous: str | None = None
    for entry in entries:
        node = _node(entry)
        node.inputs = [previous] if previous else []
        nodes[node.name] = node
        previous = node.name
    return nodes


def _functional_nodes(entries: list[dict]) -> dict[str, Node]:
    nodes: dict[str, Node] = {}
    for entry in entries:
        node = _node(entry)
        calls = entry.get("inbound_nodes") or []
        node.calls = max(len(calls), 1)
        node.inputs = [h for call in calls[:1] for h in history_names(call)]
        nodes[node.name] = node
    return nodes


def _node(entry: dict) -> Node:
    config = entry.get("config") if isinstance(entry.get("config"), dict) else {}
    name = config.get("name") or entry.get("name")
    if not isinstance(name, str):
        raise InputError("a layer in the model config has no name.")
    return Node(name, str(entry.get("class_name")), entry)


def _refs(value: object) -> list[list]:
    if isinstance(value, list) and value and isinstance(value[0], str):
        return [value]
    return [v for v in value or [] if isinstance(v, list) and v and isinstance(v[0], str)]


def keras_tensors(data: object) -> Iterator[dict]:
    """Every `__keras_tensor__` config found anywhere in a call's args/kwargs."""
    if isinstance(data, dict):
        if data.get("class_name") == "__keras_tensor__" and isinstance(data.get("config"), dict):
            yield data["config"]
            return
        for value in data.values():
            yield from keras_tensors(value)
    elif isinstance(data, list):
        for value in data:
            yield from keras_tensors(value)


def history_names(call: object) -> list[str]:
    """Layers a call reads, in argument order (Subtract and Add(x, x) need order and repeats)."""
    return [
        t["keras_history"][0]
        for t in keras_tensors(call)
        if isinstance(t.get("keras_history"), list) and t["keras_history"]
    ]


def activation_fn(node: Node) -> Callable[[float], float] | str:
    """The elementwise function a layer applies after its weights, or why it is not one."""
    config = node.config
    if node.class_name == "ReLU":
        top = config.get("max_value")
        return _relu(
            math.inf if top is None else float(top),
            float(config.get("negative_slope") or 0.0),
            float(config.get("threshold") or 0.0),
        )
    if node.class_name == "LeakyReLU":
        slope = float(config.get("negative_slope", config.get("alpha", 0.3)))
        return lambda x: x if x >= 0 else slope * x
    if node.class_name == "ELU":
        alpha = float(config.get("alpha", 1.0))
        return lambda x: x if x > 0 else alpha * math.expm1(x)
    name = config.get("activation", "linear")
    name = "linear" if name is None else name
    if isinstance(name, str) and name in ACTIVATIONS:
        return ACTIVATIONS[name]
    return f"activation {name!r} of '{node.name}' is not elementwise or not known"


def _relu(top: float, slope: float, cut: float) -> Callable[[float], float]:
    """Keras's ReLU layer: min(x, max_value) above the threshold, a slope below it."""
    return lambda x: min(x, top) if x >= cut else slope * (x - cut)


def layer_problem(node: Node) -> str | None:
    """Why a producer/consumer/per-channel layer cannot be rewritten, or None."""
    config = node.config
    if node.calls > 1:
        return f"'{node.name}' is shared (called {node.calls} times)"
    if config.get("data_format", "channels_last") != "channels_last":
        return f"'{node.name}' is channels_first"
    if int(config.get("groups", 1) or 1) != 1:
        return f"'{node.name}' is a grouped convolution"
    if node.class_name in (*AFFINE, "Concatenate") and config.get("axis", -1) not in (-1, [-1]):
        axis = config.get("axis")
        shape = (node.entry.get("build_config") or {}).get("input_shape") or []
        rank = len(shape[0] if shape and isinstance(shape[0], list) else shape)
        if axis not in (rank - 1, [rank - 1]):
            return f"'{node.name}' works on axis {axis}, not the channel axis"
    return None


def build_groups(graph: Graph) -> list[Group]:
    """Every producer in exactly one group, groups ordered so that a group's constants are
    folded into a consumer before that consumer's own group is planned."""
    groups: list[Group] = []
    seen: set[str] = set()
    for node in graph.nodes.values():
        if node.class_name in PRODUCERS and node.name not in seen:
            group = _close_group(graph, node)
            seen.update(m.name for m in group.members)
            groups.append(group)
    return _dependency_order(groups)


def _close_group(graph: Graph, seed: Node) -> Group:
    """Grow a group until every tensor carrying its channels ends at a weighted consumer."""
    group = Group([seed], [], [])
    inside = {seed.name}
    pending = [seed]
    while pending and group.reason is None:
        group.reason = _expand(graph, pending.pop(), group, inside, pending)
    order = {name: i for i, name in enumerate(graph.nodes)}
    group.inner.sort(key=lambda n: order[n.name])
    if group.reason is None and any(c.name in inside for c, _ in group.uses):
        group.reason = "channels feed back into a layer of their own group"
    return group


def _expand(graph: Graph, node: Node, group: Group, inside: set[str], pending: list) -> str | None:
    """Follow one tensor of the group to every layer that reads it."""
    problem = layer_problem(node) or _outputs_problem(graph, node)
    for name in graph.consumers[node.name] if not problem else []:
        step = graph.nodes[name]
        if step.class_name in CONSUMERS:
            group.uses.append((step, node.name))
            problem = layer_problem(step)
        elif step.name not in inside:
            inside.add(step.name)
            group.inner.append(step)
            pending.append(step)
            problem = layer_problem(step) or _step_problem(step)
            for source in step.inputs if step.class_name in MERGES else []:
                problem = problem or _join(graph, source, group, inside, pending)
        if problem:
            return problem
    return problem


def _join(graph: Graph, name: str, group: Group, inside: set[str], pending: list) -> str | None:
    """Bring the source of a merge input into the group: a producer, or a per-channel layer."""
    while name not in inside:
        node = graph.nodes[name]
        inside.add(name)
        pending.append(node)
        if node.class_name in PRODUCERS:
            group.members.append(node)
            return None
        if node.class_name == "InputLayer" or _step_problem(node):
            return f"a merge reads {node.class_name} '{name}', whose channels cannot be removed"
        group.inner.append(node)
        if node.class_name in MERGES:
            problems = (_join(graph, source, group, inside, pending) for source in node.inputs)
            return next((p for p in problems if p), None)
        name = node.inputs[0]
    return None


def _outputs_problem(graph: Graph, node: Node) -> str | None:
    if node.name in graph.outputs:
        return f"channels reach the model output at '{node.name}'"
    if not graph.consumers.get(node.name):
        return f"'{node.name}' has no consumer"
    return None


def _step_problem(step: Node) -> str | None:
    cls = step.class_name
    if cls in ELEMENTWISE:
        fn = activation_fn(step)
        return fn if isinstance(fn, str) else None
    if cls in MERGES or cls in AFFINE or cls in SPATIAL or cls == "Flatten":
        return None
    return f"channels feed {cls} '{step.name}', which shrink does not rewrite"


def _dependency_order(groups: list[Group]) -> list[Group]:
    """Kahn's order on 'a member of B consumes A'; groups left in a cycle are blocked."""
    owner = {m.name: g for g in groups for m in g.members}
    after: dict[int, set[int]] = {id(g): set() for g in groups}
    for group in groups:
        for consumer, _ in group.uses:
            if consumer.name in owner and owner[consumer.name] is not group:
                after[id(owner[consumer.name])].add(id(group))
    ordered: list[Group] = []
    left = list(groups)
    while left:
        ready = [g for g in left if not (after[id(g)] - {id(o) for o in ordered})]
        if not ready:
            for group in left:
                group.reason = group.reason or "groups depend on each other in a cycle"
            return ordered + left
        ordered.extend(ready)
        left = [g for g in left if g not in ready]
    return ordered


def channel_slots(
    group: Group, units: dict[str, int]
) -> tuple[dict[str, np.ndarray], dict[str, bool], str | None]:
    """Each group tensor's channels as slot ids (one id = channels removed together; elementwise
    merges tie positions, Concatenate keeps offsets), whether it is flattened, or a problem."""
    parent: list[int] = []
    slots: dict[str, np.ndarray] = {}
    flat: dict[str, bool] = {}
    for member in group.members:
        slots[member.name] = np.arange(len(parent), len(parent) + units[member.name])
        parent.extend(slots[member.name].tolist())
        flat[member.name] = False
    for node in group.inner:
        inputs = [slots[name] for name in node.inputs]
        flat[node.name] = node.class_name == "Flatten" or any(flat[n] for n in node.inputs)
        if node.class_name == "Concatenate":
            if flat[node.name]:
                return slots, flat, f"'{node.name}' concatenates flattened tensors"
            slots[node.name] = np.concatenate(inputs)
            continue
        if node.class_name in MERGES and len({len(ids) for ids in inputs}) != 1:
            return slots, flat, f"'{node.name}' merges tensors of different sizes"
        for other in inputs[1:]:
            for a, b in zip(inputs[0].tolist(), other.tolist(), strict=True):
                parent[_root(parent, a)] = _root(parent, b)
        slots[node.name] = inputs[0]
    roots = {name: np.array([_root(parent, i) for i in ids], int) for name, ids in slots.items()}
    return roots, flat, None


def _root(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i
