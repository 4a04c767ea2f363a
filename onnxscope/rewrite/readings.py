"""The reading graphs: one plain ONNX model per question, each answered in one ONNX Runtime run
with the masks never leaving it (for servers: `onnxscope serve`, a Triton repository).

Each is the mask graph with the twins it needs appended (names prefixed `linear/`, `bias/`,
`adjoint/`: `Artifacts.scope_prefixes`) and a small head that turns the request into probes and
the twins' results into the answer. Tensor names below are the usual ones; where the model
already uses a name the graph takes the next free one (`name_1`), and `ReadingGraph.inputs` /
`outputs` (and the manifest's `readings`) say which. Every reading graph also returns F(x).

- `votes`:   x (and the model's other inputs), `classes` INT64 [K] (flat indices into the read
             output) -> F(x), `votes` [K, *x] = x ⊙ A_x^T e_k, `bias` [K] = c_x at those indices.
- `rows`:    x, `indices` [K] -> `rows` [K, *x] = A_x^T e_i (what output element i looks at).
- `columns`: x, `indices` [K] (flat indices into x) -> `columns` [K, *out] = A_x e_j (where
             input element j goes, in the read output).
- `scope`:   x, `linear/probe` z [K, *x] and `adjoint/<probe>` w [K', *out] (both optional: a
             zero-length default) -> F(x), `linear/<out>` = A_x z, `bias/<out>` = c_x,
             `adjoint/<x>` = A_x^T w, for every output.

Indices may be negative (from the end, as in the Python API); one out of range is an error of
the run (ScatterElements and Gather check their indices), never a silent zero.

The adjoint graph needs opset 16 (ScatterElements with reduction="add"). A model below it gets
its adjoint readings declared at 16 when no op it (or its linear and bias twins) uses means
otherwise there (`_changed_op`: same definition, or a change ONNX's version converter leaves
the node alone for). Otherwise votes and rows are unavailable, and `unavailable` says which op
changed; scope keeps A_x z and c_x.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnx.compose
from onnx import numpy_helper

from ..errors import InputError, OnnxscopeError
from ..graph.builder import GraphBuilder
from ..graph.model import graph_names
from .artifacts import (
    ADJOINT_MIN_OPSET,
    _stub_key,
    check_session,
    known_shape,
    model_like,
    stamp_mode,
    value_info,
    value_type,
)

if TYPE_CHECKING:
    from .artifacts import Artifacts

READINGS = ("votes", "rows", "columns", "scope")
NEEDS_ADJOINT = {"votes", "rows", "scope"}  # scope keeps A_x z and c_x without it
PROBES_MIN_OPSET = 9  # ConstantOfShape: probes from indices (ScatterElements from 11, see one_hot)
PUBLIC = ("classes", "indices", "votes", "bias", "rows", "columns")
K = "K"  # the free dim of probes and indices; "K_adjoint" for scope's adjoint probes


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name, dtype and shape (ints; a str is a free dim, which inputs
    sharing it must agree on); `optional` inputs have a zero-length default."""

    name: str
    dtype: np.dtype
    shape: tuple
    optional: bool = False

    def json(self) -> dict:
        entry = {"name": self.name, "dtype": np.dtype(self.dtype).name, "shape": list(self.shape)}
        return {**entry, "optional": True} if self.optional else entry


@dataclass
class ReadingGraph:
    """One reading graph and the tensors a client sends and gets (`inputs`, `outputs`: the
    graph has further outputs only where ONNX Runtime needs a tensor kept, see Rewrite)."""

    name: str
    model: onnx.ModelProto
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    output: str  # the model output the reading reads
    index_sizes: dict[str, int] = field(default_factory=dict)  # index input -> size it indexes
    names: dict[str, str] = field(default_factory=dict)  # usual name (PUBLIC) -> the graph's
    probe_default: int | None = 0  # scope: probes in an omitted probe's default (None: required)

    def json(self) -> dict:
        return {
            "file": f"{self.name}.onnx",
            "output": self.output,
            "names": self.names,
            "inputs": [s.json() for s in self.inputs],
            "outputs": [s.json() for s in self.outputs],
            **({"probe_default": self.probe_default} if self.name == "scope" else {}),
        }


def parse_readings(text: str | None) -> tuple[str, ...]:
    """--readings: 'votes,rows' -> ("votes", "rows"); '' -> (); None -> every reading."""
    if text is None:
        return READINGS
    readings = tuple(r.strip() for r in text.split(",") if r.strip())
    unknown = [r for r in readings if r not in READINGS]
    if unknown:
        raise InputError(f"Unknown reading '{unknown[0]}'; the readings are {list(READINGS)}.")
    return readings


def unavailable(artifacts: Artifacts) -> dict[str, str]:
    """Reading -> why the model cannot have it (no adjoint; an op defined otherwise at the opset
    the reading needs)."""
    missing = {}
    why = adjoint_unavailable(artifacts)
    if why is not None:
        missing.update(votes=why, rows=why)
    if _opset_for(artifacts, PROBES_MIN_OPSET)[0] is None:
        missing["columns"] = _opset_for(artifacts, PROBES_MIN_OPSET)[1]
    return missing


def adjoint_unavailable(artifacts: Artifacts) -> str | None:
    """Why graphs that join the adjoint to the mask graph cannot be made, or None."""
    if artifacts.adjoint is None:
        return f"the model has no adjoint graph ({artifacts.adjoint_error})"
    return _opset_for(artifacts, ADJOINT_MIN_OPSET)[1]


def _opset_for(artifacts: Artifacts, need: int) -> tuple[int | None, str | None]:
    """(the opset a graph joining the mask graph to nodes of opset `need` declares, None) or
    (None, why not): the model's own opset when it is `need` or later, else `need` where no op
    of the model and its twins is defined otherwise there."""
    opset = _model_opset(artifacts.mask)
    if opset >= need:
        return opset, None
    changed = _changed_op(artifacts, opset, need)
    if changed is None:
        return need, None
    return None, (
        f"it needs opset {need} and op {changed} is defined otherwise there than at the model's "
        f"opset {opset}: re-export the model at opset {need} or later"
    )


def reading_graphs(
    artifacts: Artifacts, output: str | None = None, only: Iterable[str] = READINGS
) -> dict[str, ReadingGraph]:
    """The reading graphs `only` names (an OnnxscopeError for one the model cannot have),
    reading `output` (default: the model's first)."""
    outputs = artifacts.manifest["outputs"]
    if output is None:
        output = outputs[0]
    elif output not in outputs:
        raise OnnxscopeError(f"Unknown output {output!r}; the model's outputs are {outputs}.")
    missing = unavailable(artifacts)
    graphs = {}
    for name in only:
        if name not in READINGS:
            raise OnnxscopeError(f"Unknown reading {name!r}; the readings are {list(READINGS)}.")
        if name in missing:
            raise OnnxscopeError(f"No {name} reading for this model: {missing[name]}.")
        graphs[name] = _BUILDERS[name](_Composer(artifacts, name), output)
        _name_the_mode(artifacts, graphs[name].model)
    return graphs


def scope_graph(artifacts: Artifacts) -> onnx.ModelProto:
    """scope.onnx (`Artifacts.scope`): the scope reading's graph."""
    return _name_the_mode(artifacts, _scope(_Composer(artifacts, "scope"), None).model)


def _name_the_mode(artifacts: Artifacts, model: onnx.ModelProto) -> onnx.ModelProto:
    """A tangent-mode reading graph says so in its metadata (secant graphs stay as they were)."""
    mode = artifacts.manifest.get("mode", "secant")
    if mode != "secant":
        stamp_mode(model, mode)
    return model


class _Composer:
    """The mask graph (its outputs: the model's, and tensors kept so that ORT reuses no buffer of
    an inferred size) with twins appended, their names prefixed; `b` adds the head's nodes."""

    def __init__(self, artifacts: Artifacts, name: str):
        self.arts, self.name = artifacts, name
        mask = artifacts.mask
        self.graph = onnx.GraphProto()
        self.graph.CopyFrom(mask.graph)
        del self.graph.output[:]
        m = artifacts.manifest
        kept = {*m["outputs"], *m.get("as_inferred", {}).values()}
        self.graph.output.extend(o for o in mask.graph.output if o.name in kept)
        self.model_outputs = {o.name: o for o in mask.graph.output if o.name in m["outputs"]}
        self.with_adjoint = name != "columns" and adjoint_unavailable(artifacts) is None
        if self.with_adjoint:
            self.opset = _opset_for(artifacts, ADJOINT_MIN_OPSET)[0]
        else:  # probes from indices need ConstantOfShape (9); ScatterElements (11) if it can
            self.opset = _opset_for(artifacts, 11)[0] or _model_opset(mask)
        self.prefixes = artifacts.scope_prefixes()
        self.b = GraphBuilder(self.opset, graph_names(mask.graph))
        # masks whose shape ONNX's inference gets wrong (the mask graph leaves their dims open)
        # reach the twins through a Reshape to the runtime's shape: a no-op at run time that
        # ONNX Runtime's load-time inference takes at its word
        self._open_dims = {o.name for o in mask.graph.output if not known_shape(o)}
        # one initializer per weight: a twin's stub of data the graph already has is renamed to
        # the one there (ONNX Runtime would otherwise make a session copy for each name)
        self._stubs = {_stub_key(t): t.name for t in self.graph.initializer if _stub_key(t)}
        # the graphs hold for the rewrite's input shapes only: the inputs say so
        for vi in _real_inputs(self.graph):
            _fix_shape(vi, m["input_shapes"][vi.name])
        self.inputs: list[TensorSpec] = [_spec(vi) for vi in _real_inputs(self.graph)]
        self.outputs = [TensorSpec(n, *self.shape_of(n)) for n in m["outputs"]]
        self.index_sizes: dict[str, int] = {}
        self._twin_outputs: dict[str, onnx.ValueInfoProto] = {}
        # the heads' public names, taken first: the usual ones unless the model has them
        self.public = {n: self.b.fresh(n) for n in PUBLIC}

    def twin(self, role: str, sources: dict[str, str] | None = None) -> str:
        """Append the `role` twin, its inputs fed by the mask graph's tensors or, by (prefixed)
        name, by `sources`; its other inputs (probes) become graph inputs. Returns the prefix."""
        a = self.arts
        twin, imports = {
            "linear": (a.linear, a.linear_imports),
            "bias": (a.bias, a.bias_imports),
            "adjoint": (a.adjoint, a.adjoint_imports),
        }[role]
        prefix = self.prefixes[role]
        twin = onnx.compose.add_prefix(twin, prefix)
        feeds = {f"{prefix}{name}": source for name, source in imports.items()}
        feeds.update(sources or {})
        b = self.b
        for vi in twin.graph.input:
            if feeds.get(vi.name) in self._open_dims:
                shape = value_type(vi)[1]
                b.op("Reshape", [feeds[vi.name], b.ints(shape)], outputs=[vi.name])
                feeds[vi.name] = vi.name
        kept = []
        for t in twin.graph.initializer:
            key = _stub_key(t)
            if key in self._stubs:
                feeds[t.name] = self._stubs[key]
            else:
                kept.append(t)
                if key:
                    self._stubs[key] = t.name
        for node in twin.graph.node:
            node.input[:] = [feeds.get(i, i) for i in node.input]
        # the head's nodes so far (the probes) and the Reshapes come before the twin's
        self.graph.node.extend(b.nodes)
        del b.nodes[:]
        self.graph.node.extend(twin.graph.node)
        self.graph.initializer.extend(kept)
        self.graph.input.extend(i for i in twin.graph.input if i.name not in feeds)
        b._taken.update(graph_names(twin.graph))
        # the twin's results; any other output is a tensor kept so that ORT reuses no buffer
        # of an inferred size, and stays an output of this graph too
        results = {*(prefix + o for o in a.manifest["outputs"]), prefix + a.manifest["wrt"]}
        self.graph.output.extend(o for o in twin.graph.output if o.name not in results)
        self._twin_outputs.update({o.name: o for o in twin.graph.output if o.name in results})
        return prefix

    def expose(self, tensor: str, free: str = K) -> None:
        """Make a twin's result a graph output under its own (prefixed) name, its free first
        dim named `free`."""
        vi = self._twin_outputs[tensor]
        first = vi.type.tensor_type.shape.dim[0]
        if not first.HasField("dim_value"):  # (c_x's first dim is 1)
            first.dim_param = free
        self.graph.output.append(vi)
        self.outputs.append(_spec(vi))

    def output(self, tensor: str, public: str, dtype, shape) -> str:
        """`tensor` as a new graph output under the `public` name (see PUBLIC)."""
        name = self.b.op("Identity", [tensor], outputs=[self.public[public]])
        self.graph.output.append(_value_info(name, dtype, shape))
        self.outputs.append(TensorSpec(name, np.dtype(dtype), tuple(shape)))
        return name

    def index_input(self, public: str, size: int) -> str:
        """A new INT64 [K] graph input of flat indices into a tensor of `size` elements."""
        name = self.public[public]
        self.graph.input.append(_value_info(name, np.int64, [K]))
        self.inputs.append(TensorSpec(name, np.dtype(np.int64), (K,)))
        self.index_sizes[name] = size
        return name

    def one_hot(self, indices: str, shape: Sequence[int], dtype) -> str:
        """[K, *shape] probes, probe k one at flat index indices[k] (negative: from the end)."""
        b, n = self.b, int(np.prod(shape))
        count = b.op("Shape", [indices], "count")
        zeros = self.zeros(count, [n], dtype)
        ones = self.zeros(count, [1], dtype, value=1)
        if b.opset < 11:  # Scatter-9: no negative indices, so count them from the end here
            negative = b.op(
                "Cast", [b.op("Less", [indices, b.ints([0])])], to=onnx.TensorProto.INT64
            )
            indices = b.op("Add", [indices, b.op("Mul", [negative, b.ints([n])])], "from_start")
        column = _unsqueeze(b, indices, 1)
        scatter = "ScatterElements" if b.opset >= 11 else "Scatter"
        hot = b.op(scatter, [zeros, column, ones], "one_hot", axis=1)
        # [K, n] -> [K, *shape]: a 0 in Reshape's shape keeps that dim (K, even when K = 0);
        # a shape computed from K would do as well at run time, but ONNX's inference (which ORT
        # applies at load) loses the probes' rank through such a Reshape
        return b.op("Reshape", [hot, b.ints([0, *shape])], "probes")

    def zeros(self, count: str, shape: Sequence[int], dtype, value=0) -> str:
        """[K, *shape] filled with `value`, K the 1-element tensor `count`."""
        b = self.b
        full = b.op("Concat", [count, b.ints(shape)], axis=0) if shape else count
        fill = numpy_helper.from_array(np.full(1, value, dtype=dtype))
        return b.op("ConstantOfShape", [full], "zeros" if not value else "ones", value=fill)

    def probe_default(self, name: str, free: str = K) -> None:
        """Give graph input `name` a zero-length default (an initializer of the same name); its
        first dim is the free dim `free`."""
        (vi,) = [i for i in self.graph.input if i.name == name]
        vi.type.tensor_type.shape.dim[0].dim_param = free
        spec = _spec(vi)
        zeros = np.zeros([0, *spec.shape[1:]], dtype=spec.dtype)
        self.graph.initializer.append(numpy_helper.from_array(zeros, name))
        self.inputs.append(TensorSpec(spec.name, spec.dtype, spec.shape, optional=True))

    def finish(self, output: str) -> ReadingGraph:
        graph = self.graph
        graph.node.extend(self.b.nodes)
        graph.initializer.extend(self.b.initializers.values())
        graph.name = self.name
        model = model_like(self.arts.mask, graph, self.name, min_opset=self.opset)
        used = {s.name for s in [*self.inputs, *self.outputs]}
        names = {usual: name for usual, name in self.public.items() if name in used}
        return ReadingGraph(
            self.name, model, self.inputs, self.outputs, output, dict(self.index_sizes), names
        )

    # -- what the heads need of the artifacts ----------------------------------------------------
    @property
    def x(self) -> tuple[str, np.dtype, list[int]]:
        wrt = self.arts.manifest["wrt"]
        (spec,) = [s for s in self.inputs if s.name == wrt]
        return wrt, spec.dtype, list(spec.shape)

    def shape_of(self, output: str) -> tuple[np.dtype, tuple]:
        """A model output's dtype and shape (the analysis's: its value info may be open)."""
        spec = _spec(self.model_outputs[output])
        if self.arts.walk is not None:
            return spec.dtype, tuple(self.arts.walk.model.shape(output))
        return spec.dtype, spec.shape

    def adjoint_of(self, indices: str, output: str) -> str:
        """A_x^T e_i, [K, *x], for the flat indices `indices` into `output`; every other output's
        probe is zero."""
        prefix = self.prefixes["adjoint"]
        count = self.b.op("Shape", [indices], "count")
        sources = {}
        for o, probe in self.arts.adjoint_probes.items():
            dtype, shape = self.shape_of(o)
            hot = self.one_hot(indices, shape, dtype) if o == output else None
            sources[prefix + probe] = hot or self.zeros(count, shape, dtype)
        self.twin("adjoint", sources)
        return prefix + self.arts.manifest["wrt"]


def _votes(c: _Composer, output: str) -> ReadingGraph:
    dtype, shape = c.shape_of(output)
    classes = c.index_input("classes", int(np.prod(shape)))
    rows = c.adjoint_of(classes, output)
    x, x_dtype, x_shape = c.x
    c.output(c.b.op("Mul", [rows, x], "x_times_rows"), "votes", x_dtype, [K, *x_shape])
    prefix = c.twin("bias")
    flat = c.b.op("Reshape", [prefix + output, c.b.ints([-1])], "bias_flat")
    c.output(c.b.op("Gather", [flat, classes], "bias_at", axis=0), "bias", dtype, [K])
    return c.finish(output)


def _rows(c: _Composer, output: str) -> ReadingGraph:
    dtype, shape = c.shape_of(output)
    indices = c.index_input("indices", int(np.prod(shape)))
    x, x_dtype, x_shape = c.x
    c.output(c.adjoint_of(indices, output), "rows", x_dtype, [K, *x_shape])
    return c.finish(output)


def _columns(c: _Composer, output: str) -> ReadingGraph:
    x, x_dtype, x_shape = c.x
    indices = c.index_input("indices", int(np.prod(x_shape)))
    probe = c.prefixes["linear"] + c.arts.probe
    prefix = c.twin("linear", {probe: c.one_hot(indices, x_shape, x_dtype)})
    dtype, shape = c.shape_of(output)
    c.output(prefix + output, "columns", dtype, [K, *shape])
    return c.finish(output)


def _scope(c: _Composer, output: str | None) -> ReadingGraph:
    arts = c.arts
    linear = c.twin("linear")
    optional = [linear + arts.probe]
    bias = c.twin("bias")
    names = arts.manifest["outputs"]
    for o in names:
        c.expose(linear + o)
    for o in names:
        c.expose(bias + o)
    if c.with_adjoint:
        adjoint = c.twin("adjoint")
        optional += [adjoint + p for p in arts.adjoint_probes.values()]
        c.expose(adjoint + arts.manifest["wrt"], "K_adjoint")
    for i, name in enumerate(optional):
        c.probe_default(name, K if i == 0 else "K_adjoint")
    c.inputs = _ordered(c.inputs, c.graph.input)
    reading = c.finish(output or names[0])
    if not _runs_without_probes(reading.model, arts):
        # some ONNX Runtime kernels refuse an empty batch (Pad in wrap mode), and its load-time
        # inference takes the default's shape (K = 0) for the input's: then the probes are
        # required inputs
        graph = reading.model.graph
        kept = [t for t in graph.initializer if t.name not in optional]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        reading.inputs = [TensorSpec(s.name, s.dtype, s.shape) for s in reading.inputs]
        reading.probe_default = None
    return reading


def _runs_without_probes(model: onnx.ModelProto, arts: Artifacts) -> bool:
    """Whether the scope graph loads and runs on the analysis inputs with its probes left out
    (their zero-length defaults); True when the analysis is not at hand (artifacts from files).
    Without graph optimizations: what fails is ONNX's load-time inference or a kernel, and an
    optimized session of a 10k-node model's scope graph took 40 s to make (5 s without)."""
    if arts.walk is None:
        return True
    try:
        session = check_session(model, "scope graph (scope.onnx)", arts.weights)
        session.run(None, arts.walk.model.analysis_feeds())
    except Exception:
        return False
    return True


_BUILDERS = {"votes": _votes, "rows": _rows, "columns": _columns, "scope": _scope}


def _ordered(specs: list[TensorSpec], inputs) -> list[TensorSpec]:
    """The specs in graph-input order, an optional one replacing its plain entry."""
    by_name = {}
    for s in specs:
        if s.name not in by_name or s.optional:
            by_name[s.name] = s
    return [by_name[i.name] for i in inputs if i.name in by_name] + [
        s for s in by_name.values() if s.name not in {i.name for i in inputs}
    ]


def _real_inputs(graph: onnx.GraphProto):
    inits = {t.name for t in graph.initializer}
    return [i for i in graph.input if i.name not in inits]


def _spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    dtype, dims = value_type(vi)
    return TensorSpec(vi.name, dtype, tuple(d if d != "" else K for d in dims))


def _fix_shape(vi: onnx.ValueInfoProto, shape) -> None:
    dims = vi.type.tensor_type.shape
    del dims.dim[:]
    for d in shape:
        dims.dim.add().dim_value = int(d)


def _value_info(name: str, dtype, shape) -> onnx.ValueInfoProto:
    return value_info(name, dtype, list(shape))


def _unsqueeze(b: GraphBuilder, x: str, axis: int) -> str:
    if b.opset >= 13:
        return b.op("Unsqueeze", [x, b.ints([axis], "axes")], "column")
    return b.op("Unsqueeze", [x], "column", axes=[axis])


def _model_opset(model: onnx.ModelProto) -> int:
    return next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))


def _changed_op(artifacts: Artifacts, model_opset: int, opset: int) -> str | None:
    """The first op of the mask, linear and bias graphs that would compute otherwise declared
    at `opset` than at `model_opset`, or None. An op whose definition is the same at both is
    unchanged; of the others, ONNX's version converter knows which changed only in ways that
    leave the node's meaning as it was (more types, a new optional input): there it leaves the
    node as it is, and where it rewrites the node (Softmax 12 -> 13) or cannot convert, the
    op changed."""
    import onnx.version_converter

    for model in (artifacts.mask, artifacts.linear, artifacts.bias):
        moved = [n for n in _nodes(model.graph) if _definition_moved(n, model_opset, opset)]
        if not moved:
            continue
        try:
            converted = onnx.version_converter.convert_version(model, opset)
        except Exception:
            return moved[0].op_type
        for node, new in zip(model.graph.node, converted.graph.node):
            if _node_key(node) != _node_key(new):
                return node.op_type
        if len(model.graph.node) != len(converted.graph.node):
            return moved[0].op_type
    return None


def _definition_moved(node: onnx.NodeProto, model_opset: int, opset: int) -> bool:
    if node.domain not in ("", "ai.onnx"):
        return False
    try:
        old = onnx.defs.get_schema(node.op_type, model_opset).since_version
        return old != onnx.defs.get_schema(node.op_type, opset).since_version
    except onnx.defs.SchemaError:
        return True


def _node_key(node: onnx.NodeProto) -> tuple:
    attrs = sorted(a.SerializeToString(deterministic=True) for a in node.attribute)
    return node.op_type, node.domain, list(node.input), list(node.output), attrs


def _nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _nodes(sub)
