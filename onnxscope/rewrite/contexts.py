"""What a rule sees while it works: the mask graph, the linear/affine twin, and the adjoint.

Layout: every tensor t of static shape s has twins of shape [K, *s] (one slice per probe); masks
and frozen values keep shape s and broadcast over the probe axis.

`mode` is "secant" (units frozen by their secant through f(0), one operand of a product frozen)
or "tangent" (every smooth node replaced by its tangent plane at x, so that A_x is the Jacobian):
in tangent mode a node whose plan says `tangent` is emitted by `LinearContext.emit` and
`AdjointContext.emit` from its rule's partial derivatives (the product rule), and the rules'
masks hold derivatives (`m.tangent`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import onnx

from ..errors import Unsupported
from ..graph.builder import GraphBuilder
from ..graph.model import AnalyzedModel
from .rules.kinds import Plan

if TYPE_CHECKING:
    from .analysis import UnitRecord


class NodeContext:
    """Where a pass stands: the node a rule is working on, moved node to node by `at`."""

    node: onnx.NodeProto
    index: int
    plan: Plan
    record: UnitRecord
    mode: str = "secant"

    @property
    def tangent(self) -> bool:
        return self.mode == "tangent"

    def at(self, index: int, node: onnx.NodeProto, plan: Plan, record: UnitRecord) -> None:
        self.index, self.node, self.plan, self.record = index, node, plan, record


class MaskContext(NodeContext):
    """What a rule sees while adding its decisions to the mask graph."""

    def __init__(self, model: AnalyzedModel, b: GraphBuilder, mode: str = "secant"):
        self.model, self.b, self.mode = model, b, mode
        self.replaced: dict[int, list[onnx.NodeProto]] = {}  # node index -> its stand-ins

    def add(self, label: str, tensor: str) -> None:
        self.record.masks[label] = tensor

    def edit_node(self) -> onnx.NodeProto:
        """A copy of the current node that replaces it in the mask graph (e.g. to add an output)."""
        if self.index not in self.replaced:
            copy = onnx.NodeProto()
            copy.CopyFrom(self.node)
            self.replaced[self.index] = [copy]
        return self.replaced[self.index][0]

    def replace_node(self, build) -> None:
        """Replace the current node, in place, by the nodes `build()` adds to the mask graph (for
        a unit whose output is best computed from its own mask)."""
        start = len(self.b.nodes)
        build()
        self.replaced[self.index] = self.b.nodes[start:]
        del self.b.nodes[start:]

    def shape(self, name: str):
        return self.model.shape(name)

    def dtype(self, name: str):
        return self.model.dtype(name)


class TwinContext(NodeContext):
    """Shared by the linear, affine and adjoint contexts: values, masks, shapes, probe count.
    `wrt` is the interpreted input; `probe` the tensor of probes ([K, *x]) the graph starts
    from (or, for the adjoint, one of them: its first axis is the probe count)."""

    affine = False

    def __init__(self, model: AnalyzedModel, wrt: str, b: GraphBuilder, probe: str, mode: str):
        self.model, self.wrt, self.b, self.mode = model, wrt, b, mode
        self.imports: dict[str, str] = {}  # graph input name -> mask-graph output name
        # tensors made here whose shape ONNX's inference gets wrong, with their dtype and rank:
        # the graph lists them as outputs, so that ONNX Runtime, which plans buffer reuse by
        # inferred sizes, never hands one a buffer of another size
        self.as_inferred: dict[str, tuple[np.dtype, int]] = {}
        self._imported: dict[str, str] = {}
        self._probe = probe
        self._batch: str | None = None
        # unfolded tensor [K, N, *rest] -> (the same data as [K*N, *rest], the model's shape)
        self.folds: dict[str, tuple[str, tuple]] = {}

    def has_lin(self, i: int) -> bool:
        """Whether input i's linear part flows through this node (its plan carries it)."""
        return i in self.plan.carried

    def value(self, i: int) -> str:
        return self.value_of(self.node.input[i])

    def value_of(self, name: str) -> str:
        """`name` as a value: an initializer if static, else imported from the mask graph."""
        if self.model.is_static(name):
            # (a model output's name belongs to the twin's output: copy such an initializer)
            if name in self.model.initializers and name not in self.model.outputs:
                return self.b.add_initializer(self.model.initializers[name])
            if name not in self._imported:
                self._imported[name] = self.b.const(self.model.static_value(name), hint=name)
            return self._imported[name]
        return self._import(name, name)

    def mask(self, label: str) -> str:
        return self._import(self.record.masks[label], self.record.masks[label])

    def _import(self, key: str, source: str) -> str:
        """A graph input fed by the mask-graph output `source` (same name when possible)."""
        if key not in self._imported:
            # the twin's outputs and the interpreted input's name are its own (its probes have
            # fresh names)
            reserved = source in self.model.outputs or source == self.wrt
            name = self.b.fresh(source) if reserved else source
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

    def const(self, value, i: int = 0) -> str:
        """A constant of input i's dtype."""
        return self.b.const(np.asarray(value, dtype=self.dtype(i)))

    def batch(self) -> str:
        """A 1-D int64 tensor [K]: the number of probes."""
        if self._batch is None:
            shape = self.b.op("Shape", [self._probe], "probe_shape")
            self._batch = self.b.slice(shape, [0], [1], [0], "num_probes")
        return self._batch

    def broadcast(self, value: str, target: tuple[int, ...]) -> str:
        """A value of (broadcastable) shape s as [K, *target]."""
        full = self.b.op("Concat", [self.batch(), self.b.ints(target)], "bshape", axis=0)
        return self.b.op("Expand", [value, full], "bvalue")

    def zeros(self, shape: tuple[int, ...], dtype) -> str:
        return self.broadcast(self.b.const(np.zeros((), dtype)), shape)

    def pad_rank(self, x: str, shape: tuple[int, ...], rank: int) -> str:
        """x ([K, *shape]) reshaped to [K, 1, ..., 1, *shape] with `rank` dims after K."""
        if len(shape) >= rank:
            return x
        return self.b.reshape(x, [-1, *([1] * (rank - len(shape))), *shape])

    def per_sample(self, x: str, in_shape, out_shape, op_type: str, rest=(), **attrs) -> str:
        """Apply a batched op (Conv, pooling, Resize...) to [K, N, ...] by folding K into N.

        The node's attributes are copied; keyword attributes override them (None drops one).
        Where ONNX's shape inference (which ONNX Runtime applies when loading) overestimates the
        node's output (a ceil-mode pool dropping its last window, ORT's SAME padding of a dilated
        pool: `inference_mismatches`), the op's spatial output is sliced to `out_shape`, a no-op
        at run time that makes the two agree.
        """
        folded = self.fold(x, in_shape)
        y = self.b.op(op_type, [folded, *rest], op_type.lower(), attrs=self.node.attribute, **attrs)
        if self.node.output[0] in self.model.inference_mismatches:
            self.as_inferred[y] = (self.model.dtype(self.node.output[0]), len(out_shape))
            axes = list(range(2, len(out_shape)))
            y = self.b.slice(y, [0] * len(axes), list(out_shape[2:]), axes)
        return self.unfold(y, out_shape)

    def fold(self, x: str, shape) -> str:
        """x ([K, *shape]) as [K * shape[0], *shape[1:]]: the probes in the batch axis."""
        base = self.folds.get(x)
        if base is not None and tuple(base[1]) == tuple(shape):
            return base[0]
        return self.b.reshape(x, folded_shape(shape), "fold")

    def unfold(self, y: str, shape) -> str:
        """y ([K * shape[0], *shape[1:]]) as [K, *shape]; remembered, so that folding the
        result again is y itself (no Reshape pair between two batched ops)."""
        out = self.b.reshape(y, unfolded_shape(shape), "unfold")
        self.folds[out] = (y, tuple(shape))
        return out


# The Reshape targets of fold and unfold. For a batch of one (nearly every model) the probe count
# is copied (0) rather than computed (-1): shape inference then carries the probe input's
# symbolic K through every batched op, and ONNX Runtime can tell that two tensors have the same
# shape (its blocked layout keeps a residual Add only then; else it reorders both operands).
def folded_shape(shape) -> list[int]:
    return [0 if shape[0] == 1 else -1, *shape[1:]]


def unfolded_shape(shape) -> list[int]:
    return [0 if shape[0] == 1 else -1, *shape]


class LinearContext(TwinContext):
    """What a rule sees while emitting its linear (or affine) twin.

    `c.lin(i)` is the twin of input i ([K, *s]); `c.value(i)` is input i as a frozen value (s).
    """

    def __init__(
        self,
        model: AnalyzedModel,
        wrt: str,
        b: GraphBuilder,
        probe: str,
        affine: bool,
        mode: str = "secant",
    ):
        super().__init__(model, wrt, b, probe, mode)
        self.affine = affine
        self.env: dict[str, str] = {wrt: probe}

    def emit(self, rule) -> None:
        """The node's twin: its rule's, or where the plan says `tangent` its tangent plane at x,
        y = sum_i D_i[lin(i)] over the carried inputs (the product rule: for a*b, b0*da + a0*db),
        and in the affine twin y(x) + sum_i D_i[aff(i) - u_i(x)], whose constant part
        y(x) - sum_i D_i[u_i(x)] is the node's intercept (for a*b: -a0*b0)."""
        if not self.plan.tangent:
            rule.linear(self.node, self)
            return
        terms = []
        for i in self.plan.carried:
            twin = self.lin(i)
            if self.affine:  # aff(i) - u_i(x), 0 where equal (a -inf score: not -inf - -inf)
                value = self.value(i)
                at_x = self.b.equal(twin, value, "at_x")
                moved = self.b.op("Sub", [twin, value], "from_x")
                twin = self.b.op("Where", [at_x, self.const(0, i), moved], "from_x")
            terms.append(self.partial(rule, i, twin))
        y = terms[0] if len(terms) == 1 else self.b.op("Sum", terms, "product_rule")
        if self.affine:
            y = self.b.op("Add", [y, self.value_of(self.node.output[0])], "tangent_plane")
        self.set_out(y)

    def partial(self, rule, i: int, twin: str) -> str:
        """D_i[twin]: the rule's linear twin with input i alone carried (every other input at
        its value at x) applied to `twin` ([K, *s_i])."""
        name, plan, affine = self.node.input[i], self.plan, self.affine
        before = self.env.get(name)
        self.plan, self.affine, self.env[name] = replace(plan, carried=(i,)), False, twin
        try:
            rule.linear(self.node, self)
            return self.env[self.node.output[0]]
        finally:
            self.plan, self.affine = plan, affine
            if before is None:
                del self.env[name]
            else:
                self.env[name] = before

    def lin(self, i: int) -> str:
        return self.env[self.node.input[i]]

    def set_out(self, name: str, j: int = 0) -> None:
        self.env[self.node.output[j]] = name

    def aligned(self, i: int, rank: int) -> str:
        """lin(i) reshaped to [K, 1, ..., 1, *s] with `rank` dims after K (for broadcasting)."""
        return self.pad_rank(self.lin(i), self.in_shape(i), rank)

    def expand(self, x: str, shape: tuple[int, ...], target: tuple[int, ...]) -> str:
        """x ([K, *shape]) broadcast to [K, *target]."""
        if tuple(shape) == tuple(target):
            return x
        x = self.pad_rank(x, shape, len(target))
        return self.b.op("Expand", [x, self.b.ints([1, *target])], "expand")

    def lin_or_zeros(self, i: int) -> str:
        """lin(i) if input i has a linear part; else 0 (linear) or the value (affine)."""
        if self.has_lin(i):
            return self.lin(i)
        if self.affine:
            return self.broadcast(self.value(i), self.in_shape(i))
        return self.zeros(self.in_shape(i), self.dtype(i))


class AdjointContext(TwinContext):
    """What a rule sees while emitting its adjoint: cotangents flow from outputs to inputs.

    `a.grad(j)` is the cotangent of output j ([K, *out_j]) or None when nothing reaches it;
    `a.add_grad(i, g)` adds g ([K, *in_i]) to input i's cotangent (fan-out is summed here).
    """

    def __init__(
        self,
        model: AnalyzedModel,
        wrt: str,
        b: GraphBuilder,
        probes: dict[str, str],
        mode: str = "secant",
    ):
        super().__init__(model, wrt, b, next(iter(probes.values())), mode)
        self._parts: dict[str, list[str]] = {name: [p] for name, p in probes.items()}
        self._totals: dict[str, str | None] = {}

    def emit(self, rule) -> None:
        """The node's adjoint: its rule's, or for a tangent plane with several carried inputs
        the sum of the partials' adjoints, D_i^T g to input i (`LinearContext.emit`)."""
        plan = self.plan
        if not plan.tangent or len(plan.carried) == 1:
            rule.adjoint(self.node, self)
            return
        try:
            for i in plan.carried:
                self.plan = replace(plan, carried=(i,))
                rule.adjoint(self.node, self)
        finally:
            self.plan = plan

    def total(self, tensor: str) -> str | None:
        """The summed cotangent of a tensor (None if no contribution reached it)."""
        if tensor not in self._totals:
            parts = self._parts.get(tensor, [])
            if len(parts) > 1:
                self._totals[tensor] = self.b.op("Sum", parts, "cotangent")
            else:
                self._totals[tensor] = parts[0] if parts else None
        return self._totals[tensor]

    def grad(self, j: int = 0) -> str | None:
        return self.total(self.node.output[j])

    def grad_or_zeros(self, j: int) -> str:
        g = self.grad(j)
        return g if g is not None else self.zeros(self.out_shape(j), self.dtype(0))

    def add_grad(self, i: int, g: str) -> None:
        name = self.node.input[i]
        if name in self._totals:
            raise RuntimeError(f"internal error: cotangent of '{name}' used before complete")
        self._parts.setdefault(name, []).append(g)

    def unbroadcast(self, g: str, shape: tuple[int, ...], target: tuple[int, ...]) -> str:
        """The adjoint of broadcasting [K, *target] to [K, *shape]: sum over the copies."""
        shape, target = tuple(shape), tuple(target)
        if shape == target:
            return g
        padded = (1,) * (len(shape) - len(target)) + target
        axes = [k + 1 for k, (s, t) in enumerate(zip(shape, padded)) if t == 1 and s != 1]
        if axes:
            g = self.b.reduce("ReduceSum", g, axes, True, "unbroadcast")
        return self.b.reshape(g, [-1, *target], "unbroadcast")
