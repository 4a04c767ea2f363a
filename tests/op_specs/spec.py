"""What one row of the op table is (`Spec`), and the values its rows are written with.

Weights are random but deterministic: each family file draws from its own stream (`weights`), in
table order, so a spec added to one family leaves the weights of the others unchanged.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from helpers import away_from_zero, make_model
from onnx import helper

F32 = np.float32
F64 = np.float64
I64 = np.int64

# Under CUDA each interpretation holds CUDA sessions with their own cuBLAS and cuDNN handles; a
# whole table of them alive in one process ran out (CUBLAS_STATUS_ALLOC_FAILED on an H200)
ON_CUDA = os.environ.get("ONNXSCOPE_DEVICE", "cpu") == "cuda"


def weights(stream: str):
    """(w, pos) drawing from the stream named `stream`: w(*shape) a standard normal float32
    weight times `scale`, pos(*shape) a uniform one in [lo, hi)."""
    rng = np.random.default_rng(zlib.crc32(stream.encode()))

    def w(*shape, scale=0.5):
        return (rng.standard_normal(shape) * scale).astype(F32)

    def pos(*shape, lo=0.5, hi=1.5):
        return rng.uniform(lo, hi, shape).astype(F32)

    return w, pos


def f(v):
    return np.asarray(v, dtype=F32)


def i64(v):
    return np.asarray(v, dtype=I64)


def d(v):
    return np.asarray(v, dtype=F64)


# Known onnxscope bugs are pinned in the table by strict xfails (the test stays a real check):
# none open.


@dataclass
class Spec:
    id: str
    nodes: list[str]
    inputs: dict  # {name: shape} float32, or {name: (shape, dtype)}
    inits: dict = field(default_factory=dict)
    opset: int = 17
    outputs: list[str] | None = None
    ref: Callable | None = None  # env of original tensors -> {(unit node, mask label): expected}
    pwl: bool = False  # piecewise linear: A_x is the Jacobian (finite-difference test)
    gen: Callable | None = None  # rng -> {name: array}; default: standard normal away from 0
    margin: float = 0.05
    tol: float = 1e-5
    # under ONNXSCOPE_DEVICE=cuda: where ONNX Runtime's CUDA kernel itself is less precise
    cuda_tol: float | None = None
    xfail: dict = field(default_factory=dict)  # {"check" | "masks" | "fd": reason}
    valid_onnx: bool = True  # False: the current onnx checker itself rejects the test model

    def model(self) -> onnx.ModelProto:
        return make_model(self.nodes, self.inputs, self.outputs, self.inits, self.opset)

    @property
    def device_tol(self) -> float:
        return self.cuda_tol if self.cuda_tol and ON_CUDA else self.tol

    def feeds(self, model) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(zlib.crc32(self.id.encode()))
        if self.gen is not None:
            return self.gen(rng)
        feeds = {}
        for vi in model.graph.input:
            if vi.name in self.inits:
                continue
            t = vi.type.tensor_type
            shape = [d.dim_value for d in t.shape.dim]
            dtype = helper.tensor_dtype_to_np_dtype(t.elem_type)
            feeds[vi.name] = away_from_zero(rng.standard_normal(shape).astype(dtype), self.margin)
        return feeds


S = Spec
