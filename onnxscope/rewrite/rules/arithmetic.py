"""Arithmetic: sums and differences, products with values, and bilinear gates.

A product of two tensors that both depend on the input (Mul, Div, MatMul, Gemm) is bilinear: one
operand is frozen at its value at x and becomes a mask (DESIGN.md section 2). Div freezes its
denominator; otherwise an operand reached through a gate (Sigmoid, HardSigmoid, Softmax, Tanh,
Erf) is frozen, and failing that the second operand. In tangent mode both operands are carried
and the product rule applies (contexts.py, `LinearContext.emit`): each rule's twin with one
operand carried is then that operand's partial derivative.
"""

from __future__ import annotations

import numpy as np

from ...graph.ops import GATE_OPS, GATE_PASS_THROUGH
from ..registry import register
from .kinds import Plan, Rule, Unsupported, attr, is_zero, operand, register_self_linear


def reached_through_gate(name: str, model) -> bool:
    """Whether `name` is a gate's output, possibly through constant arithmetic and reshapes."""
    node = model.producer.get(name)
    while node is not None:
        if node.op_type in GATE_OPS:
            return True
        if node.op_type not in GATE_PASS_THROUGH:
            return False
        varying = [i for i in node.input if i and not model.is_static(i)]
        if len(varying) != 1:
            return False
        node = model.producer.get(varying[0])
    return False


def bilinear_plan(node, lin, model, a: int = 0, b: int = 1) -> tuple[int, str]:
    """For operands a and b that both carry a linear part: (the one kept linear, why)."""
    if reached_through_gate(node.input[a], model) and not reached_through_gate(
        node.input[b], model
    ):
        return b, f"gate operand '{node.input[a]}' frozen (float)"
    gate = "gate operand" if reached_through_gate(node.input[b], model) else "operand"
    return a, f"{gate} '{node.input[b]}' frozen (float)"


def product_plan(node, lin, model) -> Plan:
    """A product of inputs 0 and 1: carry the one with a linear part; freeze one if both have."""
    if lin[0] and lin[1]:
        keep, why = bilinear_plan(node, lin, model)
        return Plan((keep,), (0,), why, "gate")
    return Plan((0,) if lin[0] else (1,), (0,))


class Sum(Rule):
    """Add, Sub, Sum, Mean: the twin sums the twins; values drop out (kept in the affine twin)."""

    def linear(self, node, c) -> None:
        rank = len(c.out_shape())
        terms = [i for i in range(len(node.input)) if c.has_lin(i) or c.affine]
        y = None
        for i in terms:
            t = operand(c, i, rank)
            if y is None:
                y = c.b.op("Neg", [t]) if node.op_type == "Sub" and i == 1 else t
            else:
                y = c.b.op("Sub" if node.op_type == "Sub" else "Add", [y, t], "sum")
        if node.op_type == "Mean":
            y = c.b.op("Mul", [y, c.b.const(np.asarray(1.0 / len(node.input), c.dtype(0)))])
        if not c.affine:  # the twins alone may be narrower than the broadcast output
            shape = np.broadcast_shapes(*[c.in_shape(i) for i in terms])
            y = c.expand(y, (1,) * (rank - len(shape)) + tuple(shape), c.out_shape())
        c.set_out(y)

    def adjoint(self, node, a) -> None:
        g = a.grad()
        if node.op_type == "Mean":
            g = a.b.op("Mul", [g, a.const(1.0 / len(node.input))], "g_mean")
        for i in a.plan.carried:
            gi = a.b.op("Neg", [g]) if node.op_type == "Sub" and i == 1 else g
            a.add_grad(i, a.unbroadcast(gi, a.out_shape(), a.in_shape(i)))


register("Add", "Sub", "Sum", "Mean")(Sum)


register_self_linear("Neg")


@register("Mul")
class Mul(Rule):
    # y = a * v with v a value (or a frozen operand)
    tangent = "plane"

    def plan(self, node, lin, model) -> Plan:
        return product_plan(node, lin, model)

    def linear(self, node, c) -> None:
        rank = len(c.out_shape())
        i = 0 if c.has_lin(0) else 1
        c.set_out(c.b.op("Mul", [c.aligned(i, rank), c.value(1 - i)], "y"))

    def adjoint(self, node, a) -> None:
        i = a.plan.carried[0]
        g = a.b.op("Mul", [a.grad(), a.value(1 - i)], "g")
        a.add_grad(i, a.unbroadcast(g, a.out_shape(), a.in_shape(i)))


@register("Div")
class Div(Rule):
    # a / v: the denominator is frozen when the numerator carries the probe (a bilinear gate);
    # c / v(x) alone is a unit through the origin, like Reciprocal: gain y / v (in tangent mode
    # the partial in v, -y / v)
    tangent = "plane"

    def plan(self, node, lin, model) -> Plan:
        if not lin[0]:
            return Plan((1,), (0,), "secant gain y/u of c/u (float)", "unit")
        frozen = f"denominator '{node.input[1]}' frozen (float)" if lin[1] else ""
        return Plan((0,), (0,), frozen, "gate" if lin[1] else "")

    def masks(self, node, m) -> None:
        if 1 in m.plan.carried:
            v, y = node.input[1], node.output[0]
            zero = m.b.const(np.asarray(0, m.dtype(v)))
            gain = m.b.op("Div", [m.b.op("Neg", [y]) if m.tangent else y, v], "gain")
            m.add("gain", m.b.op("Where", [is_zero(m, v), zero, gain], "gain"))

    def linear(self, node, c) -> None:
        rank = len(c.out_shape())
        if c.has_lin(0):
            c.set_out(c.b.op("Div", [c.aligned(0, rank), c.value(1)], "y"))
        else:
            c.set_out(c.b.op("Mul", [c.aligned(1, rank), c.mask("gain")], "y"))

    def adjoint(self, node, a) -> None:
        i = a.plan.carried[0]
        other = a.value(1) if i == 0 else a.mask("gain")
        g = a.b.op("Div" if i == 0 else "Mul", [a.grad(), other], "g")
        a.add_grad(i, a.unbroadcast(g, a.out_shape(), a.in_shape(i)))


def _as_matrix(shape, left: bool) -> list[int]:
    """numpy matmul promotion of a 1-D operand: [k] -> [1, k] on the left, [k, 1] on the right."""
    if len(shape) == 1:
        return [1, shape[0]] if left else [shape[0], 1]
    return list(shape)


@register("MatMul")
class MatMul(Rule):
    # Forward: [..., m, k] @ [..., k, n] -> [..., m, n]; one operand is a value (or frozen).
    # 1-D operands are promoted as numpy does; the twin operand gets ones for missing batch dims.
    tangent = "plane"

    def plan(self, node, lin, model) -> Plan:
        return product_plan(node, lin, model)

    def _operands(self, c):
        """(i, twin operand as [K, 1.., *mat_i], value operand as a matrix, matrix shapes)."""
        i = c.plan.carried[0]
        mats = [_as_matrix(c.in_shape(0), True), _as_matrix(c.in_shape(1), False)]
        rank = max(len(mats[0]), len(mats[1]))
        val = c.value(1 - i)
        if len(c.in_shape(1 - i)) == 1:
            val = c.b.reshape(val, mats[1 - i], "val_mat")
        return i, mats, rank, val

    def linear(self, node, c) -> None:
        i, mats, rank, val = self._operands(c)
        lin = c.b.reshape(c.lin(i), [-1, *([1] * (rank - len(mats[i]))), *mats[i]], "lin_mat")
        y = c.b.op("MatMul", [lin, val] if i == 0 else [val, lin], "y")
        c.set_out(c.b.reshape(y, [-1, *c.out_shape()], "y"))

    def adjoint(self, node, a) -> None:
        # Y = L V: gL = G V^T;  Y = V L: gL = V^T G; then sum over broadcast batch dims
        i, mats, rank, val = self._operands(a)
        full = [
            *np.broadcast_shapes(tuple(mats[0][:-2]), tuple(mats[1][:-2])),
            mats[0][-2],
            mats[1][-1],
        ]
        g = a.b.reshape(a.grad(), [-1, *full], "g_mat")
        vr = len(mats[1 - i])
        val_t = a.b.op("Transpose", [val], "val_t", perm=[*range(vr - 2), vr - 1, vr - 2])
        gi = a.b.op("MatMul", [g, val_t] if i == 0 else [val_t, g], "g")
        shape_i = tuple(full[:-2]) + tuple(mats[i][-2:])
        target = (1,) * (rank - len(mats[i])) + tuple(mats[i])
        gi = a.unbroadcast(gi, shape_i, target)
        a.add_grad(i, a.b.reshape(gi, [-1, *a.in_shape(i)], "g"))


@register("Gemm")
class Gemm(Rule):
    # y = alpha * A' B' + beta * C, with A' = A^T if transA, B' = B^T if transB
    tangent = "plane"

    def plan(self, node, lin, model) -> Plan:
        if lin[0] and lin[1]:
            keep, why = bilinear_plan(node, lin, model)
            carried = (keep, 2) if len(lin) > 2 and lin[2] else (keep,)
            return Plan(carried, (0,), why, "gate")
        return Plan(tuple(i for i, f in enumerate(lin) if f), (0,))

    def linear(self, node, c) -> None:
        dt = c.dtype(0)
        terms = []
        product_carried = c.has_lin(0) or c.has_lin(1)
        if product_carried or c.affine:
            factors = []
            for i, trans in ((0, attr(node, "transA", 0)), (1, attr(node, "transB", 0))):
                t = c.lin(i) if c.has_lin(i) else c.value(i)
                perm = [0, 2, 1] if c.has_lin(i) else [1, 0]
                factors.append(c.b.op("Transpose", [t], "t", perm=perm) if trans else t)
            ab = c.b.op("MatMul", factors, "ab")
            terms.append(c.b.op("Mul", [ab, c.b.const(np.asarray(attr(node, "alpha", 1.0), dt))]))
        if len(node.input) > 2 and node.input[2] and (c.has_lin(2) or c.affine):
            cc = c.aligned(2, 2) if c.has_lin(2) else c.value(2)
            terms.append(c.b.op("Mul", [cc, c.b.const(np.asarray(attr(node, "beta", 1.0), dt))]))
        y = terms[0] if len(terms) == 1 else c.b.op("Add", terms, "y")
        if not product_carried and not c.affine:  # only C carried: broadcast it to [K, M, N]
            s = c.in_shape(2)
            y = c.expand(y, (1,) * (2 - len(s)) + tuple(s), c.out_shape())
        c.set_out(y)

    def adjoint(self, node, a) -> None:
        # Y = alpha A'B' + beta C:  gA' = alpha G B'^T,  gB' = alpha A'^T G,  gC = beta G
        g = a.grad()
        for i, trans in ((0, attr(node, "transA", 0)), (1, attr(node, "transB", 0))):
            if not a.has_lin(i):
                continue
            other, other_trans = a.value(1 - i), attr(node, "transB" if i == 0 else "transA", 0)
            # (B')^T = B if transB else B^T; likewise for A
            other_t = other if other_trans else a.b.op("Transpose", [other], "t", perm=[1, 0])
            gi = a.b.op("MatMul", [g, other_t] if i == 0 else [other_t, g], "g")
            if trans:
                gi = a.b.op("Transpose", [gi], "g_t", perm=[0, 2, 1])
            alpha = a.const(attr(node, "alpha", 1.0))
            a.add_grad(i, a.b.op("Mul", [gi, alpha], "g"))
        if a.has_lin(2):
            gc = a.b.op("Mul", [g, a.const(attr(node, "beta", 1.0))], "g_c")
            a.add_grad(2, a.unbroadcast(gc, a.out_shape(), a.in_shape(2)))


@register("Where")
class Where(Rule):
    # y = cond ? a : b with cond a value: a selection between the twins
    def plan(self, node, lin, model) -> Plan:
        if lin[0]:
            raise Unsupported("an input-dependent float condition is not supported")
        return Plan(tuple(i for i in (1, 2) if lin[i]), (0,))

    def linear(self, node, c) -> None:
        rank = len(c.out_shape())
        # cond has the output's shape or broadcasts to it, so y is [K, *out]
        c.set_out(c.b.op("Where", [c.value(0), operand(c, 1, rank), operand(c, 2, rank)], "y"))

    def adjoint(self, node, a) -> None:
        zero = a.const(0, 1)
        for i in a.plan.carried:
            picks = [a.grad(), zero] if i == 1 else [zero, a.grad()]
            g = a.b.op("Where", [a.value(0), *picks], "g")
            a.add_grad(i, a.unbroadcast(g, a.out_shape(), a.in_shape(i)))


__all__ = ["reached_through_gate", "Unsupported"]
