"""Sparse weights in TFLite flatbuffers, written back dense so that tf2onnx can read them.

TFLite's converter (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`) stores a mostly-zero constant as
its nonzero values plus `SparsityParameters`, and puts a DENSIFY op between it and its consumer.
tf2onnx reads every constant buffer as a dense array of the tensor's shape, which fails on these
("cannot reshape array of size 96 into shape (16,1,1,24)"). `densified(flatbuffer)` decodes each
sparse constant, stores it dense, and removes the DENSIFY ops (each becomes the identity on a
dense constant); `from_tflite` then converts that model and checks that TFLite runs it to the
same outputs as the original.

The sparse format (tensorflow/lite/schema/schema.fbs, SparsityParameters). A tensor of rank n
whose dims listed in `block_map` are cut into blocks is seen as n + k dims: dim i of the original
becomes an outer dim of size d_i / b_i (b_i its block size, 1 when not blocked) and block j adds
an inner dim of size b_j at position n + j. `traversal_order` lists these n + k dims in storage
order; `dim_metadata[l]` describes the l-th dim of that order: DENSE (every index 0..dense_size−1
for each position of the levels before) or SPARSE_CSR (for parent position p, the indices
array_indices[array_segments[p]:array_segments[p+1]]). The values follow in that order, one per
leaf; original index i = outer_i · b_i + inner_i.
"""

from __future__ import annotations

import numpy as np

from .common import ConversionError

DENSE, SPARSE_CSR = 0, 1  # DimensionType
# TensorType -> numpy, for the types a sparse constant can have
NUMPY_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}


def densified(flatbuffer: bytes) -> tuple[bytes, list[str]] | None:
    """The model with every sparse constant stored dense and its DENSIFY ops removed, and the
    names of the tensors densified; None when the model has no sparse tensor."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    if not _has_sparse_tensor(schema.Model.GetRootAs(flatbuffer, 0)):
        return None  # read in place, without unpacking every buffer
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    names = []
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            if tensor.sparsity is None:
                continue
            name = _name(tensor)
            buffer = model.buffers[tensor.buffer]
            if buffer.data is None or tensor.type not in NUMPY_TYPES:
                raise ConversionError(
                    f"TFLite tensor '{name}' holds sparse weights (TFLite's DENSIFY format) of a "
                    "kind onnxscope cannot decode (not a constant, or of type "
                    f"{tensor.type}); convert the source again without "
                    "tf.lite.Optimize.EXPERIMENTAL_SPARSITY."
                )
            values = np.frombuffer(bytes(buffer.data), NUMPY_TYPES[tensor.type])
            dense = to_dense(values, tuple(int(d) for d in tensor.shape), tensor.sparsity, name)
            buffer.data = np.frombuffer(dense.tobytes(), np.uint8)
            tensor.sparsity = None
            names.append(name)
        _drop_densify(model, graph, schema.BuiltinOperator.DENSIFY)
    if not names:
        return None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), names


def to_dense(values: np.ndarray, shape: tuple[int, ...], sparsity, name: str) -> np.ndarray:
    """The dense array of `shape` that the sparse `values` and their SparsityParameters encode."""
    n = len(shape)
    order = [int(d) for d in sparsity.traversalOrder]
    blocked = [] if sparsity.blockMap is None else [int(d) for d in sparsity.blockMap]
    block_of = {d: n + j for j, d in enumerate(blocked)}  # dim -> its block's position
    levels = sparsity.dimMetadata
    if sorted(order) != list(range(len(levels))) or len(levels) != n + len(block_of):
        raise ConversionError(f"TFLite tensor '{name}': inconsistent sparsity parameters.")
    # positions: one row per leaf reached so far, one column per traversed level
    positions = np.zeros((1, 0), np.int64)
    for level in levels:
        if level.format == DENSE:
            size = int(level.denseSize)
            parents = np.repeat(positions, size, axis=0)
            column = np.tile(np.arange(size), len(positions))
        else:
            segments = np.asarray(level.arraySegments.values, np.int64)
            indices = np.asarray(level.arrayIndices.values, np.int64)
            if len(segments) != len(positions) + 1:
                raise ConversionError(f"TFLite tensor '{name}': CSR segments do not match.")
            parents = np.repeat(positions, np.diff(segments), axis=0)
            column = indices[segments[0] : segments[-1]]
        positions = np.column_stack([parents, column])
    if len(positions) != len(values):
        raise ConversionError(
            f"TFLite tensor '{name}': {len(values)} stored values for {len(positions)} positions."
        )
    expanded = np.empty_like(positions)
    expanded[:, order] = positions  # column l of positions is dim order[l] of the n + k dims
    index = []
    for i in range(n):
        if i in block_of:  # outer · block size + inner (a block dim is always DENSE)
            block = int(levels[order.index(block_of[i])].denseSize)
            index.append(expanded[:, i] * block + expanded[:, block_of[i]])
        else:
            index.append(expanded[:, i])
    dense = np.zeros(shape, values.dtype)
    dense[tuple(index)] = values
    return dense


def _has_sparse_tensor(model) -> bool:
    return any(
        graph.Tensors(t).Sparsity() is not None
        for graph in (model.Subgraphs(g) for g in range(model.SubgraphsLength()))
        for t in range(graph.TensorsLength())
    )


def _drop_densify(model, graph, densify_code: int) -> None:
    """Remove each DENSIFY op: its consumers (and the graph's outputs) read its input instead."""
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    kept, source = [], {}
    for op in graph.operators:
        if codes[op.opcodeIndex] == densify_code:
            source[int(op.outputs[0])] = int(op.inputs[0])
        else:
            kept.append(op)
    for op in kept:
        op.inputs = np.array([source.get(int(i), int(i)) for i in op.inputs], np.int32)
    graph.outputs = np.array([source.get(int(i), int(i)) for i in graph.outputs], np.int32)
    graph.operators = kept


def _name(tensor) -> str:
    name = tensor.name
    return name.decode() if isinstance(name, bytes) else str(name)
