"""The rule registry: one `Rule` per ONNX op type, holding how that op is linearized.

A rule answers three questions about one node (the driver owns everything graph-wide):
- `plan`: which inputs carry the probe's linear part through the node (the rest are frozen values)
  and which outputs have a linear part. Raise `Unsupported` to refuse the node with a reason.
- `masks`: what to add to the mask graph: the decisions the unit took at x (on/off, gain,
  selection). Only called for nodes on a linear path to an output.
- `linear`: the node's linear twin in the linear graph, or its affine twin when `c.affine` is set
  (biases and intercepts kept), used to compute the bias image at z = 0.
- `adjoint`: the transpose of the linear twin, from the cotangents of the node's outputs to those
  of its carried inputs (the driver sums contributions where a tensor fans out).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from .errors import Unsupported


@dataclass(frozen=True)
class Plan:
    carried: tuple[int, ...]  # input positions whose linear part flows through this node
    lin_outputs: tuple[int, ...]  # output positions that have a linear part
    frozen: str = ""  # for `inspect`: what this node freezes, empty for affine nodes
    kind: str = ""  # overrides the rule's kind for this node (a Mul acting as a gate)


class Rule:
    """Default: an affine op, linear in every input that has a linear part."""

    kind = "affine"  # affine | unit | selection | gate | value

    def plan(self, node: onnx.NodeProto, lin: list[bool], model) -> Plan:
        return Plan(tuple(i for i, f in enumerate(lin) if f), tuple(range(len(node.output))))

    def masks(self, node: onnx.NodeProto, m) -> None:
        """Emit the frozen decisions into the mask graph (`m.add(label, tensor)`)."""

    def linear(self, node: onnx.NodeProto, c) -> None:
        raise NotImplementedError

    def adjoint(self, node: onnx.NodeProto, a) -> None:
        """Add A^T of this node to its carried inputs' cotangents (`a.add_grad(i, g)`)."""
        raise Unsupported(f"no adjoint rule for {node.op_type} yet")


class ValueRule(Rule):
    """Ops whose output is piecewise constant or integer (comparisons, Shape, ArgMax, Floor):
    their linear part is zero, so their output is a frozen value."""

    kind = "value"

    def plan(self, node, lin, model) -> Plan:
        return Plan((), ())


RULES: dict[str, Rule] = {}


def register(*op_types: str):
    """Class decorator: one rule instance serves all `op_types`; registering twice is an error."""

    def wrap(cls):
        rule = cls()
        for op in op_types:
            if op in RULES:
                raise RuntimeError(f"A rule for '{op}' is already registered.")
            RULES[op] = rule
        return cls

    return wrap


def coverage() -> list[tuple[str, str, str]]:
    """(op, status, adjoint) for every op of the default ONNX domain, sorted: the ledger behind
    `onnxscope inspect --ops` and docs/op-coverage.txt."""
    from . import rules  # noqa: F401  (fills RULES)

    ops = {s.name for s in onnx.defs.get_all_schemas_with_history() if s.domain in ("", "ai.onnx")}
    rows = []
    for op in sorted(ops | set(RULES)):
        rule = RULES.get(op)
        if rule is None:
            rows.append((op, "no rule: refused on the input's path", "-"))
            continue
        status = {
            "affine": "linear",
            "unit": "frozen unit",
            "selection": "selection",
            "gate": "frozen gate",
            "value": "value (zero linear part)",
        }[rule.kind]
        if rule.kind == "value":
            rows.append((op, status, "not needed"))
        else:
            rows.append((op, status, "yes" if type(rule).adjoint is not Rule.adjoint else "no"))
    return rows


def rule_for(node: onnx.NodeProto) -> Rule | None:
    if node.domain not in ("", "ai.onnx"):
        return None
    return RULES.get(node.op_type)


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def normalize_axis(axis: int, rank: int, node: onnx.NodeProto | None = None) -> int:
    if not -rank <= axis < max(rank, 1):
        raise Unsupported(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


__all__ = ["Plan", "Rule", "ValueRule", "RULES", "register", "rule_for", "attr", "Unsupported"]
