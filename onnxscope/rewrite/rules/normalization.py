"""Normalizations. BatchNorm in inference is affine. Instance/Layer/Group norm keep the centering
linear and freeze 1/sigma of each group at x (DESIGN.md section 2); beta goes to the bias image.
In tangent mode 1/sigma is differentiated too: d((u - mean)/sigma) = (dc - n mean(n dc)) / sigma
with dc the centred du and n = (u - mean)/sigma at x, per group."""

from __future__ import annotations

import numpy as np

from ..registry import register
from .kinds import Plan, Rule, Unsupported, attr, normalize_axis


def _channel_shape(c, values: int) -> list[int]:
    """[C, 1, ..., 1] broadcasting a per-channel vector against [N, C, *spatial]."""
    return [values] + [1] * (len(c.in_shape(0)) - 2)


@register("BatchNormalization")
class BatchNorm(Rule):
    # y = s*x + (B - mean*s), s = scale / sqrt(var + eps), per channel
    def plan(self, node, lin, model) -> Plan:
        if attr(node, "training_mode", 0):
            raise Unsupported("training mode (batch statistics) is not supported")
        if any(lin[1:]):
            raise Unsupported("input-dependent BatchNorm parameters are not supported")
        return Plan((0,), (0,))

    def scale(self, node, c) -> tuple[str, list[int]]:
        """s = scale / sqrt(var + eps) and the per-channel broadcast shape."""
        scale, var = c.value(1), c.value(4)
        eps = c.const(attr(node, "epsilon", 1e-5))
        s = c.b.op("Div", [scale, c.b.op("Sqrt", [c.b.op("Add", [var, eps])])], "s")
        return s, _channel_shape(c, c.in_shape(0)[1])

    def linear(self, node, c) -> None:
        s, shape = self.scale(node, c)
        y = c.b.op("Mul", [c.lin(0), c.b.reshape(s, shape, "s_c")], "y")
        if c.affine:
            shift = c.b.op("Sub", [c.value(2), c.b.op("Mul", [c.value(3), s])], "shift")
            y = c.b.op("Add", [y, c.b.reshape(shift, shape, "shift_c")], "y_affine")
        c.set_out(y)

    def adjoint(self, node, a) -> None:
        s, shape = self.scale(node, a)
        a.add_grad(0, a.b.op("Mul", [a.grad(), a.b.reshape(s, shape, "s_c")], "g"))


class Normalization(Rule):
    """(u - mean(u)) * inv_sigma * scale + bias over groups; inv_sigma is the mask."""

    kind = "unit"
    tangent = "plane"

    def tangent_frozen(self, node) -> str:
        return "1/sigma per group, normalized input (float)"

    def plan(self, node, lin, model) -> Plan:
        if any(lin[1:]):
            raise Unsupported("input-dependent scale or bias is not supported")
        if len(node.output) > 1 and any(node.output[1:]):
            raise Unsupported("the optional Mean/InvStdDev outputs are not supported")
        return Plan((0,), (0,), "1/sigma per group (float)")

    def groups(self, node, shape) -> tuple[list[int], list[int]]:
        """The shape the statistics are taken in, and the axes reduced there."""
        raise NotImplementedError

    def scale_bias(self, node, c) -> tuple[str | None, str | None]:
        raise NotImplementedError

    def std(self, node, b, in_shape, dtype) -> tuple[str, list[int], list[int]]:
        """(sigma per group, the grouped shape, its reduced axes) of input 0, as the spec says:
        sqrt(mean((u - mean(u))^2) + epsilon)."""
        u = node.input[0]
        shape, axes = self.groups(node, in_shape)
        g = b.reshape(u, shape, "grouped") if list(shape) != list(in_shape) else u
        centered = b.op("Sub", [g, b.reduce("ReduceMean", g, axes, True, "mean")], "centered")
        var = b.reduce("ReduceMean", b.op("Mul", [centered, centered]), axes, True, "var")
        eps = b.const(np.asarray(attr(node, "epsilon", 1e-5), dtype))
        return b.op("Sqrt", [b.op("Add", [var, eps])], "std"), shape, axes

    def masks(self, node, m) -> None:
        u = node.input[0]
        std, shape, axes = self.std(node, m.b, m.shape(u), m.dtype(u))
        inv_sigma = m.b.op("Reciprocal", [std], "inv_sigma")
        m.add("inv_sigma", inv_sigma)
        if m.tangent:  # n = (u - mean) / sigma in the grouped shape
            g = m.b.reshape(u, shape, "grouped") if list(shape) != list(m.shape(u)) else u
            centered = m.b.op("Sub", [g, m.b.reduce("ReduceMean", g, axes, True, "mean")])
            m.add("normalized", m.b.op("Mul", [centered, inv_sigma], "normalized"))

    def rounding_scale(self, node, b, in_shape, dtype, scale_rank: int) -> str:
        """max|u| * max|scale| / sigma over each group, at every element of the output: the size
        of the terms that ONNX Runtime's kernel adds (u * s + (bias - mean * s)), and so of its
        own rounding, which a group of equal values (one element, or ties) turns from 0 in exact
        arithmetic into an error of ulps of u * s (verify's noise floor, runtime/verify.py)."""
        std, shape, axes = self.std(node, b, in_shape, dtype)
        g = b.reshape(node.input[0], shape, "grouped") if list(shape) != list(in_shape) else None
        top = b.reduce("ReduceMax", b.op("Abs", [g or node.input[0]]), axes, True, "top")
        per_group = b.op("Div", [top, std], "top_over_std")
        scale = b.op("Abs", [node.input[1]], "abs_scale")
        scale_max = b.reduce("ReduceMax", scale, list(range(scale_rank)), False, "max_scale")
        per_group = b.op("Mul", [per_group, scale_max], "terms")
        spread = b.op("Expand", [per_group, b.ints(shape)], "terms")
        return b.reshape(spread, list(in_shape), "terms") if g else spread

    def linear(self, node, c) -> None:
        s = c.in_shape(0)
        shape, axes = self.groups(node, s)
        z = c.b.reshape(c.lin(0), [-1, *shape], "grouped")
        mean = c.b.reduce("ReduceMean", z, [a + 1 for a in axes], True, "mean")
        centered = c.b.op("Sub", [z, mean], "centered")
        if c.tangent:
            centered = self.minus_along_normalized(c, centered, axes)
        y = c.b.op("Mul", [centered, c.mask("inv_sigma")], "normed")
        y = c.b.reshape(y, [-1, *s], "normed")
        scale, bias = self.scale_bias(node, c)
        if scale is not None:
            y = c.b.op("Mul", [y, scale], "scaled")
        if c.affine and bias is not None:
            y = c.b.op("Add", [y, bias], "y_affine")
        c.set_out(y)

    def adjoint(self, node, a) -> None:
        # A = S diag(inv_sigma) P with P the centering (symmetric) and S the scale:
        # A^T g = P(inv_sigma * (scale * g)); inv_sigma is constant on each group, so P commutes
        s = a.in_shape(0)
        shape, axes = self.groups(node, s)
        scale, _ = self.scale_bias(node, a)
        g = a.b.op("Mul", [a.grad(), scale], "g_scaled") if scale is not None else a.grad()
        g = a.b.reshape(g, [-1, *shape], "g_grouped")
        g = a.b.op("Mul", [g, a.mask("inv_sigma")], "g_normed")
        mean = a.b.reduce("ReduceMean", g, [k + 1 for k in axes], True, "g_mean")
        g = a.b.op("Sub", [g, mean], "g_centered")
        if a.tangent:  # (I - n n^T / N) is symmetric and P n = n, so it follows P here
            g = self.minus_along_normalized(a, g, axes)
        a.add_grad(0, a.b.reshape(g, [-1, *s], "g"))

    def minus_along_normalized(self, c, t: str, axes: list[int]) -> str:
        """t - n mean(n t) per group (tangent mode: the derivative of 1/sigma)."""
        n = c.mask("normalized")
        along = c.b.reduce("ReduceMean", c.b.op("Mul", [n, t]), [k + 1 for k in axes], True)
        return c.b.op("Sub", [t, c.b.op("Mul", [n, along])], "tangent_centered")


@register("InstanceNormalization")
class InstanceNorm(Normalization):
    def groups(self, node, shape):
        return list(shape), list(range(2, len(shape)))

    def scale_bias(self, node, c):
        shape = _channel_shape(c, c.in_shape(0)[1])
        return c.b.reshape(c.value(1), shape, "scale"), c.b.reshape(c.value(2), shape, "bias")


@register("LayerNormalization")
class LayerNorm(Normalization):
    def groups(self, node, shape):
        axis = normalize_axis(attr(node, "axis", -1), len(shape))
        return list(shape), list(range(axis, len(shape)))

    def scale_bias(self, node, c):
        bias = c.value(2) if len(node.input) > 2 and node.input[2] else None
        return c.value(1), bias


@register("GroupNormalization")
class GroupNorm(Normalization):
    def groups(self, node, shape):
        groups = attr(node, "num_groups")
        return [shape[0], groups, int(np.prod(shape[1:])) // groups], [2]

    def scale_bias(self, node, c):
        channels, groups = c.in_shape(0)[1], attr(node, "num_groups")
        shape = _channel_shape(c, channels)
        out = []
        for i in (1, 2):
            v = c.value(i)
            if c.model.opset < 21 and channels != groups:  # opset 18: one value per group
                v = c.b.reshape(
                    c.b.op(
                        "Expand",
                        [c.b.reshape(v, [groups, 1]), c.b.ints([groups, channels // groups])],
                    ),
                    [channels],
                )
            out.append(c.b.reshape(v, shape, "scale" if i == 1 else "bias"))
        return out[0], out[1]
