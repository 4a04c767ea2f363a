"""Specs for onnxscope/rewrite/rules/quantized.py: a QuantizeLinear -> DequantizeLinear pair on
the input's path, one unit frozen by its secant qdq(u)/u (per tensor and per axis, int8 and
uint8), and weight-only DequantizeLinear on a constant (a value, not a unit)."""

from __future__ import annotations

import numpy as np

from .spec import F32, S, Spec, f, weights

w, _ = weights("quantized")


def _qdq(u, scale, zero, lo, hi, axis=None):
    """ONNX's QuantizeLinear then DequantizeLinear in numpy (u / scale in float32 as the kernel
    divides, round half to even, saturate)."""
    u = np.asarray(u, F32)
    scale, zero = np.asarray(scale, F32), np.asarray(zero, np.float64)
    if axis is not None:  # per-axis parameters along `axis`
        shape = [1] * u.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    q = np.clip(np.rint(u / scale).astype(np.float64) + zero, lo, hi)
    return (q - zero) * scale.astype(np.float64)


def qdq_gain_ref(unit, u, scale, zero, lo, hi, axis=None):
    def ref(e):
        x = np.asarray(e[u], np.float64)
        d = _qdq(x, scale, zero, lo, hi, axis)
        return {(unit, "gain"): np.where(x == 0, 0.0, d / np.where(x == 0, 1.0, x))}

    return ref


SCALE, CHANNEL_SCALES = f(0.05), np.asarray([0.04, 0.07, 0.03], F32)

# fmt: off
SPECS: list[Spec] = [
    S("QDQ_per_tensor_int8", ["u = Conv (x, W)", "q = QuantizeLinear(u, s, zp)",
                              "y = DequantizeLinear(q, s, zp)"],
      {"x": (1, 2, 5, 5)}, {"W": w(3, 2, 3, 3), "s": SCALE, "zp": np.int8(3)}, opset=13,
      ref=qdq_gain_ref("q", "u", 0.05, 3, -128, 127)),
    S("QDQ_per_axis_uint8", ["u = Conv (x, W)", "q = QuantizeLinear <axis=1> (u, s, zp)",
                             "y = DequantizeLinear <axis=1> (q, s, zp)"],
      {"x": (1, 2, 5, 5)},
      {"W": w(3, 2, 3, 3), "s": CHANNEL_SCALES, "zp": np.asarray([128, 120, 130], np.uint8)},
      opset=13, ref=qdq_gain_ref("q", "u", CHANNEL_SCALES, [128, 120, 130], 0, 255, axis=1)),
    # a saturating range: the pair clips, its secant follows (gain below 1 past the range)
    S("QDQ_saturating", ["q = QuantizeLinear(x, s, zp)", "y = DequantizeLinear(q, s, zp)"],
      {"x": (2, 3, 4)}, {"s": f(0.004), "zp": np.int8(0)}, opset=13,
      ref=qdq_gain_ref("q", "x", 0.004, 0, -128, 127)),
    # weight-only: the dequantized weight is a value; Conv stays affine in x
    S("DequantizeLinear_weights_per_axis", ["W = DequantizeLinear <axis=0> (Wq, ws, wz)",
                                            "y = Conv (x, W)"],
      {"x": (1, 2, 5, 5)},
      {"Wq": np.arange(-27, 27, dtype=np.int8).reshape(3, 2, 3, 3),
       "ws": np.asarray([0.02, 0.03, 0.01], F32), "wz": np.zeros(3, np.int8)}, opset=13,
      pwl=True),
]
# fmt: on
