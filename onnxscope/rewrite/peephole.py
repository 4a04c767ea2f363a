"""Rewrites of the finished linear and adjoint graphs that save passes over the probes."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import onnx
from onnx import helper


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
