"""Data movement: reshapes, permutations, slicing, padding, resampling, gathers.

All are linear. The twin of a tensor of shape s is [K, *s], so an op that names axes gets them
shifted by one, and a reshape targets [-1, *s_out] with the static output shape.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from ..registry import Plan, Rule, Unsupported, ValueRule, attr, normalize_axis, register


class DataOnly(Rule):
    """Ops linear in input 0 whose other inputs (shapes, indices, pads) are values."""

    def plan(self, node, lin, model) -> Plan:
        if any(lin[1:]):
            raise Unsupported("only the data input may depend on the interpreted input")
        return Plan((0,), tuple(range(len(node.output))))


@register("Reshape", "Flatten", "Squeeze", "Unsqueeze")
class Reshape(DataOnly):
    def linear(self, node, c) -> None:
        out = c.out_shape()
        c.set_out(c.lin(0) if out == c.in_shape(0) else c.b.reshape(c.lin(0), [-1, *out], "y"))


@register("Identity")
class Identity(DataOnly):
    def linear(self, node, c) -> None:
        c.set_out(c.lin(0))


@register("Dropout")
class Dropout(DataOnly):
    # inference: identity; the optional mask output is a value
    def plan(self, node, lin, model) -> Plan:
        if len(node.input) > 2 and node.input[2]:
            if not model.is_static(node.input[2]) or model.static_value(node.input[2]):
                raise Unsupported("Dropout in training mode is random")
        return Plan((0,), (0,))

    def linear(self, node, c) -> None:
        c.set_out(c.lin(0))


FLOAT_TYPES = {
    helper.np_dtype_to_tensor_dtype(np.dtype(t)) for t in ("float16", "float32", "float64")
}
FLOAT_TYPES.add(16)  # bfloat16


@register("Cast")
class Cast(DataOnly):
    # float -> float keeps the linear part; a cast to an integer type is piecewise constant
    def plan(self, node, lin, model) -> Plan:
        if attr(node, "to") not in FLOAT_TYPES:
            return Plan((), ())
        return Plan((0,), (0,))

    def linear(self, node, c) -> None:
        c.set_out(c.b.op("Cast", [c.lin(0)], "y", to=attr(node, "to")))


@register("Transpose")
class Transpose(DataOnly):
    def linear(self, node, c) -> None:
        rank = len(c.in_shape(0))
        perm = attr(node, "perm") or list(reversed(range(rank)))
        c.set_out(c.b.op("Transpose", [c.lin(0)], "y", perm=[0, *[p + 1 for p in perm]]))


class AxisShifted(DataOnly):
    """Ops with an `axis` attribute: the same op on the twin with axis + 1."""

    def shifted_axis(self, node, c) -> int:
        return normalize_axis(attr(node, "axis", 0), len(c.in_shape(0))) + 1


@register("Split")
class Split(AxisShifted):
    def linear(self, node, c) -> None:
        rest = [c.value(i) if node.input[i] else "" for i in range(1, len(node.input))]
        outs = c.b.op(
            "Split",
            [c.lin(0), *rest],
            "part",
            outputs=len(node.output),
            attrs=node.attribute,
            axis=self.shifted_axis(node, c),
        )
        for j, name in enumerate(outs if isinstance(outs, list) else [outs]):
            c.set_out(name, j)


@register("Gather")
class Gather(AxisShifted):
    # indices are a value (constant, or frozen when input-dependent)
    def linear(self, node, c) -> None:
        c.set_out(c.b.op("Gather", [c.lin(0), c.value(1)], "y", axis=self.shifted_axis(node, c)))


@register("Concat")
class Concat(Rule):
    # inputs without a linear part contribute zeros (their values in the affine twin)
    def linear(self, node, c) -> None:
        rank = len(c.out_shape())
        axis = normalize_axis(attr(node, "axis"), rank) + 1
        parts = [c.lin_or_zeros(i) for i in range(len(node.input))]
        c.set_out(c.b.op("Concat", parts, "y", axis=axis))


def _has(node, i: int) -> bool:
    return len(node.input) > i and bool(node.input[i])


@register("Slice")
class Slice(DataOnly):
    # starts/ends/steps pass through as values; axes shift by one
    def linear(self, node, c) -> None:
        rank = len(c.in_shape(0))
        if c.model.opset < 10:  # starts, ends and axes are attributes
            starts, ends = attr(node, "starts"), attr(node, "ends")
            axes = attr(node, "axes") or list(range(len(starts)))
            c.set_out(
                c.b.slice(c.lin(0), starts, ends, [normalize_axis(a, rank) + 1 for a in axes])
            )
            return
        axes = c.static(3).tolist() if _has(node, 3) else list(range(c.in_shape(1)[0]))
        inputs = [c.lin(0), c.value(1), c.value(2)]
        inputs.append(c.b.ints([normalize_axis(a, rank) + 1 for a in axes], "axes"))
        if _has(node, 4):
            inputs.append(c.value(4))
        c.set_out(c.b.op("Slice", inputs, "y"))


@register("Pad")
class Pad(DataOnly):
    # the pad value is a constant added: 0 in the twin, kept in the affine twin
    def linear(self, node, c) -> None:
        rank = len(c.in_shape(0))
        if c.model.opset < 11:  # pads and value are attributes
            pads, axes, value = list(attr(node, "pads")), list(range(rank)), None
        else:
            pads = c.static(1).astype(np.int64).tolist()
            axes = (
                [normalize_axis(a, rank) for a in c.static(3).tolist()]
                if _has(node, 3)
                else list(range(rank))
            )
            value = c.value(2) if _has(node, 2) else None
        begin, end = [0] * rank, [0] * rank
        for k, a in enumerate(axes):
            begin[a], end[a] = pads[k], pads[k + len(axes)]
        pads, mode = [0, *begin, 0, *end], attr(node, "mode", "constant")
        if c.model.opset < 11:
            fill = float(attr(node, "value", 0.0)) if c.affine else 0.0
            c.set_out(c.b.op("Pad", [c.lin(0)], "y", mode=mode, pads=pads, value=fill))
            return
        inputs = [c.lin(0), c.b.ints(pads, "pads")]
        if c.affine and value is not None:
            inputs.append(value)
        c.set_out(c.b.op("Pad", inputs, "y", mode=mode))


@register("Resize")
class Resize(DataOnly):
    # linear in X for every mode; on the folded twin sizes[0] becomes K*N
    def linear(self, node, c) -> None:
        if c.model.opset < 11:  # Resize-10: (X, scales)
            _batch_scale_is_one(c, 1)
            c.set_out(c.per_sample(c.lin(0), c.in_shape(0), c.out_shape(), "Resize", [c.value(1)]))
            return
        axes = attr(node, "axes")
        batch_listed = axes is None or 0 in [normalize_axis(a, len(c.in_shape(0))) for a in axes]
        roi = c.value(1) if _has(node, 1) else ""
        scales = c.value(2) if _has(node, 2) else ""
        sizes = ""
        if _has(node, 3) and int(np.prod(c.in_shape(3))):
            sizes = c.value(3)
            if batch_listed:
                folded = c.b.op("Mul", [c.batch(), c.b.ints([c.in_shape(0)[0]])], "folded_n")
                rest = c.b.slice(sizes, [1], [np.iinfo(np.int64).max], [0], "sizes_rest")
                sizes = c.b.op("Concat", [folded, rest], "sizes", axis=0)
        elif batch_listed:
            _batch_scale_is_one(c, 2)
        extra = {}
        if attr(node, "coordinate_transformation_mode") == "tf_crop_and_resize" and not c.affine:
            extra["extrapolation_value"] = 0.0  # the fill value is a constant: bias only
        c.set_out(
            c.per_sample(
                c.lin(0), c.in_shape(0), c.out_shape(), "Resize", [roi, scales, sizes], **extra
            )
        )


def _batch_scale_is_one(c, i: int) -> None:
    scales = c.static(i)
    if scales.size and float(scales.ravel()[0]) != 1.0:
        raise Unsupported("resizing along the batch axis is not supported")


@register("Expand")
class Expand(DataOnly):
    def linear(self, node, c) -> None:
        c.set_out(c.expand(c.lin(0), c.in_shape(0), c.out_shape()))


@register("Tile")
class Tile(DataOnly):
    def linear(self, node, c) -> None:
        repeats = c.static(1).astype(np.int64).tolist()
        c.set_out(c.b.op("Tile", [c.lin(0), c.b.ints([1, *repeats], "repeats")], "y"))


# Piecewise-constant and integer-valued ops, and shape queries: their linear part is zero.
register(
    "Shape",
    "Size",
    "Equal",
    "Greater",
    "Less",
    "GreaterOrEqual",
    "LessOrEqual",
    "ArgMax",
    "ArgMin",
    "Sign",
    "Floor",
    "Ceil",
    "Round",
    "IsNaN",
    "IsInf",
    "Not",
    "And",
    "Or",
    "Xor",
    "ConstantOfShape",
    "EyeLike",
)(ValueRule)
