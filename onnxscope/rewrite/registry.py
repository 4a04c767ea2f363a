"""The rule registry: one rule per ONNX op type, holding how that op is linearized.

What a rule is and the kinds the families build on: rules/kinds.py. The families (rules/*.py)
register their rules here when `onnxscope.rewrite.rules` is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx

if TYPE_CHECKING:
    from .rules.kinds import Rule


RULES: dict[str, Rule] = {}  # op type -> the rule instance that serves it
# ops rewritten before analysis into ops with rules (no rule of their own): op type -> how.
# Control flow is expanded only where the fixed input shapes decide it (graph/controlflow.py);
# an If or Loop that the input's values decide is refused, naming the node.
CANONICALIZED = {
    **{op: "unrolled (graph/recurrent.py)" for op in ("GRU", "LSTM", "RNN")},
    "If": "folded into the taken branch when its condition is static",
    "Loop": "unrolled when its trip count and condition are static",
    "Scan": "unrolled (graph/controlflow.py)",
}


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
    from .rules.kinds import Rule

    ops = {s.name for s in onnx.defs.get_all_schemas_with_history() if s.domain in ("", "ai.onnx")}
    rows = []
    for op in sorted(ops | set(RULES)):
        rule = RULES.get(op)
        if op in CANONICALIZED:  # (its adjoint: the unrolled or folded ops' adjoints)
            rows.append((op, CANONICALIZED[op], "yes"))
            continue
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


__all__ = ["RULES", "register", "rule_for", "coverage"]
