"""The kinds of rule the families build on, and the helpers they share.

A rule answers, for one node (the driver owns everything graph-wide; see rewrite/registry.py):
- `plan`: which inputs carry the probe's linear part through the node (the rest are frozen values)
  and which outputs have a linear part. Raise `Unsupported` to refuse the node with a reason.
- `masks`: what to add to the mask graph: the decisions the unit took at x (on/off, gain,
  selection). Only called for nodes on a linear path to an output.
- `linear`: the node's linear twin in the linear graph, or its affine twin when `c.affine` is set
  (biases and intercepts kept), used to compute the bias image at z = 0.
- `adjoint`: the transpose of the linear twin, from the cotangents of the node's outputs to those
  of its carried inputs (the driver sums contributions where a tensor fans out).

Kinds, from the most general: `Rule` (affine in every input with a linear part), `ValueRule`
(piecewise constant: no linear part), `DataOnly` (linear in input 0; the other inputs are shapes,
indices, pads), `PassThrough` (y = u) and `SelfAdjoint` (y = op(u) with op linear and its own
transpose), `PerSample` (a batched op applied to the probes folded into the batch axis) and
`SeparablePerSample` (one that acts on each spatial axis separately).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ...errors import Unsupported
from ..registry import register


@dataclass(frozen=True)
class Plan:
    carried: tuple[int, ...]  # input positions whose linear part flows through this node
    lin_outputs: tuple[int, ...]  # output positions that have a linear part
    frozen: str = ""  # for `inspect`: what this node freezes, empty for affine nodes
    kind: str = ""  # overrides the rule's kind for this node (a Mul acting as a gate)
    tangent: bool = False  # tangent mode: linearized by its tangent plane (see `tangent_plan`)


class Rule:
    """Default: an affine op, linear in every input that has a linear part."""

    kind = "affine"  # affine | unit | selection | gate | value
    # Tangent mode: "same" where the rule's twin is the Jacobian already (affine, piecewise-linear
    # and selecting ops); "plane" where the rule, with one input carried and the others at their
    # values, gives the partial derivative D_i in tangent mode (smooth units, products); None
    # (the default for units and gates) refuses the node there rather than give the secant.
    tangent: str | None = None

    def plan(self, node: onnx.NodeProto, lin: list[bool], model) -> Plan:
        return Plan(tuple(i for i, f in enumerate(lin) if f), tuple(range(len(node.output))))

    def tangent_plan(self, node: onnx.NodeProto, lin: list[bool], model, plan: Plan) -> Plan:
        """The plan in tangent mode, from the secant's: every input with a linear part carried
        (the product rule) and the node marked for its tangent plane, or a refusal."""
        kind = plan.kind or self.kind
        if kind == "value":  # piecewise constant: no linear part in either mode
            return plan
        frozen = [node.input[i] for i, f in enumerate(lin) if f and i not in plan.carried]
        if not frozen and (kind in ("affine", "selection") or self.tangent == "same"):
            return plan
        if self.tangent != "plane":
            what = f"it freezes '{frozen[0]}'" if frozen else f"it is a {kind}"
            raise Unsupported(f"tangent mode: {what} and the rule has no tangent (Jacobian) form")
        carried = tuple(i for i, f in enumerate(lin) if f)
        products = " (product rule)" if len(carried) > 1 else ""
        return Plan(
            carried,
            plan.lin_outputs,
            f"tangent{products}: {self.tangent_frozen(node)}",
            kind,
            tangent=True,
        )

    def tangent_frozen(self, node: onnx.NodeProto) -> str:
        """For `inspect`: what the tangent form reads at x."""
        return "the operands' values at x (float)"

    def masks(self, node: onnx.NodeProto, m) -> None:
        """Emit the frozen decisions into the mask graph (`m.add(label, tensor)`)."""

    def linear(self, node: onnx.NodeProto, c) -> None:
        raise NotImplementedError

    def adjoint(self, node: onnx.NodeProto, a) -> None:
        """Add A^T of this node to its carried inputs' cotangents (`a.add_grad(i, g)`)."""
        raise Unsupported(f"no adjoint rule for {node.op_type} yet")


class ValueRule(Rule):
    """Ops whose output is piecewise constant or integer (comparisons, Shape, ArgMax, Floor):
    their linear part is zero, so their output is a frozen value."""

    kind = "value"

    def plan(self, node, lin, model) -> Plan:
        return Plan((), ())


def only_input(lin: list[bool], i: int = 0, what: str = "the data input") -> None:
    """The one data-only refusal: input i alone may carry the probe's linear part."""
    if any(f for k, f in enumerate(lin) if k != i):
        raise Unsupported(f"only {what} may depend on the interpreted input")


class DataOnly(Rule):
    """Ops linear in input 0 whose other inputs (shapes, indices, pads) are values."""

    lin_outputs: tuple[int, ...] | None = None  # None: every output

    def plan(self, node, lin, model) -> Plan:
        only_input(lin)
        outputs = self.lin_outputs
        return Plan((0,), tuple(range(len(node.output))) if outputs is None else outputs)


class PassThrough(DataOnly):
    """y = u: the twin is the input's twin, the cotangent passes back unchanged."""

    lin_outputs = (0,)

    def linear(self, node, c) -> None:
        c.set_out(c.lin(0))

    def adjoint(self, node, a) -> None:
        a.add_grad(0, a.grad())


class SelfAdjoint(DataOnly):
    """y = op(u) for an op that is linear and its own transpose (Neg): applied as it is to the
    twin and to the cotangent."""

    lin_outputs = (0,)

    def linear(self, node, c) -> None:
        c.set_out(c.b.op(node.op_type, [c.lin(0)], attrs=node.attribute))

    def adjoint(self, node, a) -> None:
        a.add_grad(0, a.b.op(node.op_type, [a.grad()], attrs=node.attribute))


def register_self_linear(*op_types: str, kind: type[DataOnly] = SelfAdjoint) -> None:
    """One line for ops that are their own linearization: `register_self_linear("Neg")`."""
    register(*op_types)(kind)


class PerSample(DataOnly):
    """A linear op applied to each sample alike: fold the probes into the batch axis."""

    lin_outputs = (0,)

    def linear(self, node, c) -> None:
        rest = [c.value(i) if node.input[i] else "" for i in range(1, len(node.input))]
        c.set_out(c.per_sample(c.lin(0), c.in_shape(0), c.out_shape(), node.op_type, rest))


class SeparablePerSample(PerSample):
    """A per-sample op that acts on each spatial axis separately (pooling, resampling): its
    adjoint contracts the cotangent with the transposed per-axis matrices."""

    def restricted(self, node, a, axis: int | None, x: np.ndarray) -> np.ndarray:
        """The op on x ([B, 1, *spatial]) acting on `axis` only (all axes when None)."""
        raise NotImplementedError

    def adjoint(self, node, a) -> None:
        from .. import separable

        in_shape, dtype = a.in_shape(0), a.dtype(0)
        matrices = {}
        for axis in range(2, len(in_shape)):
            basis = separable.identity_basis(in_shape[axis], [1] * len(in_shape), axis, dtype)
            m = separable.matrix_from_outputs(self.restricted(node, a, axis, basis), axis)
            if m.shape[0] != m.shape[1] or not np.array_equal(m, np.eye(len(m), dtype=m.dtype)):
                matrices[axis] = m
        x = np.random.default_rng(0).standard_normal((1, 1, *in_shape[2:])).astype(dtype)
        separable.check_separable(self.restricted(node, a, None, x), x, matrices, node.op_type)
        a.add_grad(0, separable.contract(a, a.grad(), a.out_shape(), matrices))


# -- helpers -------------------------------------------------------------------------------


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def normalize_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise Unsupported(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def operand(c, i: int, rank: int) -> str:
    """Input i as [K, ...] aligned to `rank`: its twin, else 0 (or its value when affine)."""
    if c.has_lin(i):
        return c.aligned(i, rank)
    if c.affine:
        return c.value(i)
    return c.b.const(np.zeros((), c.dtype(i)))


def is_zero(m, u: str) -> str:
    """u == 0, in the mask graph."""
    return m.b.equal(u, m.b.const(np.asarray(0, m.dtype(u))), "at_zero")


__all__ = [
    "Plan",
    "Rule",
    "ValueRule",
    "DataOnly",
    "PassThrough",
    "SelfAdjoint",
    "PerSample",
    "SeparablePerSample",
    "register_self_linear",
    "only_input",
    "attr",
    "normalize_axis",
    "operand",
    "is_zero",
    "Unsupported",
]
