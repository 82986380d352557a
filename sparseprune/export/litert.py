"""Which kernels a converted LiteRT/TFLite model runs sparse, read from its flatbuffer.

No TensorFlow: the converted graph comes from `formats/tflite.py` and the Keras kernels from the
model file's reader, so `export` and `bench` explain, per layer, what the converter did with the
zeros: kept a 1x4 block-sparse weight that FULLY_CONNECTED runs directly ("sparse"), stored it
compressed but put a DENSIFY op in front ("densified": runs dense, only the file shrinks), or
stored it dense. The reason comes from the kernel's own zero counts (the converter's rule).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np

from sparseprune.formats import open_model
from sparseprune.formats.tflite import Subgraph, TfliteModel
from sparseprune.numeric.masks import zero_blocks
from sparseprune.numeric.stats import LITERT_BLOCK, litert_verdict

WEIGHT_OPS = {"FULLY_CONNECTED": "dense", "CONV_2D": "conv", "DEPTHWISE_CONV_2D": "conv"}
PASS_THROUGH = ("DEQUANTIZE",)  # float16/int8 weights reach the op through these
PRUNED_FRACTION = 0.1  # a kernel with at least this share of zeros counts as pruned
CONV_REASON = (
    "the converter densifies convolution weights and no x86 runtime runs them sparse "
    "(shrink removes filters instead)"
)
SPARSE_REASON = "1x4 blocks kept (block_map [1]): FULLY_CONNECTED runs its sparse kernel"


@dataclass(frozen=True)
class Kernel:
    """A Keras kernel as the file stores it, with its zero counts."""

    layer: str
    shape: tuple[int, ...]
    zeros: int
    params: int
    block_fraction: float | None  # (4, 1) blocks all zero; 2-D kernels only

    @property
    def zero_fraction(self) -> float:
        return self.zeros / self.params if self.params else 0.0


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
    """Every 2-D and 4-D `kernel` of the model file (Dense and convolutions)."""
    kernels = []
    with open_model(path) as model:
        for tensor in model.model_tensors:
            if tensor.role not in ("kernel", "depthwise_kernel") or len(tensor.shape) not in (2, 4):
                continue
            values = model.read(tensor)
            blocks = None
            if len(tensor.shape) == 2:
                found, total = zero_blocks(values, LITERT_BLOCK)
                blocks = found / total if total else None
            zeros = int(np.count_nonzero(values == 0))
            kernels.append(Kernel(tensor.layer, tensor.shape, zeros, values.size, blocks))
    return kernels


def layer_runs(model: TfliteModel, kernels: list[Kernel], sparsity: bool = True) -> list[LayerRun]:
    """One row per weight-carrying op of the main subgraph, in graph order."""
    graph = model.subgraphs[0]
    unused = list(kernels)
    rows = []
    for op in graph.operators:
        kind = WEIGHT_OPS.get(op.opcode)
        if kind is None or len(op.inputs) < 2 or op.inputs[1] < 0:
            continue
        weight, densified = _weight_source(graph, op.inputs[1])
        tensor = graph.tensors[weight]
        kernel = _match(tensor.name, tensor.shape, kind, unused)
        if kernel is not None:
            unused.remove(kernel)
        rows.append(_row(op.opcode, kind, tensor, densified, kernel, sparsity))
    return rows


def require_sparse_failures(rows: list[LayerRun]) -> list[str]:
    """One sentence per pruned kernel that LiteRT would run dense."""
    return [
        f"{row.layer or row.tensor}: {row.zero_fraction:.0%} zeros but LiteRT runs it "
        f"{row.runs} ({row.reason})."
        for row in rows
        if row.pruned and row.runs != "sparse"
    ]


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


def _keras_shape(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    """TFLite stores FC weights (out, in) and conv weights (out, h, w, in)."""
    if kind == "dense" and len(shape) == 2:
        return shape[1], shape[0]
    if len(shape) == 4:
        return shape[1], shape[2], shape[3], shape[0]
    return shape


def _names_layer(tensor_name: str, layer: str) -> bool:
    """`mlp_1/hidden1_1/MatMul;...` names layer `hidden1` (Keras adds `_N` to name scopes)."""
    pattern = re.compile(re.escape(layer) + r"(_\d+)?")
    return any(pattern.fullmatch(part) for part in re.split(r"[/;:]", tensor_name))


def _match(name: str, shape: tuple[int, ...], kind: str, kernels: list[Kernel]) -> Kernel | None:
    wanted = _keras_shape(shape, kind)
    same_shape = [k for k in kernels if k.shape == wanted]
    if kind == "conv" and len(shape) == 4 and not same_shape:  # depthwise: (1, h, w, out)
        same_shape = [k for k in kernels if k.shape[:2] == shape[1:3] and len(k.shape) == 4]
    named = [k for k in same_shape if _names_layer(name, k.layer)]
    candidates = named or same_shape
    return candidates[0] if candidates else None


def _row(op, kind, tensor, densified, kernel: Kernel | None, sparsity: bool) -> LayerRun:
    blocked = tensor.sparsity is not None and bool(tensor.sparsity.block_map)
    if blocked and not densified:
        runs, reason = "sparse", SPARSE_REASON
    else:
        runs = "densified" if densified else "dense"
        reason = _dense_reason(kind, densified, kernel, sparsity)
    fraction = kernel.zero_fraction if kernel else None
    return LayerRun(
        layer=kernel.layer if kernel else None,
        op=op,
        tensor=tensor.name,
        shape=list(tensor.shape),
        runs=runs,
        reason=reason,
        zero_fraction=fraction,
        block_fraction=kernel.block_fraction if kernel else None,
        pruned=fraction is not None and fraction >= PRUNED_FRACTION,
    )


def _dense_reason(kind: str, densified: bool, kernel: Kernel | None, sparsity: bool) -> str:
    if not sparsity:
        return "exported without sparsity encoding (--no-sparsity)"
    if kind == "conv":
        return CONV_REASON if densified else "too few zeros to encode"
    if kernel is None or kernel.block_fraction is None:
        return "a DENSIFY op expands it before FULLY_CONNECTED" if densified else "stored dense"
    verdict = litert_verdict(kernel.zero_fraction, kernel.block_fraction)
    if densified:
        return f"{verdict.reason}; a DENSIFY op expands it before FULLY_CONNECTED"
    return verdict.reason
