"""Read a TFLite/LiteRT flatbuffer's graph: tensors (with sparsity parameters), operators, buffers.

A small bounds-checked flatbuffer walker for the part of `tensorflow/lite/schema/schema.fbs`
sparseprune needs, in pure Python (no TensorFlow, no flatbuffers package): `export` reads which
kernels the converter kept sparse, `bench` refuses a corrupt file with one sentence before an
interpreter can crash on it. Every offset is checked against the file before it is followed, so
hostile bytes raise InputError, never an exception from `struct` or a read outside the file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from sparseprune.errors import InputError

MAGIC = b"TFL3"  # the file identifier, bytes 4..8
MAX_VECTOR = 1 << 28  # no schema vector sparseprune reads is this long in a real model

# BuiltinOperator codes sparseprune names (the rest are shown as their number).
BUILTIN_NAMES = {
    0: "ADD",
    3: "CONV_2D",
    4: "DEPTHWISE_CONV_2D",
    6: "DEQUANTIZE",
    7: "EMBEDDING_LOOKUP",
    9: "FULLY_CONNECTED",
    14: "LOGISTIC",
    18: "MUL",
    19: "RELU",
    22: "RESHAPE",
    25: "SOFTMAX",
    28: "TANH",
    36: "GATHER",
    67: "TRANSPOSE_CONV",
    114: "QUANTIZE",
    124: "DENSIFY",
    126: "BATCH_MATMUL",
    132: "CONV_3D",
}
TENSOR_TYPES = {
    0: "float32",
    1: "float16",
    2: "int32",
    3: "uint8",
    4: "int64",
    5: "string",
    6: "bool",
    7: "int16",
    9: "int8",
    10: "float64",
    18: "bfloat16",
}
DIM_FORMATS = {0: "dense", 1: "sparse_csr"}


@dataclass(frozen=True)
class Sparsity:
    """A tensor's SparsityParameters: block_map non-empty means block-sparse (e.g. 1x4)."""

    traversal_order: tuple[int, ...]
    block_map: tuple[int, ...]
    formats: tuple[str, ...]  # per traversed dimension: "dense" | "sparse_csr"
    dense_sizes: tuple[int, ...]  # per traversed dense dimension (block sizes at the end)

    @property
    def block_shape(self) -> tuple[int, ...]:
        """The block's size along each blocked dimension (traversal dims past the tensor rank)."""
        rank = len(self.traversal_order) - len(self.block_map)
        return self.dense_sizes[rank:] if self.block_map else ()


@dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    buffer: int
    sparsity: Sparsity | None


@dataclass(frozen=True)
class Operator:
    opcode: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class Subgraph:
    tensors: tuple[Tensor, ...]
    operators: tuple[Operator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def producer(self, tensor: int) -> Operator | None:
        return next((op for op in self.operators if tensor in op.outputs), None)


@dataclass(frozen=True)
class TfliteModel:
    version: int
    subgraphs: tuple[Subgraph, ...]
    buffer_sizes: tuple[int, ...]


class _Corrupt(Exception):
    """Internal: a read outside the file or a value the schema cannot have."""


class _Reader:
    """Bounds-checked flatbuffer primitives over one byte string."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)

    def scalar(self, fmt: str, pos: int) -> int:
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.data):
            raise _Corrupt(f"offset {pos} is outside the file")
        return struct.unpack_from("<" + fmt, self.data, pos)[0]

    def follow(self, pos: int) -> int:
        """The position a uoffset at `pos` points to."""
        return pos + self.scalar("I", pos)

    def field(self, table: int, index: int) -> int | None:
        """Position of field `index` of the table at `table`, None if absent."""
        vtable = table - self.scalar("i", table)
        vtable_size = self.scalar("H", vtable)
        slot = 4 + 2 * index
        if vtable_size < 4 or slot + 2 > vtable_size:
            return None
        offset = self.scalar("H", vtable + slot)
        return table + offset if offset else None

    def int_field(self, table: int, index: int, fmt: str, default: int = 0) -> int:
        pos = self.field(table, index)
        return default if pos is None else self.scalar(fmt, pos)

    def table_field(self, table: int, index: int) -> int | None:
        pos = self.field(table, index)
        return None if pos is None else self.follow(pos)

    def vector(self, table: int, index: int, width: int) -> tuple[int, int]:
        """(start, length) of a vector field; (0, 0) if absent."""
        pos = self.table_field(table, index)
        if pos is None:
            return 0, 0
        length = self.scalar("I", pos)
        if length > MAX_VECTOR or pos + 4 + length * width > len(self.data):
            raise _Corrupt(f"a vector of {length} items runs past the end of the file")
        return pos + 4, length

    def ints(self, table: int, index: int) -> tuple[int, ...]:
        start, length = self.vector(table, index, 4)
        return tuple(self.scalar("i", start + 4 * i) for i in range(length))

    def tables(self, table: int, index: int) -> list[int]:
        start, length = self.vector(table, index, 4)
        return [self.follow(start + 4 * i) for i in range(length)]

    def string(self, table: int, index: int) -> str:
        start, length = self.vector(table, index, 1)
        return bytes(self.data[start : start + length]).decode("utf-8", "replace")


def read_tflite(data: bytes, label: str = "the file") -> TfliteModel:
    """Parse a TFLite flatbuffer's graph; InputError (one sentence) if it is not a valid one."""
    if len(data) < 8 or bytes(data[4:8]) != MAGIC:
        raise InputError(f"{label} is not a TFLite flatbuffer (no TFL3 identifier).")
    reader = _Reader(data)
    try:
        return _model(reader, reader.follow(0))
    except (_Corrupt, RecursionError) as error:
        raise InputError(f"{label} is a corrupt TFLite file ({error}).") from None


def read_tflite_file(path: str | Path) -> TfliteModel:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise InputError(f"cannot read {path} ({error.strerror or error}).") from None
    return read_tflite(data, str(path))


def _model(reader: _Reader, root: int) -> TfliteModel:
    codes = [_opcode(reader, table) for table in reader.tables(root, 1)]
    buffers = [reader.vector(table, 0, 1)[1] for table in reader.tables(root, 4)]
    subgraphs = tuple(
        _subgraph(reader, table, codes, len(buffers)) for table in reader.tables(root, 2)
    )
    if not subgraphs:
        raise _Corrupt("it has no subgraph")
    return TfliteModel(reader.int_field(root, 0, "I"), subgraphs, tuple(buffers))


def _opcode(reader: _Reader, table: int) -> str:
    """The larger of builtin_code and deprecated_builtin_code is the operator (schema v3a)."""
    code = max(reader.int_field(table, 3, "i"), reader.int_field(table, 0, "b"))
    if code == 32:  # CUSTOM
        return f"CUSTOM:{reader.string(table, 1)}"
    return BUILTIN_NAMES.get(code, f"BUILTIN_{code}")


def _subgraph(reader: _Reader, table: int, codes: list[str], buffers: int) -> Subgraph:
    tensors = tuple(
        _tensor(reader, i, item, buffers) for i, item in enumerate(reader.tables(table, 0))
    )
    operators = tuple(
        _operator(reader, item, codes, len(tensors)) for item in reader.tables(table, 3)
    )
    inputs, outputs = reader.ints(table, 1), reader.ints(table, 2)
    _check_indices(inputs + outputs, len(tensors), "graph input/output")
    return Subgraph(tensors, operators, inputs, outputs)


def _tensor(reader: _Reader, index: int, table: int, buffers: int) -> Tensor:
    buffer = reader.int_field(table, 2, "I")
    if buffer >= max(buffers, 1):
        raise _Corrupt(f"tensor {index} names buffer {buffer} of {buffers}")
    code = reader.int_field(table, 1, "b")
    sparsity = reader.table_field(table, 6)
    return Tensor(
        index,
        reader.string(table, 3),
        reader.ints(table, 0),
        TENSOR_TYPES.get(code, f"type{code}"),
        buffer,
        _sparsity(reader, sparsity) if sparsity is not None else None,
    )


def _sparsity(reader: _Reader, table: int) -> Sparsity:
    dims = reader.tables(table, 2)
    formats = tuple(DIM_FORMATS.get(reader.int_field(d, 0, "b"), "?") for d in dims)
    sizes = tuple(reader.int_field(d, 1, "i") for d in dims)
    return Sparsity(reader.ints(table, 0), reader.ints(table, 1), formats, sizes)


def _operator(reader: _Reader, table: int, codes: list[str], tensors: int) -> Operator:
    index = reader.int_field(table, 0, "I")
    if index >= len(codes):
        raise _Corrupt(f"an operator names opcode {index} of {len(codes)}")
    inputs, outputs = reader.ints(table, 1), reader.ints(table, 2)
    _check_indices(inputs + outputs, tensors, "operator tensor")
    return Operator(codes[index], inputs, outputs)


def _check_indices(indices: tuple[int, ...], count: int, what: str) -> None:
    bad = [i for i in indices if not -1 <= i < count]  # -1 marks an optional input left out
    if bad:
        raise _Corrupt(f"a {what} index {bad[0]} is not one of its {count} tensors")


def check_tflite(path: str | Path) -> TfliteModel:
    """Refuse, with one sentence, a `.tflite` an interpreter could crash on (before one sees it).

    Checks the identifier, the root offset and every table and vector `read_tflite` follows,
    then that each buffer's data (inline, or at `offset`/`size` past the flatbuffer for models
    over 2 GiB) lies inside the file and that a constant tensor's buffer holds its whole shape.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise InputError(f"cannot read {path} ({error.strerror or error}).") from None
    model = read_tflite(data, str(path))
    reader = _Reader(data)
    try:
        _check_buffers(reader, reader.follow(0), model)
    except _Corrupt as error:
        raise InputError(f"{path} is a corrupt TFLite file ({error}).") from None
    return model


ITEM_BYTES = {"float32": 4, "float16": 2, "int32": 4, "uint8": 1, "int64": 8, "bool": 1}
ITEM_BYTES.update({"int16": 2, "int8": 1, "float64": 8, "bfloat16": 2})


def _check_buffers(reader: _Reader, root: int, model: TfliteModel) -> None:
    sizes = list(model.buffer_sizes)
    for index, table in enumerate(reader.tables(root, 4)):
        offset, size = reader.int_field(table, 1, "Q"), reader.int_field(table, 2, "Q")
        if offset > 1 and offset + size > len(reader.data):
            raise _Corrupt(f"buffer {index} lies past the end of the file")
        if offset > 1:
            sizes[index] = size
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            held, item = sizes[tensor.buffer] if sizes else 0, ITEM_BYTES.get(tensor.dtype)
            if any(d < -1 for d in tensor.shape):
                raise _Corrupt(f"tensor {tensor.index} has a negative dimension")
            if not held or item is None or tensor.sparsity is not None or -1 in tensor.shape:
                continue
            need = item
            for dim in tensor.shape:
                need *= dim
            if held < need:
                raise _Corrupt(
                    f"tensor {tensor.index} needs {need:,} bytes but its buffer holds {held:,}"
                )
