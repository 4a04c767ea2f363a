"""Static control flow folded away before analysis: an `If` whose condition is static at the fixed
input shapes (PyTorch's `squeeze(dim)` on a dynamic dimension exports Shape → Gather → Equal → If)
is replaced by the branch it takes, so that the rules see plain nodes and the units inside the
branch are frozen as any unit is.

    analyzed = fold_static_ifs(AnalyzedModel(model, shapes))   # the same object if nothing folds

The taken branch's nodes are inlined where the If was (its own tensors renamed with a prefix,
outer-scope names kept, its outputs bound to the If's outputs by Identity nodes); nested Ifs
that become top-level fold in the next round. Each fold is checked: the folded model's outputs
must equal the model's at the analysis inputs, bit for bit, else the fold is refused (a
ModelError naming the node). An If whose condition depends on the input data is left as it is,
and the analysis refuses it with its node's name.
"""

from __future__ import annotations

import onnx

from ..errors import ModelError
from .model import AnalyzedModel, graph_names

MAX_ROUNDS = 64  # nested Ifs fold one level per round


def fold_static_ifs(analyzed: AnalyzedModel) -> AnalyzedModel:
    """`analyzed`, or the analysis of its model with every statically decided If folded."""
    for _ in range(MAX_ROUNDS):
        decided = [
            (k, n)
            for k, n in enumerate(analyzed.nodes)
            if n.op_type == "If" and analyzed.is_static(n.input[0])
        ]
        if not decided:
            return analyzed
        folded = _inline(analyzed, decided)
        before = analyzed
        analyzed = AnalyzedModel(folded, before.input_shapes, before._values)
        _check_equal(before, analyzed, [n for _, n in decided])
    raise ModelError(f"More than {MAX_ROUNDS} levels of nested If nodes; not folded.")


def _inline(analyzed: AnalyzedModel, decided) -> onnx.ModelProto:
    """A copy of the model with each decided If replaced by the nodes of its taken branch."""
    model = onnx.ModelProto()
    model.CopyFrom(analyzed.model)
    graph = model.graph
    taken = {
        k: _branch(n, bool(analyzed.static_value(n.input[0]).reshape(-1)[0])) for k, n in decided
    }
    used = graph_names(graph)
    nodes = []
    for k, node in enumerate(graph.node):
        if k not in taken:
            nodes.append(node)
            continue
        branch = taken[k]
        prefix = _prefix(node, k, used)
        local = {v.name for v in branch.initializer} | {
            o for n in branch.node for o in n.output if o
        }
        rename = {name: prefix + name for name in local}
        for init in branch.initializer:
            copy = onnx.TensorProto()
            copy.CopyFrom(init)
            copy.name = rename[init.name]
            graph.initializer.append(copy)
        for inner in branch.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(inner)
            copy.name = prefix + (inner.name or inner.op_type)
            _rename(copy, rename)
            nodes.append(copy)
        for out, branch_out in zip(node.output, branch.output):
            source = rename.get(branch_out.name, branch_out.name)  # (an outer name, as it is)
            nodes.append(onnx.helper.make_node("Identity", [source], [out], name=prefix + out))
        used |= set(rename.values())
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def _branch(node: onnx.NodeProto, condition: bool) -> onnx.GraphProto:
    want = "then_branch" if condition else "else_branch"
    for attr in node.attribute:
        if attr.name == want:
            return attr.g
    raise ModelError(f"If node '{node.name}' has no {want}.")


def _prefix(node: onnx.NodeProto, k: int, used: set[str]) -> str:
    base = f"{node.name or 'If'}_{k}/"
    prefix, n = base, 0
    while any(name.startswith(prefix) for name in used):
        n += 1
        prefix = f"{base}{n}/"
    return prefix


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


def _check_equal(before: AnalyzedModel, after: AnalyzedModel, folded) -> None:
    """The folded model computes the same outputs, bit for bit, at the analysis inputs."""
    import numpy as np

    from ..runtime.sessions import ort, session_options

    feeds = before.analysis_feeds()
    runs = []
    for analyzed in (before, after):
        options = lambda: session_options(optimize=False)  # noqa: E731
        model = analyzed._at_input_shapes()  # (no outputs: the model's own, untyped)
        model.graph.output.extend(onnx.ValueInfoProto(name=o) for o in analyzed.outputs)
        session = analyzed.weights.session(
            model,
            options,
            ["CPUExecutionProvider"],
            make=ort.InferenceSession,
        )
        runs.append(session.run(analyzed.outputs, feeds))
    for name, a, b in zip(before.outputs, *runs):
        if not np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True):
            names = ", ".join(f"'{n.name}'" for n in folded)
            raise ModelError(
                f"Folding the static If node(s) {names} changed output '{name}'; not folded."
            )
