"""The analysis of a model for one interpreted input: which tensors carry the probe's linear part,
each needed node's plan, and what is unsupported (before any graph is built).

Which tensors have a linear part: the interpreted input does, and a node's outputs do when its
rule carries one of its inputs' linear parts (`Plan.carried`). Every other tensor is a *value*: a
constant (weights, shape computations) embedded in the linear graph, or a runtime value
(frozen operand, other model input) exported by the mask graph and fed back in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from ..errors import InputError, ModelError, Unsupported, UnsupportedModelError
from ..graph.model import AnalyzedModel, graph_inputs, input_spec, subgraph_reads
from ..graph.ops import CONTROL_FLOW_OPS
from .registry import rule_for
from .rules.kinds import Plan
from .rules.quantized import no_rule_reason

# secant: units frozen by their secant through f(0) and one operand of each product frozen (the
# paper's interpreter); tangent: every smooth node by its tangent plane at x (A_x = the Jacobian)
MODES = ("secant", "tangent")


def node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


@dataclass
class UnitRecord:
    """One frozen unit or gate, for `inspect` and the manifest."""

    node: str
    op: str
    kind: str
    frozen: str
    masks: dict[str, str] = field(default_factory=dict)  # label -> mask graph output


class Analysis:
    """Which tensors carry the probe's linear part, each node's plan, and what is unsupported."""

    def __init__(self, model: AnalyzedModel, wrt: str, mode: str = "secant"):
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, not {mode!r}.")
        self.model = model
        self.wrt = wrt
        self.mode = mode
        dtype = {vi.name: input_spec(vi)[1] for vi in graph_inputs(model.model)}[wrt]
        if not np.issubdtype(dtype, np.floating):
            raise InputError(f"Input '{wrt}' has dtype {dtype}; only float inputs can be probed.")
        self.plans: dict[int, Plan] = {}
        problems: dict[int, tuple[str, str, str]] = {}
        lin = {wrt}
        for idx, node in enumerate(model.nodes):
            flags = [i in lin for i in node.input]
            reads_lin = any(flags) or (
                node.op_type in CONTROL_FLOW_OPS and subgraph_reads(node, lin)
            )
            if not reads_lin:
                continue
            rule = rule_for(node)
            try:
                if node.op_type in CONTROL_FLOW_OPS:
                    raise Unsupported(
                        "control flow decided by the input's values (its condition or trip "
                        "count depends on the interpreted input) is not supported; control "
                        "flow the input shapes decide is expanded"
                    )
                if rule is None:
                    raise Unsupported(no_rule_reason(node))
                plan = rule.plan(node, flags, model)
                if mode == "tangent":
                    plan = rule.tangent_plan(node, flags, model, plan)
            except (Unsupported, ModelError) as exc:
                problems[idx] = (node_label(node, idx), node.op_type, str(exc))
                plan = Plan(
                    tuple(i for i, f in enumerate(flags) if f), tuple(range(len(node.output)))
                )
            self.plans[idx] = plan
            lin.update(node.output[j] for j in plan.lin_outputs)
        self.lin = lin
        # A node is needed when one of its linear outputs reaches a model output.
        need = {o for o in model.outputs if o in lin}
        self.needed: list[int] = []
        for idx in reversed(range(len(model.nodes))):
            plan, node = self.plans.get(idx), model.nodes[idx]
            if plan and any(node.output[j] in need for j in plan.lin_outputs):
                self.needed.append(idx)
                need.update(node.input[i] for i in plan.carried)
        self.needed.reverse()
        if not problems:  # (needs the model's shapes: only once every node has a rule)
            for idx in self.needed:
                node = model.nodes[idx]
                empty = [
                    node.output[j]
                    for j in self.plans[idx].lin_outputs
                    if 0 in model.shape(node.output[j])
                ]
                if empty:
                    why = f"output '{empty[0]}' has no elements (an empty tensor)"
                    problems[idx] = (node_label(node, idx), node.op_type, why)
        self.problems = [problems[i] for i in self.needed if i in problems]

    def check(self) -> None:
        if self.problems:
            raise UnsupportedModelError(self.problems)

    def record(self, idx: int) -> UnitRecord:
        """A needed node's record, without masks yet."""
        node, plan = self.model.nodes[idx], self.plans[idx]
        kind = plan.kind or rule_for(node).kind
        return UnitRecord(node_label(node, idx), node.op_type, kind, plan.frozen)

    def units(self) -> list[UnitRecord]:
        """The frozen units and gates (for `inspect`, before any graph is built)."""
        return [
            self.record(idx)
            for idx in self.needed
            if self.plans[idx].frozen and rule_for(self.model.nodes[idx]) is not None
        ]


_UNSUPPORTED_FLOATS = {
    getattr(onnx.TensorProto, name)
    for name in (
        "BFLOAT16",
        "FLOAT8E4M3FN",
        "FLOAT8E4M3FNUZ",
        "FLOAT8E5M2",
        "FLOAT8E5M2FNUZ",
        "FLOAT4E2M1",
    )
    if hasattr(onnx.TensorProto, name)
}


def default_wrt(model: onnx.ModelProto | AnalyzedModel, wrt: str | None) -> str:
    vis = graph_inputs(model.model if isinstance(model, AnalyzedModel) else model)
    names = [vi.name for vi in vis]
    if wrt is not None:
        if wrt not in names:
            raise InputError(f"There is no input '{wrt}'; the model's inputs are {names}.")
        return wrt
    floats = [vi.name for vi in vis if np.issubdtype(input_spec(vi)[1], np.floating)]
    if not floats:
        # onnx maps bfloat16 and the float8 types to numpy's integer containers
        exotic = [
            f"'{vi.name}' ({onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type)})"
            for vi in vis
            if vi.type.tensor_type.elem_type in _UNSUPPORTED_FLOATS
        ]
        if exotic:
            raise InputError(
                f"The model's float input(s) {', '.join(exotic)} have a type onnxscope does not "
                "interpret (float16, float32 and float64 only); convert the model to float32 first."
            )
        raise InputError(f"The model has no float input to interpret; its inputs are {names}.")
    return floats[0]
