"""Op coverage: one table of small inline models (`SPECS`), each run through the checks of
DESIGN.md section 4, plus tests of kinks, ties and refusals.

For every spec:
- `test_op`: reconstruction and linearity (and the adjoint identity, where an adjoint graph is
  built) ≤ tol (`it.verify()`), the mask graph's outputs equal a plain ONNX Runtime run of the
  model, and the mask, linear and bias artifacts pass the full ONNX checker;
- `test_masks` (specs with `ref`): the frozen decisions equal a naive numpy reference computed
  from the original model's intermediate tensors (Relu mask == u > 0, MaxPool selection == first
  maximum of each window, Tanh gain == tanh(u)/u, a frozen gate == the gate's value...);
- `test_finite_difference` (piecewise-linear specs, `pwl=True`): A_x e_j equals the central
  difference (F(x + h e_j) − F(x − h e_j)) / 2h at indices j whose ±h steps cross no kink or tie
  (checked by re-interpreting at x ± h e_j): for these models A_x is the Jacobian at x.

Inputs are standard normal, pushed at least `margin` away from 0, so the units that act directly
on x sit away from their kinks; the kink and tie conventions are tested separately below.

Conventions pinned down here (see the "kinks and ties" tests):
- Relu at exactly u = 0 is off (gain 0); LeakyRelu/PRelu at 0 take the negative slope.
- Abs at exactly 0 takes gain +1.
- Clip at exactly a bound counts as saturated (gain 0, intercept = the bound).
- MaxPool ties select the first maximum of the window (C order over the kernel), GlobalMaxPool
  and ReduceMax ties the lowest flat index.
- Max/Min ties select the earlier operand.

Known onnxscope bugs are pinned by strict xfails whose reasons start with "onnxscope bug"; the
tests stay real checks and start passing (XPASS fails the run) once a bug is fixed, so the
marker must then be removed.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache

import numpy as np
import onnx
import pytest
from helpers import (
    Checked,
    assert_columns_match_fd,
    away_from_zero,
    check_artifacts,
    check_model,
    interpret,
    make_model,
    node,
    run,
    run_all,
)
from onnx import TensorProto, helper

import onnxscope

F32 = np.float32
F64 = np.float64
I64 = np.int64

# Under CUDA each interpretation holds CUDA sessions with their own cuBLAS and cuDNN handles; a
# whole table of them alive in one process ran out (CUBLAS_STATUS_ALLOC_FAILED on an H200)
ON_CUDA = os.environ.get("ONNXSCOPE_DEVICE", "cpu") == "cuda"
_LIVE_INTERPRETATIONS = 16 if ON_CUDA else None

_W = np.random.default_rng(20261101)


def w(*shape, scale=0.5):
    """A random float32 weight (deterministic: drawn in table order)."""
    return (_W.standard_normal(shape) * scale).astype(F32)


def pos(*shape, lo=0.5, hi=1.5):
    return _W.uniform(lo, hi, shape).astype(F32)


def f(v):
    return np.asarray(v, dtype=F32)


def i64(v):
    return np.asarray(v, dtype=I64)


def d(v):
    return np.asarray(v, dtype=F64)


# -- naive numpy references for the masks ------------------------------------------------------

try:  # below |u| < eps a secant unit's gain is its limit at 0
    from onnxscope.rewrite.rules.units import SATURATION, SECANT_EPS, SOFTMAX_TAIL
except ImportError:  # pragma: no cover
    SECANT_EPS, SATURATION, SOFTMAX_TAIL = 1e-4, 16, -3.32
_erf = np.vectorize(math.erf, otypes=[np.float64])


def secant(fn, f0, d0_left, d0_right=None):
    """g(u) = (f(u) − f(0)) / u, with the one-sided limits of that ratio for |u| < eps."""
    d0_right = d0_left if d0_right is None else d0_right

    def gain(u):
        u = np.asarray(u, np.float64)
        with np.errstate(all="ignore"):
            g = (fn(u) - f0) / u
        near = np.abs(u) < SECANT_EPS
        return np.where(near, np.where(u < 0, d0_left, d0_right), g)

    return gain


def gain_ref(unit, u, fn, f0, d0_left, d0_right=None):
    """The secant gain; for f(0) != 0 also the intercept, and where the output is below
    |f(0)| / SATURATION the unit frozen whole (gain 0, intercept the output)."""
    g = secant(fn, f0, d0_left, d0_right)
    if not f0:
        return lambda e: {(unit, "gain"): g(e[u])}

    def ref(e):
        y = fn(np.asarray(e[u], np.float64))
        low = np.abs(y) < abs(f0) / SATURATION
        return {
            (unit, "gain"): np.where(low, 0.0, g(e[u])),
            (unit, "intercept"): np.where(low, y, f0),
        }

    return ref


def piece_ref(unit, fn):
    return lambda e: {(unit, "piece"): fn(e)}


def relu_ref(unit, u):
    return piece_ref(unit, lambda e: e[u] > 0)


def clip_state(u, lo=None, hi=None):
    """0 at or below lo, 1 strictly inside, 2 at or above hi."""
    state = np.ones(u.shape, np.uint8)
    if lo is not None:
        state[u <= lo] = 0
    if hi is not None:
        state[u >= hi] = 2
    return state


def frozen_ref(unit, *names, fn=None):
    return lambda e: {(unit, f"frozen:{n}"): (fn(e) if fn else e[n]) for n in names}


def maxpool_window(x, out_shape, kernel, strides=None, pads=None, dilations=None, flat=False):
    """Offset (C order over the kernel) of the first maximum in each window, or with `flat` its
    flat N*C*H*W index; padding is never selected."""
    nd = len(kernel)
    strides = strides or [1] * nd
    dilations = dilations or [1] * nd
    pads = pads or [0] * (2 * nd)
    spatial_in = x.shape[2:]
    out = np.zeros(out_shape, np.int64 if flat else np.uint8)
    flat_index = np.arange(x.size).reshape(x.shape)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for o in np.ndindex(*out_shape[2:]):
                best, best_k = None, None
                for k, offset in enumerate(np.ndindex(*kernel)):
                    pos_ = [
                        o[d] * strides[d] - pads[d] + offset[d] * dilations[d] for d in range(nd)
                    ]
                    if any(p < 0 or p >= spatial_in[d] for d, p in enumerate(pos_)):
                        continue
                    v = x[(n, c, *pos_)]
                    if best is None or v > best:
                        best, best_k = v, flat_index[(n, c, *pos_)] if flat else k
                out[(n, c, *o)] = best_k
    return out


def pool_ref(unit, u, flat=False, **kw):
    """float32 MaxPools with strides >= 2 store the window offset, others ONNX Runtime's flat
    index."""
    label = "argmax" if flat else "window"
    return lambda e: {(unit, label): maxpool_window(e[u], e[unit].shape, flat=flat, **kw)}


def reduce_argmax(x, axes, keepdims, op="max"):
    """Flat index of the first max (min) over `axes` (None: all)."""
    axes = list(range(x.ndim)) if axes is None else sorted(a % x.ndim for a in axes)
    rest = [a for a in range(x.ndim) if a not in axes]
    idx = np.arange(x.size).reshape(x.shape)
    moved = np.transpose(x, rest + axes).reshape(*[x.shape[a] for a in rest], -1)
    moved_idx = np.transpose(idx, rest + axes).reshape(moved.shape)
    pick = (np.argmax if op == "max" else np.argmin)(moved, axis=-1)
    sel = np.take_along_axis(moved_idx, pick[..., None], -1)[..., 0]
    if keepdims:
        sel = sel.reshape([1 if a in axes else x.shape[a] for a in range(x.ndim)])
    return sel


def reduce_ref(unit, u, axes, keepdims, op="max"):
    return lambda e: {(unit, "argmax"): reduce_argmax(e[u], axes, keepdims, op)}


def winner_ref(unit, operands, op):
    """Index of the operand that won (ties: the earlier); bool for two operands."""

    def ref(e):
        vals = np.broadcast_arrays(*[e[o] for o in operands])
        win = (np.argmax if op == "max" else np.argmin)(np.stack(vals), axis=0)
        return {(unit, "winner"): win == 1 if len(operands) == 2 else win.astype(np.uint8)}

    return ref


def inv_sigma_ref(unit, u, group_shape, axes, eps):
    def ref(e):
        g = e[u].astype(np.float64).reshape(group_shape(e[u].shape))
        var = g.var(axis=tuple(axes), keepdims=True)
        return {(unit, "inv_sigma"): 1.0 / np.sqrt(var + eps)}

    return ref


def softmax_view(e, unit, u, axes):
    """(v = u - max, the one-hot of the first maximum, S = sum exp(v)) over `axes`, float64."""
    uu = e[u].astype(np.float64)
    moved = np.moveaxis(uu, axes, range(-len(axes), 0))
    flat = moved.reshape(*moved.shape[: -len(axes)], -1)
    first = np.zeros(flat.shape, bool)
    np.put_along_axis(first, flat.argmax(-1)[..., None], True, -1)
    first = np.moveaxis(first.reshape(moved.shape), range(-len(axes), 0), axes)
    v = uu - uu.max(axis=tuple(axes), keepdims=True)
    return v, first, np.exp(v).sum(axis=tuple(axes), keepdims=True)


def softmax_ref(unit, u, axes):
    # centred on the first maximum: y = g * v + 1/S with g = (y - 1/S) / v, limit 1/S at v = 0;
    # the far tail v < SOFTMAX_TAIL frozen whole
    def ref(e):
        v, first, total = softmax_view(e, unit, u, axes)
        y = e[unit].astype(np.float64)
        with np.errstate(all="ignore"):
            g = np.where(np.abs(v) < SECANT_EPS, 1 / total, (y - 1 / total) / v)
        tail = v < SOFTMAX_TAIL  # frozen whole: gain 0, intercept y
        g, b = np.where(tail, 0, g), np.where(tail, y, 1 / total)
        return {(unit, "gain"): g, (unit, "intercept"): b, (unit, "reference"): first}

    return ref


def logsoftmax_ref(unit, u, axes):
    # centred on the first maximum: y = v - log S
    def ref(e):
        v, first, total = softmax_view(e, unit, u, axes)
        return {(unit, "intercept"): -np.log(total), (unit, "reference"): first}

    return ref


def refs(*fns):
    def ref(e):
        out = {}
        for fn in fns:
            out.update(fn(e))
        return out

    return ref


def sigmoid(u):
    return 1.0 / (1.0 + np.exp(-u))


SELU_ALPHA = 1.67326319217681884765625
SELU_GAMMA = 1.05070102214813232421875


def selu(u):
    return SELU_GAMMA * np.where(u > 0, u, SELU_ALPHA * (np.exp(np.minimum(u, 0)) - 1))


def elu(alpha):
    return lambda u: np.where(u > 0, u, alpha * (np.exp(np.minimum(u, 0)) - 1))


def gelu(u):
    return 0.5 * u * (1 + _erf(u / math.sqrt(2)))


def gelu_tanh(u):
    return 0.5 * u * (1 + np.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u**3)))


def hard_sigmoid(u, alpha, beta):
    return np.clip(alpha * u + beta, 0, 1)


# -- the table ---------------------------------------------------------------------------------

# Known onnxscope bugs are pinned here by strict xfails (the test stays a real check): none open.


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
# fmt: off
SPECS: list[Spec] = [
    # --- convolutions ---
    S("Conv_pads_bias_relu", ["u = Conv <pads=[1,1,1,1]> (x, W, B)", "y = Relu(u)"],
      {"x": (1, 3, 6, 6)}, {"W": w(4, 3, 3, 3), "B": w(4)}, pwl=True, ref=relu_ref("y", "u")),
    S("Conv_groups_dilations_strides_asym_pads",
      ["t = Tanh(x)",
       "y = Conv <group=2, dilations=[2,1], strides=[2,3], pads=[1,0,2,1]> (t, W, B)"],
      {"x": (1, 4, 11, 10)}, {"W": w(6, 2, 3, 3), "B": w(6)},
      ref=gain_ref("t", "x", np.tanh, 0.0, 1.0)),
    S("Conv_depthwise_same_upper_leakyrelu",
      ["u = Conv <group=3, auto_pad=\"SAME_UPPER\", strides=[2,2]> (x, W)",
       "y = LeakyRelu <alpha=0.2> (u)"],
      {"x": (1, 3, 7, 6)}, {"W": w(3, 1, 3, 3)}, pwl=True, ref=relu_ref("y", "u")),
    S("Conv_1d_batch2", ["y = Conv <strides=[2], pads=[2,1], dilations=[2]> (x, W, B)",
                         "r = Relu(y)"],
      {"x": (2, 2, 10)}, {"W": w(3, 2, 3), "B": w(3)}, pwl=True, ref=relu_ref("r", "y")),
    S("ConvTranspose_strides_output_padding_pads",
      ["t = Relu(x)",
       "y = ConvTranspose <strides=[2,2], output_padding=[1,0], pads=[1,1,0,0]> (t, W, B)"],
      {"x": (1, 3, 4, 5)}, {"W": w(3, 2, 3, 3), "B": w(2)}, pwl=True, ref=relu_ref("t", "x")),
    S("ConvTranspose_groups_dilations",
      ["y = ConvTranspose <group=2, strides=[2,1], dilations=[1,2]> (x, W)", "z = Tanh(y)"],
      {"x": (1, 4, 3, 4)}, {"W": w(4, 3, 2, 2)}, ref=gain_ref("z", "y", np.tanh, 0.0, 1.0)),
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
    # --- BatchNormalization ---
    S("BatchNormalization_relu",
      ["u = BatchNormalization <epsilon=0.001> (x, sc, bi, mean, var)", "y = Relu(u)"],
      {"x": (1, 3, 4, 4)}, {"sc": w(3), "bi": w(3), "mean": w(3), "var": pos(3)},
      pwl=True, ref=relu_ref("y", "u")),
    S("BatchNormalization_opset11", ["t = Tanh(x)",
                                     "y = BatchNormalization (t, sc, bi, mean, var)"],
      {"x": (2, 2, 3)}, {"sc": w(2), "bi": w(2), "mean": w(2), "var": pos(2)}, opset=11),
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
      ref=gain_ref("y", "x", _erf, 0.0, 2 / math.sqrt(math.pi))),
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
    S("Neg", ["t = Tanh(x)", "y = Neg(t)"], {"x": (2, 3)}),
    # --- softmax ---
    S("Softmax_opset11_axis1", ["y = Softmax <axis=1> (x)"], {"x": (2, 3, 4)}, opset=11,
      ref=softmax_ref("y", "x", [1, 2])),
    S("Softmax_opset13_axis1", ["y = Softmax <axis=1> (x)"], {"x": (2, 3, 4)}, opset=13,
      ref=softmax_ref("y", "x", [1])),
    S("Softmax_opset13_default_axis", ["u = Mul(x, two)", "y = Softmax(u)"], {"x": (2, 3, 4)},
      {"two": f(2.0)}, opset=13, ref=softmax_ref("y", "u", [2])),
    S("LogSoftmax_opset13", ["y = LogSoftmax(x)"], {"x": (2, 5)}, opset=13,
      ref=logsoftmax_ref("y", "x", [1])),
    S("LogSoftmax_opset11_axis1", ["t = Tanh(x)", "y = LogSoftmax <axis=1> (t)"],
      {"x": (2, 3, 4)}, opset=11, ref=logsoftmax_ref("y", "t", [1, 2])),
    # --- pooling ---
    S("MaxPool_overlapping", ["y = MaxPool <kernel_shape=[3,3], strides=[1,1]> (x)"],
      {"x": (1, 2, 5, 6)}, pwl=True, ref=pool_ref("y", "x", flat=True, kernel=[3, 3])),
    S("MaxPool_ceil_mode_pads_strides",
      ["y = MaxPool <kernel_shape=[3,3], strides=[2,2], pads=[1,1,0,0], ceil_mode=1> (x)"],
      {"x": (1, 2, 7, 8)}, pwl=True,
      ref=pool_ref("y", "x", kernel=[3, 3], strides=[2, 2], pads=[1, 1, 0, 0])),
    S("MaxPool_dilations",
      ["y = MaxPool <kernel_shape=[2,2], dilations=[2,2], strides=[1,2]> (x)"],
      {"x": (1, 2, 6, 7)}, pwl=True,
      ref=pool_ref("y", "x", flat=True, kernel=[2, 2], strides=[1, 2], dilations=[2, 2])),
    S("MaxPool_1d_after_conv",
      ["u = Conv (x, W)", "y = MaxPool <kernel_shape=[3], strides=[2], pads=[1,1]> (u)"],
      {"x": (1, 2, 11)}, {"W": w(3, 2, 3)}, pwl=True,
      ref=pool_ref("y", "u", kernel=[3], strides=[2], pads=[1, 1])),
    S("MaxPool_batch2", ["y = MaxPool <kernel_shape=[2,2], strides=[2,2]> (x)"],
      {"x": (2, 3, 4, 4)}, pwl=True, ref=pool_ref("y", "x", kernel=[2, 2], strides=[2, 2])),
    S("MaxPool_3d_pads",
      ["y = MaxPool <kernel_shape=[2,3,2], strides=[2,2,2], pads=[1,0,1,0,1,1]> (x)"],
      {"x": (1, 2, 3, 5, 4)}, pwl=True,
      ref=pool_ref("y", "x", kernel=[2, 3, 2], strides=[2, 2, 2], pads=[1, 0, 1, 0, 1, 1])),
    S("MaxPool_tiles_cropped", ["y = MaxPool <kernel_shape=[2,2], strides=[2,2]> (x)"],
      {"x": (2, 3, 5, 7)}, pwl=True, ref=pool_ref("y", "x", kernel=[2, 2], strides=[2, 2])),
    S("MaxPool_tiles_3x3", ["r = Relu(x)", "y = MaxPool <kernel_shape=[3,3], strides=[3,3]> (r)"],
      {"x": (1, 2, 9, 6)}, pwl=True, ref=pool_ref("y", "r", kernel=[3, 3], strides=[3, 3])),
    S("MaxPool_floor_mode_unused_tail", ["y = MaxPool <kernel_shape=[2,2], strides=[3,3]> (x)"],
      {"x": (1, 2, 7, 8)}, pwl=True, ref=pool_ref("y", "x", kernel=[2, 2], strides=[3, 3])),
    S("MaxPool_opset10_indices",
      ["y = MaxPool <kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1]> (x)"],
      {"x": (1, 2, 7, 7)}, opset=10, pwl=True,
      ref=pool_ref("y", "x", flat=True, kernel=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    S("GlobalMaxPool", ["u = Conv (x, W, B)", "y = GlobalMaxPool(u)"],
      {"x": (1, 2, 5, 5)}, {"W": w(3, 2, 3, 3), "B": w(3)}, pwl=True,
      ref=lambda e: {("y", "argmax"): reduce_argmax(e["u"], [2, 3], True)}),
    S("AveragePool_count_include_pad0_ceil",
      ["t = Tanh(x)", "y = AveragePool <kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1], "
       "ceil_mode=1, count_include_pad=0> (t)"], {"x": (1, 2, 6, 7)}),
    S("AveragePool_count_include_pad1_asym_pads",
      ["t = Tanh(x)", "y = AveragePool <kernel_shape=[3,2], strides=[2,1], pads=[0,1,1,0], "
       "count_include_pad=1> (t)"], {"x": (1, 2, 6, 7)}),
    S("AveragePool_ceil_no_pads",
      ["r = Relu(x)", "y = AveragePool <kernel_shape=[2,2], strides=[2,2], ceil_mode=1> (r)"],
      {"x": (1, 1, 5, 5)}, pwl=True, ref=relu_ref("r", "x")),
    S("GlobalAveragePool", ["r = Relu(x)", "y = GlobalAveragePool(r)"], {"x": (1, 3, 4, 4)},
      pwl=True, ref=relu_ref("r", "x")),
    # --- reductions ---
    S("ReduceMean_opset17_attr_keepdims0", ["t = Tanh(x)",
                                            "y = ReduceMean <axes=[1,3], keepdims=0> (t)"],
      {"x": (2, 3, 4, 5)}),
    S("ReduceMean_opset18_axes_input", ["t = Tanh(x)", "y = ReduceMean <keepdims=1> (t, axes)"],
      {"x": (2, 3, 4)}, {"axes": i64([-1, 1])}, opset=18),
    S("ReduceMean_all_axes", ["t = Tanh(x)", "y = ReduceMean <keepdims=0> (t)"], {"x": (2, 3)}),
    S("ReduceSum_opset11_attr", ["r = Relu(x)", "y = ReduceSum <axes=[0,2], keepdims=0> (r)"],
      {"x": (2, 3, 4)}, opset=11, pwl=True),
    S("ReduceSum_opset13_axes_input", ["r = Relu(x)", "y = ReduceSum <keepdims=1> (r, axes)"],
      {"x": (2, 3, 4)}, {"axes": i64([1])}, opset=13, pwl=True),
    S("ReduceSum_opset13_noop_empty_axes", ["y = ReduceSum <noop_with_empty_axes=1> (x)",
                                            "z = Tanh(y)"], {"x": (2, 3)}, opset=13),
    S("ReduceSum_opset18_all", ["t = Tanh(x)", "y = ReduceSum <keepdims=0> (t)"], {"x": (2, 3)},
      opset=18),
    S("ReduceMax_keepdims1_two_axes", ["y = ReduceMax <axes=[1,2], keepdims=1> (x)"],
      {"x": (2, 3, 4, 2)}, pwl=True, ref=reduce_ref("y", "x", [1, 2], True)),
    S("ReduceMax_opset18_axes_input_keepdims0", ["y = ReduceMax <keepdims=0> (x, axes)"],
      {"x": (2, 3, 4)}, {"axes": i64([-1, 0])}, opset=18, pwl=True,
      ref=reduce_ref("y", "x", [-1, 0], False)),
    S("ReduceMax_all_keepdims0", ["u = MatMul(x, W)", "y = ReduceMax <keepdims=0> (u)"],
      {"x": (3, 4)}, {"W": w(4, 4)}, pwl=True, ref=reduce_ref("y", "u", None, False)),
    S("ReduceMax_opset11_axis", ["y = ReduceMax <axes=[1], keepdims=1> (x)"], {"x": (2, 5)},
      opset=11, pwl=True, ref=reduce_ref("y", "x", [1], True)),
    # --- data movement ---
    S("Reshape_zero_and_minus_one", ["t = Tanh(x)", "y = Reshape(t, shape)"], {"x": (2, 3, 4)},
      {"shape": i64([0, -1, 2])}),
    S("Flatten_axis2", ["y = Flatten <axis=2> (x)", "r = Relu(y)"], {"x": (2, 3, 4, 5)},
      pwl=True),
    S("Transpose", ["y = Transpose <perm=[2,0,1]> (x)", "r = Relu(y)"], {"x": (2, 3, 4)},
      pwl=True),
    S("Transpose_default_perm", ["t = Tanh(x)", "y = Transpose(t)"], {"x": (2, 3, 4)}),
    S("Squeeze_opset11_attr", ["t = Tanh(x)", "y = Squeeze <axes=[1,-1]> (t)"],
      {"x": (2, 1, 3, 1)}, opset=11),
    S("Squeeze_opset13_input", ["t = Tanh(x)", "y = Squeeze(t, axes)"], {"x": (2, 1, 3)},
      {"axes": i64([1])}, opset=13),
    S("Unsqueeze_opset11_attr", ["t = Tanh(x)", "y = Unsqueeze <axes=[0,-1]> (t)"],
      {"x": (2, 3)}, opset=11),
    S("Unsqueeze_opset13_input", ["t = Tanh(x)", "y = Unsqueeze(t, axes)"], {"x": (2, 3)},
      {"axes": i64([-1, 1])}, opset=13),
    S("Concat_with_constant", ["t = Tanh(x)", "y = Concat <axis=-1> (c, t, x)"], {"x": (2, 3)},
      {"c": w(2, 2)}),
    S("Split_opset11_attr", ["a, b = Split <axis=1, split=[1,2]> (x)", "ra = Relu(a)"],
      {"x": (2, 3, 2)}, opset=11, outputs=["ra", "b"], pwl=True, ref=relu_ref("ra", "a")),
    S("Split_opset13_input", ["t = Tanh(x)", "a, b, c = Split <axis=-1> (t, sp)"],
      {"x": (2, 4)}, {"sp": i64([2, 1, 1])}, opset=13),
    S("Split_opset18_num_outputs", ["t = Tanh(x)", "a, b = Split <axis=0, num_outputs=2> (t)"],
      {"x": (5, 3)}, opset=18),
    S("Slice_steps_negative_axes", ["t = Tanh(x)", "y = Slice(t, starts, ends, axes, steps)"],
      {"x": (3, 4, 6)}, {"starts": i64([-1, 0]), "ends": i64([-100, 6]), "axes": i64([-1, 1]),
                         "steps": i64([-2, 2])}),
    S("Slice_opset11_no_steps", ["y = Slice(x, starts, ends, axes)", "r = Relu(y)"],
      {"x": (4, 3)}, {"starts": i64([1]), "ends": i64([3]), "axes": i64([0])}, opset=11,
      pwl=True),
    S("Pad_constant_value_opset11", ["t = Tanh(x)", "y = Pad <mode=\"constant\"> (t, pads, v)"],
      {"x": (1, 2, 3, 3)}, {"pads": i64([0, 0, 1, 2, 0, 0, 2, 1]), "v": f(1.5)}, opset=11),
    S("Pad_reflect_opset13", ["t = Tanh(x)", "y = Pad <mode=\"reflect\"> (t, pads)"],
      {"x": (1, 2, 4, 5)}, {"pads": i64([0, 0, 1, 1, 0, 0, 2, 1])}, opset=13),
    S("Pad_edge_opset18_axes", ["t = Tanh(x)", "y = Pad <mode=\"edge\"> (t, pads, , axes)"],
      {"x": (1, 2, 4, 5)}, {"pads": i64([1, 2, 0, 3]), "axes": i64([-1, 2])}, opset=18),
    S("Pad_constant_negative_crop", ["y = Pad (x, pads, v)", "r = Relu(y)"],
      {"x": (1, 2, 4, 4)}, {"pads": i64([0, 0, -1, 1, 0, 0, 1, -1]), "v": f(-0.25)}, pwl=True),
    S("Resize_nearest_scales_opset13",
      ["t = Tanh(x)", "y = Resize <mode=\"nearest\"> (t, , scales)"],
      {"x": (1, 2, 3, 4)}, {"scales": f([1, 1, 2, 1.5])}, opset=13),
    S("Resize_linear_sizes_opset13",
      ["t = Tanh(x)", "y = Resize <mode=\"linear\"> (t, , , sizes)"],
      {"x": (1, 2, 3, 4)}, {"sizes": i64([1, 2, 7, 5])}, opset=13),
    S("Resize_linear_align_corners_scales_opset11",
      ["t = Tanh(x)",
       "y = Resize <mode=\"linear\", coordinate_transformation_mode=\"align_corners\"> "
       "(t, roi, scales)"],
      {"x": (1, 2, 3, 4)}, {"roi": f([]), "scales": f([1, 1, 2, 2])}, opset=11),
    S("Resize_linear_axes_sizes_opset18",
      ["t = Tanh(x)", "y = Resize <mode=\"linear\", axes=[2,3]> (t, , , sizes)"],
      {"x": (1, 2, 3, 4)}, {"sizes": i64([7, 5])}, opset=18),
    S("Resize_nearest_sizes_batch2",
      ["r = Relu(x)", "y = Resize <mode=\"nearest\", nearest_mode=\"floor\"> (r, , , sizes)"],
      {"x": (2, 2, 3, 3)}, {"sizes": i64([2, 2, 5, 6])}, opset=13, pwl=True),
    S("Resize_cubic_scales", ["t = Tanh(x)", "y = Resize <mode=\"cubic\"> (t, , scales)"],
      {"x": (1, 1, 4, 4)}, {"scales": f([1, 1, 2, 2])}, opset=13),
    S("DepthToSpace_DCR", ["t = Tanh(x)", "y = DepthToSpace <blocksize=2> (t)"],
      {"x": (1, 8, 2, 3)}),
    S("DepthToSpace_CRD", ["t = Tanh(x)", "y = DepthToSpace <blocksize=2, mode=\"CRD\"> (t)"],
      {"x": (1, 8, 2, 3)}),
    S("SpaceToDepth", ["y = SpaceToDepth <blocksize=2> (x)", "r = Relu(y)"], {"x": (1, 2, 4, 6)},
      pwl=True),
    # --- normalizations ---
    S("InstanceNormalization", ["y = InstanceNormalization <epsilon=0.001> (x, sc, bi)"],
      {"x": (2, 3, 4, 5)}, {"sc": w(3), "bi": w(3)},
      ref=inv_sigma_ref("y", "x", lambda s: s, [2, 3], 1e-3)),
    S("LayerNormalization_last_axis", ["y = LayerNormalization (x, g, b)"], {"x": (2, 3, 8)},
      {"g": w(8), "b": w(8)}, ref=inv_sigma_ref("y", "x", lambda s: s, [2], 1e-5)),
    S("LayerNormalization_axis1_no_bias", ["y = LayerNormalization <axis=1, epsilon=0.01> (x, g)"],
      {"x": (2, 3, 4)}, {"g": w(3, 4)}, ref=inv_sigma_ref("y", "x", lambda s: s, [1, 2], 1e-2)),
    # onnx 1.23's checker rejects GroupNormalization-18 as deprecated (ORT still runs it)
    S("GroupNormalization_opset18", ["y = GroupNormalization <num_groups=2> (x, sc, bi)"],
      {"x": (1, 4, 3, 3)}, {"sc": w(2), "bi": w(2)}, opset=18, valid_onnx=False,
      ref=inv_sigma_ref("y", "x", lambda s: (s[0], 2, -1), [2], 1e-5)),
    S("GroupNormalization_opset21", ["y = GroupNormalization <num_groups=2> (x, sc, bi)"],
      {"x": (1, 4, 3, 3)}, {"sc": w(4), "bi": w(4)}, opset=21,
      ref=inv_sigma_ref("y", "x", lambda s: (s[0], 2, -1), [2], 1e-5)),
    # --- identity-like and casts ---
    S("Identity", ["t = Tanh(x)", "y = Identity(t)"], {"x": (2, 3)}),
    S("Identity_of_input", ["y = Identity(x)"], {"x": (2, 3)}, pwl=True),
    S("Dropout_ratio_mask_output", ["y, m = Dropout(x, ratio)", "r = Relu(y)"], {"x": (2, 3)},
      {"ratio": f(0.3)}, opset=13, outputs=["r"], pwl=True, ref=relu_ref("r", "y")),
    S("Cast_float_double_roundtrip", ["d = Cast <to=11> (x)", "t = Tanh(d)", "y = Cast <to=1> (t)"],
      {"x": (2, 3)}, ref=gain_ref("t", "d", np.tanh, 0.0, 1.0)),
    S("Expand", ["t = Tanh(x)", "y = Expand(t, shape)"], {"x": (3, 1)}, {"shape": i64([2, 3, 4])}),
    S("Tile", ["y = Tile(x, reps)", "r = Relu(y)"], {"x": (2, 3, 1)}, {"reps": i64([2, 1, 3])},
      pwl=True),
    S("Gather_const_2d_negative_indices", ["t = Tanh(x)", "y = Gather <axis=1> (t, idx)"],
      {"x": (2, 4, 3)}, {"idx": i64([[0, -1], [2, 2]])}),
    S("Gather_scalar_index", ["y = Gather <axis=0> (x, i)", "r = Relu(y)"], {"x": (3, 4)},
      {"i": i64(1)}, pwl=True),
    S("GatherND_pairs", ["t = Tanh(x)", "y = GatherND(t, i)"], {"x": (2, 3, 4)},
      {"i": i64([[0, 1], [1, 0], [1, 1], [0, 1]])}),
    S("GatherND_nested_repeat", ["y = GatherND(x, i)", "r = Relu(y)"], {"x": (2, 3, 4)},
      {"i": i64([[[1], [0]], [[1], [1]]])}, pwl=True),
    S("CumSum", ["t = Tanh(x)", "y = CumSum(t, ax)"], {"x": (2, 5, 3)}, {"ax": i64(1)}),
    S("CumSum_exclusive_reverse", ["t = Tanh(x)", "y = CumSum <exclusive=1, reverse=1> (t, ax)"],
      {"x": (2, 5, 3)}, {"ax": i64(-1)}),
    # --- Max, Min, Sum, Mean, Where ---
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
    S("Min_three_operands", ["t = Mul(x, two)", "y = Min(c, x, t)"], {"x": (2, 4)},
      {"two": f(2.0), "c": w(4)}, pwl=True, ref=winner_ref("y", ["c", "x", "t"], "min")),
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
      ref=frozen_ref("m", "a", fn=lambda e: 1 + _erf(e["x"].astype(np.float64) / math.sqrt(2)))),
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
    S("Pow_square", ["y = Pow(x, two)"], {"x": (2, 3)}, {"two": f(2.0)},
      ref=gain_ref("y", "x", lambda u: u**2, 0.0, 0.0)),
    S("Pow_cube_opset13", ["y = Pow(x, three)"], {"x": (2, 3)}, {"three": f(3.0)}, opset=13,
      ref=gain_ref("y", "x", lambda u: u**3, 0.0, 0.0)),
    S("Div_two_dependent_softsign", ["a = Abs(x)", "d = Add(a, one)", "y = Div(x, d)"],
      {"x": (2, 3)}, {"one": f(1.0)}, ref=frozen_ref("y", "d")),
    S("MatMul_bilinear_x_xT", ["t = Transpose(x)", "y = MatMul(x, t)"], {"x": (3, 4)},
      ref=frozen_ref("y", "t")),
    S("Gemm_bilinear_with_C", ["t = Tanh(x)", "y = Gemm <transB=1, beta=0.5> (x, t, x)"],
      {"x": (3, 3)}, ref=frozen_ref("y", "t")),
    S("Mul_two_gates", ["s = Sigmoid(x)", "t = Tanh(x)", "y = Mul(s, t)"], {"x": (2, 3)},
      ref=refs(frozen_ref("y", "t"), gain_ref("s", "x", sigmoid, 0.5, 0.25))),
    S("Conv_input_dependent_weights",
      ["g = GlobalAveragePool(x)", "t = Tanh(g)", "W = Reshape(t, s)", "y = Conv(x, W)"],
      {"x": (1, 2, 4, 4)}, {"s": i64([1, 2, 1, 1])}, ref=frozen_ref("y", "W")),
    S("Pow_two_dependent", ["a = Abs(x)", "u = Add(a, c)", "e = Tanh(x)", "y = Pow(u, e)"],
      {"x": (2, 3)}, {"c": f(0.5)},
      ref=lambda e: {("y", "gain"): e["y"].astype(F64) / e["u"]}),
    # --- more op forms and opset versions ---
    S("Scalar_input", ["y = Mul(x, c)", "r = Relu(y)"], {"x": ()}, {"c": w(3)}, pwl=True),
    S("Max_constant_grows", ["y = Max(x, c)"], {"x": (3,)}, {"c": w(2, 3)}, pwl=True,
      ref=winner_ref("y", ["x", "c"], "max")),
    S("MaxPool_auto_pad_same_upper",
      ["y = MaxPool <kernel_shape=[3,3], strides=[2,2], auto_pad=\"SAME_UPPER\"> (x)"],
      {"x": (1, 1, 6, 5)}, pwl=True,
      ref=pool_ref("y", "x", kernel=[3, 3], strides=[2, 2], pads=[0, 1, 1, 1])),
    S("MaxPool_indices_output", ["y, idx = MaxPool <kernel_shape=[2,2]> (x)"],
      {"x": (1, 1, 4, 4)}, outputs=["y", "idx"], pwl=True,
      ref=pool_ref("y", "x", flat=True, kernel=[2, 2])),
    S("MaxPool_indices_output_stride2",
      ["y, idx = MaxPool <kernel_shape=[2,2], strides=[2,2]> (x)"],
      {"x": (1, 1, 4, 4)}, outputs=["y", "idx"], pwl=True,
      ref=pool_ref("y", "x", kernel=[2, 2], strides=[2, 2])),
    S("MaxPool_opset22", ["y = MaxPool <kernel_shape=[3,3], strides=[2,2], ceil_mode=1> (x)"],
      {"x": (1, 2, 6, 6)}, opset=22, pwl=True,
      ref=pool_ref("y", "x", kernel=[3, 3], strides=[2, 2])),
    S("Conv_opset22_relu", ["u = Conv <pads=[1,1,1,1]> (x, W, B)", "y = Relu(u)"],
      {"x": (1, 2, 5, 5)}, {"W": w(3, 2, 3, 3), "B": w(3)}, opset=22, pwl=True,
      ref=relu_ref("y", "u")),
    S("ConvTranspose_output_shape",
      ["t = Tanh(x)", "y = ConvTranspose <strides=[2,2], output_shape=[10,9]> (t, W)"],
      {"x": (1, 2, 4, 4)}, {"W": w(2, 3, 3, 3)}),
    S("AveragePool_same_lower",
      ["t = Tanh(x)", "y = AveragePool <kernel_shape=[2,3], auto_pad=\"SAME_LOWER\"> (t)"],
      {"x": (1, 2, 5, 5)}),
    S("AveragePool_dilations_opset19",
      ["t = Tanh(x)", "y = AveragePool <kernel_shape=[2,2], dilations=[2,2]> (t)"],
      {"x": (1, 2, 6, 6)}, opset=19),
    S("ReduceMax_noop_opset18", ["y = ReduceMax <noop_with_empty_axes=1> (x)"], {"x": (2, 3)},
      opset=18, pwl=True, ref=lambda e: {("y", "argmax"): np.arange(6).reshape(2, 3)}),
    S("ReduceMean_noop_empty_axes_opset18",
      ["y = ReduceMean <noop_with_empty_axes=1> (x, ax)", "z = Tanh(y)"], {"x": (2, 3)},
      {"ax": i64([])}, opset=18),
    S("ReduceSum_empty_axes_reduces_all", ["t = Tanh(x)", "y = ReduceSum (t, ax)"], {"x": (2, 3)},
      {"ax": i64([])}, opset=13),
    S("ReduceMin", ["y = ReduceMin <axes=[1]> (x)"], {"x": (2, 3)}, pwl=True,
      ref=reduce_ref("y", "x", [1], True, op="min")),
    S("Softmax_opset11_axis0", ["y = Softmax <axis=0> (x)"], {"x": (2, 3)}, opset=11,
      ref=softmax_ref("y", "x", [0, 1])),
    S("Softmax_1d", ["y = Softmax(x)"], {"x": (5,)}, opset=13, ref=softmax_ref("y", "x", [0])),
    S("Flatten_axis0", ["t = Tanh(x)", "y = Flatten <axis=0> (t)"], {"x": (2, 3)}),
    S("Squeeze_opset13_all_ones", ["t = Tanh(x)", "y = Squeeze(t)"], {"x": (1, 3, 1)}, opset=13),
    S("Expand_both_grow", ["t = Tanh(x)", "y = Expand(t, shape)"], {"x": (3, 1)},
      {"shape": i64([1, 4])}),
    S("Split_uneven_num_outputs_opset18",
      ["t = Tanh(x)", "a, b, c = Split <axis=1, num_outputs=3> (t)"], {"x": (2, 7)}, opset=18),
    S("Pad_wrap_opset19", ["t = Tanh(x)", "y = Pad <mode=\"wrap\"> (t, pads)"],
      {"x": (1, 2, 3, 4)}, {"pads": i64([0, 0, 1, 2, 0, 0, 2, 1])}, opset=19),
    S("Resize_tf_crop_and_resize_extrapolation",
      ["t = Tanh(x)",
       "y = Resize <mode=\"linear\", coordinate_transformation_mode=\"tf_crop_and_resize\", "
       "extrapolation_value=2.0> (t, roi, , sizes)"],
      {"x": (1, 2, 3, 4)}, {"roi": f([0, 0, -0.2, 0.1, 1, 1, 1.2, 0.9]),
                            "sizes": i64([1, 2, 5, 5])}, opset=13),
    S("Resize_antialias_opset18", ["t = Tanh(x)",
                                   "y = Resize <mode=\"linear\", antialias=1> (t, , scales)"],
      {"x": (1, 2, 8, 8)}, {"scales": f([1, 1, 0.5, 0.375])}, opset=18),
    S("Resize_half_pixel_symmetric_opset19",
      ["t = Tanh(x)", "y = Resize <mode=\"linear\", "
       "coordinate_transformation_mode=\"half_pixel_symmetric\"> (t, , scales)"],
      {"x": (1, 2, 3, 4)}, {"scales": f([1, 1, 1.7, 2.3])}, opset=19),
    S("InstanceNormalization_3d_opset22", ["y = InstanceNormalization (x, sc, bi)"],
      {"x": (1, 2, 5)}, {"sc": w(2), "bi": w(2)}, opset=22,
      ref=inv_sigma_ref("y", "x", lambda s: s, [2], 1e-5)),
    S("BatchNormalization_2d", ["y = BatchNormalization (x, sc, bi, mean, var)", "r = Relu(y)"],
      {"x": (3, 2)}, {"sc": w(2), "bi": w(2), "mean": w(2), "var": pos(2)}, pwl=True,
      ref=relu_ref("r", "y")),
    S("Dropout_opset11_ratio_attr", ["y = Dropout <ratio=0.4> (x)", "r = Relu(y)"], {"x": (2, 3)},
      opset=11, pwl=True),
    S("Cast_opset21_double_roundtrip", ["d = Cast <to=11> (x)", "t = Tanh(d)",
                                        "y = Cast <to=1> (t)"], {"x": (2, 3)}, opset=21),
    S("Where_condition_grows", ["t = Tanh(x)", "y = Where(cond, x, t)"], {"x": (3,)},
      {"cond": np.array([[True, False, True], [False, True, True]])}),
    S("Gather_by_argmax_indices",
      ["fl = Reshape(x, m1)", "i = ArgMax <keepdims=0> (fl)", "y = Gather(fl, i)"],
      {"x": (2, 3)}, {"m1": i64([-1])}, pwl=True),
    S("Pow_sqrt_exponent", ["a = Abs(x)", "u = Add(a, c)", "y = Pow(u, h)"], {"x": (2, 3)},
      {"c": f(0.1), "h": f(0.5)}, ref=gain_ref("y", "u", np.sqrt, 0.0, 0.0)),
    S("Two_outputs_one_independent_of_x", ["y = Relu(x)", "o = Tanh(other)"],
      {"x": (2, 3), "other": (2, 3)}, outputs=["y", "o"], pwl=True),
    # --- float64 models (ORT has double kernels for these) ---
    S("F64_MatMul_Relu", ["u = MatMul(x, W)", "y = Relu(u)"], {"x": ((3, 4), F64)},
      {"W": d(w(4, 5))}, pwl=True, tol=1e-12, ref=relu_ref("y", "u")),
    S("F64_MaxPool", ["y = MaxPool <kernel_shape=[2,2], strides=[1,1]> (x)"],
      {"x": ((1, 1, 4, 4), F64)}, pwl=True, tol=1e-12,
      ref=pool_ref("y", "x", flat=True, kernel=[2, 2])),
    S("F64_Clip", ["y = Clip (x, lo, hi)"], {"x": ((3, 4), F64)}, {"lo": d(-0.3), "hi": d(0.4)},
      pwl=True, tol=1e-12, ref=piece_ref("y", lambda e: clip_state(e["x"], -0.3, 0.4))),
    S("F64_Tanh_Sigmoid", ["t = Tanh(x)", "y = Sigmoid(t)"], {"x": ((3, 4), F64)}, tol=1e-12,
      ref=refs(gain_ref("t", "x", np.tanh, 0.0, 1.0), gain_ref("y", "t", sigmoid, 0.5, 0.25))),
    # ORT 1.31.1's CUDA kernels for these two ops reconstructed to 1.5e-8 and 5.1e-8 on an H200
    S("F64_Softmax", ["y = Softmax (x)"], {"x": ((3, 4), F64)}, tol=1e-12, cuda_tol=1e-7,
      ref=softmax_ref("y", "x", [1])),
    S("F64_LayerNormalization", ["y = LayerNormalization (x, g, b)"], {"x": ((3, 4), F64)},
      {"g": d(w(4)), "b": d(w(4))}, tol=1e-10, cuda_tol=1e-7,
      ref=inv_sigma_ref("y", "x", lambda s: s, [1], 1e-5)),
]
# fmt: on

_ids = [s.id for s in SPECS]
assert len(_ids) == len(set(_ids)), "duplicate spec ids"
SPEC_BY_ID = {s.id: s for s in SPECS}


def params(kind: str, select=lambda s: True):
    out = []
    for s in SPECS:
        if not select(s):
            continue
        reason = s.xfail.get(kind) or s.xfail.get("*")
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        out.append(pytest.param(s.id, id=s.id, marks=marks))
    return out


@cache
def built(spec_id: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    spec = SPEC_BY_ID[spec_id]
    model = spec.model()
    if spec.valid_onnx:
        onnx.checker.check_model(model, full_check=True)  # the test model itself is valid
    return model, spec.feeds(model)


@lru_cache(maxsize=_LIVE_INTERPRETATIONS)
def checked(spec_id: str) -> Checked:
    model, feeds = built(spec_id)
    return check_model(model, feeds, tol=SPEC_BY_ID[spec_id].device_tol)


# -- the table's tests -------------------------------------------------------------------------


@pytest.mark.parametrize("spec_id", params("check"))
def test_op(spec_id):
    c = checked(spec_id)
    assert c.errors["reconstruction"] <= SPEC_BY_ID[spec_id].device_tol


@pytest.mark.parametrize("spec_id", params("masks", lambda s: s.ref is not None))
def test_masks(spec_id):
    spec = SPEC_BY_ID[spec_id]
    c = checked(spec_id)
    env = run_all(c.model, c.inputs)
    masks = c.masks()
    for (unit, label), expected in spec.ref(env).items():
        assert unit in masks, f"no frozen unit {unit!r}; units: {list(masks)}"
        assert label in masks[unit], f"unit {unit!r} has masks {list(masks[unit])}, not {label!r}"
        got = masks[unit][label]
        expected = np.asarray(expected)
        assert got.size == expected.size, f"{unit}/{label}: shape {got.shape} vs {expected.shape}"
        if got.shape != expected.shape:  # the grouped layout of a mask may keep other dims
            expected = expected.reshape(got.shape)
        if expected.dtype == np.bool_ or np.issubdtype(expected.dtype, np.integer):
            assert got.dtype.kind == expected.dtype.kind or (
                got.dtype.kind in "iu" and expected.dtype.kind in "iu"
            ), f"{unit}/{label}: dtype {got.dtype}, expected {expected.dtype}"
            bad = np.argwhere(got != expected)
            assert not len(bad), (
                f"{unit}/{label}: {len(bad)} of {got.size} entries differ, first at "
                f"{tuple(bad[0])}: {got[tuple(bad[0])]} vs {expected[tuple(bad[0])]}"
            )
        else:
            np.testing.assert_allclose(
                got.astype(np.float64),
                expected.astype(np.float64),
                rtol=1e-4,
                atol=1e-5,
                err_msg=f"{unit}/{label}",
            )


@pytest.mark.parametrize("spec_id", params("fd", lambda s: s.pwl))
def test_finite_difference(spec_id):
    c = checked(spec_id)
    rtol = 1e-9 if c.inputs[c.wrt].dtype == F64 else 2e-4
    assert_columns_match_fd(c, count=4, rtol=rtol)


def test_table_covers_the_ops():
    ops = {onnx.parser.parse_node(n).op_type for s in SPECS for n in s.nodes}
    required = """Conv ConvTranspose Gemm MatMul Add Sub Mul Div BatchNormalization Relu LeakyRelu
    PRelu Clip Sigmoid HardSigmoid HardSwish Tanh Erf Elu Selu Softplus Gelu Exp Softmax LogSoftmax
    MaxPool GlobalMaxPool AveragePool GlobalAveragePool ReduceMean ReduceSum ReduceMax Reshape
    Flatten Transpose Squeeze Unsqueeze Concat Split Slice Pad Resize DepthToSpace SpaceToDepth
    InstanceNormalization LayerNormalization GroupNormalization Identity Dropout Cast Expand Tile
    Gather Neg Abs Sqrt Reciprocal Max Min Sum Mean Where Pow""".split()
    assert not set(required) - ops, f"ops without a spec: {sorted(set(required) - ops)}"


def test_bilinear_units_are_gates():
    """A product of two input-dependent tensors freezes one operand and reports a gate."""
    c = checked("SqueezeExcitation")
    unit = c.unit("y")
    assert unit["op"] == "Mul" and unit["kind"] == "gate"
    assert list(unit["masks"]) == ["frozen:s"]
    assert "'s'" in unit["frozen"]
    # the frozen gate is exported as a float mask shaped like the gate
    assert unit["masks"]["frozen:s"]["dtype"] == "float32"
    assert unit["masks"]["frozen:s"]["shape"] == [1, 4, 1, 1]


# -- kinks and ties ----------------------------------------------------------------------------


def _single(model, x, **kw) -> Checked:
    return check_model(model, {"x": np.asarray(x, F32)}, **kw)


def test_relu_kink_at_zero_gain_zero():
    x = f([[-1.0, 0.0, 2.0], [0.0, 3.0, -0.0]])
    c = _single(make_model(["y = Relu(x)"], {"x": (2, 3)}), x)
    assert np.array_equal(c.mask("y", "piece"), x > 0)
    cols = c.it.columns(np.arange(6)).reshape(6, 6)
    np.testing.assert_array_equal(cols, np.diag((x > 0).ravel().astype(F32)))


def test_leakyrelu_and_prelu_at_zero_take_negative_slope():
    x = f([[0.0, 1.0, -1.0]])
    c = _single(make_model(["y = LeakyRelu <alpha=0.2> (x)"], {"x": (1, 3)}), x)
    np.testing.assert_allclose(c.it.columns([0, 1, 2]).reshape(3, 3), np.diag([0.2, 1.0, 0.2]))
    c = _single(make_model(["y = PRelu(x, s)"], {"x": (1, 3)}, inits={"s": f([0.3, 0.4, 0.5])}), x)
    np.testing.assert_allclose(
        c.it.columns([0, 1, 2]).reshape(3, 3), np.diag([0.3, 1.0, 0.5]), rtol=1e-6
    )


def test_abs_at_zero_gain_plus_one():
    x = f([[0.0, -2.0, 3.0]])
    c = _single(make_model(["y = Abs(x)"], {"x": (1, 3)}), x)
    np.testing.assert_array_equal(c.it.columns([0, 1, 2]).reshape(3, 3), np.diag([1.0, -1.0, 1.0]))


def test_clip_at_exact_bounds_is_saturated():
    x = f([[-0.5, 0.7, 0.0, -1.0, 1.0]])
    model = make_model(["y = Clip(x, lo, hi)"], {"x": (1, 5)}, inits={"lo": f(-0.5), "hi": f(0.7)})
    c = _single(model, x)
    assert c.mask("y", "piece").tolist() == [[0, 2, 1, 0, 2]]
    np.testing.assert_array_equal(c.it.columns(range(5)).reshape(5, 5), np.diag([0, 0, 1, 0, 0]))
    np.testing.assert_allclose(c.it.bias, f([[-0.5, 0.7, 0.0, -0.5, 0.7]]))


@pytest.mark.parametrize(
    "strides, pads, size, label, stored, picked",
    [  # stride 1 stores ONNX Runtime's flat indices, stride 2 the window offsets (C order)
        ([1, 1], [1, 1, 0, 0], 3, "argmax", [0, 0, 1, 0, 0, 1, 3, 3, 4], None),  # picked = stored
        ([2, 2], [1] * 4, 4, "window", [3, 2, 2, 1, 0, 0, 1, 0, 0], [0, 1, 3, 4, 5, 7, 12, 13, 15]),
        ([2, 2], [0] * 4, 4, "window", [0, 0, 0, 0], [0, 2, 8, 10]),  # tiles: SpaceToDepth
    ],
    ids=["stride1_flat_index", "stride2_window_offset", "tiles_window_offset"],
)
def test_maxpool_ties_pick_the_first_maximum(strides, pads, size, label, stored, picked):
    # 2x2 windows on a constant image: every window keeps its first element inside the image
    ints = lambda v: "[" + ",".join(map(str, v)) + "]"  # noqa: E731
    node = f"y = MaxPool <kernel_shape=[2,2], strides={ints(strides)}, pads={ints(pads)}> (x)"
    x = np.full((1, 1, size, size), 0.5, F32)
    c = _single(make_model([node], {"x": x.shape}), x)
    got = c.mask("y", label)
    flat = label == "argmax"
    np.testing.assert_array_equal(
        got, maxpool_window(x, got.shape, [2, 2], strides, pads, flat=flat)
    )
    assert got.ravel().tolist() == stored
    # A_x is the selection of the picked pixels (one per output), A_x^T the scatter back
    picked = stored if picked is None else picked
    want = (np.asarray(picked)[None, :] == np.arange(size * size)[:, None]).astype(F32)
    np.testing.assert_array_equal(c.it.columns(range(size * size)).reshape(want.shape), want)
    np.testing.assert_array_equal(c.it.rows(range(len(picked))).reshape(want.T.shape), want.T)


def test_globalmaxpool_and_reducemax_ties_pick_the_first_maximum():
    x = f([[[[1.0, 3.0], [3.0, 0.0]], [[2.0, 2.0], [2.0, 2.0]]]])  # (1, 2, 2, 2)
    c = _single(make_model(["y = GlobalMaxPool(x)"], {"x": (1, 2, 2, 2)}), x)
    assert c.mask("y", "argmax").ravel().tolist() == [1, 4]
    c = _single(make_model(["y = ReduceMax <axes=[1,3], keepdims=0> (x)"], {"x": (1, 2, 2, 2)}), x)
    np.testing.assert_array_equal(c.mask("y", "argmax"), reduce_argmax(x, [1, 3], False))
    assert c.mask("y", "argmax").ravel().tolist() == [1, 2]


def test_max_min_ties_pick_the_earlier_operand():
    x = f([[0.5, -1.0, 2.0]])
    c_val = f([0.5, 0.0, 2.0])  # ties at elements 0 and 2
    # Max(x, c): x is earlier, so tied elements copy x (gain 1)
    c = _single(make_model(["y = Max(x, c)"], {"x": (1, 3)}, inits={"c": c_val}), x)
    assert c.mask("y", "winner").tolist() == [[False, True, False]]
    np.testing.assert_array_equal(c.it.columns(range(3)).reshape(3, 3), np.diag([1.0, 0.0, 1.0]))
    # Max(c, x): c is earlier, so tied elements copy the constant (gain 0)
    c = _single(make_model(["y = Max(c, x)"], {"x": (1, 3)}, inits={"c": c_val}), x)
    np.testing.assert_array_equal(c.it.columns(range(3)).reshape(3, 3), np.diag([0.0, 0.0, 0.0]))
    # Min of three with a three-way tie at element 0: operand 0 (the constant) wins
    model = make_model(
        ["t = Mul(x, one)", "y = Min(c, x, t)"],
        {"x": (1, 3)},
        inits={"c": f([0.5, 5.0, 5.0]), "one": f(1.0)},
    )
    c = _single(model, x)
    assert c.mask("y", "winner").tolist() == [[0, 1, 1]]  # x and t tie elsewhere: x is earlier
    np.testing.assert_array_equal(c.it.columns(range(3)).reshape(3, 3), np.diag([0.0, 1.0, 1.0]))


@pytest.mark.parametrize(
    "unit, left, right",
    [("Elu <alpha=0.5>", 0.5, 1.0), ("Selu", SELU_GAMMA * SELU_ALPHA, SELU_GAMMA)],
    ids=["Elu_alpha0.5", "Selu"],
)
def test_secant_gain_on_both_sides_of_a_kink(unit, left, right):
    """Elu (alpha != 1) and Selu have a kink at 0: the secant y/u is near the left slope just
    below 0 and the right slope just above (|u| = 1e-3: secant - slope ~ f''(0) u / 2, and float32
    rounding of the runtime's own y stays far below that). At u = 0 exactly the gain is the right
    slope."""
    x = f([[-1.0, -2.0, 1.0, 0.0]]) * 1e-3
    c = interpret(make_model([f"y = {unit} (x)"], {"x": (1, 4)}), {"x": x})
    np.testing.assert_allclose(c.mask("y", "gain").ravel(), [left, left, right, right], rtol=3e-3)


SMALL_INPUT_UNITS = [
    ("Elu <alpha=0.5>", None),
    ("Selu", None),
    ("Celu <alpha=0.5>", None),
    *[(u, None) for u in ["Tanh", "Erf", "Sigmoid", "Exp", "Softplus", "Gelu", "Softsign"]],
    ("HardSwish", None),
]


@pytest.mark.parametrize(
    "unit",
    [
        pytest.param(
            u,
            id=u.split()[0],
            marks=[pytest.mark.xfail(strict=True, reason=why)] if why else [],
        )
        for u, why in SMALL_INPUT_UNITS
    ],
)
def test_secant_units_reconstruct_small_inputs(unit):
    """All inputs small (1e-5 ≤ |u| ≤ 1e-4): A_x x + c_x must still reproduce ORT's F(x)."""
    rng = np.random.default_rng(5)
    x = (rng.uniform(1e-5, 1e-4, (2, 8)) * rng.choice([-1, 1], (2, 8))).astype(F32)
    check_model(make_model([f"y = {unit} (x)"], {"x": (2, 8)}, opset=20), {"x": x})


def test_div_constant_numerator_is_a_unit_not_a_constant():
    """c / u(x) must be linearized like c * Reciprocal(u) (gain c/u^2 on u), not frozen."""
    x = np.random.default_rng(3).standard_normal((2, 3)).astype(F32)
    inits = {"one": f(1.0), "c": f(2.5)}
    as_div = make_model(
        ["e = Exp(x)", "d = Add(e, one)", "y = Div(c, d)"], {"x": (2, 3)}, inits=inits
    )
    as_reciprocal = make_model(
        ["e = Exp(x)", "d = Add(e, one)", "r = Reciprocal(d)", "y = Mul(r, c)"],
        {"x": (2, 3)},
        inits=inits,
    )
    a = check_model(as_div, {"x": x}).it.columns(range(6))
    b = check_model(as_reciprocal, {"x": x}).it.columns(range(6))
    assert np.abs(b).max() > 0.1
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# -- refusals ----------------------------------------------------------------------------------


def _refused(model, shapes) -> onnxscope.UnsupportedModelError:
    scope = onnxscope.LinearScope(model)
    with pytest.raises(onnxscope.UnsupportedModelError) as info:
        scope.artifacts(shapes)
    # interpreting refuses the same way
    with pytest.raises(onnxscope.UnsupportedModelError):
        scope.interpret(np.ones(shapes["x"], F32))
    return info.value


def test_consecutive_frozen_factors_multiply_the_probes_once():
    # a squeeze-and-excitation block: Relu's mask, then the frozen gate; the linear and adjoint
    # graphs multiply the probes once by their product, and stay exact
    model = make_model(
        [
            "u = Conv (x, W)",
            "r = Relu(u)",
            "p = GlobalAveragePool(r)",
            "s = Sigmoid(p)",
            "y = Mul(r, s)",
        ],
        {"x": (1, 2, 5, 5)},
        inits={"W": w(4, 2, 3, 3)},
    )
    c = check_model(
        model, {"x": np.random.default_rng(5).standard_normal((1, 2, 5, 5)).astype(F32)}
    )
    for graph in (c.artifacts.linear, c.artifacts.adjoint):
        probes = {i.name for i in graph.graph.input if "probe" in i.name}
        dependent, probe_muls = set(probes), 0
        for n in graph.graph.node:
            if any(i in dependent for i in n.input):
                dependent.update(n.output)
                probe_muls += n.op_type == "Mul"
        assert probe_muls == 1, f"{graph.graph.name}: {probe_muls} multiplications of the probes"


@pytest.mark.parametrize(
    "op, w_shape, img_shape",
    [("Conv", (2, 1, 2, 2), (1, 1, 4, 4)), ("ConvTranspose", (1, 2, 2, 2), (1, 1, 3, 3))],
)
def test_convolution_of_a_constant_image_by_input_weights_is_refused(op, w_shape, img_shape):
    """Linear in the weights, but not written yet: refused loudly rather than frozen (A_x = 0)."""
    model = make_model([f"y = {op}(img, x)"], {"x": w_shape}, inits={"img": w(*img_shape)})
    err = _refused(model, {"x": w_shape})
    assert "weights that depend on the input" in str(err) and op in str(err)


def test_unsupported_op_on_the_input_path_is_named():
    model = make_model(
        ["t = Tanh(x)", "v, i = TopK <axis=-1> (t, k)", "y = Relu(v)"],
        {"x": (2, 6)},
        outputs=["y"],
        inits={"k": i64([3])},
    )
    err = _refused(model, {"x": (2, 6)})
    assert len(err.problems) == 1
    name, op, why = err.problems[0]
    assert (name, op) == ("v", "TopK") and why
    msg = str(err)
    assert "'v'" in msg and "TopK" in msg and why in msg


def test_every_unsupported_node_is_listed_in_one_error():
    model = make_model(
        [
            "a = Sin(x)",
            "v, i = TopK <axis=-1> (x, k)",
            "g = com.microsoft.FastGelu(x)",
            "s = Sum(a, v, g)",
            "nz = NonZero(x)",
            "nzf = Cast <to=1> (nz)",
        ],
        {"x": (2, 6)},
        outputs=["s", "nzf"],
        inits={"k": i64([6])},
        domains={"com.microsoft": 1},
    )
    err = _refused(model, {"x": (2, 6)})
    listed = {(n, op) for n, op, _ in err.problems}
    assert {("a", "Sin"), ("v", "TopK"), ("g", "FastGelu"), ("nz", "NonZero")} <= listed
    msg = str(err)
    for name, op in [("a", "Sin"), ("v", "TopK"), ("g", "FastGelu"), ("nz", "NonZero")]:
        assert f"'{name}'" in msg and op in msg
    assert all(why for _, _, why in err.problems)


def test_unsupported_op_off_the_input_path_is_fine():
    # Sin of a constant and TopK on a second, non-interpreted input carry no linear part
    model = make_model(
        ["cs = Sin(c)", "v, i = TopK <axis=-1> (other, k)", "t = Mul(x, cs)", "y = Add(t, v)"],
        {"x": (2, 3), "other": (2, 3)},
        inits={"c": w(3), "k": i64([3])},
    )
    rng = np.random.default_rng(0)
    c = check_model(
        model,
        {
            "x": rng.standard_normal((2, 3)).astype(F32),
            "other": rng.standard_normal((2, 3)).astype(F32),
        },
        wrt="x",
    )
    assert c.units == []


def _if_model(cond_nodes, cond_inits):
    then_g = helper.make_graph(
        [node("ty = Relu(x)")],
        "then",
        [],
        [helper.make_tensor_value_info("ty", TensorProto.FLOAT, [2, 3])],
    )
    else_g = helper.make_graph(
        [node("ey = Neg(x)")],
        "else",
        [],
        [helper.make_tensor_value_info("ey", TensorProto.FLOAT, [2, 3])],
    )
    if_node = helper.make_node("If", ["c"], ["y"], name="y", then_branch=then_g, else_branch=else_g)
    return make_model([*cond_nodes, if_node], {"x": (2, 3)}, inits=cond_inits)


@pytest.mark.parametrize(
    "cond_nodes, cond_inits",
    [
        (["s = ReduceSum <keepdims=0> (x)", "c = Greater(s, zero)"], {"zero": f(0.0)}),
        ([], {"c": np.array(True)}),
    ],
    ids=["input_dependent_condition", "constant_condition"],
)
def test_if_on_the_input_path_is_refused(cond_nodes, cond_inits):
    model = _if_model(cond_nodes, cond_inits)
    x = np.ones((2, 3), F32)
    np.testing.assert_array_equal(run(model, {"x": x})["y"], x)  # the model itself runs
    err = _refused(model, {"x": (2, 3)})
    assert ("y", "If") in {(n, op) for n, op, _ in err.problems}
    assert "control flow" in str(err)


def test_custom_domain_op_is_refused_with_its_name():
    # ONNX Runtime cannot run an unknown custom op at all: onnxscope must still name the node
    model = make_model(
        ["t = Tanh(x)", "y = com.example.Frobnicate(t)"],
        {"x": (2, 3)},
        outputs=[("y", (2, 3))],
        domains={"com.example": 1},
    )
    scope = onnxscope.LinearScope(model)
    with pytest.raises(onnxscope.UnsupportedModelError) as info:
        scope.artifacts({"x": (2, 3)})
    assert [(n, op) for n, op, _ in info.value.problems] == [("y", "Frobnicate")]
    assert "'y'" in str(info.value) and "Frobnicate" in str(info.value)


def test_check_artifacts_helper_rejects_an_invalid_graph():
    c = checked("Relu")
    broken = onnx.ModelProto()
    broken.CopyFrom(c.artifacts.linear)
    broken.graph.node[0].input[0] = "does_not_exist"

    class Fake:
        mask, linear, bias = c.artifacts.mask, broken, c.artifacts.bias

    with pytest.raises(AssertionError, match="linear graph"):
        check_artifacts(Fake)
