"""Specs for onnxscope/rewrite/rules/units.py: the piecewise-linear and smooth units, Pow,
Softmax and LogSoftmax, and Max/Min between tensors (selections)."""

from __future__ import annotations

import math

import numpy as np

from .refs import (
    SELU_ALPHA,
    SELU_GAMMA,
    clip_state,
    elu,
    erf,
    gain_ref,
    gelu,
    gelu_tanh,
    hard_sigmoid,
    logsoftmax_ref,
    piece_ref,
    refs,
    relu_ref,
    selu,
    sigmoid,
    softmax_ref,
    winner_ref,
)
from .spec import F32, F64, S, Spec, d, f, i64, weights

w, _ = weights("units")

# fmt: off
SPECS: list[Spec] = [
    # --- piecewise-linear units ---
    S("Relu", ["y = Relu(x)"], {"x": (2, 3, 4)}, pwl=True, ref=relu_ref("y", "x")),
    S("LeakyRelu", ["y = LeakyRelu <alpha=0.1> (x)"], {"x": (2, 3, 4)}, pwl=True,
      ref=relu_ref("y", "x")),
    S("PRelu_per_channel", ["u = Conv (x, W)", "y = PRelu(u, slope)"],
      {"x": (1, 2, 4, 4)}, {"W": w(3, 2, 1, 1), "slope": w(3, 1, 1)}, pwl=True,
      ref=relu_ref("y", "u")),
    S("PRelu_broadcast_last_axis", ["y = PRelu(x, slope)"], {"x": (2, 3, 4)}, {"slope": w(4)},
      pwl=True, ref=relu_ref("y", "x")),
    S("Clip_opset11_min_max", ["y = Clip(x, lo, hi)"], {"x": (2, 3, 4)},
      {"lo": f(-0.5), "hi": f(0.7)}, opset=11, pwl=True,
      ref=piece_ref("y", lambda e: clip_state(e["x"], -0.5, 0.7))),
    S("Clip_opset13_min_only", ["y = Clip(x, lo)"], {"x": (2, 3, 4)}, {"lo": f(-0.3)}, opset=13,
      pwl=True, ref=piece_ref("y", lambda e: clip_state(e["x"], lo=f(-0.3)))),
    S("Clip_opset13_max_only", ["y = Clip(x, , hi)"], {"x": (2, 3, 4)}, {"hi": f(0.4)}, opset=13,
      pwl=True, ref=piece_ref("y", lambda e: clip_state(e["x"], hi=f(0.4)))),
    S("Clip_relu6", ["u = Mul(x, four)", "y = Clip(u, zero, six)"], {"x": (2, 3, 4)},
      {"four": f(4.0), "zero": f(0.0), "six": f(6.0)}, pwl=True,
      ref=piece_ref("y", lambda e: clip_state(e["u"], 0.0, 6.0))),
    S("HardSigmoid", ["u = Mul(x, three)", "y = HardSigmoid <alpha=0.3, beta=0.4> (u)"],
      {"x": (2, 3, 4)}, {"three": f(3.0)}, pwl=True,
      ref=piece_ref("y", lambda e: clip_state(
          (f(0.3) * e["u"] + f(0.4)).astype(F32), 0.0, 1.0))),
    S("Abs", ["y = Abs(x)", "z = Tanh(y)"], {"x": (2, 3, 4)},
      ref=piece_ref("y", lambda e: e["x"] >= 0)),
    S("Abs_pwl", ["u = MatMul(x, W)", "y = Abs(u)"], {"x": (3, 4)}, {"W": w(4, 4)}, pwl=True,
      ref=piece_ref("y", lambda e: e["u"] >= 0)),
    # --- smooth units: secant gain (f(u) - f(0)) / u ---
    S("Sigmoid", ["y = Sigmoid(x)"], {"x": (2, 3, 4)},
      ref=gain_ref("y", "x", sigmoid, 0.5, 0.25)),
    S("HardSwish", ["u = Mul(x, three)", "y = HardSwish(u)"], {"x": (2, 3, 4)}, {"three": f(3.0)},
      ref=gain_ref("y", "u", lambda u: u * hard_sigmoid(u, 1 / 6, 0.5), 0.0, 0.5)),
    S("Tanh", ["y = Tanh(x)"], {"x": (2, 3, 4)}, ref=gain_ref("y", "x", np.tanh, 0.0, 1.0)),
    S("Erf", ["y = Erf(x)"], {"x": (2, 3, 4)},
      ref=gain_ref("y", "x", erf, 0.0, 2 / math.sqrt(math.pi))),
    S("Elu_alpha", ["y = Elu <alpha=0.5> (x)"], {"x": (2, 3, 4)},
      ref=gain_ref("y", "x", elu(0.5), 0.0, 0.5, 1.0)),
    S("Selu", ["y = Selu(x)"], {"x": (2, 3, 4)},
      ref=gain_ref("y", "x", selu, 0.0, SELU_GAMMA * SELU_ALPHA, SELU_GAMMA)),
    S("Softplus", ["y = Softplus(x)"], {"x": (2, 3, 4)},
      ref=gain_ref("y", "x", lambda u: np.log1p(np.exp(u)), math.log(2), 0.5)),
    S("Gelu_opset20_none", ["y = Gelu(x)"], {"x": (2, 3, 4)}, opset=20,
      ref=gain_ref("y", "x", gelu, 0.0, 0.5)),
    S("Gelu_opset20_tanh", ["y = Gelu <approximate=\"tanh\"> (x)"], {"x": (2, 3, 4)}, opset=20,
      ref=gain_ref("y", "x", gelu_tanh, 0.0, 0.5)),
    S("Exp", ["y = Exp(x)"], {"x": (2, 3, 4)}, ref=gain_ref("y", "x", np.exp, 1.0, 1.0)),
    S("Sqrt", ["a = Abs(x)", "u = Add(a, c)", "y = Sqrt(u)"], {"x": (2, 3)}, {"c": f(0.1)},
      ref=gain_ref("y", "u", np.sqrt, 0.0, 0.0)),
    S("Reciprocal", ["a = Abs(x)", "u = Add(a, c)", "y = Reciprocal(u)"], {"x": (2, 3)},
      {"c": f(0.5)}, ref=gain_ref("y", "u", lambda u: 1 / u, 0.0, 0.0)),
    # --- softmax ---
    S("Softmax_opset11_axis1", ["y = Softmax <axis=1> (x)"], {"x": (2, 3, 4)}, opset=11,
      ref=softmax_ref("y", "x", [1, 2])),
    S("Softmax_opset13_axis1", ["y = Softmax <axis=1> (x)"], {"x": (2, 3, 4)}, opset=13,
      ref=softmax_ref("y", "x", [1])),
    S("Softmax_opset13_default_axis", ["u = Mul(x, two)", "y = Softmax(u)"], {"x": (2, 3, 4)},
      {"two": f(2.0)}, opset=13, ref=softmax_ref("y", "u", [2])),
    S("Softmax_opset11_axis0", ["y = Softmax <axis=0> (x)"], {"x": (2, 3)}, opset=11,
      ref=softmax_ref("y", "x", [0, 1])),
    S("Softmax_1d", ["y = Softmax(x)"], {"x": (5,)}, opset=13, ref=softmax_ref("y", "x", [0])),
    S("LogSoftmax_opset13", ["y = LogSoftmax(x)"], {"x": (2, 5)}, opset=13,
      ref=logsoftmax_ref("y", "x", [1])),
    S("LogSoftmax_opset11_axis1", ["t = Tanh(x)", "y = LogSoftmax <axis=1> (t)"],
      {"x": (2, 3, 4)}, opset=11, ref=logsoftmax_ref("y", "t", [1, 2])),
    # --- Max and Min between tensors ---
    S("Max_with_constant", ["y = Max(x, c)"], {"x": (2, 3)}, {"c": w(3)}, pwl=True,
      ref=winner_ref("y", ["x", "c"], "max")),
    S("Min_constant_first", ["y = Min(c, x)"], {"x": (2, 3)}, {"c": w(2, 1)}, pwl=True,
      ref=winner_ref("y", ["c", "x"], "min")),
    S("Max_two_dependent", ["n = Mul(x, m)", "y = Max(x, n)"], {"x": (2, 3)}, {"m": f(-0.5)},
      pwl=True, ref=winner_ref("y", ["x", "n"], "max")),
    S("Min_two_dependent_broadcast",
      ["s = Slice(x, st, en, ax)", "s2 = Mul(s, k)", "y = Min(x, s2)"], {"x": (3, 4)},
      {"st": i64([0]), "en": i64([1]), "ax": i64([0]), "k": f(1.5)}, pwl=True,
      ref=winner_ref("y", ["x", "s2"], "min")),
    S("Max_three_operands", ["n = Mul(x, m)", "y = Max(x, n, c)"], {"x": (2, 3)},
      {"m": f(-0.5), "c": f(0.3)}, pwl=True, ref=winner_ref("y", ["x", "n", "c"], "max")),
    S("Max_constant_grows", ["y = Max(x, c)"], {"x": (3,)}, {"c": w(2, 3)}, pwl=True,
      ref=winner_ref("y", ["x", "c"], "max")),
    S("Min_three_operands", ["t = Mul(x, two)", "y = Min(c, x, t)"], {"x": (2, 4)},
      {"two": f(2.0), "c": w(4)}, pwl=True, ref=winner_ref("y", ["c", "x", "t"], "min")),
    # --- Pow ---
    S("Pow_square", ["y = Pow(x, two)"], {"x": (2, 3)}, {"two": f(2.0)},
      ref=gain_ref("y", "x", lambda u: u**2, 0.0, 0.0)),
    S("Pow_cube_opset13", ["y = Pow(x, three)"], {"x": (2, 3)}, {"three": f(3.0)}, opset=13,
      ref=gain_ref("y", "x", lambda u: u**3, 0.0, 0.0)),
    S("Pow_two_dependent", ["a = Abs(x)", "u = Add(a, c)", "e = Tanh(x)", "y = Pow(u, e)"],
      {"x": (2, 3)}, {"c": f(0.5)},
      ref=lambda e: {("y", "gain"): e["y"].astype(F64) / e["u"]}),
    S("Pow_sqrt_exponent", ["a = Abs(x)", "u = Add(a, c)", "y = Pow(u, h)"], {"x": (2, 3)},
      {"c": f(0.1), "h": f(0.5)}, ref=gain_ref("y", "u", np.sqrt, 0.0, 0.0)),
    # --- more op forms and opset versions ---
    S("Two_outputs_one_independent_of_x", ["y = Relu(x)", "o = Tanh(other)"],
      {"x": (2, 3), "other": (2, 3)}, outputs=["y", "o"], pwl=True),
    # --- float64 models (ORT has double kernels for these) ---
    S("F64_Clip", ["y = Clip (x, lo, hi)"], {"x": ((3, 4), F64)}, {"lo": d(-0.3), "hi": d(0.4)},
      pwl=True, tol=1e-12, ref=piece_ref("y", lambda e: clip_state(e["x"], -0.3, 0.4))),
    S("F64_Tanh_Sigmoid", ["t = Tanh(x)", "y = Sigmoid(t)"], {"x": ((3, 4), F64)}, tol=1e-12,
      ref=refs(gain_ref("t", "x", np.tanh, 0.0, 1.0), gain_ref("y", "t", sigmoid, 0.5, 0.25))),
    # ORT 1.31.1's CUDA kernel for this op reconstructed to 1.5e-8 on an H200
    S("F64_Softmax", ["y = Softmax (x)"], {"x": ((3, 4), F64)}, tol=1e-12, cuda_tol=1e-7,
      ref=softmax_ref("y", "x", [1])),
]
# fmt: on
