"""Convolutions: affine in their data input; weights are values and the bias is dropped.

Adjoints: Conv's transpose is ConvTranspose with the same weights and the output_padding that
restores the input size; ConvTranspose's transpose is Conv. Both are written with explicit pads.
"""

from __future__ import annotations

import numpy as np

from ..registry import register
from .kinds import Plan, Rule, Unsupported, attr


def conv_geometry(node, in_shape, w_shape, out_shape, transposed: bool):
    """(strides, dilations, pads) of a Conv/ConvTranspose with auto_pad/output_shape resolved.

    A ConvTranspose with output_shape pads as ONNX Runtime does (checked against it): the total
    padding split with the larger half first (last for SAME_UPPER); an output larger than the
    natural size gets its extra rows at the end, written here as a negative end pad. A pool
    (w_shape [0, 0, *kernel]) with SAME padding pads as ONNX Runtime's pools do: the total
    (ceil(in / stride) - 1) * stride + kernel - in with the kernel *not* dilated (its output
    size then follows from the dilated extent: a dilated SAME pool can come out smaller).
    """
    spatial = len(in_shape) - 2
    strides = list(attr(node, "strides", [1] * spatial))
    dilations = list(attr(node, "dilations", [1] * spatial))
    kernel = list(w_shape[2:])
    auto_pad = attr(node, "auto_pad", "NOTSET")
    pads = list(attr(node, "pads", [0] * (2 * spatial)))
    if auto_pad == "VALID":
        pads = [0] * (2 * spatial)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER") or (transposed and attr(node, "output_shape")):
        pads = [0] * (2 * spatial)
        for k in range(spatial):
            extent = (kernel[k] - 1) * dilations[k] + 1
            if transposed:  # total padding the spec derives from the requested output size
                out_pad = list(attr(node, "output_padding", [0] * spatial))[k]
                total = strides[k] * (in_shape[k + 2] - 1) + out_pad + extent - out_shape[k + 2]
            elif w_shape[0] == 0 and auto_pad != "NOTSET":  # a pool: ONNX Runtime's SAME
                count = -(-in_shape[k + 2] // strides[k])
                total = max((count - 1) * strides[k] + kernel[k] - in_shape[k + 2], 0)
            else:
                total = max((out_shape[k + 2] - 1) * strides[k] + extent - in_shape[k + 2], 0)
            if total < 0:  # an output_shape past the natural size: extra rows at the end
                pads[k], pads[k + spatial] = 0, total
                continue
            small, large = total // 2, total - total // 2
            upper = auto_pad == "SAME_UPPER"
            pads[k], pads[k + spatial] = (small, large) if upper else (large, small)
    return strides, dilations, pads


@register("Conv", "ConvTranspose")
class Conv(Rule):
    # y = W * x (+ b): the twin convolves the twin with the same W (frozen if it is input-dependent)
    def plan(self, node, lin, model) -> Plan:
        if not lin[0]:
            raise Unsupported("weights that depend on the input, on a constant image")
        frozen = "weights frozen (float)" if any(lin[1:]) else ""
        return Plan((0,), (0,), frozen, "gate" if frozen else "")

    def linear(self, node, c) -> None:
        rest = [c.value(i) for i in range(1, len(node.input) if c.affine else 2)]
        c.set_out(c.per_sample(c.lin(0), c.in_shape(0), c.out_shape(), node.op_type, rest))

    def adjoint(self, node, a) -> None:
        x_shape, w_shape, y_shape = a.in_shape(0), a.in_shape(1), a.out_shape()
        transposed = node.op_type == "ConvTranspose"
        strides, dilations, pads = conv_geometry(node, x_shape, w_shape, y_shape, transposed)
        spatial, group = len(x_shape) - 2, attr(node, "group", 1)
        kernel = list(w_shape[2:])
        weights = a.value(1)
        folded = a.fold(a.grad(), y_shape)
        grad_spatial = list(y_shape[2:])
        depthwise = group > 1 and group == x_shape[1] and w_shape[0] == group
        if not transposed and depthwise and any(s > 1 for s in strides):
            # strided depthwise: ORT's grouped ConvTranspose is slow (half of MobileNetV3's
            # adjoint); insert s-1 zeros after each cotangent element instead, then it is the
            # stride-1 case below (s^2 more multiply-adds, cheap for a depthwise kernel)
            folded = _zero_insert(a, folded, y_shape, strides)
            grad_spatial = [n * st for n, st in zip(grad_spatial, strides)]
            strides = [1] * spatial
        if transposed:  # ConvTranspose^T = Conv (cross-correlation with the same W)
            op = "Conv"
        elif all(s == 1 for s in strides) and (
            grad_spatial != list(y_shape[2:])
            or all(p <= (k - 1) * d for p, k, d in zip(pads, kernel * 2, dilations * 2))
        ):  # stride 1: Conv^T is a Conv with the flipped, transposed kernel (faster in ORT),
            # padded so that the result has x's size (a negative pad crops)
            op = "Conv"
            weights = _flipped_transposed(a, weights, w_shape, group)
            reach = [(k - 1) * d for k, d in zip(kernel, dilations)]
            begin = [r - p for r, p in zip(reach, pads[:spatial])]
            end = [n - g - b + r for n, g, b, r in zip(x_shape[2:], grad_spatial, begin, reach)]
            pads = begin + end
        else:  # Conv^T = ConvTranspose, with the output_padding that gives back x's size
            op = "ConvTranspose"
        geometry = dict(
            strides=strides, dilations=dilations, pads=pads, group=group, kernel_shape=kernel
        )
        if op == "ConvTranspose":
            geometry["output_padding"] = [
                x_shape[k + 2]
                + pads[k]
                + pads[k + spatial]
                - ((y_shape[k + 2] - 1) * strides[k] + (kernel[k] - 1) * dilations[k] + 1)
                for k in range(spatial)
            ]
        if op == "Conv" and min(pads) < 0:  # a negative pad crops the cotangent first
            crop = [min(p, 0) for p in pads]
            crop = [0, 0, *crop[:spatial], 0, 0, *crop[spatial:]]
            folded = a.b.op("Pad", [folded, a.b.ints(crop, "crop")], "crop")
            geometry["pads"] = [max(p, 0) for p in pads]
        g = a.b.op(op, [folded, weights], "g", **geometry)
        a.add_grad(0, a.unfold(g, x_shape))


def _zero_insert(a, g: str, shape, strides) -> str:
    """[N, C, *n] -> [N, C, *(n·s)]: each element followed by s-1 zeros along every spatial axis,
    as a nearest-neighbour upsampling times a 0/1 pattern (both fast kernels in ORT; a Pad of
    unit axes measured slower than the ConvTranspose it replaces)."""
    spatial = list(shape[2:])
    scales = a.b.const(np.asarray([1.0, 1.0, *strides], np.float32), hint="scales")
    up = a.b.op(
        "Resize",
        [g, "", scales],
        "upsampled",
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    )
    keep = np.ones([1, 1, *(n * st for n, st in zip(spatial, strides))], a.dtype(0))
    for axis, st in enumerate(strides):
        index = [slice(None)] * keep.ndim
        index[axis + 2] = np.arange(keep.shape[axis + 2]) % st != 0
        keep[tuple(index)] = 0
    return a.b.op("Mul", [up, a.b.const(keep, hint="every_sth")], "zero_inserted")


def _flipped_transposed(a, w: str, w_shape, group: int) -> str:
    """W [M, C/g, *k] -> W' [C, M/g, *k] with W'[c, m] = W[m, c] flipped in space, per group:
    the kernel of the stride-1 convolution's transpose."""
    m, c_g, *kernel = w_shape
    w = a.b.reshape(w, [group, m // group, c_g, *kernel], "w_groups")
    w = a.b.op("Transpose", [w], "w_t", perm=[0, 2, 1, *range(3, 3 + len(kernel))])
    w = a.b.reshape(w, [group * c_g, m // group, *kernel], "w_t")
    axes = list(range(2, 2 + len(kernel)))
    big = np.iinfo(np.int64).max
    return a.b.op(
        "Slice",
        [
            w,
            a.b.ints([-1] * len(axes)),
            a.b.ints([-big] * len(axes)),
            a.b.ints(axes),
            a.b.ints([-1] * len(axes)),
        ],
        "w_flipped",
    )
