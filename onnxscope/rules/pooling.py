"""Pooling and reductions. Averages and sums are linear; maxima are selections: the mask holds,
for each output, the flat index (into the N*C*H*W input) of the element it copied."""

from __future__ import annotations

import numpy as np

from ..registry import Plan, Rule, Unsupported, attr, normalize_axis, register


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


def gather_selected(c, index_mask: str) -> str:
    """The twin at the selected flat indices: [K, numel] gathered to [K, *out]."""
    flat = c.b.reshape(c.lin(0), [-1, int(np.prod(c.in_shape(0)))], "flat")
    return c.b.op("Gather", [flat, c.mask(index_mask)], "selected", axis=1)


class Selection(Rule):
    kind = "selection"

    def plan(self, node, lin, model) -> Plan:
        return Plan((0,), (0,), "selected flat index (int64)")

    def linear(self, node, c) -> None:
        c.set_out(gather_selected(c, "argmax"))


@register("MaxPool")
class MaxPool(Selection):
    # ONNX Runtime's optional Indices output is the flat N*C*H*W index of each window's maximum
    def plan(self, node, lin, model) -> Plan:
        if attr(node, "storage_order", 0):
            raise Unsupported("storage_order=1 (column-major indices) is not supported")
        return Plan((0,), (0,), "selected flat index (int64)")

    def masks(self, node, m) -> None:
        edited = m.edit_node()
        if len(edited.output) < 2 or not edited.output[1]:
            del edited.output[1:]
            edited.output.append(m.b.fresh("argmax"))
        m.add("argmax", edited.output[1])


@register("GlobalMaxPool", "ReduceMax", "ReduceMin")
class ReduceSelection(Selection):
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
        hits = m.b.op("Where", [m.b.op("Equal", [u, extreme]), index, m.b.const(np.int64(numel))])
        m.add("argmax", m.b.reduce("ReduceMin", hits, axes, keep, "argmax"))


@register("AveragePool", "GlobalAveragePool", "DepthToSpace", "SpaceToDepth", "Upsample")
class PerSample(Rule):
    # a linear op applied to each sample alike: fold the probes into the batch axis
    def plan(self, node, lin, model) -> Plan:
        if any(lin[1:]):
            raise Unsupported("only the data input may depend on the interpreted input")
        return Plan((0,), (0,))

    def linear(self, node, c) -> None:
        rest = [c.value(i) if node.input[i] else "" for i in range(1, len(node.input))]
        c.set_out(c.per_sample(c.lin(0), c.in_shape(0), c.out_shape(), node.op_type, rest))


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
