"""Data movement: reshapes, permutations, slicing, padding, resampling, gathers.

All are linear. The twin of a tensor of shape s is [K, *s], so an op that names axes gets them
shifted by one, and a reshape targets [-1, *s_out] with the static output shape.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from ...graph.ops import VALUE_OPS
from .. import separable
from ..registry import register
from .kinds import (
    DataOnly,
    PassThrough,
    PerSample,
    Plan,
    Rule,
    SeparablePerSample,
    Unsupported,
    ValueRule,
    attr,
    normalize_axis,
    register_self_linear,
)


@register("Reshape", "Flatten", "Squeeze", "Unsqueeze")
class Reshape(DataOnly):
    def linear(self, node, c) -> None:
        out = c.out_shape()
        c.set_out(c.lin(0) if out == c.in_shape(0) else c.b.reshape(c.lin(0), [-1, *out], "y"))

    def adjoint(self, node, a) -> None:
        a.add_grad(0, a.b.reshape(a.grad(), [-1, *a.in_shape(0)], "g"))


register_self_linear("Identity", kind=PassThrough)


@register("Dropout")
class Dropout(PassThrough):
    # inference: identity; the optional mask output is a value
    def plan(self, node, lin, model) -> Plan:
        if len(node.input) > 2 and node.input[2]:
            if not model.is_static(node.input[2]) or model.static_value(node.input[2]):
                raise Unsupported("Dropout in training mode is random")
        return super().plan(node, lin, model)


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

    def adjoint(self, node, a) -> None:
        to = helper.np_dtype_to_tensor_dtype(np.dtype(a.dtype(0)))
        a.add_grad(0, a.b.op("Cast", [a.grad()], "g", to=to))


@register("Transpose")
class Transpose(DataOnly):
    def linear(self, node, c) -> None:
        c.set_out(c.b.op("Transpose", [c.lin(0)], "y", perm=self.perm(node, c)))

    def perm(self, node, c) -> list[int]:
        rank = len(c.in_shape(0))
        perm = attr(node, "perm") or list(reversed(range(rank)))
        return [0, *[p + 1 for p in perm]]

    def adjoint(self, node, a) -> None:
        inverse = np.argsort(self.perm(node, a)).tolist()
        a.add_grad(0, a.b.op("Transpose", [a.grad()], "g", perm=inverse))


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

    def adjoint(self, node, a) -> None:
        parts = [a.grad_or_zeros(j) for j in range(len(node.output))]
        a.add_grad(0, a.b.op("Concat", parts, "g", axis=self.shifted_axis(node, a)))


@register("Gather")
class Gather(AxisShifted):
    # indices are a value (constant, or frozen when input-dependent)
    def linear(self, node, c) -> None:
        c.set_out(c.b.op("Gather", [c.lin(0), c.value(1)], "y", axis=self.shifted_axis(node, c)))

    def adjoint(self, node, a) -> None:
        # Gather along axis = a one-hot matrix along that axis (indices may repeat: they add)
        axis = self.shifted_axis(node, a) - 1
        in_shape, count = a.in_shape(0), int(np.prod(a.in_shape(1)))
        if a.model.is_static(node.input[1]):
            idx = a.static(1).astype(np.int64).ravel()
            onehot = np.zeros((count, in_shape[axis]), a.dtype(0))
            onehot[np.arange(count), idx % in_shape[axis]] = 1
        else:  # frozen indices: the one-hot matrix is built at run time
            flat_idx = a.b.reshape(a.value(1), [-1], "indices")
            values = a.b.const(np.asarray([0, 1], a.dtype(0)))
            depth = a.b.const(np.asarray([in_shape[axis]], np.int64))
            onehot = a.b.op("OneHot", [flat_idx, depth, values], "onehot", axis=-1)
        flat = [*in_shape[:axis], count, *in_shape[axis + 1 :]]
        g = a.b.reshape(a.grad(), [-1, *flat], "g_flat")
        a.add_grad(0, separable.contract(a, g, flat, {axis: onehot}))


@register("GatherND")
class GatherND(DataOnly):
    # constant indices, batch_dims 0: a Gather over the flattened indexed dimensions
    def plan(self, node, lin, model) -> Plan:
        if attr(node, "batch_dims", 0):
            raise Unsupported("batch_dims > 0 is not supported")
        if not model.is_static(node.input[1]):
            raise Unsupported("input-dependent indices are not supported")
        return super().plan(node, lin, model)

    def flat_indices(self, c) -> tuple[np.ndarray, list[int]]:
        """(flat indices into the first r dims, the data flattened to [prod(s[:r]), *s[r:]])."""
        s, idx = c.in_shape(0), c.static(1).astype(np.int64)
        r = idx.shape[-1]
        flat = np.ravel_multi_index(tuple(np.moveaxis(idx % np.asarray(s[:r]), -1, 0)), s[:r])
        return flat.astype(np.int64), [int(np.prod(s[:r])), *s[r:]]

    def linear(self, node, c) -> None:
        flat, shape = self.flat_indices(c)
        data = c.b.reshape(c.lin(0), [-1, *shape], "flat")
        c.set_out(c.b.op("Gather", [data, c.b.const(flat, hint="indices")], "y", axis=1))

    def adjoint(self, node, a) -> None:
        flat, shape = self.flat_indices(a)
        onehot = np.zeros((flat.size, shape[0]), a.dtype(0))
        onehot[np.arange(flat.size), flat.ravel()] = 1  # repeated indices add
        g = a.b.reshape(a.grad(), [-1, flat.size, *shape[1:]], "g_flat")
        g = separable.contract(a, g, [flat.size, *shape[1:]], {0: onehot})
        a.add_grad(0, a.b.reshape(g, [-1, *a.in_shape(0)], "g"))


@register("CumSum")
class CumSum(DataOnly):
    # a running sum along axis (a triangular matrix): its transpose runs the other way
    def axis(self, c) -> int:
        return normalize_axis(int(np.asarray(c.static(1)).ravel()[0]), len(c.in_shape(0))) + 1

    def linear(self, node, c) -> None:
        axis = c.b.const(np.asarray(self.axis(c), np.int64))
        c.set_out(c.b.op("CumSum", [c.lin(0), axis], "y", attrs=node.attribute))

    def adjoint(self, node, a) -> None:
        axis = a.b.const(np.asarray(self.axis(a), np.int64))
        reverse = 0 if attr(node, "reverse", 0) else 1
        a.add_grad(
            0, a.b.op("CumSum", [a.grad(), axis], "g", attrs=node.attribute, reverse=reverse)
        )


@register("Concat")
class Concat(Rule):
    # inputs without a linear part contribute zeros (their values in the affine twin)
    def linear(self, node, c) -> None:
        rank = len(c.out_shape())
        axis = normalize_axis(attr(node, "axis"), rank) + 1
        parts = [c.lin_or_zeros(i) for i in range(len(node.input))]
        c.set_out(c.b.op("Concat", parts, "y", axis=axis))

    def adjoint(self, node, a) -> None:
        axis = normalize_axis(attr(node, "axis"), len(a.out_shape()))
        sizes = [a.in_shape(i)[axis] for i in range(len(node.input))]
        parts = (
            a.b.op(
                "Split",
                [a.grad(), a.b.ints(sizes, "split")],
                "g",
                outputs=len(sizes),
                axis=axis + 1,
            )
            if a.b.opset >= 13
            else a.b.op("Split", [a.grad()], "g", outputs=len(sizes), axis=axis + 1, split=sizes)
        )
        parts = parts if isinstance(parts, list) else [parts]
        for i in a.plan.carried:
            a.add_grad(i, parts[i])


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

    def adjoint(self, node, a) -> None:
        # zero-fill what was cut: Pad for unit steps, a selection matrix per axis otherwise
        in_shape = a.in_shape(0)
        rank = len(in_shape)
        if a.model.opset < 10:
            starts, ends = attr(node, "starts"), attr(node, "ends")
            axes, steps = attr(node, "axes") or list(range(len(starts))), [1] * len(starts)
        else:
            starts, ends = a.static(1).tolist(), a.static(2).tolist()
            axes = a.static(3).tolist() if _has(node, 3) else list(range(len(starts)))
            steps = a.static(4).tolist() if _has(node, 4) else [1] * len(starts)
        kept = {}
        for start, end, axis, step in zip(starts, ends, axes, steps):
            axis = normalize_axis(axis, rank)
            kept[axis] = np.arange(in_shape[axis])[slice(start, end, step)]
        if all(steps_ == 1 for steps_ in steps):
            begin = [0] + [
                int(kept[k][0]) if k in kept and kept[k].size else 0 for k in range(rank)
            ]
            end = [0] + [
                in_shape[k] - int(kept[k][-1]) - 1 if k in kept and kept[k].size else 0
                for k in range(rank)
            ]
            a.add_grad(0, _pad(a, a.grad(), begin + end))
            return
        matrices = {}
        for axis, index in kept.items():
            select = np.zeros((index.size, in_shape[axis]), a.dtype(0))
            select[np.arange(index.size), index] = 1
            matrices[axis] = select
        a.add_grad(0, separable.contract(a, a.grad(), a.out_shape(), matrices))


def _pad(a, x: str, pads: list[int], mode: str = "constant") -> str:
    """Pad in the form the graph's opset takes (negative pads crop)."""
    if a.b.opset < 11:
        return a.b.op("Pad", [x], "pad", pads=pads, mode=mode)
    return a.b.op("Pad", [x, a.b.ints(pads, "pads")], "pad", mode=mode)


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

    def full_pads(self, node, a) -> list[int]:
        """[begin..., end...] over all axes of the input (attribute or input form)."""
        rank = len(a.in_shape(0))
        if a.model.opset < 11:
            return list(attr(node, "pads"))
        pads = a.static(1).astype(np.int64).tolist()
        axes = (
            [normalize_axis(k, rank) for k in a.static(3).tolist()]
            if _has(node, 3)
            else list(range(rank))
        )
        full = [0] * (2 * rank)
        for k, axis in enumerate(axes):
            full[axis], full[axis + rank] = pads[k], pads[k + len(axes)]
        return full

    def adjoint(self, node, a) -> None:
        pads, rank = self.full_pads(node, a), len(a.in_shape(0))
        mode = attr(node, "mode", "constant")
        if mode == "constant":  # crop the padding away (negative pads)
            a.add_grad(
                0, _pad(a, a.grad(), [0, *[-p for p in pads[:rank]], 0, *[-p for p in pads[rank:]]])
            )
            return
        # reflect/edge/wrap copy input elements: per-axis matrices, found by padding e_0..e_L-1
        in_shape, matrices = a.in_shape(0), {}
        for axis in range(rank):
            if pads[axis] == 0 and pads[axis + rank] == 0:
                continue
            basis = separable.identity_basis(in_shape[axis], [1] * (rank + 1), axis + 1, a.dtype(0))
            axis_pads = [0] * (2 * rank + 2)
            axis_pads[axis + 1], axis_pads[axis + rank + 2] = pads[axis], pads[axis + rank]
            out = _run_pad(basis, axis_pads, mode, a.model.opset)
            matrices[axis] = separable.matrix_from_outputs(out, axis + 1)
        a.add_grad(0, separable.contract(a, a.grad(), a.out_shape(), matrices))


def _run_pad(x, pads, mode, opset):
    if opset < 11:
        attrs = [helper.make_attribute("pads", pads), helper.make_attribute("mode", mode)]
        return separable.run_op("Pad", [x], attrs, opset)
    attrs = [helper.make_attribute("mode", mode)]
    return separable.run_op("Pad", [x, np.asarray(pads, np.int64)], attrs, opset)


@register("Resize")
class Resize(SeparablePerSample):
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

    def restricted(self, node, a, axis, x):
        """Resize x ([B, 1, *spatial]) along `axis` only, with the node's own per-axis scale."""
        rank, out_shape = x.ndim, a.out_shape()
        keep = lambda k: k >= 2 and (axis is None or k == axis)  # noqa: E731
        if attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
            raise Unsupported("no adjoint for keep_aspect_ratio_policy other than 'stretch'")
        skip = {"axes", "keep_aspect_ratio_policy", "extrapolation_value"}
        attrs = [at for at in node.attribute if at.name not in skip]
        scales, sizes, roi = self._full_vectors(node, a, rank)
        if a.model.opset < 11:
            restricted = [scales[k] if keep(k) else 1.0 for k in range(rank)]
            return separable.run_op(
                "Resize", [x, np.asarray(restricted, np.float32)], attrs, a.model.opset
            )
        roi_r = None
        if roi is not None:
            roi_r = np.asarray(
                [roi[k] if keep(k) else 0.0 for k in range(rank)]
                + [roi[rank + k] if keep(k) else 1.0 for k in range(rank)],
                roi.dtype,
            )
        if sizes is not None:
            sizes_r = [out_shape[k] if keep(k) else x.shape[k] for k in range(rank)]
            inputs = [x, roi_r, None, np.asarray(sizes_r, np.int64)]
        else:
            scales_r = np.asarray([scales[k] if keep(k) else 1.0 for k in range(rank)], np.float32)
            inputs = [x, roi_r, scales_r]
        if inputs[1] is None and a.model.opset < 13:  # roi and scales were required before 13
            inputs[1] = np.zeros(0, np.float32)
        if inputs[2] is None and a.model.opset < 13:
            inputs[2] = np.zeros(0, np.float32)
        return separable.run_op("Resize", inputs, attrs, a.model.opset)

    def _full_vectors(self, node, a, rank):
        """(scales, sizes, roi) over every axis (the `axes` attribute undone); None if absent."""
        if a.model.opset < 11:
            return a.static(1).astype(np.float64).tolist(), None, None
        axes = [normalize_axis(k, rank) for k in (attr(node, "axes") or range(rank))]
        scales = sizes = roi = None
        if _has(node, 3) and int(np.prod(a.in_shape(3))):
            sizes = list(a.in_shape(0))
            for k, v in zip(axes, a.static(3).tolist()):
                sizes[k] = v
        else:
            scales = [1.0] * rank
            for k, v in zip(axes, a.static(2).tolist()):
                scales[k] = v
        if _has(node, 1) and int(np.prod(a.in_shape(1))):
            values = a.static(1)
            roi = np.asarray([0.0] * rank + [1.0] * rank, values.dtype)
            for j, k in enumerate(axes):
                roi[k], roi[rank + k] = values[j], values[len(axes) + j]
        return scales, sizes, roi


@register("Upsample")
class Upsample(SeparablePerSample):
    # opset 9: Upsample(X, scales), the batch and channel scales being 1
    def linear(self, node, c) -> None:
        _batch_scale_is_one(c, 1)
        c.set_out(c.per_sample(c.lin(0), c.in_shape(0), c.out_shape(), "Upsample", [c.value(1)]))

    def restricted(self, node, a, axis, x):
        scales = a.static(1).astype(np.float32)
        restricted = [
            s if k >= 2 and (axis is None or k == axis) else 1.0 for k, s in enumerate(scales)
        ]
        return separable.run_op(
            "Upsample", [x, np.asarray(restricted, np.float32)], list(node.attribute), a.model.opset
        )


class Rearrange(PerSample):
    """DepthToSpace / SpaceToDepth: a reshape, a transpose and a reshape per sample; the adjoint
    undoes them."""

    def permuted(self, node, in_shape) -> tuple[list[int], list[int]]:
        """(shape after the transpose, without N; the transpose's permutation)."""
        raise NotImplementedError

    def adjoint(self, node, a) -> None:
        shape, perm = self.permuted(node, a.in_shape(0))
        g = a.b.reshape(a.grad(), [-1, *shape], "g_split")
        g = a.b.op("Transpose", [g], "g_t", perm=np.argsort(perm).tolist())
        a.add_grad(0, a.b.reshape(g, [-1, *a.in_shape(0)], "g"))


@register("DepthToSpace")
class DepthToSpace(Rearrange):
    def permuted(self, node, in_shape):
        b = attr(node, "blocksize")
        _, c, h, w = in_shape
        if attr(node, "mode", "DCR") == "CRD":  # [N, C/b², b, b, H, W] -> [N, C/b², H, b, W, b]
            return [c // b**2, h, b, w, b], [0, 1, 4, 2, 5, 3]
        return [c // b**2, h, b, w, b], [0, 3, 4, 1, 5, 2]  # [N, b, b, C/b², H, W] -> same


@register("SpaceToDepth")
class SpaceToDepth(Rearrange):
    def permuted(self, node, in_shape):
        b = attr(node, "blocksize")
        _, c, h, w = in_shape
        # [N, C, H/b, b, W/b, b] -> [N, b, b, C, H/b, W/b]
        return [b, b, c, h // b, w // b], [0, 3, 5, 1, 2, 4]


def _batch_scale_is_one(c, i: int) -> None:
    scales = c.static(i)
    if scales.size and float(scales.ravel()[0]) != 1.0:
        raise Unsupported("resizing along the batch axis is not supported")


@register("Expand")
class Expand(DataOnly):
    def linear(self, node, c) -> None:
        c.set_out(c.expand(c.lin(0), c.in_shape(0), c.out_shape()))

    def adjoint(self, node, a) -> None:
        a.add_grad(0, a.unbroadcast(a.grad(), a.out_shape(), a.in_shape(0)))


@register("Tile")
class Tile(DataOnly):
    def linear(self, node, c) -> None:
        repeats = c.static(1).astype(np.int64).tolist()
        c.set_out(c.b.op("Tile", [c.lin(0), c.b.ints([1, *repeats], "repeats")], "y"))

    def adjoint(self, node, a) -> None:
        # [K, r0*s0, r1*s1, ...] -> [K, r0, s0, r1, s1, ...], summed over the r's
        repeats, in_shape = a.static(1).astype(np.int64).tolist(), a.in_shape(0)
        split = [d for r, s in zip(repeats, in_shape) for d in (r, s)]
        g = a.b.reshape(a.grad(), [-1, *split], "g_tiles")
        g = a.b.reduce("ReduceSum", g, [1 + 2 * k for k in range(len(repeats))], False, "g_sum")
        a.add_grad(0, a.b.reshape(g, [-1, *in_shape], "g"))


# piecewise-constant and integer-valued ops, and shape queries: their linear part is zero
register(*sorted(VALUE_OPS))(ValueRule)
