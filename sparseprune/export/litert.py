"""Which kernels a converted LiteRT/TFLite model runs sparse, read from its flatbuffer.

No TensorFlow: the converted graph comes from `formats/tflite.py` and the Keras kernels from the
model file's reader, so `export` and `bench` explain, per weight-consuming op, what the converter
did with the zeros: kept a 1x4 block-sparse weight that FULLY_CONNECTED runs directly ("sparse"),
stored it compressed but put a DENSIFY op in front ("densified": runs dense, only the file
shrinks), or stored it dense. The reason comes from the kernel's own zero counts (the converter's
rule). Covered ops: FULLY_CONNECTED (Dense, and EinsumDense equations the converter lowers to it,
their kernel reshaped to 2-D), BATCH_MATMUL with a constant operand (EinsumDense whose kernel has
a batch axis), the convolutions, and GATHER / EMBEDDING_LOOKUP of an Embedding table.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np

from sparseprune.formats import open_model
from sparseprune.formats.model import TensorInfo
from sparseprune.formats.tflite import Subgraph, TfliteModel
from sparseprune.numeric.masks import zero_blocks
from sparseprune.numeric.stats import LITERT_BLOCK, litert_verdict


@dataclass(frozen=True)
class WeightOp:
    """How one TFLite op consumes a stored weight."""

    kind: str  # "dense" | "matmul" | "conv" | "embedding": which Keras kernels can feed it
    weight: int  # the op input that carries the weight


WEIGHT_OPS = {
    "FULLY_CONNECTED": WeightOp("dense", 1),
    "BATCH_MATMUL": WeightOp("matmul", 1),
    "CONV_2D": WeightOp("conv", 1),
    "DEPTHWISE_CONV_2D": WeightOp("conv", 1),
    "CONV_3D": WeightOp("conv", 1),
    "TRANSPOSE_CONV": WeightOp("conv", 1),  # inputs: output shape, weights, activations
    "EMBEDDING_LOOKUP": WeightOp("embedding", 1),
    "GATHER": WeightOp("embedding", 0),
}
PASS_THROUGH = ("DEQUANTIZE",)  # float16/int8 weights reach the op through these
KERNEL_ROLES = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings")
PRUNED_FRACTION = 0.1  # default: a kernel with at least this share of zeros counts as pruned
CONV_REASON = (
    "the converter densifies convolution weights and no x86 runtime runs them sparse "
    "(shrink removes filters instead)"
)
SPARSE_REASON = "1x{} blocks kept (block_map [1]): FULLY_CONNECTED runs its sparse kernel"
MATMUL_REASON = (
    "BATCH_MATMUL has no sparse kernel and the converter stores its weight dense (an "
    "EinsumDense kernel with a batch axis); only equations lowered to FULLY_CONNECTED run sparse"
)
EMBEDDING_REASON = "a lookup table: GATHER reads whole rows, so zeros save no time"


@dataclass(frozen=True)
class Kernel:
    """A Keras kernel as the file stores it, with its zero counts."""

    layer: str
    role: str  # `kernel`, or a sub-layer's (`query/kernel` in MultiHeadAttention)
    kind: str  # "dense" | "conv" | "embedding"
    shape: tuple[int, ...]
    zeros: int
    params: int
    # TFLite FULLY_CONNECTED weight shape (out, in) this kernel can be reshaped to -> the
    # fraction of its 1x4 blocks (4 consecutive inputs of one output) that are all zero
    views: dict[tuple[int, int], float] = field(default_factory=dict)
    transposed: frozenset[tuple[int, int]] = frozenset()  # views only an (out, in) kernel gives

    @property
    def zero_fraction(self) -> float:
        return self.zeros / self.params if self.params else 0.0

    @property
    def block_fraction(self) -> float | None:
        """4x1 zero blocks of the Dense layout (in, out): inputs are every axis but the last."""
        if self.kind != "dense":
            return None
        return self.views.get((self.shape[-1], math.prod(self.shape[:-1])))

    @property
    def scope(self) -> list[str]:
        """The name parts a converted tensor name carries: layer, then sub-layers."""
        return [self.layer, *self.role.split("/")[:-1]]


@dataclass(frozen=True)
class LayerRun:
    layer: str | None  # the Keras layer, None when no kernel matches the tensor
    op: str
    tensor: str
    shape: list[int]
    runs: str  # "sparse" | "densified" | "dense"
    reason: str
    zero_fraction: float | None
    block_fraction: float | None
    pruned: bool

    def to_dict(self) -> dict:
        return asdict(self)


def file_kernels(path: str) -> list[Kernel]:
    """Every kernel of the model file that a TFLite weight op can consume, with zero counts."""
    with open_model(path) as model:
        return [
            _kernel(tensor, model.read(tensor))
            for tensor in model.model_tensors
            if tensor.role.split("/")[-1] in KERNEL_ROLES and len(tensor.shape) >= 2
        ]


def _kernel(tensor: TensorInfo, values: np.ndarray) -> Kernel:
    kind = _kernel_kind(tensor.layer_class or "", tensor.role.split("/")[-1])
    views, transposed = _fc_views(values) if kind == "dense" else ({}, frozenset())
    zeros = int(np.count_nonzero(values == 0))
    return Kernel(
        tensor.layer, tensor.role, kind, tensor.shape, zeros, values.size, views, transposed
    )


def _kernel_kind(layer_class: str, role: str) -> str:
    if role == "embeddings":
        return "embedding"
    return "conv" if "Conv" in layer_class or role != "kernel" else "dense"


def _fc_views(values: np.ndarray) -> tuple[dict[tuple[int, int], float], frozenset]:
    """The FULLY_CONNECTED weights (out, in) this kernel can become, with their 1x4 zero blocks.

    Inputs first (Dense, `abc,cde->abde`): the leading k axes are the inputs; outputs first
    (`abc,dc->abd`, the kernel stored (out, in)) is tried only for shapes not already taken."""
    views: dict[tuple[int, int], float] = {}
    transposed = set()
    shape = values.shape
    for split in range(1, len(shape)):
        inputs, outputs = math.prod(shape[:split]), math.prod(shape[split:])
        found, total = zero_blocks(values.reshape(inputs, outputs), LITERT_BLOCK)
        views[(outputs, inputs)] = found / total if total else 0.0
    for split in range(1, len(shape)):
        outputs, inputs = math.prod(shape[:split]), math.prod(shape[split:])
        if (outputs, inputs) not in views:
            found, total = zero_blocks(values.reshape(outputs, inputs), LITERT_BLOCK[::-1])
            views[(outputs, inputs)] = found / total if total else 0.0
            transposed.add((outputs, inputs))
    return views, frozenset(transposed)


def layer_runs(
    model: TfliteModel,
    kernels: list[Kernel],
    sparsity: bool = True,
    pruned_at: float = PRUNED_FRACTION,
) -> list[LayerRun]:
    """One row per weight-consuming op of the main subgraph, in graph order. A kernel with at
    least `pruned_at` zeros counts as pruned (what --require-sparse checks)."""
    graph = model.subgraphs[0]
    unused = list(kernels)
    rows = []
    for op in graph.operators:
        spec = WEIGHT_OPS.get(op.opcode)
        if spec is None or len(op.inputs) <= spec.weight or op.inputs[spec.weight] < 0:
            continue
        weight, densified = _weight_source(graph, op.inputs[spec.weight])
        if not _is_constant(graph, weight):
            continue  # an activation operand: attention's matmuls, a gather of computed values
        tensor = graph.tensors[weight]
        kernel = _match(tensor.name, tensor.shape, spec.kind, unused)
        if kernel is None and spec.kind == "embedding":
            continue  # a GATHER from some other constant (shape tables), not a weight
        if kernel is not None:
            unused.remove(kernel)
        rows.append(_row(op.opcode, spec.kind, tensor, densified, kernel, sparsity, pruned_at))
    return rows


def require_sparse_failures(rows: list[LayerRun]) -> list[str]:
    """One sentence per pruned kernel that LiteRT would run dense."""
    return [
        f"{row.layer or row.tensor}: {row.zero_fraction:.0%} zeros but LiteRT runs it "
        f"{row.runs} ({row.reason})."
        for row in rows
        if row.pruned and row.runs != "sparse"
    ]


def hybrid_sparse_layers(model: TfliteModel) -> list[str]:
    """Weights of FULLY_CONNECTED ops that take float activations and block-sparse int8 weights
    (dynamic-range quantization with sparsity). XNNPACK computes these wrong (measured with
    ai_edge_litert 2.3 and tf.lite 2.21: max |diff| ~4 on a 1024-wide layer whose correct output
    is ~1), so they must run on the builtin kernels, which are right (and run them sparse)."""
    names = []
    for graph in model.subgraphs:
        for op in graph.operators:
            if op.opcode != "FULLY_CONNECTED" or len(op.inputs) < 2 or min(op.inputs[:2]) < 0:
                continue
            activation, weight = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
            blocked = weight.sparsity is not None and bool(weight.sparsity.block_map)
            if blocked and weight.dtype == "int8" and activation.dtype == "float32":
                names.append(weight.name)
    return names


def _weight_source(graph: Subgraph, index: int) -> tuple[int, bool]:
    """The stored weight tensor behind an op input, and whether a DENSIFY op expands it."""
    densified = False
    for _ in range(4):  # DENSIFY and DEQUANTIZE chains are at most two long in practice
        producer = graph.producer(index)
        if producer is None or not producer.inputs or producer.inputs[0] < 0:
            break
        if producer.opcode == "DENSIFY":
            densified = True
        elif producer.opcode not in PASS_THROUGH:
            break
        index = producer.inputs[0]
    return index, densified


def _is_constant(graph: Subgraph, index: int) -> bool:
    """Stored in the file: no op computes it and it is not a graph input."""
    return index not in graph.inputs and graph.producer(index) is None


def _candidates(shape: tuple[int, ...], kind: str, kernels: list[Kernel]) -> list[Kernel]:
    """Kernels whose values this TFLite weight can hold, in the layout its op uses."""
    if kind == "dense" and len(shape) == 2:
        view = (shape[0], shape[1])
        fits = [k for k in kernels if k.kind == "dense" and view in k.views]
        return sorted(fits, key=lambda k: view in k.transposed)  # inputs-first layouts first
    wanted = "dense" if kind == "matmul" else kind
    size = math.prod(shape)
    return [k for k in kernels if k.kind == wanted and k.params == size]


def _names_scope(tensor_name: str, scope: list[str]) -> bool:
    """`mlp_1/hidden1_1/MatMul;...` names layer `hidden1` (Keras adds `_N` to name scopes);
    a sub-layer kernel needs its parts in order (`mha_1/query_1/...` for `mha`, `query`)."""
    parts = iter(re.split(r"[/;:]", tensor_name))
    for name in scope:
        pattern = re.compile(re.escape(name) + r"(_\d+)?")
        if not any(pattern.fullmatch(part) for part in parts):
            return False
    return True


def _match(name: str, shape: tuple[int, ...], kind: str, kernels: list[Kernel]) -> Kernel | None:
    same_shape = _candidates(shape, kind, kernels)
    named = [k for k in same_shape if _names_scope(name, k.scope)]
    candidates = named or same_shape
    return candidates[0] if candidates else None


def _row(op, kind, tensor, densified, kernel: Kernel | None, sparsity, pruned_at) -> LayerRun:
    blocked = tensor.sparsity is not None and bool(tensor.sparsity.block_map)
    if blocked and not densified and op == "FULLY_CONNECTED":
        block = tensor.sparsity.block_shape
        runs, reason = "sparse", SPARSE_REASON.format(block[-1] if block else "?")
    else:
        runs = "densified" if densified else "dense"
        reason = _dense_reason(kind, densified, kernel, sparsity, tensor.shape)
    fraction = kernel.zero_fraction if kernel else None
    blocks = kernel.views.get(tuple(tensor.shape)) if kernel and kind == "dense" else None
    return LayerRun(
        layer="/".join(kernel.scope) if kernel else None,
        op=op,
        tensor=tensor.name,
        shape=list(tensor.shape),
        runs=runs,
        reason=reason,
        zero_fraction=fraction,
        block_fraction=blocks,
        pruned=fraction is not None and fraction >= pruned_at,
    )


def _dense_reason(kind, densified, kernel: Kernel | None, sparsity, shape) -> str:
    if not sparsity:
        return "exported without sparsity encoding (--no-sparsity)"
    if kind in STATIC_REASONS:
        return STATIC_REASONS[kind](densified)
    blocks = kernel.views.get(tuple(shape)) if kernel else None
    if kernel is None or blocks is None:
        return "a DENSIFY op expands it before FULLY_CONNECTED" if densified else "stored dense"
    verdict = litert_verdict(kernel.zero_fraction, blocks)
    if densified:
        return f"{verdict.reason}; a DENSIFY op expands it before FULLY_CONNECTED"
    return verdict.reason


STATIC_REASONS = {  # op kinds whose reason does not depend on the kernel's zeros
    "conv": lambda densified: CONV_REASON if densified else "too few zeros to encode",
    "matmul": lambda densified: MATMUL_REASON,
    "embedding": lambda densified: EMBEDDING_REASON,
}
