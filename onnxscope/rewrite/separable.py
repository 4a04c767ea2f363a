"""Adjoints of separable linear ops (Resize, Upsample, AveragePool, Pad, Slice, Gather).

ONNX has no transpose of Resize or of average pooling, but these ops act on each axis
independently: y = M_1 ×_1 (M_2 ×_2 x) with one small matrix per axis. The matrix of an axis is
found exactly at rewrite time by running the op itself (in ONNX Runtime, at the model's opset)
on the identity along that axis, with the other axes left alone. The adjoint then contracts the
cotangent with each M_a^T. `check_separable` guards the assumption on a random input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from onnx import helper, numpy_helper

from ..errors import Unsupported


def run_op(op_type: str, inputs: Sequence[np.ndarray | None], attrs, opset: int) -> np.ndarray:
    """Run one ONNX node on constant inputs in ONNX Runtime (CPU) and return its output."""
    from ..runtime.sessions import ort, session_options

    names, inits = [], []
    for k, value in enumerate(inputs):
        if value is None:
            names.append("")
            continue
        names.append(f"in{k}")
        inits.append(numpy_helper.from_array(np.asarray(value), f"in{k}"))
    node = helper.make_node(op_type, names, ["out"])
    node.attribute.extend(attrs)
    out_type = helper.np_dtype_to_tensor_dtype(np.asarray(inputs[0]).dtype)
    graph = helper.make_graph(
        [node], "op", [], [helper.make_tensor_value_info("out", out_type, None)], inits
    )
    imports = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=imports)
    # the oldest IR that has this opset: an older ONNX Runtime refuses the newest IR
    model.ir_version = helper.find_min_ir_version_for(imports)
    sess = ort.InferenceSession(
        model.SerializeToString(),
        session_options(optimize=False),
        providers=["CPUExecutionProvider"],
    )
    return sess.run(None, {})[0]


def identity_basis(length: int, shape_ones: Sequence[int], axis: int, dtype) -> np.ndarray:
    """Inputs e_0..e_{L-1} along `axis`, stacked on axis 0 (axis 0 must be a size-1 batch axis
    of `shape_ones`, or pass a shape with a new leading axis)."""
    shape = list(shape_ones)
    shape[axis] = length
    basis = np.zeros((length, *shape[1:]), dtype)
    index = [np.arange(length)] + [0] * (len(shape) - 1)
    index[axis] = np.arange(length)
    basis[tuple(index)] = 1
    return basis


def matrix_from_outputs(out: np.ndarray, axis: int) -> np.ndarray:
    """[out_len, in_len] from the op's outputs on the identity basis (batch axis 0)."""
    index = [slice(None)] + [0] * (out.ndim - 1)
    index[axis] = slice(None)
    return np.ascontiguousarray(out[tuple(index)].T)


def apply_matrices(x: np.ndarray, matrices: dict[int, np.ndarray]) -> np.ndarray:
    """Numpy: apply per-axis matrices to x (for the separability check)."""
    for axis, m in matrices.items():
        x = np.moveaxis(np.tensordot(m, x, axes=([1], [axis])), 0, axis)
    return x


def check_separable(op_out: np.ndarray, x: np.ndarray, matrices, what: str) -> None:
    mine = apply_matrices(
        x.astype(np.float64), {a: m.astype(np.float64) for a, m in matrices.items()}
    )
    err = np.abs(mine - op_out).max() / max(np.abs(op_out).max(), 1e-30)
    if err > 1e-5:
        raise Unsupported(f"{what} is not separable per axis here (error {err:.1e})")


def contract(a, g: str, shape: Sequence[int], matrices: dict[int, np.ndarray | str]) -> str:
    """The adjoint of y = (per-axis matrices) x on a twin g of shape [K, *shape]: for each axis,
    g <- M_a^T g along that axis (axis indices are those of `shape`). A matrix is an array
    [out, in], or the name of such a tensor in the graph."""
    rank = len(shape) + 1
    for axis, m in matrices.items():
        t = axis + 1  # the twin's axis
        if isinstance(m, str):
            mat = m
        else:
            mat = a.b.const(np.ascontiguousarray(m.astype(a.dtype(0))), hint="axis_matrix")
        if t == rank - 1:
            g = a.b.op("MatMul", [g, mat], "contract")
        else:
            perm = [*range(t), rank - 1, *range(t + 1, rank - 1), t]
            moved = a.b.op("Transpose", [g], "to_last", perm=perm)
            g = a.b.op("Transpose", [a.b.op("MatMul", [moved, mat], "contract")], "back", perm=perm)
    return g
