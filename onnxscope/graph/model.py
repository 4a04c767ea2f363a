"""Loading an ONNX model and the static facts the rewriter needs about it.

For one choice of input shapes, `AnalyzedModel` knows the shape and dtype of every tensor and the
value of every *static* tensor (initializers, Constant nodes and anything computed only from them
and from shapes). Both come from one ONNX Runtime run of the original graph with every
intermediate tensor exposed, so they are exactly what the runtime computes, even where ONNX shape
inference gives up. Tensors that depend on the data of a graph input are *runtime* tensors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import InputError, ModelError
from .ops import CONTROL_FLOW_OPS, RANDOM_OPS, SHAPE_ONLY_OPS

if TYPE_CHECKING:
    from .weights import Weights

SUPPORTED_OPSETS = range(9, 23)  # 9-10 for Upsample-era exports


def load_model(source: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    """Read a model (file path or ModelProto) and validate it; never writes to the source."""
    return _load(source, light=False)[0]


def load_light(source: str | os.PathLike | onnx.ModelProto) -> tuple[onnx.ModelProto, Weights]:
    """`load_model`, and the model's weight store (onnxscope.graph.weights), for a model with large
    weights the store's light model: stubs in their place, the weights held once, by the store
    (the model as read is freed). The caller keeps the store as long as it uses the model."""
    return _load(source, light=True)


def _load(source, light: bool) -> tuple[onnx.ModelProto, Weights | None]:
    from .weights import checkable, read_light, weights_for

    store = None
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
    else:
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise ModelError(f"Model file '{path}' does not exist or is not a file.")
        read = read_light(path) if light else None  # large inline weights: read once, in place
        try:
            model, store = read or (onnx.load(path), None)  # external data: from its folder
        except Exception as exc:  # protobuf raises several types for corrupt files
            raise ModelError(
                f"'{path}' could not be read as an ONNX model ({type(exc).__name__}: {exc}). "
                "Is it a complete .onnx file (and its external data next to it)?"
            ) from None
    if not model.graph.node:
        raise ModelError("The model has no nodes; is it an ONNX model file?")
    if store is None:
        model = _upgraded(model)
    try:
        # on the path when there is one and the model is wanted whole (the checker serializes a
        # proto, which fails past 2 GB, and the path lets it check the external data files,
        # which onnx.load has read here); else on the model with its large weights left out,
        # which is small whatever their size (its checker in C++ would hold another copy)
        deprecated = _deprecated_nodes(model)
        if light or isinstance(source, onnx.ModelProto) or deprecated:
            store = store or weights_for(model)
            onnx.checker.check_model(_checkable_as_current(checkable(store.light), deprecated))
        else:
            onnx.checker.check_model(os.fspath(source))
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"The model is not valid ONNX: {exc}".strip()) from None
    opset = default_opset(model)
    if opset not in SUPPORTED_OPSETS:
        raise ModelError(
            f"The model uses ONNX opset {opset}; onnxscope supports opsets "
            f"{SUPPORTED_OPSETS.start}-{SUPPORTED_OPSETS.stop - 1}. Convert it first, e.g. with "
            "onnx.version_converter.convert_version(model, 17), and check the converted model's "
            "outputs against the original (the converter changes some ops' semantics)."
        )
    if light:
        return store.release(), store
    return model, store


def _upgraded(model: onnx.ModelProto) -> onnx.ModelProto:
    """An old file brought to what onnxscope reads, its outputs checked equal to the file's
    (ONNX Runtime, at the static input shapes, free dims 1, random inputs): IR < 4 (whose
    initializers need not be listed as inputs from IR 4 on) to IR 4, opsets below 9 converted to
    9 by ONNX's version converter. Said in a warning; the file itself is never written."""
    old_ir, opset = model.ir_version, default_opset(model)
    if old_ir >= 4 and opset >= SUPPORTED_OPSETS.start:
        return model
    new = onnx.ModelProto()
    new.CopyFrom(model)
    new.ir_version = max(new.ir_version, 4)
    done = [f"IR {old_ir} -> {new.ir_version}"] if old_ir < 4 else []
    if opset < SUPPORTED_OPSETS.start:
        from onnx import version_converter

        try:
            new = version_converter.convert_version(new, SUPPORTED_OPSETS.start)
        except Exception as exc:
            raise ModelError(
                f"The model uses ONNX opset {opset}, and ONNX's version converter could not "
                f"bring it to {SUPPORTED_OPSETS.start}: {str(exc).splitlines()[0]}"
            ) from None
        new.ir_version = max(new.ir_version, 4)
        done.append(f"opset {opset} -> {SUPPORTED_OPSETS.start}")
    _check_same_outputs(model, new, ", ".join(done))
    import warnings

    warnings.warn(
        f"An old model file: read as {', '.join(done)} (outputs checked equal to the file's).",
        stacklevel=4,
    )
    return new


def _check_same_outputs(old: onnx.ModelProto, new: onnx.ModelProto, what: str) -> None:
    from ..runtime.sessions import ort, session_options

    inputs = graph_inputs(new)
    rng = np.random.default_rng(0)
    feeds = {}
    for vi in inputs:
        dims, dtype = input_spec(vi)
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in dims]
        feeds[vi.name] = (
            rng.standard_normal(shape).astype(dtype)
            if np.issubdtype(dtype, np.floating)
            else np.zeros(shape, dtype)
        )
    runs = []
    for model in (old, new):
        try:
            session = ort.InferenceSession(
                model.SerializeToString(), session_options(optimize=False), ["CPUExecutionProvider"]
            )
            runs.append(session.run(None, feeds))
        except Exception as exc:
            raise ModelError(
                f"An old model file ({what}): ONNX Runtime could not run "
                f"{'it' if model is old else 'the upgraded model'} to check the upgrade: "
                f"{str(exc).splitlines()[0]}"
            ) from None
    for a, b in zip(*runs):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape or np.max(np.abs(a - b), initial=0) > 1e-6 * max(
            np.max(np.abs(a), initial=0), 1e-30
        ):
            raise ModelError(
                f"An old model file ({what}): the upgraded model's outputs differ from the "
                "file's; not read. Convert it yourself and check the outputs."
            )


DEPRECATED_DOMAIN = "onnxscope.deprecated"  # where the checker is shown deprecated ops


def _deprecated_nodes(model: onnx.ModelProto) -> list[int]:
    """Nodes of the main graph whose op is deprecated at the model's opset (Upsample from 10,
    GroupNormalization-18): the checker refuses them, and ONNX Runtime runs some of them
    (GroupNormalization-18)."""
    opset, found = default_opset(model), []
    for i, node in enumerate(model.graph.node):
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            if onnx.defs.get_schema(node.op_type, opset, "").deprecated:
                found.append(i)
        except onnx.defs.SchemaError:  # an unknown op: the checker names it
            continue
    return found


def _checkable_as_current(model: onnx.ModelProto, deprecated: list[int]) -> onnx.ModelProto:
    """`model` with its deprecated nodes moved to a domain of their own, which the checker does
    not look into, so that it checks everything else (it stops at the first error, and a
    deprecated op would hide the rest)."""
    if not deprecated:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i in deprecated:
        out.graph.node[i].domain = DEPRECATED_DOMAIN
    out.opset_import.append(helper.make_opsetid(DEPRECATED_DOMAIN, 1))
    return out


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ModelError("The model imports no version of the default ONNX operator set.")


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The real inputs (old exporters also list initializers as inputs)."""
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def input_spec(vi: onnx.ValueInfoProto) -> tuple[list[int | str | None], np.dtype]:
    t = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
    return dims, np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))


def input_feeds(
    specs: Mapping[str, tuple[list, np.dtype]],
    given: Mapping[str, np.ndarray],
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    *,
    seed: int = 0,
    missing: str = "No value given for the model input(s) {names}.",
) -> dict[str, np.ndarray]:
    """Values for the inputs `specs` ({name: (dims, dtype)}, in the model's order): the `given`
    arrays as they are, in the order given (names not in `specs` are left out), then for each
    input not given, in the model's order, standard normal floats drawn from one generator
    seeded `seed`, or zeros for other dtypes, of the shape `shapes[name]`. Without `shapes`,
    every input must be given: else an InputError, `missing` with the names not given."""
    fed = {name: value for name, value in given.items() if name in specs}
    absent = [name for name in specs if name not in fed]
    if shapes is None:
        if absent:
            raise InputError(missing.format(names=absent))
        return fed
    rng = np.random.default_rng(seed)
    for name in absent:
        _, dtype = specs[name]
        if np.issubdtype(dtype, np.floating):
            fed[name] = rng.standard_normal(shapes[name]).astype(dtype)
        else:
            fed[name] = np.zeros(shapes[name], dtype)
    return fed


def resolve_input_shapes(
    model: onnx.ModelProto, given: Mapping[str, tuple[int, ...]]
) -> dict[str, tuple[int, ...]]:
    """Concrete shapes of all graph inputs: given ones, else static dims (free batch dim: 1)."""
    shapes = {}
    names = [vi.name for vi in graph_inputs(model)]
    unknown = set(given) - set(names)
    if unknown:
        raise InputError(
            f"Unknown input name(s) {sorted(unknown)}; the model's inputs are {names}."
        )
    for vi in graph_inputs(model):
        dims, _ = input_spec(vi)
        if vi.name in given:
            shape = tuple(int(d) for d in given[vi.name])
            fixed = [(i, d) for i, d in enumerate(dims) if isinstance(d, int) and d > 0]
            if len(shape) != len(dims) or any(shape[i] != d for i, d in fixed):
                raise InputError(
                    f"Input '{vi.name}' has shape {shape}, but the model expects "
                    f"{format_dims(dims)}."
                )
            shapes[vi.name] = shape
            continue
        free = [i for i, d in enumerate(dims) if not (isinstance(d, int) and d > 0)]
        sized = [i for i in free if not batch_like(dims, i)]
        if sized:
            named = ", ".join(f"'{dims[i] or '?'}' (axis {i})" for i in sized)
            example = "x".join(
                "1" if batch_like(dims, i) else (str(d) if i not in free else f"<{d or 'size'}>")
                for i, d in enumerate(dims)
            )
            raise InputError(
                f"Input '{vi.name}' {format_dims(dims)} has free dimension(s) {named}: give "
                f"them with --input-shape {vi.name}={example}."
            )
        shapes[vi.name] = tuple(1 if i in free else int(d) for i, d in enumerate(dims))
    return shapes


def batch_like(dims, axis: int) -> bool:
    """Whether free dimension `axis` of an input is a batch: axis 0, or one named like a batch
    ('batch', 'batch_size', 'N', 'unk__batch'...); those default to 1."""
    name = dims[axis] if isinstance(dims[axis], str) else ""
    return axis == 0 or "batch" in name.lower() or name in ("N", "n")


def batch_defaults(model: onnx.ModelProto, given) -> list[str]:
    """'x' axis 0 ('N') for each free batch-like dimension of an input not in `given` (each is
    read as 1)."""
    found = []
    for vi in graph_inputs(model):
        if vi.name in given:
            continue
        dims, _ = input_spec(vi)
        for i, d in enumerate(dims):
            if not (isinstance(d, int) and d > 0) and batch_like(dims, i):
                found.append(f"'{vi.name}' axis {i} ({d or 'unnamed'})")
    return found


def format_dims(dims) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def rank(self) -> int:
        return len(self.shape)


class AnalyzedModel:
    """A model plus, for fixed input shapes, every tensor's shape/dtype and every static value."""

    def __init__(
        self,
        model: onnx.ModelProto,
        input_shapes: Mapping[str, tuple[int, ...]],
        values: Mapping[str, np.ndarray] | None = None,
    ):
        from .weights import weights_for

        self.model = model
        # the model with its large initializers as stubs of one shared store (graph/weights.py):
        # every graph made from it refers to the weights instead of copying them
        self.weights = weights_for(model)
        self.graph = self.weights.light.graph
        self.opset = default_opset(model)
        self.input_shapes = dict(input_shapes)
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.inputs = [vi.name for vi in graph_inputs(model)]
        self.outputs = list(dict.fromkeys(o.name for o in self.graph.output))  # each once
        self.nodes = list(self.graph.node)
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.nodes:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self._check_order()
        self.runtime = self._runtime_tensors()
        self._values = dict(values or {})  # real input values for the analysis run, if known
        self._feeds: dict[str, np.ndarray] | None = None
        self._facts: tuple[dict[str, TensorInfo], dict[str, np.ndarray]] | None = None
        self._mismatches: dict[str, tuple[int, ...]] | None = None

    @property
    def info(self) -> dict[str, TensorInfo]:
        """Shape and dtype of every tensor (from one run of the model, made on first use)."""
        if self._facts is None:
            self._facts = self._run_once()
        return self._facts[0]

    # -- facts -------------------------------------------------------------------------------
    def shape(self, name: str) -> tuple[int, ...]:
        return self._info(name).shape

    def dtype(self, name: str) -> np.dtype:
        return self._info(name).dtype

    def _info(self, name: str) -> TensorInfo:
        try:
            return self.info[name]
        except KeyError:
            raise ModelError(f"The shape of tensor '{name}' could not be determined.") from None

    def is_static(self, name: str) -> bool:
        return bool(name) and name not in self.runtime

    def static_value(self, name: str) -> np.ndarray:
        """The value of a static tensor (weights, constants, shape computations)."""
        if name in self.initializers:
            return self.weights.value(self.initializers[name])
        self.info  # noqa: B018  (makes sure the run happened)
        if name in self._facts[1]:
            return self._facts[1][name]
        raise ModelError(f"Tensor '{name}' depends on the input data, but a constant is needed.")

    # -- analysis ----------------------------------------------------------------------------
    def _check_order(self) -> None:
        known = set(self.inputs) | set(self.initializers) | {""}
        for n in self.nodes:
            missing = [i for i in n.input if i not in known]
            if missing:
                raise ModelError(
                    f"Node '{n.name}' ({n.op_type}) reads {missing} before they are produced; "
                    "the graph is not in topological order."
                )
            known.update(n.output)

    def _runtime_tensors(self) -> set[str]:
        runtime = set(self.inputs)
        for n in self.nodes:
            if n.op_type in SHAPE_ONLY_OPS:
                continue
            if (
                n.op_type in RANDOM_OPS
                or any(i in runtime for i in n.input)
                or (n.op_type in CONTROL_FLOW_OPS and subgraph_reads(n, runtime))
            ):
                runtime.update(o for o in n.output if o)
        return runtime

    def _run_once(self) -> tuple[dict[str, TensorInfo], dict[str, np.ndarray]]:
        """Shapes, dtypes and constants from one ONNX Runtime run with every tensor exposed.

        Nothing is taken from ONNX shape inference or from what the model declares: declared
        value_info and output shapes can be stale (ONNX Runtime runs such a model with a
        warning), and ONNX's inference disagrees with the runtime on some ops (a ceil-mode pool
        whose last window would start in the padding: ONNX Runtime drops it, as the spec says).
        Exposing every tensor holds the batch-1 activations at once: one probe's share of what a
        run of the linear graph holds for each of its K probes.
        """
        from ..runtime.sessions import ort, session_options

        fixed = self._at_input_shapes()
        graph = fixed.graph
        # every tensor once, untyped (ONNX Runtime types outputs itself); no declared shapes
        exposed = [*self.outputs, *(o for n in self.nodes for o in n.output if o)]
        graph.output.extend(onnx.ValueInfoProto(name=o) for o in dict.fromkeys(exposed))
        feeds = self.analysis_feeds()

        def options():
            opts = session_options(optimize=False)
            # ORT's memory-pattern planning costs O(n^2) in leaf outputs on the first run (20k
            # masks: 10 s); one run gains nothing from it
            opts.enable_mem_pattern = False
            return opts

        try:
            sess = self.weights.session(
                fixed, options, ["CPUExecutionProvider"], make=ort.InferenceSession
            )
            names = [o.name for o in sess.get_outputs()]
            values = sess.run(names, feeds)
        except Exception as exc:
            raise ModelError(
                f"ONNX Runtime cannot run this model with input shapes {self.input_shapes}: "
                f"{str(exc).splitlines()[0]}"
            ) from None
        info, static = {}, {}
        for name, value in zip(names, values):
            if not isinstance(value, np.ndarray):  # a sequence or map: no tensor facts
                continue
            info[name] = TensorInfo(tuple(value.shape), value.dtype)
            if name not in self.runtime:
                static[name] = value
        for name, t in self.initializers.items():
            info[name] = TensorInfo(
                tuple(t.dims), np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type))
            )
        for name in self.inputs:
            info[name] = TensorInfo(tuple(self.input_shapes[name]), feeds[name].dtype)
        return info, static

    def _inferred_wrong(self, model: onnx.ModelProto) -> dict[str, tuple[tuple[int, ...], int]]:
        """(runtime shape, inferred rank) of each tensor ONNX's inference gets wrong in `model`
        that is not a mismatch already."""
        try:
            inferred = onnx.shape_inference.infer_shapes(model).graph.value_info
        except onnx.shape_inference.InferenceError:
            # ONNX's inference refuses the model (ONNX Runtime, which runs its own, loaded
            # it): it then claims no shape, so none is contradicted
            return {}
        wrong = {}
        for vi in inferred:
            dims = vi.type.tensor_type.shape.dim
            if not vi.type.tensor_type.HasField("shape") or vi.name not in self.info:
                continue
            if vi.name in self._mismatches or not all(d.HasField("dim_value") for d in dims):
                continue
            shape = self.info[vi.name].shape
            if tuple(d.dim_value for d in dims) != shape:
                wrong[vi.name] = (shape, len(dims))
        return wrong

    def _at_input_shapes(self) -> onnx.ModelProto:
        """The light model with the analysis input shapes, no value_info and no outputs."""
        fixed = onnx.ModelProto()
        fixed.CopyFrom(self.weights.light)
        del fixed.graph.value_info[:], fixed.graph.output[:]
        for vi in fixed.graph.input:
            if vi.name in self.input_shapes:
                dims = vi.type.tensor_type.shape.dim
                for d, n in zip(dims, self.input_shapes[vi.name]):
                    d.Clear()
                    d.dim_value = n
        return fixed

    def analysis_feeds(self) -> dict[str, np.ndarray]:
        """The inputs of the analysis run: the real values where given, else standard normal
        floats (seed 0) and zeros; the same arrays on every call."""
        if self._feeds is None:
            specs = {vi.name: input_spec(vi) for vi in graph_inputs(self.model)}
            given = {n: np.asarray(v, specs[n][1]) for n, v in self._values.items() if n in specs}
            self._feeds = input_feeds(specs, given, self.input_shapes, seed=0)
        return self._feeds

    @property
    def inference_mismatches(self) -> dict[str, tuple[tuple[int, ...], int]]:
        """Tensors whose shape ONNX's shape inference (which ONNX Runtime applies when it loads a
        graph) gets wrong, by name, with (the runtime's shape, the inferred rank): a ceil-mode
        pool whose last window would start in the end padding is one window shorter at run time
        than ONNX infers below opset 22. A graph that builds constants of the runtime shape on
        such a tensor does not load unless the tensor is reshaped to that shape first (a no-op
        at run time)."""
        if self._mismatches is None:
            # one at a time, in graph order, each reshaped before inferring again: a tensor
            # computed from a wrongly inferred one is wrong too, until that one is fixed
            self._mismatches = {}
            order = {o: i for i, n in enumerate(self.nodes) for o in n.output}
            fixed = self._at_input_shapes()
            for _ in range(len(self.nodes)):
                wrong = self._inferred_wrong(fixed)
                if not wrong:
                    break
                name = min(wrong, key=lambda t: order.get(t, -1))
                self._mismatches[name] = wrong[name]
                _reshape_where_made(fixed.graph, name, wrong[name][0])
        return self._mismatches

    def names(self) -> set[str]:
        """Every name the model uses (see `graph_names`)."""
        return graph_names(self.graph)


def _reshape_where_made(graph: onnx.GraphProto, name: str, shape: tuple[int, ...]) -> None:
    """`name` produced under another name and reshaped to `shape` under its own (in place)."""
    raw = f"{name}/onnxscope_as_inferred"
    index = next(i for i, n in enumerate(graph.node) if name in n.output)
    node = graph.node[index]
    node.output[list(node.output).index(name)] = raw
    target = f"{name}/onnxscope_runtime_shape"
    graph.initializer.append(numpy_helper.from_array(np.asarray(shape, np.int64), target))
    graph.node.insert(index + 1, helper.make_node("Reshape", [raw, target], [name]))


def graph_names(graph: onnx.GraphProto) -> set[str]:
    """Every name a graph uses: tensors, nodes, value_info, the graph's own, also in subgraphs."""
    found = {graph.name, *(t.name for t in graph.initializer)}
    found.update(t.values.name for t in graph.sparse_initializer)
    found.update(vi.name for vi in [*graph.input, *graph.output, *graph.value_info])
    for n in graph.node:
        found.update([n.name, *n.input, *n.output])
        for a in n.attribute:
            for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                found |= graph_names(sub)
    found.discard("")
    return found


def subgraph_reads(node: onnx.NodeProto, names: set[str]) -> bool:
    """Whether a control-flow node's subgraphs read any of `names` from the outer scope."""
    for attr in node.attribute:
        for g in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            for n in g.node:
                if any(i in names for i in n.input) or (
                    n.op_type in CONTROL_FLOW_OPS and subgraph_reads(n, names)
                ):
                    return True
    return False


def softmax_outputs_to_logits(source) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of the model in which every graph output computed by a Softmax or LogSoftmax is
    replaced by the logits under it (renamed NAME_logits), with the names of the outputs cut.
    Votes are read on logits: logit_k = Σ votes_k + c_x[k]; a Softmax's secant gains would mix
    the classes."""
    model = onnx.ModelProto()
    model.CopyFrom(load_model(source))
    producers = {o: n for n in model.graph.node for o in n.output}
    cut = []
    for out in model.graph.output:
        node = producers.get(out.name)
        if node is not None and node.op_type in ("Softmax", "LogSoftmax"):
            cut.append(out.name)
            node.op_type, out.name = "Identity", f"{out.name}_logits"
            del node.attribute[:]
            node.output[0] = out.name
    return model, cut
