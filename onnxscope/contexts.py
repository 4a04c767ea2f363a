"""What a rule sees while it works: the mask graph, the linear/affine twin, and the adjoint.

Layout: every tensor t of static shape s has twins of shape [K, *s] (one slice per probe); masks
and frozen values keep shape s and broadcast over the probe axis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

from .builder import GraphBuilder
from .errors import Unsupported
from .model import AnalyzedModel
from .registry import Plan

if TYPE_CHECKING:
    from .rewriter import Rewrite, UnitRecord


class MaskContext:
    """What a rule sees while adding its decisions to the mask graph."""

    def __init__(self, model: AnalyzedModel, b: GraphBuilder):
        self.model, self.b = model, b
        self.replaced: dict[int, onnx.NodeProto] = {}
        self.node: onnx.NodeProto
        self.index: int
        self.record: UnitRecord

    def add(self, label: str, tensor: str) -> None:
        self.record.masks[label] = tensor

    def edit_node(self) -> onnx.NodeProto:
        """A copy of the current node that replaces it in the mask graph (e.g. to add an output)."""
        if self.index not in self.replaced:
            copy = onnx.NodeProto()
            copy.CopyFrom(self.node)
            self.replaced[self.index] = copy
        return self.replaced[self.index]

    def shape(self, name: str):
        return self.model.shape(name)

    def dtype(self, name: str):
        return self.model.dtype(name)

    def value(self, name: str) -> str:
        return name  # in the mask graph every original tensor is available as it is


class LinearContext:
    """What a rule sees while emitting its linear (or affine) twin.

    `c.lin(i)` is the twin of input i ([K, *s]); `c.value(i)` is input i as a frozen value (s).
    """

    def __init__(self, rewrite: Rewrite, b: GraphBuilder, probe: str, affine: bool):
        self.rw, self.model, self.b, self.affine = rewrite, rewrite.model, b, affine
        self.env: dict[str, str] = {rewrite.wrt: probe}
        self.imports: dict[str, str] = {}  # linear-graph input name -> mask-graph output name
        self._imported: dict[str, str] = {}
        self._probe = probe
        self._batch: str | None = None
        self.node: onnx.NodeProto
        self.plan: Plan
        self.record: UnitRecord | None = None

    # -- inputs of the current node ------------------------------------------------------------
    def has_lin(self, i: int) -> bool:
        """Whether input i's linear part flows through this node (its plan carries it)."""
        return i in self.plan.carried

    def lin(self, i: int) -> str:
        return self.env[self.node.input[i]]

    def value(self, i: int) -> str:
        return self.value_of(self.node.input[i])

    def value_of(self, name: str) -> str:
        """`name` as a value: an initializer if static, else imported from the mask graph."""
        if self.model.is_static(name):
            if name in self.model.initializers:
                return self.b.add_initializer(self.model.initializers[name])
            if name not in self._imported:
                self._imported[name] = self.b.const(self.model.static_value(name), hint=name)
            return self._imported[name]
        return self._import(name, name)

    def mask(self, label: str) -> str:
        return self._import(self.record.masks[label], self.record.masks[label])

    def _import(self, key: str, source: str) -> str:
        """A linear-graph input fed by the mask-graph output `source` (same name when possible)."""
        if key not in self._imported:
            name = self.b.fresh(source) if source in self.model.outputs else source
            self._imported[key] = name
            self.imports[name] = source
        return self._imported[key]

    def static(self, i: int) -> np.ndarray:
        name = self.node.input[i]
        if not self.model.is_static(name):
            raise Unsupported(f"input '{name}' must be a constant")
        return self.model.static_value(name)

    def in_shape(self, i: int) -> tuple[int, ...]:
        return self.model.shape(self.node.input[i])

    def out_shape(self, j: int = 0) -> tuple[int, ...]:
        return self.model.shape(self.node.output[j])

    def dtype(self, i: int = 0):
        return self.model.dtype(self.node.input[i])

    def set_out(self, name: str, j: int = 0) -> None:
        self.env[self.node.output[j]] = name

    # -- layout helpers ------------------------------------------------------------------------
    def batch(self) -> str:
        """A 1-D int64 tensor [K]: the number of probes."""
        if self._batch is None:
            shape = self.b.op("Shape", [self._probe], "probe_shape")
            self._batch = self.b.slice(shape, [0], [1], [0], "num_probes")
        return self._batch

    def aligned(self, i: int, rank: int) -> str:
        """lin(i) reshaped to [K, 1, ..., 1, *s] with `rank` dims after K (for broadcasting)."""
        s = self.in_shape(i)
        if len(s) == rank:
            return self.lin(i)
        return self.b.reshape(self.lin(i), [-1, *([1] * (rank - len(s))), *s])

    def expand(self, x: str, shape: tuple[int, ...], target: tuple[int, ...]) -> str:
        """x ([K, *shape]) broadcast to [K, *target]."""
        if tuple(shape) == tuple(target):
            return x
        if len(shape) < len(target):
            x = self.b.reshape(x, [-1, *([1] * (len(target) - len(shape))), *shape])
        return self.b.op("Expand", [x, self.b.ints([1, *target])], "expand")

    def broadcast(self, value: str, target: tuple[int, ...]) -> str:
        """A value of (broadcastable) shape s as [K, *target]."""
        full = self.b.op("Concat", [self.batch(), self.b.ints(target)], "bshape", axis=0)
        return self.b.op("Expand", [value, full], "bvalue")

    def zeros(self, shape: tuple[int, ...], dtype) -> str:
        return self.broadcast(self.b.const(np.zeros((), dtype)), shape)

    def lin_or_zeros(self, i: int) -> str:
        """lin(i) if input i has a linear part; else 0 (linear) or the value (affine)."""
        if self.has_lin(i):
            return self.lin(i)
        if self.affine:
            return self.broadcast(self.value(i), self.in_shape(i))
        return self.zeros(self.in_shape(i), self.dtype(i))

    def per_sample(self, x: str, in_shape, out_shape, op_type: str, rest=(), **attrs) -> str:
        """Apply a batched op (Conv, pooling, Resize...) to [K, N, ...] by folding K into N."""
        folded = self.b.reshape(x, [-1, *in_shape[1:]], "fold")
        y = self.b.op(op_type, [folded, *rest], op_type.lower(), attrs=self.node.attribute, **attrs)
        return self.b.reshape(y, [-1, *out_shape], "unfold")
