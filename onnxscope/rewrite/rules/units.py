"""Nonlinear units: each is written at its input u0 as f(u) = g*u + b (DESIGN.md section 2).

- Piecewise-linear units (Relu family, Clip, HardSigmoid, Abs) store which piece is active
  (bool for two pieces, uint8 for three); g and b are that piece's slope and intercept, so for
  these units A_x is the Jacobian.
- Smooth units store the secant gain g = (f(u0) - f(0)) / u0 (limit f'(0) near 0); b = f(0).
  Where f(0) != 0 and the output is far below f(0) (a saturated Sigmoid, Exp of a very negative
  u) the unit is frozen whole instead (g = 0, b = f(u0)): see SecantUnit.masks.
- Selections (Max/Min between tensors) store which operand won.

Tangent mode (contexts.py): piecewise-linear units and selections are the same in both modes;
a smooth unit's gain is its derivative f'(u0) (`derivative`, beside its secant) and its affine
twin the tangent plane y0 + f'(u0) (u - u0); softmax and log-softmax use their full Jacobians.
"""

from __future__ import annotations

import math

import numpy as np

from ..registry import register
from .kinds import Plan, Rule, Unsupported, attr, is_zero, normalize_axis, only_input, operand

# For f(0) != 0, |u| below this uses the limit f'(0) (relative gain error ~ |f''/f'| * eps / 2)
SECANT_EPS = 1e-7
# A smooth unit with f(0) != 0 is frozen whole where its output is this many times below f(0)
SATURATION = 16


def _const(c, value, i=0):
    return c.b.const(np.asarray(value, dtype=c.dtype(i)))


def _select(c, state: str, table: list, bool_state: bool) -> str:
    """table[state] elementwise; entries are tensor names (broadcastable) of the unit's dtype."""
    if bool_state:
        return c.b.op("Where", [state, table[1], table[0]], "pick")
    out = table[0]
    for k in range(1, len(table)):  # state >= k overrides; Greater takes uint8 in every opset
        reached = c.b.op("Greater", [state, c.b.const(np.uint8(k - 1))], "reached")
        out = c.b.op("Where", [reached, table[k], out], "pick")
    return out


class PiecewiseUnit(Rule):
    """A unit with a few affine pieces; the mask is the index of the active piece."""

    kind = "unit"
    lin_input = 0
    tangent = "same"  # the active piece's slope is the derivative (at a kink: torch's choice)

    def plan(self, node, lin, model) -> Plan:
        if not lin[self.lin_input]:  # (PRelu with only its slope on the probe's path)
            raise Unsupported("only the first input may depend on the interpreted input")
        only_input(lin, self.lin_input, "the first input")
        return Plan((self.lin_input,), (0,), self.describe(node))

    def describe(self, node) -> str:
        return "active piece (bool)"

    def state(self, node, m) -> str:
        """Mask graph: the piece index (bool or uint8) at u0."""
        raise NotImplementedError

    def pieces(self, node, c) -> list[tuple]:
        """(slope, intercept) per piece, as floats or value tensor names."""
        raise NotImplementedError

    def masks(self, node, m) -> None:
        m.add("piece", self.state(node, m))

    def gain(self, node, c) -> str:
        """The active piece's slope at every element (same shape as u)."""
        pieces = self.pieces(node, c)
        state = c.mask("piece")
        if pieces == [(0.0, 0.0), (1.0, 0.0)]:  # Relu-like: the gain is the mask itself
            return c.b.op("Cast", [state], "gain", to=_onnx_type(c.dtype()))
        slopes = [s if isinstance(s, str) else _const(c, s) for s, _ in pieces]
        return _select(c, state, slopes, len(pieces) == 2)

    def linear(self, node, c) -> None:
        # u broadcast to the output's shape first (PRelu's slope may have more dims than u)
        u = c.expand(c.lin(self.lin_input), c.in_shape(self.lin_input), c.out_shape())
        y = c.b.op("Mul", [u, self.gain(node, c)], "y")
        pieces = self.pieces(node, c)
        if c.affine and any(not (isinstance(b, float) and b == 0.0) for _, b in pieces):
            intercepts = [b if isinstance(b, str) else _const(c, b) for _, b in pieces]
            y = c.b.op("Add", [y, _select(c, c.mask("piece"), intercepts, len(pieces) == 2)])
        c.set_out(y)

    def adjoint(self, node, a) -> None:
        # diagonal: A^T g = gain * g, summed over the copies where u was broadcast
        g = a.b.op("Mul", [a.grad(), self.gain(node, a)], "g")
        a.add_grad(self.lin_input, a.unbroadcast(g, a.out_shape(), a.in_shape(self.lin_input)))


def _onnx_type(dtype) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _greater(m, u, threshold) -> str:
    return m.b.op("Greater", [u, m.b.const(np.asarray(threshold, m.dtype(u)))], "on")


def _u(node):
    return node.input[0]


@register("Relu")
class Relu(PiecewiseUnit):
    # Relu(u) = 1[u>0] * u; at the kink u = 0 the gain is 0 (as torch's autograd).
    # u > 0 exactly where Relu(u) > 0: reading the output keeps ORT's Conv+Relu fusion intact.
    def state(self, node, m):
        return _greater(m, node.output[0], 0.0)

    def pieces(self, node, c):
        return [(0.0, 0.0), (1.0, 0.0)]


@register("LeakyRelu")
class LeakyRelu(PiecewiseUnit):
    # slope alpha for u <= 0 (read on the output, as for Relu, when alpha > 0)
    def state(self, node, m):
        positive_slope = float(attr(node, "alpha", 0.01)) > 0
        return _greater(m, node.output[0] if positive_slope else _u(node), 0.0)

    def pieces(self, node, c):
        return [(float(attr(node, "alpha", 0.01)), 0.0), (1.0, 0.0)]


@register("PRelu")
class PRelu(PiecewiseUnit):
    # per-channel slope s (a value, broadcast to u) for u <= 0
    def state(self, node, m):
        return _greater(m, _u(node), 0.0)

    def pieces(self, node, c):
        return [(c.value(1), 0.0), (1.0, 0.0)]


@register("ThresholdedRelu")
class ThresholdedRelu(PiecewiseUnit):
    # u if u > alpha else 0
    def state(self, node, m):
        return _greater(m, _u(node), float(attr(node, "alpha", 1.0)))

    def pieces(self, node, c):
        return [(0.0, 0.0), (1.0, 0.0)]


@register("Abs")
class Abs(PiecewiseUnit):
    # |u| = sign(u) * u; at u = 0 the gain is +1
    def state(self, node, m):
        zero = m.b.const(np.asarray(0, m.dtype(_u(node))))
        return m.b.op("Not", [m.b.op("Less", [_u(node), zero], "neg")], "on")

    def pieces(self, node, c):
        return [(-1.0, 0.0), (1.0, 0.0)]


UINT8 = 2  # onnx.TensorProto.UINT8


def _three_state(m, v: str, lo: str | None, hi: str | None) -> str:
    """uint8 piece index: 0 at or below lo, 1 strictly inside, 2 at or above hi."""
    piece = lambda k: m.b.const(np.uint8(k))  # noqa: E731
    state = piece(1)
    if lo is not None:  # (each op is a pass over the tensor: as few as the opset allows)
        state = m.b.op("Cast", [m.b.op("Greater", [v, lo], "above_lo")], "state", to=UINT8)
    if hi is not None:
        if m.b.opset >= 12:
            at_hi = m.b.op("GreaterOrEqual", [v, hi], "at_hi")
        else:
            at_hi = m.b.op("Not", [m.b.op("Less", [v, hi], "below_hi")], "at_hi")
        state = m.b.op("Where", [at_hi, piece(2), state], "state")
    if lo is None and hi is None:  # no bounds: always inside (no comparison of floats at all)
        state = m.b.op("Expand", [piece(1), m.b.op("Shape", [v])], "state")
    return state


def clip_bounds(node) -> tuple[str | float | None, str | float | None]:
    """(lo, hi) of a Clip: input names from opset 11, attribute floats before; None if absent."""
    if any(a.name in ("min", "max") for a in node.attribute):  # opset < 11
        return attr(node, "min"), attr(node, "max")
    has = lambda i: len(node.input) > i and node.input[i]  # noqa: E731
    return (node.input[1] if has(1) else None), (node.input[2] if has(2) else None)


@register("Clip")
class Clip(PiecewiseUnit):
    # Clip(u, lo, hi): slope 1 strictly inside (lo, hi); saturated pieces give lo or hi
    def describe(self, node):
        return "active piece (uint8: low, inside, high)"

    def state(self, node, m):
        # read on the output y = min(max(u, lo), hi), which keeps ORT's Conv+Clip fusion: y > lo
        # exactly where u > lo and y >= hi exactly where u >= hi (lo <= hi); where they differ
        # (lo == hi, or lo > hi) both pieces give the same value, slope 0 and intercept hi
        dt = m.dtype(_u(node))
        bound = lambda v: v if isinstance(v, str) or v is None else m.b.const(np.asarray(v, dt))  # noqa: E731
        lo, hi = clip_bounds(node)
        return _three_state(m, node.output[0], bound(lo), bound(hi))

    def pieces(self, node, c):
        value = lambda v: c.value_of(v) if isinstance(v, str) else float(v or 0.0)  # noqa: E731
        lo, hi = clip_bounds(node)
        floor = value(lo)
        if lo is not None and hi is not None:  # min > max: ONNX gives max everywhere
            if isinstance(floor, str) or isinstance(value(hi), str):
                as_tensor = lambda v: v if isinstance(v, str) else _const(c, v)  # noqa: E731
                floor = c.b.op("Min", [as_tensor(floor), as_tensor(value(hi))], "floor")
            else:
                floor = min(floor, value(hi))
        return [(0.0, floor), (1.0, 0.0), (0.0, value(hi))]


@register("HardSigmoid")
class HardSigmoid(PiecewiseUnit):
    # max(0, min(1, alpha*u + beta)): slope alpha and intercept beta on the ramp
    def describe(self, node):
        return "active piece (uint8: 0, ramp, 1)"

    def state(self, node, m):
        dt = m.dtype(_u(node))
        a, b = attr(node, "alpha", 0.2), attr(node, "beta", 0.5)
        v = m.b.op(
            "Add",
            [m.b.op("Mul", [_u(node), m.b.const(np.asarray(a, dt))]), m.b.const(np.asarray(b, dt))],
            "v",
        )
        return _three_state(m, v, m.b.const(np.asarray(0, dt)), m.b.const(np.asarray(1, dt)))

    def pieces(self, node, c):
        a, b = float(attr(node, "alpha", 0.2)), float(attr(node, "beta", 0.5))
        return [(0.0, 0.0), (a, b), (0.0, 1.0)]


# --- smooth units: secant gain ----------------------------------------------------------------


class SecantUnit(Rule):
    """f(u) = g*u + f(0) with g = (f(u0) - f(0)) / u0 (the limit f'(0) at u0 = 0).

    Where f(0) = 0 the gain is y/u from the runtime's own output y, so A_x x + c_x reproduces
    F(x) to the last bit even where y itself carries rounding. Where f(0) != 0, y - f(0) would
    cancel, so `rise` computes f(u) - f(0) analytically and |u| < eps takes the limit.
    """

    kind = "unit"
    tangent = "plane"

    def tangent_frozen(self, node) -> str:
        return "gain f'(u0) (float)"

    def derivative(self, node, m, u: str, y: str) -> str:
        """f'(u) in the mask graph from u and the unit's output y: tangent mode's gain."""
        raise NotImplementedError

    def plan(self, node, lin, model) -> Plan:
        only_input(lin, 0, "the first input")
        frozen = f"secant gain ({self.describe_gain(node)})"
        if self.f0(node):
            frozen += ", intercept (float: f(0), or the output where saturated)"
        return Plan((0,), (0,), frozen)

    def describe_gain(self, node) -> str:
        return "float"

    def f0(self, node) -> float:
        raise NotImplementedError

    def d0(self, node) -> float:
        raise NotImplementedError

    def rise(self, node, m, u: str, y: str) -> str:
        """f(u) - f(0) without cancellation; overridden where f(0) != 0 (or f has an exp)."""
        f0 = self.f0(node)
        return m.b.op("Sub", [y, m.b.const(np.asarray(f0, m.dtype(u)))], "rise") if f0 else y

    def masks(self, node, m) -> None:
        if m.tangent:
            m.add("gain", self.derivative(node, m, node.input[0], node.output[0]))
            return
        gain, f0 = self.secant_gain(node, m), self.f0(node)
        if f0:
            # Where |f(u0)| < |f(0)| / SATURATION the secant would write the output as
            # (f(u0) - f(0)) + f(0), two terms up to 2 * SATURATION times larger than their sum
            # (a saturated Sigmoid: -1/2 + 1/2 for 1e-9), and float32 would lose its digits.
            # There the unit is frozen whole: gain 0, its output to the intercept.
            y = node.output[0]
            k = lambda v: m.b.const(np.asarray(v, m.dtype(y)))  # noqa: E731
            low = m.b.op("Less", [m.b.op("Abs", [y]), k(abs(f0) / SATURATION)], "saturated")
            gain = m.b.op("Where", [low, k(0), gain], "gain")
            m.add("intercept", m.b.op("Where", [low, y, k(f0)], "intercept"))
        m.add("gain", gain)

    def secant_gain(self, node, m) -> str:
        """(f(u) - f(0)) / u from the unit's own output, with the limit f'(0) near u = 0."""
        u, y = node.input[0], node.output[0]
        k = lambda v: m.b.const(np.asarray(v, m.dtype(u)))  # noqa: E731
        secant = m.b.op("Div", [self.rise(node, m, u, y), u], "secant")
        if self.f0(node):
            near = m.b.op("Less", [m.b.op("Abs", [u], "abs_u"), k(SECANT_EPS)], "near_zero")
        else:
            near = is_zero(m, u)
        return m.b.op("Where", [near, k(self.d0(node)), secant], "gain")

    def linear(self, node, c) -> None:
        y = c.b.op("Mul", [c.lin(0), c.mask("gain")], "y")
        if c.affine and self.f0(node):
            y = c.b.op("Add", [y, c.mask("intercept")], "y_affine")
        c.set_out(y)

    def adjoint(self, node, a) -> None:
        a.add_grad(0, a.b.op("Mul", [a.grad(), a.mask("gain")], "g"))


def _secant(op: str, f0, d0, derivative, rise=None):
    """Register a smooth unit by its value and slope at 0 (functions of the node's attributes),
    its derivative f'(u) (a function of node, mask context, u, y) and optionally an accurate
    f(u) - f(0) (same arguments)."""
    body = {
        "f0": lambda self, n: f0(n),
        "d0": lambda self, n: d0(n),
        "derivative": lambda self, n, m, u, y: derivative(n, m, u, y),
    }
    if rise is not None:
        body["rise"] = lambda self, n, m, u, y: rise(n, m, u, y)
    register(op)(type(op, (SecantUnit,), body))


def _in_double(m, u: str, build, dtype=None) -> str:
    """Evaluate build(b, u64) in float64 and cast back to u's dtype (given where u is a tensor
    of the rule's own): no cancellation in exp(u) - 1."""
    to = _onnx_type(dtype or m.dtype(u))
    u64 = m.b.op("Cast", [u], "u64", to=11)
    return m.b.op("Cast", [build(m.b, u64)], "rise", to=to)


def _expm1(b, v: str) -> str:
    return b.op("Sub", [b.op("Exp", [v]), b.const(np.float64(1))], "expm1")


def _softplus_rise(b, v: str) -> str:
    # softplus(u) - log 2 = max(u, 0) + log(1 + exp(-|u|)) - log 2, evaluated in float64
    tail = b.op(
        "Log",
        [b.op("Add", [b.const(np.float64(1)), b.op("Exp", [b.op("Neg", [b.op("Abs", [v])])])])],
    )
    return b.op("Sub", [b.op("Add", [b.op("Relu", [v]), tail]), b.const(np.float64(math.log(2)))])


def _sigmoid_rise(n, m, u, y):
    # sigmoid(u) - 1/2 = tanh(u/2) / 2
    half = m.b.const(np.asarray(0.5, m.dtype(u)))
    return m.b.op("Mul", [m.b.op("Tanh", [m.b.op("Mul", [u, half])]), half], "rise")


SELU_GAMMA = 1.05070102214813232421875
SELU_ALPHA = 1.67326319217681884765625


# --- derivatives f'(u), from u and y = f(u), in the mask graph (tangent mode) -----------------


class _Ops:
    """Terse elementwise ops on the mask graph, constants in u's dtype."""

    def __init__(self, m, u: str):
        self.b, self.dtype = m.b, m.dtype(u)

    def k(self, v) -> str:
        return self.b.const(np.asarray(v, self.dtype))

    def __getattr__(self, op: str):
        return lambda *args: self.b.op(op, [a if isinstance(a, str) else self.k(a) for a in args])


def _positive_piece(m, u, right, left) -> str:
    """right where u > 0, else left (Elu, Celu, Selu: the right slope at the kink u = 0)."""
    o = _Ops(m, u)
    return o.Where(o.Greater(u, 0.0), right, left)


def _gelu_derivative(n, m, u, y):
    o = _Ops(m, u)
    if attr(n, "approximate", "none") == "tanh":
        # 0.5 (1 + t) + 0.5 u (1 - t^2) k (1 + 3 c u^2), t = tanh(k (u + c u^3))
        k, c = math.sqrt(2.0 / math.pi), 0.044715
        t = o.Tanh(o.Mul(o.Add(u, o.Mul(c, o.Mul(u, o.Mul(u, u)))), k))
        slope = o.Mul(o.Sub(1.0, o.Mul(t, t)), o.Mul(k, o.Add(1.0, o.Mul(3 * c, o.Mul(u, u)))))
        return o.Mul(0.5, o.Add(o.Add(1.0, t), o.Mul(u, slope)))
    # Phi(u) + u phi(u)
    cdf = o.Mul(0.5, o.Add(1.0, o.Erf(o.Mul(u, 1.0 / math.sqrt(2.0)))))
    pdf = o.Mul(1.0 / math.sqrt(2.0 * math.pi), o.Exp(o.Mul(o.Mul(u, u), -0.5)))
    return o.Add(cdf, o.Mul(u, pdf))


def _mish_derivative(n, m, u, y):
    # mish = u tanh(softplus(u)): tanh(sp) + u (1 - tanh(sp)^2) sigmoid(u)
    o = _Ops(m, u)
    t = o.Tanh(o.Softplus(u))
    return o.Add(t, o.Mul(u, o.Mul(o.Sub(1.0, o.Mul(t, t)), o.Sigmoid(u))))


def _sigmoid_derivative(n, m, u, y):
    o = _Ops(m, u)
    return o.Mul(y, o.Sub(1.0, y))


def _tanh_derivative(n, m, u, y):
    o = _Ops(m, u)
    return o.Sub(1.0, o.Mul(y, y))


def _erf_derivative(n, m, u, y):
    o = _Ops(m, u)
    return o.Mul(2.0 / math.sqrt(math.pi), o.Exp(o.Neg(o.Mul(u, u))))


def _elu_derivative(n, m, u, y):
    # alpha (e^u - 1) for u <= 0: slope y + alpha
    return _positive_piece(m, u, 1.0, _Ops(m, u).Add(y, float(attr(n, "alpha", 1.0))))


def _celu_derivative(n, m, u, y):
    o = _Ops(m, u)
    return _positive_piece(m, u, 1.0, o.Exp(o.Div(u, float(attr(n, "alpha", 1.0)))))


def _selu_derivative(n, m, u, y):
    # gamma alpha (e^u - 1) for u <= 0: slope y + gamma alpha
    gamma, alpha = float(attr(n, "gamma", SELU_GAMMA)), float(attr(n, "alpha", SELU_ALPHA))
    return _positive_piece(m, u, gamma, _Ops(m, u).Add(y, gamma * alpha))


def _softsign_derivative(n, m, u, y):
    o = _Ops(m, u)
    one_plus = o.Add(1.0, o.Abs(u))
    return o.Reciprocal(o.Mul(one_plus, one_plus))


_secant("Sigmoid", lambda n: 0.5, lambda n: 0.25, _sigmoid_derivative, _sigmoid_rise)
_secant("Tanh", lambda n: 0.0, lambda n: 1.0, _tanh_derivative)
_secant("Erf", lambda n: 0.0, lambda n: 2.0 / math.sqrt(math.pi), _erf_derivative)
_secant("Elu", lambda n: 0.0, lambda n: 1.0, _elu_derivative)  # at the kink u = 0: the right slope
_secant("Celu", lambda n: 0.0, lambda n: 1.0, _celu_derivative)
_secant("Selu", lambda n: 0.0, lambda n: float(attr(n, "gamma", SELU_GAMMA)), _selu_derivative)
_secant(
    "Softplus",
    lambda n: math.log(2.0),
    lambda n: 0.5,
    lambda n, m, u, y: _Ops(m, u).Sigmoid(u),
    lambda n, m, u, y: _in_double(m, u, _softplus_rise),
)
_secant("Softsign", lambda n: 0.0, lambda n: 1.0, _softsign_derivative)
_secant("Gelu", lambda n: 0.0, lambda n: 0.5, _gelu_derivative)
_secant("Mish", lambda n: 0.0, lambda n: math.tanh(math.log(2.0)), _mish_derivative)
_secant(
    "Exp",
    lambda n: 1.0,
    lambda n: 1.0,
    lambda n, m, u, y: y,
    lambda n, m, u, y: _in_double(m, u, _expm1),
)


@register("HardSwish")
class HardSwish(SecantUnit):
    # HardSwish(u) = u * HardSigmoid(u; 1/6, 1/2), so the secant gain is that HardSigmoid itself:
    # one op instead of a division and a guard at 0 (the mask pass of MobileNetV3 runs 19 of them)
    def f0(self, node):
        return 0.0

    def d0(self, node):
        return 0.5

    def secant_gain(self, node, m) -> str:
        return m.b.op("HardSigmoid", [node.input[0]], "gain", alpha=1.0 / 6.0, beta=0.5)

    def derivative(self, node, m, u, y) -> str:
        # 0 below -3, u/3 + 1/2 on the ramp [-3, 3], 1 above (as torch's hardswish_backward):
        # not the secant's HardSigmoid(u) = u/6 + 1/2
        o = _Ops(m, u)
        ramp = o.Add(o.Mul(u, 1.0 / 3.0), 0.5)
        return o.Where(o.Less(u, -3.0), 0.0, o.Where(o.Greater(u, 3.0), 1.0, ramp))

    def masks(self, node, m) -> None:
        if m.tangent:
            super().masks(node, m)
            return
        # the unit's own output as u * gain (ONNX's definition of HardSwish), so that the mask
        # pass runs one HardSigmoid per unit rather than two
        gain = None

        def unit():
            nonlocal gain
            gain = self.secant_gain(node, m)
            m.b.op("Mul", [node.input[0], gain], outputs=[node.output[0]])

        m.replace_node(unit)
        m.add("gain", gain)


class PowerUnit(SecantUnit):
    """u^p = (u^(p-1)) * u: gain y/u through the origin (0 where u = 0); f(0) taken as 0."""

    def f0(self, node):
        return 0.0

    def d0(self, node):
        return 0.0

    def describe_gain(self, node):
        return "float, y/u"


@register("Sqrt", "Reciprocal")
class SqrtReciprocal(PowerUnit):
    def derivative(self, node, m, u, y) -> str:
        o = _Ops(m, u)  # sqrt' = 1 / (2 y); (1/u)' = -y^2
        return o.Div(0.5, y) if node.op_type == "Sqrt" else o.Neg(o.Mul(y, y))


@register("Pow")
class Pow(PowerUnit):
    # tangent mode: y = u^v has the partials p u^(p - 1) in u and y log u in an input-dependent
    # exponent v (the product rule sums them); the secant freezes v
    PARTIALS = {0: "gain", 1: "exponent_gain"}

    def tangent_frozen(self, node) -> str:
        return "gain p u^(p-1), and y log u for an input-dependent exponent (float)"

    def derivative(self, node, m, u, y) -> str:
        # (u^p)' = p u^(p - 1), p cast to u's dtype
        o = _Ops(m, u)
        p = m.b.op("Cast", [node.input[1]], "exponent", to=_onnx_type(m.dtype(u)))
        return o.Mul(p, o.Pow(u, o.Sub(p, 1.0)))

    def masks(self, node, m) -> None:
        if not m.tangent:
            super().masks(node, m)
            return
        u, y = node.input[0], node.output[0]
        m.add("gain", self.derivative(node, m, u, y))
        if 1 in m.plan.carried:  # d(u^v)/dv = y log u: 0 where y = 0 (u = 0 with v > 0)
            o = _Ops(m, u)
            m.add("exponent_gain", o.Where(is_zero(m, y), 0.0, o.Mul(y, o.Log(u))))

    def linear(self, node, c) -> None:
        if not c.tangent:
            super().linear(node, c)
            return
        i = c.plan.carried[0]  # (one partial at a time: LinearContext.emit)
        twin = c.expand(c.lin(i), c.in_shape(i), c.out_shape())
        c.set_out(c.b.op("Mul", [twin, c.mask(self.PARTIALS[i])], "y"))

    def adjoint(self, node, a) -> None:
        if not a.tangent:
            super().adjoint(node, a)
            return
        i = a.plan.carried[0]
        g = a.b.op("Mul", [a.grad(), a.mask(self.PARTIALS[i])], "g")
        a.add_grad(i, a.unbroadcast(g, a.out_shape(), a.in_shape(i)))

    def plan(self, node, lin, model) -> Plan:
        if not lin[0]:
            raise Unsupported("an input-dependent exponent (c^u) has no rule")
        return Plan(
            (0,),
            (0,),
            "secant gain (float, y/u); exponent frozen" if lin[1] else "secant gain (float, y/u)",
        )


# --- softmax and log-softmax: centred on their frozen maximum -------------------------------


def _tail_start(ratio: float) -> float:
    """The v < 0 where exp's secant slope from 0, (1 - e^v)/|v|, is `ratio` times e^v."""
    lo, hi = -50.0, -1e-6  # the ratio grows monotonically as v falls
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if (1 - math.exp(mid)) / (-mid * math.exp(mid)) > ratio else (lo, mid)
    return (lo + hi) / 2


TAIL_AMPLIFICATION = 8.0
SOFTMAX_TAIL = _tail_start(TAIL_AMPLIFICATION)  # about -3.32: below 3.6 % of the maximum


def softmax_axes(node, rank: int, opset: int) -> list[int]:
    if opset < 13:  # the input is read as 2-D: [prod(s[:axis]), prod(s[axis:])]
        return list(range(normalize_axis(attr(node, "axis", 1), rank), rank))
    return [normalize_axis(attr(node, "axis", -1), rank)]


class CentredSoftmax(Rule):
    """Softmax and LogSoftmax, written around the element k that was largest at x (ties: the
    first). Both are shift-invariant, and so is this form: with v = u - u_k (a selection, so
    linear in u) softmax(u) = exp(v) / S and log softmax(u) = v - log S, S = sum exp(v) frozen.
    Since v <= 0 and S >= 1, no term exceeds 1: no exp(-LSE) intercept of 1e8 cancelling
    against A_x x for logits near -20. Softmax freezes its far tail (v < SOFTMAX_TAIL) whole,
    where the secant would amplify the model's own rounding of u; a -inf logit (a masked
    attention score) is in that tail with output 0.

    Tensors are viewed as [pre, n, post] with the softmax axes (contiguous) in the middle; the
    masks keep that view: "reference" (bool, the one-hot of k) and the rule's own values.
    """

    kind = "unit"
    tangent = "plane"

    def plan(self, node, lin, model) -> Plan:
        return Plan((0,), (0,), self.frozen)

    def tangent_frozen(self, node) -> str:
        return "probabilities p at x (float)"

    def tangent_masks(self, node, m) -> None:
        """Tangent mode: the probabilities p = softmax(u0), [pre, n, post]."""
        pre, n, post = self.view(node, m.model)
        y = m.b.reshape(node.output[0], [pre, n, post], "y3")
        m.add("probability", y if node.op_type == "Softmax" else m.b.op("Exp", [y], "p"))

    def weighted(self, c, t: str) -> tuple[str, str]:
        """(p t, sum_j p_j t_j over the softmax axes) for t [K, pre, n, post]; p_j t_j is 0
        where p_j = 0 whatever t_j is (a -inf score's twin)."""
        p = c.mask("probability")
        live = c.b.op("Greater", [p, c.const(0)], "live")
        pt = c.b.op("Where", [live, c.b.op("Mul", [p, t]), c.const(0)], "pt")
        return pt, c.b.reduce("ReduceSum", pt, [2], True, "weighted_sum")

    def as3(self, c, t: str) -> str:
        pre, n, post = self.view(c.node, c.model)
        return c.b.reshape(t, [-1, pre, n, post], "t3")

    def view(self, node, model) -> tuple[int, int, int]:
        shape = model.shape(node.input[0])
        axes = softmax_axes(node, len(shape), model.opset)
        size = lambda dims: int(np.prod(dims, dtype=np.int64))  # noqa: E731
        return (
            size(shape[: axes[0]]),
            size(shape[axes[0] : axes[-1] + 1]),
            size(shape[axes[-1] + 1 :]),
        )

    def masks(self, node, m) -> None:
        if m.tangent:
            self.tangent_masks(node, m)
            return
        pre, n, post = self.view(node, m.model)
        u = m.b.reshape(node.input[0], [pre, n, post], "u3")
        first = m.b.op("ArgMax", [u], "argmax", axis=1, keepdims=1)  # ties: the first maximum
        index = m.b.const(np.arange(n, dtype=np.int64).reshape(1, n, 1), hint="index")
        m.add("reference", m.b.op("Equal", [index, first], "reference"))
        v = m.b.op("Sub", [u, m.b.reduce("ReduceMax", u, [1], True, "max")], "v")
        total = m.b.reduce("ReduceSum", m.b.op("Exp", [v]), [1], True, "sum")  # S, >= 1
        y = m.b.reshape(node.output[0], [pre, n, post], "y3")
        self.frozen_values(node, m, v, total, y)

    def frozen_values(self, node, m, v: str, total: str, y: str) -> None:
        """Add the rule's masks from v = u - u_k, S = sum exp(v) and y, all [pre, n, post]."""
        raise NotImplementedError

    def centred(self, c) -> str:
        """The twin of v = u - u_k, [K, pre, n, post]: Where rather than a product with the
        one-hot, so that a -inf in the affine twin stays out of the sum."""
        pre, n, post = self.view(c.node, c.model)
        z = c.b.reshape(c.lin(0), [-1, pre, n, post], "z3")
        picked = c.b.op("Where", [c.mask("reference"), z, c.const(0)], "at_reference")
        return c.b.op("Sub", [z, c.b.reduce("ReduceSum", picked, [2], True, "z_ref")], "v")

    def adjoint_centred(self, a, h: str) -> None:
        """Add the adjoint of v = u - u_k applied to h ([K, pre, n, post]): h - e_k sum(h)."""
        total = a.b.reduce("ReduceSum", h, [2], True, "total")
        at_k = a.b.op("Where", [a.mask("reference"), total, a.const(0)], "at_reference")
        g = a.b.op("Sub", [h, at_k], "g")
        a.add_grad(0, a.b.reshape(g, [-1, *a.in_shape(0)], "g"))

    def grad3(self, a) -> str:
        pre, n, post = self.view(a.node, a.model)
        return a.b.reshape(a.grad(), [-1, pre, n, post], "g3")


@register("Softmax")
class Softmax(CentredSoftmax):
    # softmax(u) = exp(v)/S with S frozen and exp(v) = g*v + 1 (secant): y = (g/S)*v + 1/S.
    # The gain mask holds g/S = (exp(v) - 1)/(v S), limit 1/S at v = 0; the intercept is 1/S
    # (y in the frozen tail).
    frozen = "first maximum (bool), secant gain (float), intercept (float: 1/S, y in the tail)"

    def softmax_jacobian(self, c, t: str) -> str:
        """J t = p t - p sum(p t) (J = diag(p) - p p^T, its own transpose), t [K, pre, n, post]."""
        pt, total = self.weighted(c, t)
        return c.b.op("Sub", [pt, c.b.op("Mul", [c.mask("probability"), total])], "jt")

    def frozen_values(self, node, m, v, total, y) -> None:
        dtype = m.dtype(node.input[0])
        k = lambda value: m.b.const(np.asarray(value, dtype))  # noqa: E731
        inv_s = m.b.op("Reciprocal", [total], "intercept")
        # near v = 0: expm1(v)/v in float64 (y - 1/S would cancel); elsewhere (y - 1/S)/v from
        # the runtime's own y, so that g*v + 1/S reproduces it (0 at v = -inf)
        small = m.b.op("Div", [_in_double(m, v, _expm1, dtype), v], "secant_small")
        near_0 = m.b.op("Less", [m.b.op("Abs", [v]), k(SECANT_EPS)], "at_zero")
        small = m.b.op("Mul", [m.b.op("Where", [near_0, k(1), small]), inv_s], "gain_small")
        large = m.b.op("Div", [m.b.op("Sub", [y, inv_s]), v], "gain_large")
        near = m.b.op("Less", [m.b.op("Abs", [v]), k(1.0)], "near_zero")
        gain = m.b.op("Where", [near, small, large], "gain")
        # the tail v < SOFTMAX_TAIL is frozen whole (gain 0, intercept y): there the secant's
        # slope is over TAIL_AMPLIFICATION times exp's own, so it would amplify the model's own
        # rounding of u that much; a -inf score (masked attention) lands here with y = 0
        tail = m.b.op("Less", [v, k(SOFTMAX_TAIL)], "tail")
        m.add("gain", m.b.op("Where", [tail, k(0), gain], "gain"))
        m.add("intercept", m.b.op("Where", [tail, y, inv_s], "intercept"))

    def linear(self, node, c) -> None:
        if c.tangent:
            y = self.softmax_jacobian(c, self.as3(c, c.lin(0)))
            c.set_out(c.b.reshape(y, [-1, *c.out_shape()], "y"))
            return
        gain = c.mask("gain")
        y = c.b.op("Mul", [self.centred(c), gain], "y")
        if c.affine:  # 0 * -inf is no number: a frozen element's term is 0 whatever v is
            live = c.b.op("Greater", [gain, c.const(0)], "live")  # gain >= 0 (Equal: opset 11)
            y = c.b.op("Where", [live, y, c.const(0)], "y_finite")
            y = c.b.op("Add", [y, c.mask("intercept")], "y_affine")
        c.set_out(c.b.reshape(y, [-1, *c.out_shape()], "y"))

    def adjoint(self, node, a) -> None:
        if a.tangent:
            g = self.softmax_jacobian(a, self.grad3(a))
            a.add_grad(0, a.b.reshape(g, [-1, *a.in_shape(0)], "g"))
            return
        self.adjoint_centred(a, a.b.op("Mul", [self.grad3(a), a.mask("gain")], "h"))


@register("LogSoftmax")
class LogSoftmax(CentredSoftmax):
    # log softmax(u) = v - log S with S frozen: gain 1 on v, intercept -log S (in [-log n, 0])
    frozen = "first maximum (bool), intercept -log S (float)"

    def frozen_values(self, node, m, v, total, y) -> None:
        m.add("intercept", m.b.op("Neg", [m.b.op("Log", [total])], "intercept"))

    def linear(self, node, c) -> None:
        if c.tangent:  # J t = t - sum(p t) (J = I - 1 p^T)
            t = self.as3(c, c.lin(0))
            y = c.b.op("Sub", [t, self.weighted(c, t)[1]], "jt")
            c.set_out(c.b.reshape(y, [-1, *c.out_shape()], "y"))
            return
        y = self.centred(c)
        if c.affine:
            y = c.b.op("Add", [y, c.mask("intercept")], "y_affine")
        c.set_out(c.b.reshape(y, [-1, *c.out_shape()], "y"))

    def adjoint(self, node, a) -> None:
        if a.tangent:  # J^T g = g - p sum(g)
            g = self.grad3(a)
            total = a.b.reduce("ReduceSum", g, [2], True, "total")
            g = a.b.op("Sub", [g, a.b.op("Mul", [a.mask("probability"), total])], "g")
            a.add_grad(0, a.b.reshape(g, [-1, *a.in_shape(0)], "g"))
            return
        self.adjoint_centred(a, self.grad3(a))


# --- selections between operands -------------------------------------------------------------


@register("Max", "Min")
class OperandSelection(Rule):
    """Max/Min of several operands: each output element copies the operand that won at x.

    With a constant operand this is a Relu-like unit (Max(u, 0) is Relu). Ties go to the earlier
    operand.
    """

    kind = "selection"

    def plan(self, node, lin, model) -> Plan:
        kind = "bool" if len(node.input) == 2 else "uint8"
        frozen = f"winning operand ({kind})" if len(node.input) > 1 else ""
        return Plan(tuple(i for i, f in enumerate(lin) if f), (0,), frozen)

    def masks(self, node, m) -> None:
        if len(node.input) == 1:  # Max(u) = u
            return
        beats = "Greater" if node.op_type == "Max" else "Less"
        best, state = node.input[0], None
        for k, other in enumerate(node.input[1:], start=1):
            wins = m.b.op(beats, [other, best], "wins")
            if len(node.input) == 2:
                state = wins
                break
            prev = state if state is not None else m.b.const(np.uint8(0))
            state = m.b.op("Where", [wins, m.b.const(np.uint8(k)), prev], "winner")
            best = m.b.op(node.op_type, [best, other], "best")
        m.add("winner", state)

    def linear(self, node, c) -> None:
        if len(node.input) == 1:
            c.set_out(c.lin(0))
            return
        rank = len(c.out_shape())
        operands = [operand(c, i, rank) for i in range(len(node.input))]
        c.set_out(_select(c, c.mask("winner"), operands, len(operands) == 2))

    def adjoint(self, node, a) -> None:
        # each operand gets the cotangent where it won, summed over its broadcast copies
        if len(node.input) == 1:
            a.add_grad(0, a.grad())
            return
        n, zero, one = len(node.input), a.const(0), a.const(1)
        for i in a.plan.carried:
            won = _select(a, a.mask("winner"), [one if k == i else zero for k in range(n)], n == 2)
            g = a.b.op("Mul", [a.grad(), won], "g")
            a.add_grad(i, a.unbroadcast(g, a.out_shape(), a.in_shape(i)))
