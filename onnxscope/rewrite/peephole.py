"""Rewrites of the finished linear and adjoint graphs that save passes over the probes."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import onnx
import onnx.numpy_helper
from onnx import helper

from .contexts import folded_shape, unfolded_shape


def fold_frozen_factors(
    nodes: list[onnx.NodeProto], probes: Iterable[str], keep: Iterable[str], fresh: Callable
) -> list[onnx.NodeProto]:
    """Mul(Mul(t, a), b) -> Mul(t, a * b) where a and b do not depend on the probes.

    Consecutive frozen factors (a unit's gain, then a squeeze-and-excitation gate, ...) multiply
    K probes twice; their product is formed once per run instead, on the unbatched shape. The
    product is rounded once more than before, which moves A_x z by an ulp. `keep`: names that
    must stay (graph outputs); `fresh(hint)` names the new tensors.
    """
    dependent = set(probes)
    for node in nodes:
        if any(i in dependent for i in node.input):
            dependent.update(node.output)
    uses: dict[str, int] = {}
    for node in nodes:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    keep = set(keep)
    producer = {node.output[0]: node for node in nodes if node.op_type == "Mul"}
    dropped, out = set(), []
    for node in nodes:
        factored = _split(node, dependent)
        inner = producer.get(factored[0]) if factored else None
        inner_factored = _split(inner, dependent) if inner is not None else None
        if inner_factored and uses.get(inner.output[0]) == 1 and inner.output[0] not in keep:
            product = fresh("frozen_product")
            out.append(helper.make_node("Mul", [factored[1], inner_factored[1]], [product]))
            del node.input[:]
            node.input.extend([inner_factored[0], product])
            dropped.add(id(inner))
        out.append(node)
    return [node for node in out if id(node) not in dropped]


def _split(node: onnx.NodeProto | None, dependent: set[str]) -> tuple[str, str] | None:
    """(probe-dependent input, frozen input) of a Mul with exactly one of each, else None."""
    if node is None or node.op_type != "Mul" or node.domain not in ("", "ai.onnx"):
        return None
    first, second = node.input
    if (first in dependent) == (second in dependent):
        return None
    return (first, second) if first in dependent else (second, first)


# elementwise ops (every input broadcast to the output) that a fold can be moved through
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Sum", "Where", "Neg", "Cast", "Identity"}


def sink_folds(
    nodes: list[onnx.NodeProto],
    folds: dict[str, tuple[str, tuple]],
    shapes: dict[str, tuple],
    b,
    probes: Iterable[str],
    keep: Iterable[str],
) -> list[onnx.NodeProto]:
    """Elementwise ops between two batched ops run on the probes folded into the batch axis.

    A batched op (Conv, pooling) sees its K probes as [K * N, ...] and the twin keeps them as
    [K, N, ...]: a Reshape after the op (`folds`: the unfolded name -> (the folded tensor, the
    model's shape)) and one before the next. An elementwise op in between (a unit's gain, a
    residual Add) whose probe inputs are all unfolded the same way, and whose frozen inputs
    broadcast alike against [K * N, ...] (`shapes`: every frozen tensor's shape known so far),
    is applied to the folded tensors instead, and a fold of its result is the folded result
    itself: ONNX Runtime then keeps the chain in its blocked layout (a Reshape leaves it).
    """
    dependent = set(probes)
    for node in nodes:
        if any(i in dependent for i in node.input):
            dependent.update(node.output)
    keep, shapes, views = set(keep), dict(shapes), dict(folds)
    const = _IntConstants(b.initializers)
    alias: dict[str, str] = {}
    out: list[onnx.NodeProto] = []
    for node in nodes:
        for k, name in enumerate(node.input):
            node.input[k] = alias.get(name, name)
        folded = _folded(node, views, const)
        if folded is not None:
            if node.output[0] in keep:
                out.append(helper.make_node("Identity", [folded], [node.output[0]]))
            else:
                alias[node.output[0]] = folded
            continue
        sunk = _sink(node, views, shapes, dependent, b)
        if sunk is not None:
            out += sunk
            continue
        if node.op_type in ELEMENTWISE and not any(i in dependent for i in node.input):
            known = [shapes.get(i) for i in node.input if i]
            if known and all(s is not None for s in known):  # (a frozen product, a Cast gain)
                shapes[node.output[0]] = _broadcast(known)
        out.append(node)
    return _live(out, keep)


class _IntConstants:
    """The values of a builder's int64 initializers (Reshape shapes), read when asked."""

    def __init__(self, initializers: dict[str, onnx.TensorProto]):
        self.initializers = initializers

    def get(self, name: str) -> list[int] | None:
        t = self.initializers.get(name)
        if t is None or t.data_type != onnx.TensorProto.INT64 or len(t.dims) != 1:
            return None
        return [int(v) for v in onnx.numpy_helper.to_array(t)]


def _folded(node, views, const) -> str | None:
    """The folded tensor where `node` folds an unfolded view back (a Reshape to its fold)."""
    if node.op_type != "Reshape" or node.input[0] not in views:
        return None
    base, shape = views[node.input[0]]
    return base if const.get(node.input[1]) == folded_shape(shape) else None


def _sink(node, views, shapes, dependent, b) -> list[onnx.NodeProto] | None:
    if node.op_type not in ELEMENTWISE or node.domain not in ("", "ai.onnx"):
        return None
    lin = [i for i in node.input if i in dependent]
    if not lin or not all(i in views for i in lin):
        return None
    shape = views[lin[0]][1]
    if any(views[i][1] != shape for i in lin):
        return None
    for name in node.input:
        if name and name not in dependent and not _broadcasts_folded(shapes.get(name), shape):
            return None
    result = b.fresh(f"{node.output[0]}/folded")
    inner = onnx.NodeProto()
    inner.CopyFrom(node)
    for k, name in enumerate(inner.input):
        if name in views:
            inner.input[k] = views[name][0]
    inner.output[0] = result
    dependent.add(result)
    views[node.output[0]] = (result, shape)
    unfold = helper.make_node("Reshape", [result, b.ints(unfolded_shape(shape))], [node.output[0]])
    return [inner, unfold]


def _broadcasts_folded(m: tuple | None, shape: tuple) -> bool:
    """Whether a frozen operand of shape m broadcasts against [K * N, *rest] as it does against
    [K, N, *rest] (shape = [N, *rest]) without enlarging the result: right-aligned, each of its
    dims is 1 or the model's; one aligned with N must be 1."""
    if m is None or len(m) > len(shape):
        return False
    if any(d not in (1, s) for d, s in zip(reversed(m), reversed(shape))):
        return False
    return len(m) < len(shape) or m[0] == 1


def _broadcast(shapes: list[tuple]) -> tuple:
    rank = max(len(s) for s in shapes)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    return tuple(max(dims) for dims in zip(*padded))


def _live(nodes: list[onnx.NodeProto], keep: set[str]) -> list[onnx.NodeProto]:
    """The nodes that some kept name depends on, in their order."""
    needed, out = set(keep), []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            needed.update(i for i in node.input if i)
            out.append(node)
    return out[::-1]
