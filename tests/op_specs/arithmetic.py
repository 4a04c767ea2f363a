"""Specs for onnxscope/rewrite/rules/arithmetic.py: Add, Sub, Sum, Mean, Neg, Mul, Div, MatMul,
Gemm and Where, with constants and between two input-dependent tensors (a bilinear node freezes
one operand: a gate)."""

from __future__ import annotations

import math

import numpy as np
from helpers import away_from_zero

from .refs import erf, frozen_ref, gain_ref, refs, relu_ref, sigmoid
from .spec import F32, F64, S, Spec, d, f, i64, weights

w, pos = weights("arithmetic")

# fmt: off
SPECS: list[Spec] = [
    # --- Gemm and MatMul ---
    S("Gemm_bias_relu", ["u = Gemm (x, B, C)", "y = Relu(u)"],
      {"x": (2, 5)}, {"B": w(5, 3), "C": w(3)}, pwl=True, ref=relu_ref("y", "u")),
    S("Gemm_transA_transB_alpha_beta",
      ["t = Tanh(x)", "y = Gemm <transA=1, transB=1, alpha=0.7, beta=1.3> (t, B, C)"],
      {"x": (5, 2)}, {"B": w(3, 5), "C": w(2, 3)}),
    S("Gemm_input_as_B", ["t = Tanh(x)", "y = Gemm <transB=1, alpha=2.0> (A, t, C)"],
      {"x": (2, 4)}, {"A": w(3, 4), "C": w(2)}),
    S("Gemm_input_as_C", ["t = Tanh(x)", "y = Gemm <beta=0.5> (A, B, t)"],
      {"x": (2,)}, {"A": w(3, 4), "B": w(4, 2)}),
    S("Gemm_no_C_opset13", ["y = Gemm <transA=1> (x, B)", "r = Relu(y)"],
      {"x": (4, 3)}, {"B": w(4, 2)}, opset=13, pwl=True, ref=relu_ref("r", "y")),
    S("MatMul_const_right", ["u = MatMul(x, W)", "y = Relu(u)"],
      {"x": (2, 3, 4)}, {"W": w(4, 5)}, pwl=True, ref=relu_ref("y", "u")),
    S("MatMul_const_left", ["t = Tanh(x)", "y = MatMul(W, t)"], {"x": (2, 3, 4)}, {"W": w(5, 3)}),
    S("MatMul_const_batched", ["y = MatMul(x, W)", "r = Relu(y)"],
      {"x": (2, 3, 4)}, {"W": w(2, 4, 5)}, pwl=True),
    S("MatMul_1d_const_right", ["t = Tanh(x)", "y = MatMul(t, v)"], {"x": (3, 4)}, {"v": w(4)}),
    S("MatMul_1d_const_left", ["t = Tanh(x)", "y = MatMul(v, t)"], {"x": (2, 3, 4)}, {"v": w(3)}),
    S("MatMul_1d_input", ["u = MatMul(x, W)", "y = Relu(u)"], {"x": (4,)}, {"W": w(4, 3)},
      pwl=True, ref=relu_ref("y", "u")),
    S("MatMul_1d_input_1d_const", ["t = Tanh(x)", "y = MatMul(t, v)"], {"x": (4,)}, {"v": w(4)}),
    # --- elementwise with constants ---
    S("Add_const_broadcast_grows", ["y = Add(x, c)", "z = Tanh(y)"],
      {"x": (3, 1)}, {"c": w(2, 1, 4)}),
    S("Sub_const_minus_input_grows", ["y = Sub(c, x)", "r = Relu(y)"],
      {"x": (4,)}, {"c": w(2, 3, 4)}, pwl=True, ref=relu_ref("r", "y")),
    S("Mul_const_broadcast_grows", ["y = Mul(x, c)", "r = Relu(y)"],
      {"x": (1, 3, 1, 4)}, {"c": w(2, 1, 5, 1)}, pwl=True, ref=relu_ref("r", "y")),
    S("Mul_scalar_const_left", ["t = Tanh(x)", "y = Mul(c, t)"], {"x": (2, 3)}, {"c": f(-1.7)}),
    S("Div_const", ["t = Tanh(x)", "y = Div(t, c)"], {"x": (2, 3)}, {"c": pos(3)}),
    S("Div_const_broadcast_grows", ["y = Div(x, c)", "r = Relu(y)"],
      {"x": (3,)}, {"c": pos(2, 1)}, pwl=True),
    # passes the generic checks; its A_x is wrong (0): see test_div_constant_numerator_...
    S("Div_const_numerator", ["e = Exp(x)", "d = Add(e, one)", "y = Div(one, d)"],
      {"x": (2, 3)}, {"one": f(1.0)}),
    # --- sums of two input-dependent tensors ---
    S("Add_two_paths_broadcast",
      ["s = ReduceSum <keepdims=1> (x, ax)", "t = Tanh(x)", "y = Add(t, s)"],
      {"x": (2, 3)}, {"ax": i64([0])}, opset=13),
    S("Sub_two_paths_broadcast", ["m = ReduceMean <axes=[1], keepdims=1> (x)", "r = Relu(x)",
                                  "y = Sub(m, r)"],
      {"x": (2, 3)}, pwl=True, ref=relu_ref("r", "x")),
    S("Add_two_paths_both_grow", ["a = Reshape(x, s31)", "b = Reshape(x, s13)", "y = Add(a, b)",
                                  "r = Relu(y)"],
      {"x": (3,)}, {"s31": i64([3, 1]), "s13": i64([1, 3])}, pwl=True),
    # --- Neg ---
    S("Neg", ["t = Tanh(x)", "y = Neg(t)"], {"x": (2, 3)}),
    # --- Sum, Mean, Where ---
    S("Sum_three_broadcast", ["t = Tanh(x)", "y = Sum(x, t, c)"], {"x": (2, 3)},
      {"c": w(4, 1, 1)}),
    S("Mean_three", ["r = Relu(x)", "y = Mean(x, r, c)"], {"x": (2, 3)}, {"c": w(3)}, pwl=True,
      ref=relu_ref("r", "x")),
    S("Where_constant_condition", ["t = Tanh(x)", "y = Where(cond, x, t)"], {"x": (2, 3)},
      {"cond": np.array([[True, False, True], [False, False, True]])}),
    S("Where_constant_condition_constant_branch", ["y = Where(cond, c, x)", "r = Relu(y)"],
      {"x": (2, 3)}, {"cond": np.array([[True, False, True]]), "c": w(2, 1)}, pwl=True),
    S("Where_comparison_condition", ["p = Greater(x, zero)", "s = Mul(x, k)",
                                     "y = Where(p, x, s)"],
      {"x": (2, 3)}, {"zero": f(0.0), "k": f(0.1)}, pwl=True),
    S("Where_condition_grows", ["t = Tanh(x)", "y = Where(cond, x, t)"], {"x": (3,)},
      {"cond": np.array([[True, False, True], [False, True, True]])}),
    # --- bilinear nodes between two input-dependent tensors ---
    S("SiLU_x_times_sigmoid", ["s = Sigmoid(x)", "y = Mul(x, s)"], {"x": (2, 3, 4)},
      ref=frozen_ref("y", "s")),
    S("SiLU_sigmoid_times_x", ["s = Sigmoid(x)", "y = Mul(s, x)"], {"x": (2, 3, 4)},
      ref=frozen_ref("y", "s")),
    S("HardSwish_decomposed", ["h = HardSigmoid <alpha=0.16666667, beta=0.5> (x)",
                               "y = Mul(x, h)"], {"x": (2, 3, 4)},
      gen=lambda rng: {"x": away_from_zero(rng.standard_normal((2, 3, 4)).astype(F32) * 4, 0.05)},
      ref=frozen_ref("y", "h")),
    S("SqueezeExcitation",
      ["f = Conv <pads=[1,1,1,1]> (x, W1, B1)", "r = Relu(f)", "p = GlobalAveragePool(r)",
       "h = Conv (p, W2, B2)", "hr = Relu(h)", "g = Conv (hr, W3, B3)", "s = Sigmoid(g)",
       "y = Mul(r, s)"],
      {"x": (1, 3, 5, 5)},
      {"W1": w(4, 3, 3, 3), "B1": w(4), "W2": w(2, 4, 1, 1), "B2": w(2), "W3": w(4, 2, 1, 1),
       "B3": w(4)},
      ref=refs(frozen_ref("y", "s"), relu_ref("r", "f"))),
    S("SqueezeExcitation_flatten_gemm_reshape",
      ["p = GlobalAveragePool(x)", "q = Flatten(p)", "h = Gemm <transB=1> (q, W1, B1)",
       "hr = Relu(h)", "g = Gemm <transB=1> (hr, W2, B2)", "s = HardSigmoid(g)",
       "s4 = Reshape(s, shape)", "y = Mul(x, s4)"],
      {"x": (1, 4, 3, 3)},
      {"W1": w(2, 4), "B1": w(2), "W2": w(4, 2), "B2": w(4), "shape": i64([1, 4, 1, 1])},
      ref=frozen_ref("y", "s4")),
    S("GELU_decomposed_erf",
      ["d = Div(x, sqrt2)", "e = Erf(d)", "a = Add(e, one)", "m = Mul(x, a)", "y = Mul(m, half)"],
      {"x": (2, 3, 4)}, {"sqrt2": f(math.sqrt(2)), "one": f(1.0), "half": f(0.5)},
      ref=frozen_ref("m", "a", fn=lambda e: 1 + erf(e["x"].astype(np.float64) / math.sqrt(2)))),
    S("LayerNorm_decomposed",
      ["mu = ReduceMean <axes=[-1]> (x)", "d = Sub(x, mu)", "p = Pow(d, two)",
       "v = ReduceMean <axes=[-1]> (p)", "ve = Add(v, eps)", "s = Sqrt(ve)", "n = Div(d, s)",
       "g = Mul(n, gamma)", "y = Add(g, beta)"],
      {"x": (2, 3, 8)}, {"two": f(2.0), "eps": f(1e-5), "gamma": w(8), "beta": w(8)},
      ref=frozen_ref("n", "s", fn=lambda e: np.sqrt(e["x"].astype(np.float64).var(-1, keepdims=True)
                                                     + 1e-5))),
    S("Softmax_decomposed", ["e = Exp(x)", "s = ReduceSum <keepdims=1> (e, ax)", "y = Div(e, s)"],
      {"x": (2, 5)}, {"ax": i64([-1])}, opset=13,
      ref=refs(frozen_ref("y", "s"), gain_ref("e", "x", np.exp, 1.0, 1.0))),
    S("Attention_like",
      ["q = MatMul(x, Wq)", "k = MatMul(x, Wk)", "v = MatMul(x, Wv)", "kt = Transpose(k)",
       "s = MatMul(q, kt)", "ss = Mul(s, scale)", "p = Softmax(ss)", "y = MatMul(p, v)"],
      {"x": (4, 6)}, {"Wq": w(6, 5), "Wk": w(6, 5), "Wv": w(6, 5), "scale": f(1 / math.sqrt(5))},
      # p (through Softmax) is the gate: frozen, so the q/k branch needs no linear rule at all
      opset=13, ref=frozen_ref("y", "p")),
    S("Mul_square", ["y = Mul(x, x)"], {"x": (2, 3)}, ref=frozen_ref("y", "x")),
    S("Div_two_dependent_softsign", ["a = Abs(x)", "d = Add(a, one)", "y = Div(x, d)"],
      {"x": (2, 3)}, {"one": f(1.0)}, ref=frozen_ref("y", "d")),
    S("MatMul_bilinear_x_xT", ["t = Transpose(x)", "y = MatMul(x, t)"], {"x": (3, 4)},
      ref=frozen_ref("y", "t")),
    S("Gemm_bilinear_with_C", ["t = Tanh(x)", "y = Gemm <transB=1, beta=0.5> (x, t, x)"],
      {"x": (3, 3)}, ref=frozen_ref("y", "t")),
    S("Mul_two_gates", ["s = Sigmoid(x)", "t = Tanh(x)", "y = Mul(s, t)"], {"x": (2, 3)},
      ref=refs(frozen_ref("y", "t"), gain_ref("s", "x", sigmoid, 0.5, 0.25))),
    # --- more op forms and opset versions ---
    S("Scalar_input", ["y = Mul(x, c)", "r = Relu(y)"], {"x": ()}, {"c": w(3)}, pwl=True),
    # --- float64 models (ORT has double kernels for these) ---
    S("F64_MatMul_Relu", ["u = MatMul(x, W)", "y = Relu(u)"], {"x": ((3, 4), F64)},
      {"W": d(w(4, 5))}, pwl=True, tol=1e-12, ref=relu_ref("y", "u")),
]
# fmt: on
