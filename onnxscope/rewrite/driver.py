"""The driver: one walk over the needed nodes per pass (`Walk.visit`), in which each rule emits its
part of the mask graph, the linear and bias twins, the bias-by-layer graph and the adjoint.

Layout convention. Every tensor t of static shape s in the original graph has, in the linear
graph, a twin of shape [K, *s]: one slice per probe. Frozen decisions (masks) and frozen values
have the original shape s and broadcast over the probe axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from ..errors import Unsupported, UnsupportedModelError
from ..graph.builder import GraphBuilder
from ..graph.model import AnalyzedModel
from . import rules  # noqa: F401  (registers every rule)
from .analysis import Analysis, UnitRecord, node_label
from .artifacts import (
    ADJOINT_MIN_OPSET,
    PROBE,
    SELECTOR,
    Artifacts,
    check_session,
    known_shape,
    model_like,
    stamp_mode,
    validate_graph,
    value_info,
    value_type,
)
from .contexts import AdjointContext, LinearContext, MaskContext
from .peephole import fold_frozen_factors, sink_folds
from .registry import rule_for


@dataclass
class Walk:
    """What every pass reads: the model, the interpreted input, the analysis, each needed node's
    record, every name taken, and the dtype and shape of each tensor the mask rules made."""

    model: AnalyzedModel
    wrt: str
    analysis: Analysis
    records: dict[int, UnitRecord]
    taken: set[str]
    mask_types: dict[str, tuple[np.dtype, list]] = field(default_factory=dict)

    def mask_type(self, name: str) -> tuple[np.dtype, list]:
        """dtype and shape of a tensor of the mask graph (the model's or a rule's)."""
        if name in self.model.info:
            return self.model.dtype(name), list(self.model.shape(name))
        return self.mask_types[name]

    def graph_input(self, name: str, source: str) -> onnx.ValueInfoProto:
        """A twin's input `name`, fed by the mask graph's `source`."""
        return value_info(name, *self.mask_type(source))

    def visit(self, ctx, b: GraphBuilder, emit, reverse=False, skip=None, what=None) -> None:
        """The one loop of every pass: each needed node, in graph order (reversed for the
        adjoint), with `ctx` moved to it and the names `b` makes prefixed by its label;
        `emit(rule, node, ctx)` adds the node's part. `skip(ctx)` passes a node by. A refusal
        (Unsupported) names the node: raised at once, or, with `what`, gathered over every node
        and raised together (what = "adjoint": the model still has its other graphs)."""
        needed = self.analysis.needed
        problems = []
        for idx in reversed(needed) if reverse else needed:
            node = self.model.nodes[idx]
            ctx.at(idx, node, self.analysis.plans[idx], self.records[idx])
            if skip is not None and skip(ctx):
                continue
            b.prefix = f"{node_label(node, idx)}/"
            try:
                emit(rule_for(node), node, ctx)
            except Unsupported as exc:
                problems.append((node_label(node, idx), node.op_type, str(exc)))
                if what is None:
                    break
        b.prefix = ""
        if problems:
            raise UnsupportedModelError(problems, **({"what": what} if what else {})) from None


class Rewrite:
    """Builds the artifacts for `model` (already analyzed at fixed shapes) and input `wrt`."""

    def __init__(self, model: AnalyzedModel, wrt: str, mode: str = "secant"):
        self.model, self.wrt, self.mode = model, wrt, mode
        self.analysis = Analysis(model, wrt, mode)
        self.analysis.check()

    def build(self) -> Artifacts:
        m = self.model
        taken = m.names()  # every name of the model, subgraphs included: none is made again
        records = {idx: self.analysis.record(idx) for idx in self.analysis.needed}
        self.walk = Walk(m, self.wrt, self.analysis, records, taken)
        self._masks()
        mask_outputs = [o for rec in records.values() for o in rec.masks.values()]
        taken |= set(mask_outputs) | set(_outputs_of(self._mb.nodes)) | set(self._mb.initializers)
        # the probe and selector inputs: their usual names unless the model has them
        names = GraphBuilder(m.opset, taken)
        self.probe, self.selector = names.fresh(PROBE), names.fresh(SELECTOR)
        lin_model, lin_imports, _ = self._twin(affine=False)
        bias_model, bias_imports, bias_values = self._twin(affine=True)
        adjoint, adj_imports, adj_probes, adj_error = None, {}, {}, None
        try:
            adjoint, adj_imports, adj_probes = self._adjoint()
        except UnsupportedModelError as exc:
            adj_error = str(exc)
        imports = [*lin_imports.values(), *bias_imports.values(), *adj_imports.values()]
        imports += mask_outputs  # every decision is exported, used or not (it.masks, inspect)
        mask_model = self._mask_model(list(dict.fromkeys(imports)))
        manifest = self._manifest(records, mask_model)
        manifest["linear_inputs"] = {"probe": self.probe, "masks": lin_imports}
        manifest["bias_inputs"] = {"masks": bias_imports}
        if adjoint is not None:
            manifest["adjoint_inputs"] = {"probes": adj_probes, "masks": adj_imports}
        else:
            manifest["adjoint_unavailable"] = adj_error
        # large constants the rules made join the model's weights in the store
        for graph_model in (mask_model, lin_model, bias_model, adjoint):
            if graph_model is not None:
                m.weights.externalize(graph_model.graph)
                if self.mode != "secant":  # (secant graphs stay as they were)
                    stamp_mode(graph_model, self.mode)
        return Artifacts(
            mask_model,
            lin_model,
            bias_model,
            manifest,
            lin_imports,
            bias_imports,
            adjoint,
            adj_imports,
            adj_probes,
            adj_error,
            walk=self.walk,
            probe=self.probe,
            selector=self.selector,
            weights=m.weights,
            bias_values=bias_values,
        )

    # -- mask graph ----------------------------------------------------------------------------
    def _masks(self) -> None:
        m = self.model
        self._mb = GraphBuilder(m.opset, self.walk.taken)
        ctx = MaskContext(m, self._mb, self.mode)
        lin = self.analysis.lin

        def emit(rule, node, ctx):
            rule.masks(node, ctx)
            for i, name in enumerate(node.input):  # frozen operands are masks too
                if name in lin and i not in ctx.plan.carried:
                    ctx.add(f"frozen:{name}", name)

        self.walk.visit(ctx, self._mb, emit)
        self._replaced = ctx.replaced
        self._fixes = self._inference_fixes()
        self.walk.mask_types = self._measure_mask_types()

    def _mask_graph(self) -> onnx.GraphProto:
        """The original graph plus the mask nodes; a rule may replace a node in place (a MaxPool
        gains an Indices output, a HardSwish becomes u * its gain). No value_info and no graph
        outputs: what the model declares may be stale; the callers list the outputs."""
        graph = onnx.GraphProto()
        graph.CopyFrom(self.model.graph)
        del graph.node[:], graph.value_info[:], graph.output[:]
        for i, node in enumerate(self.model.nodes):
            for n in self._replaced.get(i, [node]):
                graph.node.extend(self._with_fixes(n))
        graph.node.extend(self._mb.nodes)
        graph.initializer.extend(self._mb.initializers.values())
        # each tensor as its node made it, where ONNX's inference gets its shape wrong, is an
        # output: ONNX Runtime plans the reuse of freed buffers by the inferred sizes, and one
        # of these, freed, was handed to a larger tensor ("Shape mismatch attempting to re-use
        # buffer"); an output is never reused
        # (declared with the inferred rank and open dims: what ORT's inference says, no more)
        mismatches = self.model.inference_mismatches
        graph.output.extend(
            value_info(raw, self.model.dtype(name), [None] * mismatches[name][1])
            for name, (raw, _) in self._fixes.items()
        )
        return graph

    def _inference_fixes(self) -> dict[str, tuple[str, list[onnx.NodeProto]]]:
        """For each tensor whose shape ONNX's inference gets wrong (`inference_mismatches`): a
        name for the node's own output and a Reshape of it to the runtime's shape under the
        tensor's name (a no-op at run time, and the constant shape is what inference sees), so
        that every node after it in the mask graph, the model's and the rules', is inferred
        with the runtime's shape."""
        fixes, b = {}, self._mb
        for name, (shape, _) in self.model.inference_mismatches.items():
            start, prefix = len(b.nodes), b.prefix
            b.prefix = f"{name}/"
            raw = b.fresh("as_inferred")
            b.reshape(raw, list(shape), "runtime_shape")
            b.nodes[-1].output[0] = name  # (the Reshape is the last node made)
            fixes[name] = (raw, b.nodes[start:])
            del b.nodes[start:]
            b.prefix = prefix
        return fixes

    def _with_fixes(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        """`node`, followed by the fixes of its outputs whose shapes ONNX's inference gets wrong."""
        if not any(o in self._fixes for o in node.output):
            return [node]
        out = onnx.NodeProto()
        out.CopyFrom(node)
        after = []
        for k, o in enumerate(out.output):
            if o in self._fixes:
                out.output[k], nodes = self._fixes[o]
                after += nodes
        return [out, *after]

    def _replacements(self) -> list[onnx.NodeProto]:
        """Every node that stands in the mask graph for a node of the model."""
        return [n for nodes in self._replaced.values() for n in nodes]

    def _mask_model(self, exported: list[str]) -> onnx.ModelProto:
        """The mask graph with the model's outputs (each once) and `exported`, declared with the
        dtypes and shapes the runtime computes. Where ONNX's own inference contradicts the
        runtime (a ceil-mode pool that drops a window starting in the padding) the dims are left
        open, so that the graph passes the checker's full check as well as it loads in ORT."""
        m = self.model
        graph = self._mask_graph()
        names = list(dict.fromkeys([*m.outputs, *exported]))
        facts = {n: self.walk.mask_type(n) for n in names}
        first = len(graph.output)  # (the raw outputs of `_mask_graph` before: dtype only)
        graph.output.extend(
            value_info(n, dtype, [None] * len(shape)) for n, (dtype, shape) in facts.items()
        )
        try:
            inferred = onnx.shape_inference.infer_shapes(model_like(m.model, graph, "mask"))
            known = [vi for vi in inferred.graph.output[first:] if known_shape(vi)]
            contradicted = {vi.name for vi in known if value_type(vi)[1] != facts[vi.name][1]}
        except onnx.shape_inference.InferenceError:
            # inference refuses the graph: it contradicts nothing here, and the ONNX Runtime
            # session that validates every graph before it is written says what is wrong
            contradicted = set()
        for vi in graph.output[first:]:
            if vi.name not in contradicted:
                vi.CopyFrom(value_info(vi.name, *facts[vi.name]))
        return model_like(m.model, graph, "mask")

    # -- linear and affine twins ---------------------------------------------------------------
    def _twin(self, affine: bool):
        m, walk = self.model, self.walk
        b = GraphBuilder(m.opset, walk.taken | {self.probe})
        x_shape, x_dtype = m.shape(self.wrt), m.dtype(self.wrt)
        if affine:  # the affine twin at z = 0 gives the bias image
            probe = b.const(np.zeros((1, *x_shape), x_dtype), hint="zero_probe")
        else:
            probe = self.probe
        c = LinearContext(m, self.wrt, b, probe, affine, self.mode)
        walk.visit(c, b, lambda rule, node, c: c.emit(rule))
        outputs = []
        for name in m.outputs:
            shape, dtype = m.shape(name), m.dtype(name)
            if name in c.env:
                result = c.env[name]
            elif affine:
                result = c.broadcast(c.value_of(name), shape)
            else:
                result = c.zeros(shape, dtype)
            out = b.op("Identity", [result], outputs=[name])
            outputs.append(value_info(out, dtype, [1 if affine else "K", *shape]))
        outputs += _as_inferred_outputs(c)
        inputs = [] if affine else [value_info(probe, x_dtype, ["K", *x_shape])]
        inputs += [walk.graph_input(name, source) for name, source in c.imports.items()]
        nodes = b.nodes
        if not affine:
            nodes = fold_frozen_factors(nodes, [probe], m.outputs, b.fresh)
            keep = [o.name for o in outputs]
            nodes = sink_folds(nodes, c.folds, self._frozen_shapes(c, b), b, [probe], keep)
        graph = helper.make_graph(
            nodes, "bias" if affine else "linear", inputs, outputs, list(b.initializers.values())
        )
        model = model_like(m.model, graph, "bias" if affine else "linear")
        return model, dict(c.imports), dict(c.env)

    def _adjoint(self):
        """The adjoint graph: output-space probes w (one input per model output) -> A_x^T w."""
        m, walk = self.model, self.walk
        b = GraphBuilder(max(m.opset, ADJOINT_MIN_OPSET), walk.taken)
        single = len(m.outputs) == 1
        probes = {o: b.fresh(PROBE if single else f"{PROBE}:{o}") for o in m.outputs}
        seeds = {o: p for o, p in probes.items() if o in self.analysis.lin}
        a = AdjointContext(m, self.wrt, b, seeds or probes, self.mode)
        walk.visit(
            a,
            b,
            lambda rule, node, a: a.emit(rule),
            reverse=True,
            skip=lambda a: all(a.grad(j) is None for j in a.plan.lin_outputs),
            what="adjoint",
        )
        x_shape, x_dtype = m.shape(self.wrt), m.dtype(self.wrt)
        result = a.total(self.wrt) if seeds else None
        if result is None:
            result = a.zeros(x_shape, x_dtype)
        out = b.op("Identity", [result], outputs=[self.wrt])
        inputs = [value_info(p, m.dtype(o), ["K", *m.shape(o)]) for o, p in probes.items()]
        inputs += [walk.graph_input(name, source) for name, source in a.imports.items()]
        nodes = fold_frozen_factors(b.nodes, probes.values(), [out], b.fresh)
        nodes = sink_folds(nodes, a.folds, self._frozen_shapes(a, b), b, probes.values(), [out])
        graph = helper.make_graph(
            nodes,
            "adjoint",
            inputs,
            [value_info(out, x_dtype, ["K", *x_shape])],
            list(b.initializers.values()),
        )
        model = model_like(m.model, graph, "adjoint", min_opset=b.opset)
        return model, dict(a.imports), probes

    def _frozen_shapes(self, c, b: GraphBuilder) -> dict[str, tuple]:
        """The shape of each frozen tensor a twin starts from: its mask inputs and constants."""
        shapes = {name: tuple(self.walk.mask_type(source)[1]) for name, source in c.imports.items()}
        shapes.update({name: tuple(t.dims) for name, t in b.initializers.items()})
        return shapes

    def _measure_mask_types(self) -> dict[str, tuple[np.dtype, list]]:
        """dtype and shape of every tensor the mask rules made, from one ONNX Runtime run of the
        mask graph on the analysis inputs (ONNX's shape inference can disagree with the
        runtime, and a mask's declared shape is what the twins' inputs must match)."""
        m = self.model
        made = [o for o in _outputs_of([*self._mb.nodes, *self._replacements()]) if o not in m.info]
        if not made:
            return {}
        graph = self._mask_graph()
        graph.output.extend(onnx.ValueInfoProto(name=o) for o in made)
        sess = check_session(model_like(m.model, graph, "mask"), "mask graph", m.weights)
        values = sess.run(made, m.analysis_feeds())
        return {o: (v.dtype, list(v.shape)) for o, v in zip(made, values)}

    def _manifest(self, records, mask_model) -> dict:
        types = {o.name: value_type(o) for o in mask_model.graph.output}
        units = []
        for rec in records.values():
            if not rec.masks and not rec.frozen:
                continue
            units.append(
                {
                    "node": rec.node,
                    "op": rec.op,
                    "kind": rec.kind,
                    "frozen": rec.frozen,
                    "masks": {
                        label: {
                            "output": name,
                            "dtype": str(types[name][0]),
                            "shape": types[name][1],
                        }
                        for label, name in rec.masks.items()
                    },
                }
            )
        return {
            "wrt": self.wrt,
            "mode": self.mode,
            "input_shapes": {k: list(v) for k, v in self.model.input_shapes.items()},
            "outputs": self.model.outputs,
            # tensors whose shape ONNX's inference gets wrong: the mask graph (and scope.onnx)
            # outputs each as its node made it, under this name, before the runtime's reshape
            "as_inferred": {name: raw for name, (raw, _) in self._fixes.items()},
            "units": units,
        }


def bias_layers(walk: Walk, selector: str) -> tuple[onnx.ModelProto, dict[str, str], list[str]]:
    """A graph splitting c_x by the node that injects each bias or intercept.

    Input `selector` [K, L] picks, per slice, which of the L needed nodes keep their affine
    terms: node l emits lin + selector[:, l] * (affine - lin), and affine - lin is exactly the
    constant the node adds. At z = 0, selector = I gives node l's share of c_x in slice l;
    the shares sum to c_x by linearity. Returns (model, imports, node labels).
    """
    m = walk.model
    b = GraphBuilder(m.opset, walk.taken | {selector})
    x_shape, x_dtype = m.shape(walk.wrt), m.dtype(walk.wrt)
    count = b.slice(b.op("Shape", [selector]), [0], [1], [0], "count")
    probe = b.op(
        "Expand",
        [
            b.const(np.zeros((), x_dtype)),
            b.op("Concat", [count, b.ints(x_shape)], "zshape", axis=0),
        ],
    )
    c = LinearContext(m, walk.wrt, b, probe, affine=False, mode=walk.analysis.mode)
    labels = []

    def emit(rule, node, c):
        position = len(labels)
        labels.append(node_label(node, c.index))
        c.affine = False
        c.emit(rule)
        plain = {j: c.env[node.output[j]] for j in c.plan.lin_outputs}
        c.affine = True
        c.emit(rule)
        pick = b.slice(selector, [position], [position + 1], [1], "pick")
        for j, lin in plain.items():
            rank = len(m.shape(node.output[j]))
            gate = b.reshape(pick, [-1, *([1] * rank)], "gate")
            added = b.op("Sub", [c.env[node.output[j]], lin], "added")
            c.env[node.output[j]] = b.op("Add", [lin, b.op("Mul", [gate, added])], "mixed")

    walk.visit(c, b, emit)
    outputs = []
    for name in m.outputs:
        result = c.env.get(name) or c.zeros(m.shape(name), m.dtype(name))
        out = b.op("Identity", [result], outputs=[name])
        outputs.append(value_info(out, m.dtype(name), ["K", *m.shape(name)]))
    outputs += _as_inferred_outputs(c)
    inputs = [value_info(selector, x_dtype, ["K", len(labels)])]
    inputs += [walk.graph_input(name, source) for name, source in c.imports.items()]
    graph = helper.make_graph(
        b.nodes, "bias_layers", inputs, outputs, list(b.initializers.values())
    )
    model = model_like(m.model, graph, "bias by layer")
    m.weights.externalize(model.graph)
    validate_graph(model, "bias-by-layer graph", m.weights)
    return model, dict(c.imports), labels


def _as_inferred_outputs(c) -> list[onnx.ValueInfoProto]:
    """A twin's tensors whose shape ONNX's inference gets wrong, as outputs (see TwinContext)."""
    return [value_info(t, dtype, [None] * rank) for t, (dtype, rank) in c.as_inferred.items()]


def _outputs_of(nodes) -> list[str]:
    return [o for n in nodes for o in n.output if o]


def rewrite(model: AnalyzedModel, wrt: str, mode: str = "secant") -> Artifacts:
    return Rewrite(model, wrt, mode).build()
