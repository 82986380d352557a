"""The layer graph of a saved model's config, and the groups of channels that shrink together.

Used by `shrink`: removing an output unit of a layer means changing every tensor that carries that
channel, up to the layers that consume it with a weight matrix. Like Torch-Pruning's dependency
graph, producers whose channels meet in an elementwise merge (a residual Add) form one group, and
their channels are tied by a union-find over channel slots (`channel_slots`); Concatenate lays
slots side by side. What each class does to channels is read from `layers/channels.py`; anything
else stops the walk with a reason naming the layer (never a guess; shrink/layer_rules.py says why
one layer cannot be rewritten). Config JSON is data only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from sparseprune.errors import InputError
from sparseprune.layers.channels import GROUPED_DEPTHWISE, ChannelFacts, facts
from sparseprune.shrink.layer_rules import layer_problem


@dataclass(eq=False)  # hashed by identity: one node per layer
class Node:
    """One layer of the top-level model: its config entry (edited in place) and its inputs."""

    name: str
    class_name: str
    entry: dict
    inputs: list[str] = field(default_factory=list)
    calls: int = 1
    rank: int | None = None  # rank of its (first) input, batch axis included, when known
    channels: int | None = None  # channels of its (first) input, when known

    @property
    def config(self) -> dict:
        value = self.entry.get("config")
        return value if isinstance(value, dict) else {}

    @property
    def facts(self) -> ChannelFacts:
        row = facts(self.class_name)
        return GROUPED_DEPTHWISE if row.kind == "produce" and self.depthwise_groups else row

    @property
    def groups(self) -> int:
        value = self.config.get("groups", 1)
        return value if isinstance(value, int) and value > 0 else 1

    @property
    def depthwise_groups(self) -> bool:
        """A grouped convolution with one input channel and one filter per group."""
        groups = self.groups
        return groups > 1 and self.config.get("filters") == groups == self.channels

    @property
    def kind(self) -> str:
        return self.facts.kind


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
    raw = config.get("config")
    body = raw if isinstance(raw, dict) else {}
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
    raw = entry.get("config")
    config = raw if isinstance(raw, dict) else {}
    name = config.get("name") or entry.get("name")
    if not isinstance(name, str):
        raise InputError("a layer in the model config has no name.")
    return Node(name, str(entry.get("class_name")), entry)


def _refs(value: object) -> list[list]:
    if isinstance(value, list) and value and isinstance(value[0], str):
        return [value]
    if not isinstance(value, list):  # absent, or not a list of references (hostile config)
        return []
    return [v for v in value if isinstance(v, list) and v and isinstance(v[0], str)]


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
    """Layers a call reads, in argument order (Subtract and Add(x, x) need order and repeats).
    Keras 3 writes `{"args": [...]}` with keras tensors; tf_keras writes `[[name, 0, 0, {}]]`."""
    if isinstance(call, list):
        return [ref[0] for ref in _refs(call)]
    return [
        t["keras_history"][0]
        for t in keras_tensors(call)
        if isinstance(t.get("keras_history"), list) and t["keras_history"]
    ]


def build_groups(graph: Graph) -> list[Group]:
    """Every producer in exactly one group, in graph order of their first member. Order does
    not change the result: folding a constant into a consumer adds value x kernel column, which
    is zero for the consumer's own dead units, and passes repeat until nothing changes."""
    groups: list[Group] = []
    seen: set[str] = set()
    for node in graph.nodes.values():
        if node.kind == "produce" and node.name not in seen:
            group = _close_group(graph, node)
            seen.update(m.name for m in group.members)
            groups.append(group)
    return groups


def _close_group(graph: Graph, seed: Node) -> Group:
    """Grow a group until every tensor carrying its channels ends at a weighted consumer."""
    group = Group([seed], [], [])
    inside = {seed.name}
    pending = [seed]
    group.reason = layer_problem(seed)
    while pending and group.reason is None:
        group.reason = _expand(graph, pending.pop(), group, inside, pending)
    order = {name: i for i, name in enumerate(graph.nodes)}
    group.inner.sort(key=lambda n: order[n.name])
    group.members.sort(key=lambda n: order[n.name])
    if group.reason is None and any(c.name in inside for c, _ in group.uses):
        group.reason = "channels feed back into a layer of their own group"
    return group


def _expand(graph: Graph, node: Node, group: Group, inside: set[str], pending: list) -> str | None:
    """Follow one tensor of the group to every layer that reads it."""
    problem = _outputs_problem(graph, node)
    for name in graph.consumers[node.name] if not problem else []:
        step = graph.nodes[name]
        if step.kind in ("produce", "consume"):
            group.uses.append((step, node.name))
            problem = layer_problem(step)
        elif step.name not in inside:
            problem = _stop_problem(step) or layer_problem(step)
            inside.add(step.name)
            group.inner.append(step)
            pending.append(step)
            for source in step.inputs if step.facts.kind in ("merge", "concat") else []:
                problem = problem or _join(graph, source, group, inside, pending, step)
        if problem:
            return problem
    return problem


def _stop_problem(step: Node) -> str | None:
    row = step.facts
    if row.kind == "stop":
        return f"channels feed {step.class_name} '{step.name}', which {row.reason}"
    return None


def _join(
    graph: Graph, name: str, group: Group, inside: set[str], pending: list, merge: Node
) -> str | None:
    """Bring the source of a merge input into the group: a producer, or a per-channel layer."""
    while name not in inside:
        node = graph.nodes[name]
        inside.add(name)
        pending.append(node)
        if node.kind == "produce":
            group.members.append(node)
            return layer_problem(node)
        row = node.facts
        if row.kind not in ("pass", "merge", "concat", "flatten", "reshape") or not node.inputs:
            why = row.reason or "makes channels without a kernel"
            return f"'{merge.name}' merges {node.class_name} '{name}', which {why}"
        problem = layer_problem(node)
        if problem:
            return problem
        group.inner.append(node)
        if row.kind in ("merge", "concat"):
            problems = (_join(graph, s, group, inside, pending, node) for s in node.inputs)
            return next((p for p in problems if p), None)
        name = node.inputs[0]
    return None


def _outputs_problem(graph: Graph, node: Node) -> str | None:
    if node.name in graph.outputs:
        return f"channels reach the model output at '{node.name}'"
    if not graph.consumers.get(node.name):
        return f"'{node.name}' has no consumer"
    return None


def channel_slots(
    group: Group, units: dict[str, int], channels: dict[str, int | None]
) -> tuple[dict[str, np.ndarray], dict[str, bool], str | None]:
    """Each group tensor's channels as slot ids (one id = channels removed together; elementwise
    merges tie positions, Concatenate keeps offsets), whether it is flattened, or a problem.
    `channels` is each layer's input channel count from the propagated shapes (for Reshape)."""
    parent: list[int] = []
    slots: dict[str, np.ndarray] = {}
    flat: dict[str, bool] = {}
    for member in group.members:
        slots[member.name] = np.arange(len(parent), len(parent) + units[member.name])
        parent.extend(slots[member.name].tolist())
        flat[member.name] = False
    for node in group.inner:
        missing = [name for name in node.inputs if name not in slots]
        if missing:
            return slots, flat, f"'{node.name}' reads '{missing[0]}', outside the channel group"
        inputs = [slots[name] for name in node.inputs]
        flat[node.name] = node.class_name == "Flatten" or any(flat[n] for n in node.inputs)
        problem = _slot_problem(node, inputs, flat, channels)
        if problem:
            return slots, flat, problem
        if node.facts.kind == "concat":
            slots[node.name] = np.concatenate(inputs)
            continue
        for other in inputs[1:]:
            for a, b in zip(inputs[0].tolist(), other.tolist(), strict=True):
                parent[_root(parent, a)] = _root(parent, b)
        slots[node.name] = inputs[0]
    roots = {name: np.array([_root(parent, i) for i in ids], int) for name, ids in slots.items()}
    return roots, flat, None


def _slot_problem(
    node: Node, inputs: list[np.ndarray], flat: dict[str, bool], channels: dict[str, int | None]
) -> str | None:
    kind = node.facts.kind
    if kind == "concat" and flat[node.name]:
        return f"'{node.name}' concatenates flattened tensors"
    if kind == "merge" and len({len(ids) for ids in inputs}) != 1:
        return f"'{node.name}' merges tensors of different sizes"
    if kind == "reshape":
        target = node.config.get("target_shape")
        last = target[-1] if isinstance(target, list) and target else None
        if flat[node.name] or last is None or last != channels.get(node.name):
            return f"Reshape '{node.name}' to {target} regroups the channels"
    return None


def _root(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i
