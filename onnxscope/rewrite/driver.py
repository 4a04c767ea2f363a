"""The driver: walks the graph once and builds the mask, linear and bias graphs from the rules.

Layout convention. Every tensor t of static shape s in the original graph has, in the linear
graph, a twin of shape [K, *s]: one slice per probe. Frozen decisions (masks) and frozen values
have the original shape s and broadcast over the probe axis.

Which tensors have a linear part: the interpreted input does, and a node's outputs do when its
rule carries one of its inputs' linear parts (`Plan.carried`). Every other tensor is a *value*: a
constant (weights, shape computations) embedded in the linear graph, or a runtime value
(frozen operand, other model input) exported by the mask graph and fed back in.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx.compose
from onnx import helper

from ..errors import InputError, ModelError, Unsupported, UnsupportedModelError
from ..graph.builder import GraphBuilder
from ..graph.model import CONTROL_FLOW_OPS, AnalyzedModel, graph_names, subgraph_reads
from ..graph.weights import LOCATION, Weights, checkable
from . import rules  # noqa: F401  (registers every rule)
from .contexts import AdjointContext, LinearContext, MaskContext
from .peephole import fold_frozen_factors
from .registry import rule_for
from .rules.kinds import Plan

PROBE = "probe"
SELECTOR = "selector"
# The adjoint graph holds only nodes onnxscope makes, so it may use a newer opset than the
# model: ScatterElements with reduction="add" (the adjoint of a selection) needs 16.
ADJOINT_MIN_OPSET = 16


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

    def __init__(self, model: AnalyzedModel, wrt: str):
        self.model = model
        self.wrt = wrt
        from ..graph.model import graph_inputs, input_spec

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
                    raise Unsupported("control flow on the input's path is not supported")
                if rule is None:
                    raise Unsupported("no linearization rule for this op")
                plan = rule.plan(node, flags, model)
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


@dataclass
class Artifacts:
    """The rewritten graphs for one model and input shape, plus their manifest."""

    mask: onnx.ModelProto
    linear: onnx.ModelProto
    bias: onnx.ModelProto
    manifest: dict
    linear_imports: dict[str, str]  # linear graph input -> mask graph output
    bias_imports: dict[str, str]
    adjoint: onnx.ModelProto | None = None  # None when some op has no adjoint rule yet
    adjoint_imports: dict[str, str] = field(default_factory=dict)
    adjoint_probes: dict[str, str] = field(default_factory=dict)  # model output -> graph input
    adjoint_error: str | None = None
    walk: Walk | None = field(default=None, repr=False)  # what the passes saw (bias_layers)
    probe: str = PROBE  # the linear graph's probe input (renamed when the model uses "probe")
    selector: str = SELECTOR  # the bias-by-layer graph's selector input
    weights: Weights | None = field(default=None, repr=False)  # the data of the graphs' stubs
    # the bias graph's zero probe (an initializer, `bias_values[wrt]`) and its tensor for each
    # of the model's tensors with a linear part: fed x instead of 0, the bias graph is the
    # affine map A_x z + c_x (verify's noise floor of the reconstruction)
    bias_values: dict[str, str] = field(default_factory=dict, repr=False)

    def bias_layers(self) -> tuple[onnx.ModelProto, dict[str, str], list[str]]:
        """The bias-by-layer graph (built on request: see `bias_layers`)."""
        if self.walk is None:
            raise ModelError("These artifacts were loaded from files: no bias-by-layer graph.")
        return bias_layers(self.walk, self.selector)

    def graphs(self) -> dict[str, onnx.ModelProto]:
        """Every graph `files()` writes, by file name."""
        graphs = {"mask.onnx": self.mask, "linear.onnx": self.linear, "bias.onnx": self.bias}
        if self.adjoint is not None:
            graphs["adjoint.onnx"] = self.adjoint
        graphs["scope.onnx"] = self.scope()
        return graphs

    def validate(self, graphs: dict[str, onnx.ModelProto] | None = None) -> None:
        """Check every graph (the ONNX checker, then an ONNX Runtime session); raise a ModelError
        naming the first that fails."""
        for name, model in (graphs or self.graphs()).items():
            validate_graph(model, f"{name.removesuffix('.onnx')} graph ({name})", self.weights)

    def files(self) -> dict[str, bytes | Callable[[str], None]]:
        """The serialized graphs, weights.bin (when a graph has large weights: every graph
        refers to its one copy, as external data) and the manifest, each graph validated first:
        nothing is returned (so nothing written) unless every one loads in ONNX Runtime.
        weights.bin is a function that streams the file to a path (outputs.publish_folder)."""
        graphs = self.graphs()
        self.validate(graphs)
        write, size = None, 0
        if self.weights is not None:
            graphs, write, size = self.weights.pack(graphs)
        files: dict = {name: model.SerializeToString() for name, model in graphs.items()}
        manifest = dict(self.manifest)
        if write is not None:
            files[LOCATION] = write
            manifest["weights"] = {"file": LOCATION, "bytes": size}
        files["manifest.json"] = json.dumps(manifest, indent=2).encode()
        return files

    def scope_prefixes(self) -> dict[str, str]:
        """The prefix of each twin's names in scope.onnx: `linear/`, `bias/`, `adjoint/`, or
        `linear_1/`... where a name of the mask graph (the model's and the masks') starts so."""
        names = graph_names(self.mask.graph)
        prefixes = {}
        for role in ("linear", "bias", "adjoint"):
            prefix, i = f"{role}/", 0
            while any(n.startswith(prefix) for n in names):
                i += 1
                prefix = f"{role}_{i}/"
            prefixes[role] = prefix
        return prefixes

    def scope(self) -> onnx.ModelProto:
        """The LinearScope in one model, for servers: inputs x (and the model's other inputs),
        `linear/probe` z and `adjoint/<probe>` w; outputs F(x), `linear/<out>` = A_x z,
        `bias/<out>` = c_x and `adjoint/<x>` = A_x^T w (prefixes: `scope_prefixes()`, the probe
        names: `probe`, `adjoint_probes`). The adjoint is left out where the model's opset is
        below the adjoint graph's (the model's own nodes keep their opset)."""
        graph = onnx.GraphProto()
        graph.CopyFrom(self.mask.graph)
        mask_outputs = {o.name for o in graph.output}
        del graph.output[:]
        graph.output.extend(o for o in self.mask.graph.output if o.name in self.manifest["outputs"])
        twins = [
            ("linear", self.linear, self.linear_imports),
            ("bias", self.bias, self.bias_imports),
        ]
        model_opset = next(i.version for i in self.mask.opset_import if i.domain in ("", "ai.onnx"))
        if self.adjoint is not None and model_opset >= ADJOINT_MIN_OPSET:
            twins.append(("adjoint", self.adjoint, self.adjoint_imports))
        prefixes = self.scope_prefixes()
        # masks whose shape ONNX's inference gets wrong (the mask graph leaves their dims open)
        # reach the twins through a Reshape to the runtime's shape: a no-op at run time that
        # ONNX Runtime's load-time inference takes at its word
        open_dims = {o.name for o in self.mask.graph.output if not _known_shape(o)}
        b = GraphBuilder(model_opset, graph_names(self.mask.graph))
        # one initializer per weight: a twin's stub of data the graph already has is renamed to
        # the one there (ONNX Runtime would otherwise make a session copy for each name)
        stubs = {_stub_key(t): t.name for t in graph.initializer if _stub_key(t)}
        for role, twin, imports in twins:
            prefix = prefixes[role]
            twin = onnx.compose.add_prefix(twin, prefix)
            feeds = {f"{prefix}{name}": source for name, source in imports.items()}
            assert set(feeds.values()) <= mask_outputs
            start = len(b.nodes)
            for vi in twin.graph.input:
                if feeds.get(vi.name) in open_dims:
                    shape = _vi_type(vi)[1]
                    b.op("Reshape", [feeds[vi.name], b.ints(shape)], outputs=[vi.name])
                    feeds[vi.name] = vi.name
            kept = []
            for t in twin.graph.initializer:
                key = _stub_key(t)
                if key in stubs:
                    feeds[t.name] = stubs[key]
                else:
                    kept.append(t)
                    if key:
                        stubs[key] = t.name
            for node in twin.graph.node:
                node.input[:] = [feeds.get(i, i) for i in node.input]
            graph.node.extend(b.nodes[start:])
            graph.node.extend(twin.graph.node)
            graph.initializer.extend(kept)
            graph.input.extend(i for i in twin.graph.input if i.name not in feeds)
            graph.output.extend(twin.graph.output)
        graph.initializer.extend(b.initializers.values())
        graph.name = "scope"
        return _model_like(self.mask, graph, "scope")


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
        return _vi(name, *self.mask_type(source))

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

    def __init__(self, model: AnalyzedModel, wrt: str):
        self.model, self.wrt = model, wrt
        self.analysis = Analysis(model, wrt)
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
        ctx = MaskContext(m, self._mb)
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
        return graph

    def _inference_fixes(self) -> dict[str, tuple[str, list[onnx.NodeProto]]]:
        """For each tensor whose shape ONNX's inference gets wrong (`inference_mismatches`): a
        name for the node's own output and a Reshape of it to the runtime's shape under the
        tensor's name (a no-op at run time, and the constant shape is what inference sees), so
        that every node after it in the mask graph, the model's and the rules', is inferred
        with the runtime's shape."""
        fixes, b = {}, self._mb
        for name, shape in self.model.inference_mismatches.items():
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
        graph.output.extend(
            _vi(n, dtype, [None] * len(shape)) for n, (dtype, shape) in facts.items()
        )
        try:
            inferred = onnx.shape_inference.infer_shapes(_model_like(m.model, graph, "mask"))
            known = [vi for vi in inferred.graph.output if _known_shape(vi)]
            contradicted = {vi.name for vi in known if _vi_type(vi)[1] != facts[vi.name][1]}
        except Exception:  # (inference gives up on some models: then it contradicts nothing)
            contradicted = set()
        for vi in graph.output:
            if vi.name not in contradicted:
                vi.CopyFrom(_vi(vi.name, *facts[vi.name]))
        return _model_like(m.model, graph, "mask")

    # -- linear and affine twins ---------------------------------------------------------------
    def _twin(self, affine: bool):
        m, walk = self.model, self.walk
        b = GraphBuilder(m.opset, walk.taken | {self.probe})
        x_shape, x_dtype = m.shape(self.wrt), m.dtype(self.wrt)
        if affine:  # the affine twin at z = 0 gives the bias image
            probe = b.const(np.zeros((1, *x_shape), x_dtype), hint="zero_probe")
        else:
            probe = self.probe
        c = LinearContext(m, self.wrt, b, probe, affine)
        walk.visit(c, b, lambda rule, node, c: rule.linear(node, c))
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
            outputs.append(_vi(out, dtype, [1 if affine else "K", *shape]))
        inputs = [] if affine else [_vi(probe, x_dtype, ["K", *x_shape])]
        inputs += [walk.graph_input(name, source) for name, source in c.imports.items()]
        nodes = b.nodes
        if not affine:
            nodes = fold_frozen_factors(nodes, [probe], m.outputs, b.fresh)
        graph = helper.make_graph(
            nodes, "bias" if affine else "linear", inputs, outputs, list(b.initializers.values())
        )
        model = _model_like(m.model, graph, "bias" if affine else "linear")
        return model, dict(c.imports), dict(c.env)

    def _adjoint(self):
        """The adjoint graph: output-space probes w (one input per model output) -> A_x^T w."""
        m, walk = self.model, self.walk
        b = GraphBuilder(max(m.opset, ADJOINT_MIN_OPSET), walk.taken)
        single = len(m.outputs) == 1
        probes = {o: b.fresh(PROBE if single else f"{PROBE}:{o}") for o in m.outputs}
        seeds = {o: p for o, p in probes.items() if o in self.analysis.lin}
        a = AdjointContext(m, self.wrt, b, seeds or probes)
        walk.visit(
            a,
            b,
            lambda rule, node, a: rule.adjoint(node, a),
            reverse=True,
            skip=lambda a: all(a.grad(j) is None for j in a.plan.lin_outputs),
            what="adjoint",
        )
        x_shape, x_dtype = m.shape(self.wrt), m.dtype(self.wrt)
        result = a.total(self.wrt) if seeds else None
        if result is None:
            result = a.zeros(x_shape, x_dtype)
        out = b.op("Identity", [result], outputs=[self.wrt])
        inputs = [_vi(p, m.dtype(o), ["K", *m.shape(o)]) for o, p in probes.items()]
        inputs += [walk.graph_input(name, source) for name, source in a.imports.items()]
        graph = helper.make_graph(
            fold_frozen_factors(b.nodes, probes.values(), [out], b.fresh),
            "adjoint",
            inputs,
            [_vi(out, x_dtype, ["K", *x_shape])],
            list(b.initializers.values()),
        )
        model = _model_like(m.model, graph, "adjoint", min_opset=b.opset)
        return model, dict(a.imports), probes

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
        sess = _session(_model_like(m.model, graph, "mask"), "mask graph", m.weights)
        values = sess.run(made, m.analysis_feeds())
        return {o: (v.dtype, list(v.shape)) for o, v in zip(made, values)}

    def _manifest(self, records, mask_model) -> dict:
        types = {o.name: _vi_type(o) for o in mask_model.graph.output}
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
            "input_shapes": {k: list(v) for k, v in self.model.input_shapes.items()},
            "outputs": self.model.outputs,
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
    c = LinearContext(m, walk.wrt, b, probe, affine=False)
    labels = []

    def emit(rule, node, c):
        position = len(labels)
        labels.append(node_label(node, c.index))
        c.affine = False
        rule.linear(node, c)
        plain = {j: c.env[node.output[j]] for j in c.plan.lin_outputs}
        c.affine = True
        rule.linear(node, c)
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
        outputs.append(_vi(out, m.dtype(name), ["K", *m.shape(name)]))
    inputs = [_vi(selector, x_dtype, ["K", len(labels)])]
    inputs += [walk.graph_input(name, source) for name, source in c.imports.items()]
    graph = helper.make_graph(
        b.nodes, "bias_layers", inputs, outputs, list(b.initializers.values())
    )
    model = _model_like(m.model, graph, "bias by layer")
    m.weights.externalize(model.graph)
    validate_graph(model, "bias-by-layer graph", m.weights)
    return model, dict(c.imports), labels


def _session(model: onnx.ModelProto, role: str, weights: Weights | None = None):
    """A CPU session of one of onnxscope's graphs (no graph optimizations: only loading is
    checked), its stubs fed from `weights`, or a ModelError naming the graph."""
    from ..runtime.sessions import ort, session_options

    def options():
        opts = session_options(optimize=False)
        opts.enable_mem_pattern = False  # (see AnalyzedModel._run_once)
        return opts

    try:
        if weights is None:
            return ort.InferenceSession(
                model.SerializeToString(), options(), providers=["CPUExecutionProvider"]
            )
        return weights.session(model, options, ["CPUExecutionProvider"], ort.InferenceSession)
    except Exception as exc:
        raise ModelError(_invalid(role, "does not load in ONNX Runtime", exc)) from None


def _invalid(role: str, what: str, exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"The {role} onnxscope built for this model {what} ({first}); nothing was written. This "
        "is a bug in onnxscope: please report it with the model."
    )


def validate_graph(model: onnx.ModelProto, role: str, weights: Weights | None = None) -> None:
    """The ONNX checker, then an ONNX Runtime session: a ModelError naming `role` if either
    fails. (The checker's full check is not the arbiter: ONNX's shape inference disagrees with
    the runtime on some ops, and the session runs the runtime's.)"""
    try:
        onnx.checker.check_model(checkable(model))  # (stubs as inputs: it cannot see their data)
    except Exception as exc:
        # deprecated ops the model itself uses (GroupNormalization-18, Upsample) still run
        if "deprecated" not in str(exc).lower():
            raise ModelError(_invalid(role, "is not valid ONNX", exc)) from None
    _session(model, role, weights)


def _stub_key(t: onnx.TensorProto) -> tuple | None:
    """Where an external-data initializer's data lies (None for inline data)."""
    if t.data_location != onnx.TensorProto.EXTERNAL:
        return None
    return tuple(sorted((e.key, e.value) for e in t.external_data))


def _outputs_of(nodes) -> list[str]:
    return [o for n in nodes for o in n.output if o]


def _vi(name: str, dtype, shape) -> onnx.ValueInfoProto:  # shape None: dtype only
    return helper.make_tensor_value_info(
        name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape
    )


def _known_shape(vi: onnx.ValueInfoProto) -> bool:
    t = vi.type.tensor_type
    return t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim)


def _vi_type(vi: onnx.ValueInfoProto) -> tuple[np.dtype, list]:
    t = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
    if not t.elem_type:
        return np.dtype("O"), dims
    return np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)), dims


def _model_like(
    original: onnx.ModelProto, graph: onnx.GraphProto, role: str, min_opset: int = 0
) -> onnx.ModelProto:
    imports = [
        helper.make_opsetid(
            i.domain, max(i.version, min_opset) if i.domain in ("", "ai.onnx") else i.version
        )
        for i in original.opset_import
    ]
    model = helper.make_model(graph, opset_imports=imports)
    # IR 4 lets initializers be other than graph inputs (the rules add constants)
    model.ir_version = max(original.ir_version, 8 if min_opset >= 16 else 4)
    model.producer_name = "onnxscope"
    model.doc_string = f"onnxscope {role} graph"
    del model.metadata_props[:]
    return model


def rewrite(model: AnalyzedModel, wrt: str) -> Artifacts:
    return Rewrite(model, wrt).build()


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
    from ..graph.model import graph_inputs, input_spec

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
