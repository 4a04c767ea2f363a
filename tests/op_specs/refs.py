"""Naive numpy references for the masks: what each unit's frozen decision must be, computed from
the original model's intermediate tensors (`Spec.ref` returns {(unit node, mask label): expected}),
and the functions of the smooth units they are written with."""

from __future__ import annotations

import math

import numpy as np

try:  # below |u| < eps a secant unit's gain is its limit at 0
    from onnxscope.rewrite.rules.units import SATURATION, SECANT_EPS, SOFTMAX_TAIL
except ImportError:  # pragma: no cover
    SECANT_EPS, SATURATION, SOFTMAX_TAIL = 1e-4, 16, -3.32
erf = np.vectorize(math.erf, otypes=[np.float64])


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


def celu(alpha):
    return lambda u: np.where(u > 0, u, alpha * np.expm1(np.minimum(u, 0) / alpha))


def softsign(u):
    return u / (1 + np.abs(u))


def mish(u):
    return u * np.tanh(np.logaddexp(0, u))


def gelu(u):
    return 0.5 * u * (1 + erf(u / math.sqrt(2)))


def gelu_tanh(u):
    return 0.5 * u * (1 + np.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u**3)))


def hard_sigmoid(u, alpha, beta):
    return np.clip(alpha * u + beta, 0, 1)
