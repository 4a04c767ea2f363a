"""Quantized models in the QDQ format (as `onnxruntime.quantization` writes them with
QuantFormat.QDQ): QuantizeLinear -> DequantizeLinear pairs around float ops.

On the input's path a pair qdq(u) = DequantizeLinear(QuantizeLinear(u)) is one piecewise-constant
unit, frozen by its secant through its value at 0 (DESIGN.md section 2): qdq(u) = g*u + qdq(0),
g = (qdq(u0) - qdq(0)) / u0. qdq(0) is 0 for every finite nonzero scale, since
Q(0) = saturate(round(0 / scale) + zp) = zp and DQ(zp) = (zp - zp) * scale; and qdq is 0 on the
whole step |u| <= scale / 2 around 0, so its limit gain there is 0. The QuantizeLinear rule holds
the unit (its twin is the float g * z, the twin of the dequantized value), the DequantizeLinear
rule passes that twin on. The gain is read from the DequantizeLinear's own output d, g = d / u,
so that A_x x + c_x = g * x reproduces the model's d up to one rounding.

Weight-only DequantizeLinear (int8 weights and their scales, per-tensor, per-axis or blocked) is
off the input's path: a value like any other. Integer-domain ops (QLinearConv, QLinearMatMul,
ConvInteger, MatMulInteger, com.microsoft's QLinear* ops: the QOperator format) compute on the
quantized integers: a QuantizeLinear feeding one is refused with the advice to export QDQ.
"""

from __future__ import annotations

import numpy as np

from ..registry import register
from .kinds import PassThrough, Plan, Rule, Unsupported, is_zero, only_input

DEFAULT_DOMAINS = ("", "ai.onnx")
INTEGER_OPS = "QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger, com.microsoft's QLinear*"
EXPORT_QDQ = (
    "onnxscope interprets the QDQ format: quantize the float model with "
    "onnxruntime.quantization.quantize_static(..., quant_format=QuantFormat.QDQ) instead"
)


# ops that compute on quantized integers (ONNX's and ONNX Runtime's contrib ops besides QLinear*)
INTEGER_DOMAIN = {
    "": {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"},
    "com.microsoft": {
        "QGemm",
        "QAttention",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "DynamicQuantizeLSTM",
        "QuantizeLinear",
        "DequantizeLinear",
    },
}


def no_rule_reason(node) -> str:
    """Why a node without a rule is refused: integer-domain ops get the advice to export QDQ."""
    domain = "" if node.domain in DEFAULT_DOMAINS else node.domain
    named = node.op_type in INTEGER_DOMAIN.get(domain, ())
    if domain == "com.microsoft" and (named or node.op_type.startswith("QLinear")):
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            return (
                f"com.microsoft's {node.op_type} has no rule: write the QDQ pairs with ONNX's own "
                "QuantizeLinear/DequantizeLinear (opset 21 or later for 16-bit and 4-bit types; "
                "quantize_static without extra_options UseQDQContribOps)"
            )
        return f"an integer-domain op (com.microsoft's {node.op_type}); {EXPORT_QDQ}"
    if named:
        return f"an integer-domain op ({node.op_type} computes on quantized integers); {EXPORT_QDQ}"
    return "no linearization rule for this op"


def _is_dequantize(node) -> bool:
    return node.op_type == "DequantizeLinear" and node.domain in DEFAULT_DOMAINS


def _readers(model, name: str) -> list[tuple[object, int]]:
    """(node, input position) for every node of the graph that reads `name`."""
    return [(n, i) for n in model.nodes for i, t in enumerate(n.input) if t == name]


def _same_dequantize(a, b) -> bool:
    """Whether two DequantizeLinear nodes apply the same scale, zero point and attributes."""
    attrs = lambda n: sorted(x.SerializeToString() for x in n.attribute)  # noqa: E731
    return list(a.input[1:]) == list(b.input[1:]) and attrs(a) == attrs(b)


def dequantize_of(node, model):
    """The DequantizeLinear that completes a QuantizeLinear on the input's path, or a refusal."""
    q = node.output[0]
    label = lambda n: f"'{n.name or n.output[0]}' ({n.op_type})"  # noqa: E731
    if q in model.outputs:
        raise Unsupported(
            f"its quantized output '{q}' is a model output, with no DequantizeLinear after it: "
            f"the integers have no linear interpreter; {EXPORT_QDQ}"
        )
    readers = _readers(model, q)
    if not readers:
        raise Unsupported(f"its quantized output '{q}' is never dequantized; {EXPORT_QDQ}")
    for reader, position in readers:
        if not _is_dequantize(reader) or position != 0:
            raise Unsupported(
                f"its quantized output '{q}' feeds {label(reader)}, not a DequantizeLinear: "
                "a QuantizeLinear is interpreted only with the DequantizeLinear of its pair, and "
                f"integer-domain ops ({INTEGER_OPS}: the QOperator format) are not; {EXPORT_QDQ}"
            )
    first = readers[0][0]
    for reader, _ in readers[1:]:
        if not _same_dequantize(first, reader):
            raise Unsupported(
                f"its quantized output '{q}' is dequantized by {label(first)} and "
                f"{label(reader)} with different scales or zero points"
            )
    return first


@register("QuantizeLinear")
class QuantizeDequantize(Rule):
    """QuantizeLinear on the input's path, with the DequantizeLinear after it: one unit."""

    kind = "unit"

    def plan(self, node, lin, model) -> Plan:
        only_input(lin, 0, "the float input")
        dq = dequantize_of(node, model)
        if model.dtype(node.input[0]) != model.dtype(dq.output[0]):
            raise Unsupported(
                f"the pair quantizes {model.dtype(node.input[0])} and dequantizes to "
                f"{model.dtype(dq.output[0])}: only pairs that return their input's type are "
                "interpreted"
            )
        return Plan((0,), (0,), "secant gain qdq(u)/u of the quantize-dequantize pair (float)")

    def tangent_plan(self, node, lin, model, plan) -> Plan:
        raise Unsupported(
            "tangent mode: a quantize-dequantize pair is piecewise constant, its Jacobian is 0 "
            "wherever it exists; the secant mode (the default) interprets it"
        )

    def masks(self, node, m) -> None:
        u, d = node.input[0], dequantize_of(node, m.model).output[0]
        # g = qdq(u) / u, 0 at u = 0 (qdq is 0 on the step around 0)
        zero = m.b.const(np.asarray(0, m.dtype(u)))
        secant = m.b.op("Div", [d, u], "qdq_secant")
        m.add("gain", m.b.op("Where", [is_zero(m, u), zero, secant], "gain"))

    def linear(self, node, c) -> None:
        # float twin of the dequantized value (the intercept qdq(0) is 0: nothing to add)
        c.set_out(c.b.op("Mul", [c.lin(0), c.mask("gain")], "y"))

    def adjoint(self, node, a) -> None:
        a.add_grad(0, a.b.op("Mul", [a.grad(), a.mask("gain")], "g"))


@register("DequantizeLinear")
class Dequantize(PassThrough):
    """DequantizeLinear after a QuantizeLinear on the input's path: the pair's unit sits on the
    QuantizeLinear, whose twin is already the dequantized value's."""

    def plan(self, node, lin, model) -> Plan:
        only_input(lin, 0, "the quantized input")
        source = model.producer.get(node.input[0])
        if source is None or source.op_type != "QuantizeLinear":
            what = f"{source.op_type} '{source.name or source.output[0]}'" if source else "?"
            raise Unsupported(
                f"its quantized input comes from {what}, not from a QuantizeLinear; {EXPORT_QDQ}"
            )
        return super().plan(node, lin, model)
