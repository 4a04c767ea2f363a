"""Pooling and reductions. Averages and sums are linear; maxima are selections: each output
copies one input element, and the linear and adjoint graphs gather (scatter) through its flat
index into the N*C*H*W input. A strided float32 MaxPool's mask stores the winning offset in the
window (one byte), other MaxPools and the reductions the flat index itself (int64).

Pool geometry is ONNX Runtime's: output sizes come from the analysis run (a ceil-mode pool drops
a last window that would start in the end padding; ONNX's shape inference keeps it), and a
MaxPool window that reads only padding (dilations, large pads) outputs the dtype's lowest value,
whatever the input: a constant, so A_x is 0 there and c_x that value (read from the mask graph's
own output, so it is whatever the provider computed). Such windows' masks mean nothing."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from .. import separable
from ..registry import register
from .conv import conv_geometry
from .kinds import PerSample, Plan, Rule, SeparablePerSample, Unsupported, attr, normalize_axis


def reduce_axes(node, c_or_model, rank: int) -> list[int] | None:
    """The normalized axes a Reduce* node reduces; None when it is a no-op."""
    model = getattr(c_or_model, "model", c_or_model)
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        if not model.is_static(node.input[1]):
            raise Unsupported("input-dependent reduction axes are not supported")
        axes = model.static_value(node.input[1]).tolist()
    if not axes:
        return None if attr(node, "noop_with_empty_axes", 0) else list(range(rank))
    return sorted(normalize_axis(a, rank) for a in axes)


class FlatIndexSelection(Rule):
    """Each output copies one input element, named by its flat index into the N*C*H*W input (a
    mask): the twin gathers through it, the adjoint scatter-adds back."""

    kind = "selection"

    def plan(self, node, lin, model) -> Plan:
        return Plan((0,), (0,), "selected flat index (int64)")

    def selected(self, node, c) -> str:
        """The flat index (into the N*C*H*W input) of the element each output copied (any valid
        index where `empty` says it copied none)."""
        return c.mask("argmax")

    def empty(self, node, model) -> np.ndarray | None:
        """[*out spatial] bool: outputs that copy no input element (None: there are none)."""
        return None

    def linear(self, node, c) -> None:
        flat = c.b.reshape(c.lin(0), [-1, int(np.prod(c.in_shape(0)))], "flat")
        y = c.b.op("Gather", [flat, self.selected(node, c)], "selected", axis=1)
        empty = self.empty(node, c.model)
        if empty is not None:  # y = 0 there, or in the affine twin the runtime's own output
            fill = c.value_of(node.output[0]) if c.affine else c.const(0)
            y = c.b.op("Where", [c.b.const(empty, hint="empty"), fill, y], "selected")
        c.set_out(y)

    def adjoint(self, node, a) -> None:
        # scatter-add each output's cotangent to the element it selected (windows overlap)
        numel, count = int(np.prod(a.in_shape(0))), int(np.prod(a.out_shape()))
        g, empty = a.grad(), self.empty(node, a.model)
        if empty is not None:  # outputs that copy nothing send nothing back
            g = a.b.op("Where", [a.b.const(empty, hint="empty"), a.const(0), g], "g")
        g = a.b.reshape(g, [-1, count], "g_flat")
        index = a.b.reshape(self.selected(node, a), [1, count], "index")
        index = a.b.op("Expand", [index, a.b.op("Shape", [g])], "index_k")
        zeros = a.zeros((numel,), a.dtype(0))
        g = a.b.op("ScatterElements", [zeros, index, g], "g", axis=1, reduction="add")
        a.add_grad(0, a.b.reshape(g, [-1, *a.in_shape(0)], "g"))


@register("MaxPool")
class MaxPool(FlatIndexSelection):
    """The mask is the offset (in C order over the kernel) of the first maximum in each window.

    Mask graph: a Conv with one-hot kernels (one output channel per kernel offset, the pool's own
    strides, dilations and padding) copies every window's elements exactly (x * 1 plus zeros);
    each is compared with the pooled value, padding is masked out, and a ReduceMax over scores
    that fall with the offset keeps the first match. On ResNet-18's stem (3x3 windows, stride 2,
    64x112x112, two cores) that adds about 1 ms to the mask pass, where ONNX Runtime's MaxPool
    with its Indices output takes 2.1 ms instead of 0.1 ms; and it stores one byte per output
    instead of eight.

    The copies are exact only for a convolution computed as a sum of products in float32: no
    TF32 (onnxscope's CUDA sessions turn it off), no Winograd or FFT algorithm, which cuDNN
    offers for stride 1 only. So pools with a stride of 1 on some axis, and those this cannot run
    (before opset 11 there is no float Equal; ONNX Runtime's CPU Conv is float32 only) keep ONNX
    Runtime's own flat indices as the mask.
    """

    @staticmethod
    def by_offset(node, model) -> bool:
        spatial = len(attr(node, "kernel_shape"))
        strides = attr(node, "strides", [1] * spatial)
        return (
            model.opset >= 11
            and model.dtype(node.input[0]) == np.float32
            and all(s >= 2 for s in strides)
        )

    def plan(self, node, lin, model) -> Plan:
        if self.by_offset(node, model):
            kind = "uint8" if self.offset_type(node) == TensorProto.UINT8 else "int32"
            return Plan((0,), (0,), f"winning window offset ({kind})")
        if attr(node, "storage_order", 0):
            raise Unsupported("storage_order=1 (column-major indices) is not supported")
        return Plan((0,), (0,), "selected flat index (int64)")

    @staticmethod
    def offset_type(node) -> int:
        """uint8 offsets up to 256 window elements, int32 beyond."""
        small = int(np.prod(attr(node, "kernel_shape"))) <= 256
        return TensorProto.UINT8 if small else TensorProto.INT32

    def windows(self, node, model):
        """(in_shape, out_shape, kernel, strides, dilations, begin pads) of the node."""
        in_shape, out_shape = model.shape(node.input[0]), model.shape(node.output[0])
        kernel = list(attr(node, "kernel_shape"))
        strides, dilations, pads = conv_geometry(
            node, in_shape, [0, 0, *kernel], out_shape, transposed=False
        )
        return in_shape, out_shape, kernel, strides, dilations, pads[: len(kernel)]

    def inside(self, node, model) -> np.ndarray:
        """[K, *out] bool: kernel offset k of each window reads the input, not padding."""
        in_shape, out_shape, kernel, strides, dilations, begin = self.windows(node, model)
        grid = np.indices(out_shape[2:])
        inside = np.ones((int(np.prod(kernel)), *out_shape[2:]), bool)
        for k, offset in enumerate(np.ndindex(*kernel)):
            for a in range(len(kernel)):
                pos = grid[a] * strides[a] - begin[a] + offset[a] * dilations[a]
                inside[k] &= (pos >= 0) & (pos < in_shape[a + 2])
        return inside

    def first_inside(self, node, model) -> np.ndarray:
        """[*out]: the first kernel offset of each window that reads the input (0 if none)."""
        return self.inside(node, model).argmax(axis=0)

    def empty(self, node, model) -> np.ndarray | None:
        # windows that read only padding (ONNX Runtime's Indices there are meaningless)
        empty = ~self.inside(node, model).any(axis=0)
        return empty if empty.any() else None

    def masks(self, node, m) -> None:
        if not self.by_offset(node, m.model):  # ONNX Runtime's Indices: the flat N*C*H*W index
            edited = m.edit_node()
            if len(edited.output) < 2 or not edited.output[1]:
                del edited.output[1:]
                edited.output.append(m.b.fresh("argmax"))
            m.add("argmax", edited.output[1])
            return
        count, dtype, b = int(np.prod(attr(node, "kernel_shape"))), m.dtype(node.input[0]), m.b
        windows, pooled, inside = self.window_values(node, m)
        hit = b.op("Equal", [windows, pooled], "hit")
        # a match at offset k scores K - k (0 in the padding, which must not match a pooled 0),
        # so the best score m is K - (first match), or 0 where nothing matched (a window of NaNs):
        # min(K - m, K m) is the first match, or 0, and no match comes before the first offset
        # inside the input, which max() puts in place of that 0
        rank = (count - np.arange(count)).reshape(1, -1, *[1] * (inside.ndim - 2)) * inside
        score = b.op("Cast", [hit], "score", to=helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
        score = b.op("Mul", [score, b.const(rank.astype(dtype), hint="rank")], "score")
        best = b.reduce("ReduceMax", score, [1], False, "best")
        k = b.const(np.asarray(count, dtype))
        winner = b.op(
            "Min", [b.op("Sub", [k, best], "first_match"), b.op("Mul", [best, k])], "first_match"
        )
        first = self.first_inside(node, m.model)
        if first.any():
            winner = b.op("Max", [winner, b.const(first[None].astype(dtype), hint="first")])
        winner = b.op("Cast", [winner], "winner", to=self.offset_type(node))
        m.add("window", b.reshape(winner, list(m.shape(node.output[0])), "window"))

    def window_values(self, node, m) -> tuple[str, str, np.ndarray]:
        """(windows, pooled, inside): every window's elements along axis 1 in kernel order, the
        pooled value shaped to broadcast against them, and (broadcastable, K on axis 1) which
        of them lie inside the input. Exact copies either way."""
        in_shape, out_shape, kernel, strides, dilations, begin = self.windows(node, m.model)
        spatial, b, dtype = len(kernel), m.b, m.dtype(node.input[0])
        count, (n, c) = int(np.prod(kernel)), in_shape[:2]
        # end padding that gives at least the pool's output size (ceil_mode included); the
        # surplus of a floor-mode pool is cropped
        extent = [(kernel[a] - 1) * dilations[a] + 1 for a in range(spatial)]
        reach = [(out_shape[a + 2] - 1) * strides[a] + extent[a] for a in range(spatial)]
        end = [max(0, reach[a] - in_shape[a + 2] - begin[a]) for a in range(spatial)]
        tiles = spatial == 2 and len({*kernel, *strides}) == 1 and dilations == [1, 1]
        if tiles and not any(begin) and not any(end):
            # square windows that tile the input: SpaceToDepth moves offset (i, j) of every
            # window to channel block i * k + j
            x = node.input[0]
            if reach != list(in_shape[2:]):  # rows and columns no window reads
                x = b.slice(x, [0, 0], reach, [2, 3])
            blocks = b.op("SpaceToDepth", [x], "blocks", blocksize=kernel[0])
            windows = b.reshape(blocks, [n, count, c, *out_shape[2:]], "windows")
            pooled = b.reshape(node.output[0], [n, 1, c, *out_shape[2:]], "pooled")
            return windows, pooled, np.ones((1, count, 1, 1, 1), bool)
        one_hot = np.eye(count, dtype=dtype).reshape(count, 1, *kernel)
        x = b.reshape(node.input[0], [n * c, 1, *in_shape[2:]], "planes")
        windows = b.op(
            "Conv",
            [x, b.const(one_hot, hint="one_hot")],
            "windows",
            kernel_shape=kernel,
            strides=strides,
            dilations=dilations,
            pads=[*begin, *end],
        )
        full = [
            (in_shape[a + 2] + begin[a] + end[a] - extent[a]) // strides[a] + 1
            for a in range(spatial)
        ]
        if full != list(out_shape[2:]):
            windows = b.slice(windows, [0] * spatial, out_shape[2:], list(range(2, spatial + 2)))
        pooled = b.reshape(node.output[0], [n * c, 1, *out_shape[2:]], "pooled")
        return windows, pooled, self.inside(node, m.model)[None]

    def selected(self, node, c) -> str:
        index = self.offset_index(node, c) if self.by_offset(node, c.model) else c.mask("argmax")
        empty = self.empty(node, c.model)
        if empty is None:
            return index
        return c.b.op("Where", [c.b.const(empty, hint="empty"), c.b.ints([0]), index], "selected")

    def offset_index(self, node, c) -> str:
        # flat index = the channel's start + the window's origin (which may lie in the padding)
        # + the winning offset's shift
        in_shape, out_shape, kernel, strides, dilations, begin = self.windows(node, c.model)
        spatial, b = len(kernel), c.b
        step = [int(np.prod(in_shape[a + 3 :])) for a in range(spatial)]  # element strides
        shift = [
            sum(o[a] * dilations[a] * step[a] for a in range(spatial)) for o in np.ndindex(*kernel)
        ]
        origin = sum(
            ((np.arange(out_shape[a + 2]) * strides[a] - begin[a]) * step[a]).reshape(
                [-1 if d == a else 1 for d in range(spatial)]
            )
            for a in range(spatial)
        )
        channel = np.arange(in_shape[0] * in_shape[1]) * int(np.prod(in_shape[2:]))
        channel = channel.reshape(*in_shape[:2], *[1] * spatial)
        offset = b.op("Cast", [c.mask("window")], "offset", to=TensorProto.INT64)
        index = b.op("Gather", [b.ints(shift, "shift"), offset], "shift", axis=0)
        index = b.op("Add", [index, b.const(origin[None, None].astype(np.int64), hint="origin")])
        return b.op("Add", [index, b.const(channel.astype(np.int64), hint="channel")], "selected")


@register("GlobalMaxPool", "ReduceMax", "ReduceMin")
class ReduceSelection(FlatIndexSelection):
    def plan(self, node, lin, model) -> Plan:
        if any(lin[1:]):
            raise Unsupported("input-dependent reduction axes are not supported")
        if len(node.input) > 1 and node.input[1] and not model.is_static(node.input[1]):
            raise Unsupported("input-dependent reduction axes are not supported")
        return super().plan(node, lin, model)

    # first index where u equals its reduced max (min): argmin over a Range of flat indices
    def masks(self, node, m) -> None:
        u = node.input[0]
        shape = m.shape(u)
        if node.op_type == "GlobalMaxPool":
            axes, keep, op = list(range(2, len(shape))), True, "ReduceMax"
        else:
            axes = reduce_axes(node, m, len(shape)) or []
            keep, op = bool(attr(node, "keepdims", 1)), node.op_type
        numel = int(np.prod(shape))
        if m.model.opset >= 11:  # flat indices made at run time rather than stored
            ends = [m.b.const(np.int64(v)) for v in (0, numel, 1)]
            index = m.b.reshape(m.b.op("Range", ends, "index"), list(shape), "index")
        else:
            index = m.b.const(np.arange(numel, dtype=np.int64).reshape(shape), hint="index")
        if not axes:  # a no-op reduction selects every element
            m.add("argmax", index)
            return
        extreme = m.b.reduce(op, u, axes, True, "extreme")
        hits = m.b.op("Where", [m.b.equal(u, extreme), index, m.b.const(np.int64(numel))])
        m.add("argmax", m.b.reduce("ReduceMin", hits, axes, keep, "argmax"))


@register("AveragePool")
class AveragePool(SeparablePerSample):
    # sum over each window / its divisor; both are products of per-axis factors (the twin is
    # PerSample's: the pool itself on the probes folded into the batch axis)
    def restricted(self, node, a, axis, x):
        in_shape = a.in_shape(0)
        spatial = len(in_shape) - 2
        kernel = list(attr(node, "kernel_shape"))
        strides, dilations, pads = conv_geometry(
            node, in_shape, [0, 0, *kernel], a.out_shape(), transposed=False
        )
        keep = lambda k: axis is None or k + 2 == axis  # noqa: E731
        attrs = dict(
            kernel_shape=[kernel[k] if keep(k) else 1 for k in range(spatial)],
            strides=[strides[k] if keep(k) else 1 for k in range(spatial)],
            pads=[pads[k] if keep(k % spatial) else 0 for k in range(2 * spatial)],
            count_include_pad=attr(node, "count_include_pad", 0),
        )
        if a.model.opset >= 10:
            attrs["ceil_mode"] = attr(node, "ceil_mode", 0)
        if any(d != 1 for d in dilations):
            attrs["dilations"] = [dilations[k] if keep(k) else 1 for k in range(spatial)]
        attrs = [helper.make_attribute(k, v) for k, v in attrs.items()]
        return separable.run_op("AveragePool", [x], attrs, a.model.opset)


@register("GlobalAveragePool")
class GlobalAveragePool(PerSample):
    def adjoint(self, node, a) -> None:
        # every input element receives its channel's cotangent / (H*W)
        in_shape = a.in_shape(0)
        g = a.b.op("Mul", [a.grad(), a.const(1.0 / int(np.prod(in_shape[2:])))], "g_mean")
        a.add_grad(0, a.b.op("Expand", [g, a.b.ints([1, *in_shape])], "g"))


@register("ReduceMean", "ReduceSum")
class LinearReduce(Rule):
    def plan(self, node, lin, model) -> Plan:
        if any(lin[1:]):
            raise Unsupported("input-dependent reduction axes are not supported")
        return Plan((0,), (0,))

    def linear(self, node, c) -> None:
        axes = reduce_axes(node, c, len(c.in_shape(0)))
        if axes is None:
            c.set_out(c.lin(0))
            return
        keep = bool(attr(node, "keepdims", 1))
        c.set_out(c.b.reduce(node.op_type, c.lin(0), [a + 1 for a in axes], keep, "y"))

    def adjoint(self, node, a) -> None:
        # broadcast the cotangent back over the reduced axes (divided by their size for a mean)
        in_shape = a.in_shape(0)
        axes = reduce_axes(node, a, len(in_shape))
        if axes is None:
            a.add_grad(0, a.grad())
            return
        kept = [1 if k in axes else d for k, d in enumerate(in_shape)]
        g = a.b.reshape(a.grad(), [-1, *kept], "g_kept")
        if node.op_type == "ReduceMean":
            g = a.b.op("Mul", [g, a.const(1.0 / int(np.prod([in_shape[k] for k in axes])))])
        a.add_grad(0, a.b.op("Expand", [g, a.b.ints([1, *in_shape])], "g"))
