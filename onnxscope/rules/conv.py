"""Convolutions: affine in their data input; weights are values and the bias is dropped."""

from __future__ import annotations

from ..registry import Plan, Rule, register


@register("Conv", "ConvTranspose")
class Conv(Rule):
    # y = W * x (+ b): the twin convolves the twin with the same W (frozen if it is input-dependent)
    def plan(self, node, lin, model) -> Plan:
        if not lin[0]:
            return Plan((), ())  # input-dependent weights on a constant image: a value
        frozen = "weights frozen (float)" if any(lin[1:]) else ""
        return Plan((0,), (0,), frozen, "gate" if frozen else "")

    def linear(self, node, c) -> None:
        rest = [c.value(i) for i in range(1, len(node.input) if c.affine else 2)]
        c.set_out(c.per_sample(c.lin(0), c.in_shape(0), c.out_shape(), node.op_type, rest))
