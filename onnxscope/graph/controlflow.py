"""Static control flow expanded away before analysis, so that the rules see plain nodes and the
units inside a branch or a loop body are frozen as any unit is:

- an `If` whose condition is static at the fixed input shapes (PyTorch's `squeeze(dim)` on a
  dynamic dimension exports Shape → Gather → Equal → If) is replaced by the branch it takes;
- a `Loop` whose trip count and condition are static is unrolled: one copy of its body per
  iteration, the loop-carried values threaded from copy to copy, the scan outputs stacked;
- a `Scan` (its length is the scan axis's size, known at the fixed shapes) is unrolled the same
  way, each copy reading its slice of the scan inputs.

    analyzed = fold_static_control_flow(AnalyzedModel(model, shapes))  # same object if nothing

Each copy of a subgraph is inlined where its node was (its own tensors renamed with a prefix,
outer-scope names kept, its inputs bound to the tensors that feed them); nested control flow that
becomes top-level is expanded in the next round. Each round is checked: the expanded model's
outputs must equal the model's at the analysis inputs, bit for bit, else the expansion is refused
(a ModelError naming the nodes). Control flow decided by the input's values is left as it is, and
the analysis refuses it with its node's name.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ModelError
from .model import AnalyzedModel, default_opset, graph_names

MAX_ROUNDS = 64  # nested control flow expands one level per round
MAX_UNROLLED_NODES = 200_000  # copies of loop bodies, over the whole model


def fold_static_control_flow(analyzed: AnalyzedModel) -> AnalyzedModel:
    """`analyzed`, or the analysis of its model with every static If, Loop and Scan expanded."""
    for _ in range(MAX_ROUNDS):
        decided = {k: n for k, n in enumerate(analyzed.nodes) if _is_decided(analyzed, n)}
        if not decided:
            return analyzed
        expanded = _expand(analyzed, decided)
        before = analyzed
        analyzed = AnalyzedModel(expanded, before.input_shapes, before._values)
        _check_equal(before, analyzed, list(decided.values()))
    raise ModelError(f"More than {MAX_ROUNDS} levels of nested control flow; not expanded.")


def _is_decided(analyzed: AnalyzedModel, node: onnx.NodeProto) -> bool:
    """Whether the node's control is known at the fixed shapes (its body may still read data)."""
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type == "If":
        return analyzed.is_static(node.input[0])
    if node.op_type == "Loop":  # trip count and initial condition static (each may be absent)
        return all(not name or analyzed.is_static(name) for name in node.input[:2])
    return node.op_type == "Scan"


def _expand(analyzed: AnalyzedModel, decided: dict[int, onnx.NodeProto]) -> onnx.ModelProto:
    """A copy of the model with each decided node replaced by its expansion."""
    model = onnx.ModelProto()
    model.CopyFrom(analyzed.model)
    graph = model.graph
    used = graph_names(graph)
    budget = [MAX_UNROLLED_NODES]
    nodes = []
    for k, node in enumerate(graph.node):
        if k not in decided:
            nodes.append(node)
            continue
        out = Inliner(graph, node, k, used, budget, default_opset(model))
        EXPANSIONS[node.op_type](analyzed, node, out)
        nodes.extend(out.nodes)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


class Inliner:
    """The nodes that replace one control-flow node: copies of its subgraphs, each under its own
    prefix, and the glue between them (constants, slices, stacking)."""

    def __init__(self, graph, node, k: int, used: set[str], budget: list[int], opset: int):
        self.graph, self.node, self.used, self.budget, self.opset = graph, node, used, budget, opset
        self.nodes: list[onnx.NodeProto] = []
        base = f"{node.name or node.op_type}_{k}/"
        prefix, n = base, 0
        while any(name.startswith(prefix) for name in used):
            n += 1
            prefix = f"{base}{n}/"
        self.prefix = prefix
        self._count = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        name = f"{self.prefix}{hint}_{self._count}"
        self.used.add(name)
        return name

    def body(self, body: onnx.GraphProto, bindings: dict[str, str], tag: str) -> list[str]:
        """One copy of `body` with its inputs read from the bound outer tensors; the names of the
        copy's outputs, in order."""
        self.budget[0] -= len(body.node)
        if self.budget[0] < 0:
            raise ModelError(
                f"{self.node.op_type} node '{self.node.name}' would unroll to more than "
                f"{MAX_UNROLLED_NODES} nodes; not expanded."
            )
        prefix = f"{self.prefix}{tag}/"
        local = {v.name for v in body.initializer} | {o for n in body.node for o in n.output if o}
        rename = {name: prefix + name for name in local}
        rename.update(bindings)  # (a body input is read as the tensor bound to it)
        for init in body.initializer:
            copy = onnx.TensorProto()
            copy.CopyFrom(init)
            copy.name = rename[init.name]
            self.graph.initializer.append(copy)
        for j, inner in enumerate(body.node):
            copy = onnx.NodeProto()
            copy.CopyFrom(inner)
            copy.name = prefix + (inner.name or f"{inner.op_type}_{j}")
            _rename(copy, rename)
            self.nodes.append(copy)
        self.used |= set(rename.values())
        return [rename.get(o.name, o.name) for o in body.output]  # (an outer name, as it is)

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        output = output or self.fresh(op_type.lower())
        self.nodes.append(
            helper.make_node(op_type, inputs, [output], name=self.fresh(op_type), **attrs)
        )
        return output

    def const(self, value: np.ndarray, hint: str = "const") -> str:
        name = self.fresh(hint)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def unsqueeze(self, name: str, axis: int) -> str:
        if self.opset >= 13:
            return self.op("Unsqueeze", [name, self.const(np.array([axis], np.int64), "axes")])
        return self.op("Unsqueeze", [name], axes=[axis])

    def stack(self, names: list[str], axis: int, output: str) -> None:
        """`output` = the tensors stacked along a new `axis` (Concat of their Unsqueezes)."""
        self.op("Concat", [self.unsqueeze(n, axis) for n in names], output, axis=axis)

    def bind(self, outputs: list[str], sources: list[str]) -> None:
        for out, source in zip(outputs, sources):
            if out:
                self.op("Identity", [source], out)


def _subgraph(node: onnx.NodeProto, name: str) -> onnx.GraphProto:
    for attr in node.attribute:
        if attr.name == name:
            return attr.g
    raise ModelError(f"{node.op_type} node '{node.name}' has no {name}.")


def node_attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


# -- the expansions ----------------------------------------------------------------------------


def _expand_if(analyzed: AnalyzedModel, node: onnx.NodeProto, out: Inliner) -> None:
    """The branch the static condition takes."""
    condition = bool(analyzed.static_value(node.input[0]).reshape(-1)[0])
    branch = _subgraph(node, "then_branch" if condition else "else_branch")
    out.bind(list(node.output), out.body(branch, {}, "branch"))


def _expand_loop(analyzed: AnalyzedModel, node: onnx.NodeProto, out: Inliner) -> None:
    """for i in range(M) while cond: cond, v = body(i, cond, v), scan outputs stacked on axis 0."""
    body = _subgraph(node, "body")
    carried = len(node.input) - 2
    trips = _loop_trips(analyzed, node, body)
    cond = node.input[1] or out.const(np.array(True), "cond")
    values = list(node.input[2:])
    scans: list[list[str]] = [[] for _ in range(len(body.output) - 1 - carried)]
    for i in range(trips):
        bindings = {body.input[0].name: out.const(np.array(i, np.int64), "iter")}
        bindings[body.input[1].name] = cond
        bindings.update((vi.name, v) for vi, v in zip(body.input[2:], values))
        results = out.body(body, bindings, f"iter{i}")
        cond, values = results[0], results[1 : 1 + carried]
        for j, name in enumerate(results[1 + carried :]):
            scans[j].append(name)
    out.bind(list(node.output[:carried]), values)
    for output, parts in zip(node.output[carried:], scans):
        if not output:
            continue
        if not parts:
            raise ModelError(
                f"Loop node '{node.name}' runs 0 iterations at these shapes, and its scan "
                f"output '{output}' would be empty; not expanded."
            )
        out.stack(parts, 0, output)


def _loop_trips(analyzed: AnalyzedModel, node: onnx.NodeProto, body: onnx.GraphProto) -> int:
    """How many iterations the Loop runs: its static trip count, cut where its condition turns
    false. The body's condition must be the loop's (passed through) or a constant (of the body
    or static outside it); a condition the body computes from its values is not followed."""
    trip = int(analyzed.static_value(node.input[0]).reshape(-1)[0]) if node.input[0] else None
    cond = bool(analyzed.static_value(node.input[1]).reshape(-1)[0]) if node.input[1] else True
    body_cond = _passed_through(body, body.output[0].name)
    if body_cond == body.input[1].name:
        per_iteration = None  # the condition stays the initial one
    else:
        value = _constant_in_body(analyzed, body, body_cond)
        if value is None:
            raise ModelError(
                f"Loop node '{node.name}': its body computes the loop condition "
                f"('{body.output[0].name}'); only a trip count with a constant or passed-through "
                "condition is unrolled."
            )
        per_iteration = bool(value.reshape(-1)[0])
    if not cond:
        return 0
    if per_iteration is False:
        return 0 if trip == 0 else 1
    if trip is None:
        raise ModelError(
            f"Loop node '{node.name}' has no trip count and a condition that never turns false."
        )
    return max(trip, 0)


def _passed_through(body: onnx.GraphProto, name: str) -> str:
    """The tensor `name` copies through Identity nodes inside the body."""
    producer = {o: n for n in body.node for o in n.output}
    while name in producer and producer[name].op_type == "Identity":
        name = producer[name].input[0]
    return name


def _constant_in_body(analyzed, body: onnx.GraphProto, name: str) -> np.ndarray | None:
    """The value of `name` where it is a constant of the body or a static outer tensor."""
    own = {vi.name for vi in body.input} | {o for n in body.node for o in n.output}
    own |= {t.name for t in body.initializer}
    if name not in own:
        return analyzed.static_value(name) if analyzed.is_static(name) else None
    for init in body.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for n in body.node:
        if n.op_type == "Constant" and n.output[0] == name:
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
    return None


def _expand_scan(analyzed: AnalyzedModel, node: onnx.NodeProto, out: Inliner) -> None:
    """Scan (opset ≥ 9): for t along the scan axis, states, y_t = body(states, x_t); the scan
    outputs stacked along their axes, in their directions."""
    if analyzed.opset < 9:
        raise ModelError(f"Scan node '{node.name}' of opset 8 (with a batch axis) is not expanded.")
    body = _subgraph(node, "body")
    n_scan_in = node_attr(node, "num_scan_inputs")
    n_states = len(node.input) - n_scan_in
    scan_inputs = list(node.input[n_states:])
    in_axes = list(node_attr(node, "scan_input_axes", [0] * n_scan_in))
    in_reverse = list(node_attr(node, "scan_input_directions", [0] * n_scan_in))
    n_scan_out = len(body.output) - n_states
    out_axes = list(node_attr(node, "scan_output_axes", [0] * n_scan_out))
    out_reverse = list(node_attr(node, "scan_output_directions", [0] * n_scan_out))
    lengths = set()
    for name, axis in zip(scan_inputs, in_axes):
        shape = analyzed.shape(name)
        lengths.add(shape[axis % len(shape)])
    if len(lengths) != 1:
        raise ModelError(f"Scan node '{node.name}': its scan inputs differ in length {lengths}.")
    steps = lengths.pop()
    if steps == 0:
        raise ModelError(f"Scan node '{node.name}' scans 0 steps; not expanded.")
    states = list(node.input[:n_states])
    scans: list[list[str]] = [[] for _ in range(n_scan_out)]
    for t in range(steps):
        bindings = dict((vi.name, s) for vi, s in zip(body.input[:n_states], states))
        for vi, name, axis, reverse in zip(body.input[n_states:], scan_inputs, in_axes, in_reverse):
            index = out.const(np.array(steps - 1 - t if reverse else t, np.int64), "step")
            bindings[vi.name] = out.op("Gather", [name, index], axis=axis)
        results = out.body(body, bindings, f"step{t}")
        states = results[:n_states]
        for j, name in enumerate(results[n_states:]):
            scans[j].append(name)
    out.bind(list(node.output[:n_states]), states)
    for j, output in enumerate(node.output[n_states:]):
        if output:
            parts = scans[j][::-1] if out_reverse[j] else scans[j]
            rank = len(analyzed.shape(output))
            out.stack(parts, out_axes[j] % rank, output)


EXPANSIONS = {"If": _expand_if, "Loop": _expand_loop, "Scan": _expand_scan}


def _rename(node: onnx.NodeProto, rename: dict[str, str]) -> None:
    """The node's inputs and outputs renamed, and the outer-scope reads of its subgraphs (a name
    a subgraph produces itself shadows the outer one)."""
    node.input[:] = [rename.get(i, i) for i in node.input]
    node.output[:] = [rename.get(o, o) for o in node.output]
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            own = {v.name for v in g.input} | {t.name for t in g.initializer}
            own |= {o for n in g.node for o in n.output}
            outer = {k: v for k, v in rename.items() if k not in own}
            for inner in g.node:
                inner.input[:] = [outer.get(i, i) for i in inner.input]
                for sub in inner.attribute:  # deeper subgraphs read through the same map
                    if sub.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                        _rename_reads(sub, outer)
            for out in g.output:
                out.name = outer.get(out.name, out.name)


def _rename_reads(attr: onnx.AttributeProto, rename: dict[str, str]) -> None:
    holder = onnx.NodeProto()
    holder.attribute.append(attr)
    _rename(holder, rename)
    attr.CopyFrom(holder.attribute[0])


def outputs_at_analysis_inputs(analyzed: AnalyzedModel) -> list[np.ndarray]:
    """The model's outputs at its analysis inputs, from ONNX Runtime without graph optimizations
    (the model's own arithmetic): what every expansion before analysis is checked against."""
    from ..runtime.sessions import ort, session_options

    model = analyzed._at_input_shapes()  # (no outputs: the model's own, untyped)
    model.graph.output.extend(onnx.ValueInfoProto(name=o) for o in analyzed.outputs)
    session = analyzed.weights.session(
        model,
        lambda: session_options(optimize=False),
        ["CPUExecutionProvider"],
        make=ort.InferenceSession,
    )
    return session.run(analyzed.outputs, analyzed.analysis_feeds())


def _check_equal(before: AnalyzedModel, after: AnalyzedModel, folded) -> None:
    """The expanded model computes the same outputs, bit for bit, at the analysis inputs."""
    runs = (outputs_at_analysis_inputs(before), outputs_at_analysis_inputs(after))
    for name, a, b in zip(before.outputs, *runs):
        if not np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True):
            names = ", ".join(f"'{n.name}'" for n in folded)
            raise ModelError(
                f"Expanding the static control-flow node(s) {names} changed output '{name}'; "
                "not expanded."
            )
