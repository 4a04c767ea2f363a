"""Exact graph clean-ups for models that converters write (model -> model).

`canonicalize(model)` runs every pass below in order and returns a new model; the input is never
modified. Each pass computes the same function: the first four are bitwise exact (they move,
cancel or re-spell work without changing a single float operation), MatMul+Add -> Gemm may change
the order of one addition (float rounding only). tests/test_canonicalize.py checks each one against
ONNX Runtime on random inputs.

- `constants_to_initializers`: weights held in `Constant` nodes (PaddlePaddle, some tf2onnx
  outputs) become initializers, so that every rule sees them as constants.
- `explicit_pads`: `auto_pad=SAME_UPPER/SAME_LOWER` on Conv, MaxPool, AveragePool, LpPool becomes
  explicit `pads` (needs the input's spatial shape; left alone where it is unknown).
- `merge_transposes`: Transpose(p) then Transpose(q) is one Transpose(p∘q), dropped when it is the
  identity (the NHWC<->NCHW pairs that layout conversion leaves around convolutions).
- `fuse_prelu`: relu(x) + β·relu(−x) (how tf2onnx writes a Keras PReLU, with β = −α) or
  relu(x) − α·relu(−x) becomes PRelu(x, α): one frozen unit instead of two.
- `matmul_add_to_gemm`: a 2-D MatMul by a constant matrix followed by Add of a constant bias
  becomes one Gemm (a Dense/Linear layer as one affine node).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..graph.ops import WINDOWED_OPS


class _Graph:
    """Producer/consumer indexes over a graph's nodes, rebuilt by each pass that needs them."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.producer = {o: n for n in graph.node for o in n.output if o}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in graph.output}
        self.inits = {t.name: t for t in graph.initializer}

    def const(self, name: str) -> np.ndarray | None:
        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None

    def only_use(self, name: str) -> bool:
        """The tensor feeds exactly one node and is not a graph output (safe to fold away)."""
        return len(self.consumers.get(name, [])) == 1 and name not in self.outputs

    def rename_uses(self, old: str, new: str) -> None:
        """Every consumer of `old` reads `new` instead (graph outputs keep their names)."""
        for n in self.consumers.get(old, []):
            for k, i in enumerate(n.input):
                if i == old:
                    n.input[k] = new


def _replace_nodes(graph: onnx.GraphProto, drop: set[int], add: dict[int, list]) -> None:
    """Rebuild the node list: nodes whose id() is in `drop` go, `add[id]` goes in their place."""
    nodes = []
    for n in graph.node:
        nodes += add.get(id(n), [])
        if id(n) not in drop:
            nodes.append(n)
    del graph.node[:]
    graph.node.extend(nodes)


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    if value is not None:
        node.attribute.append(helper.make_attribute(name, value))


# -- passes --------------------------------------------------------------------------------------
def constants_to_initializers(model: onnx.ModelProto) -> int:
    """Constant nodes (top-level graph) -> initializers of the same name. Returns the count."""
    graph, count, kept = model.graph, 0, []
    outputs = {o.name for o in graph.output}
    for n in graph.node:
        if (
            n.op_type == "Constant"
            and n.domain in ("", "ai.onnx")
            and len(n.attribute) == 1
            and n.output[0] not in outputs  # a graph output stays a node's output
        ):
            value = _constant_value(n.attribute[0])
            if value is not None:
                graph.initializer.append(numpy_helper.from_array(value, n.output[0]))
                count += 1
                continue
        kept.append(n)
    del graph.node[:]
    graph.node.extend(kept)
    return count


def _constant_value(attr: onnx.AttributeProto) -> np.ndarray | None:
    if attr.name == "value":
        return numpy_helper.to_array(attr.t)
    scalar = {"value_float": np.float32, "value_int": np.int64}
    lists = {"value_floats": np.float32, "value_ints": np.int64}
    if attr.name in scalar:
        return np.array(helper.get_attribute_value(attr), scalar[attr.name])
    if attr.name in lists:
        return np.array(helper.get_attribute_value(attr), lists[attr.name])
    return None  # sparse_value, value_string(s): left as they are


def explicit_pads(model: onnx.ModelProto) -> int:
    """auto_pad SAME_UPPER/SAME_LOWER -> pads, where the input's spatial shape is known.

    ONNX's SAME: output = ceil(in / stride), total padding = max(0, (out − 1)·stride +
    (k − 1)·dilation + 1 − in), split evenly with the odd pixel at the end (UPPER) or the start
    (LOWER)."""
    shapes = _static_shapes(model)
    count = 0
    for n in model.graph.node:
        mode = _attr(n, "auto_pad", b"NOTSET")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if n.op_type not in WINDOWED_OPS or mode not in ("SAME_UPPER", "SAME_LOWER"):
            continue
        shape = shapes.get(n.input[0])
        kernel = _attr(n, "kernel_shape")
        if kernel is None and n.op_type == "Conv":
            w = shapes.get(n.input[1])
            kernel = list(w[2:]) if w else None
        if shape is None or kernel is None:
            continue
        spatial = shape[2:]
        strides = _attr(n, "strides") or [1] * len(spatial)
        dilations = _attr(n, "dilations") or [1] * len(spatial)
        begin, end = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
            small, large = total // 2, total - total // 2
            begin.append(small if mode == "SAME_UPPER" else large)
            end.append(large if mode == "SAME_UPPER" else small)
        _set_attr(n, "auto_pad", None)
        _set_attr(n, "pads", begin + end)
        count += 1
    return count


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Fully known tensor shapes by name (shape inference on a copy)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except onnx.shape_inference.InferenceError:  # no shapes: the passes leave the nodes alone
        return {}
    out = {}
    g = inferred.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            out[vi.name] = tuple(d.dim_value for d in dims)
    for t in g.initializer:
        out[t.name] = tuple(t.dims)
    return out


def merge_transposes(model: onnx.ModelProto) -> int:
    """Transpose(perm=p) -> Transpose(perm=q) becomes Transpose(perm=p[q]) (y[i] = x[p[q[i]]]),
    removed altogether when that is the identity. Returns the number of Transposes removed."""
    removed = 0
    while True:
        g = _Graph(model.graph)
        pair = next(
            (
                (first, second)
                for second in model.graph.node
                if second.op_type == "Transpose"
                and (first := g.producer.get(second.input[0])) is not None
                and first.op_type == "Transpose"
                and _attr(first, "perm") is not None
                and _attr(second, "perm") is not None
                and g.only_use(first.output[0])
            ),
            None,
        )
        if pair is None:
            return removed
        first, second = pair
        perm = [_attr(first, "perm")[i] for i in _attr(second, "perm")]
        drop, source = {id(first)}, first.input[0]
        out = second.output[0]
        if perm == sorted(perm) and out not in g.outputs:
            drop.add(id(second))
            g.rename_uses(out, source)
            removed += 2
        elif perm == sorted(perm) and source in g.producer and source not in g.outputs:
            # a graph output keeps its name: the tensor before the pair takes it
            drop.add(id(second))
            g.producer[source].output[:] = [
                out if o == source else o for o in g.producer[source].output
            ]
            g.rename_uses(source, out)
            removed += 2
        else:
            second.input[0] = source
            _set_attr(second, "perm", perm)
            removed += 1
        _replace_nodes(model.graph, drop, {})


def fuse_prelu(model: onnx.ModelProto) -> int:
    """Add(Relu(x), Mul(Relu(Neg(x)), β)) -> PRelu(x, −β); Sub(Relu(x), Mul(Relu(Neg(x)), α)) ->
    PRelu(x, α). Bitwise exact: for x > 0 both give x + (±α)·0, for x < 0 both give α·x."""
    g, shapes = _Graph(model.graph), _static_shapes(model)
    count, drop, add = 0, set(), {}
    for top in model.graph.node:
        if top.op_type not in ("Add", "Sub"):
            continue
        match = _prelu_match(g, shapes, top)
        if match is None:
            continue
        x, slope, nodes = match
        name = f"{top.name or top.output[0]}/slope"
        model.graph.initializer.append(numpy_helper.from_array(slope, name))
        prelu = helper.make_node("PRelu", [x, name], [top.output[0]], name=top.name or None)
        drop |= {id(n) for n in [*nodes, top]}
        add[id(top)] = [prelu]
        count += 1
    _replace_nodes(model.graph, drop, add)
    return count


def _prelu_match(g: _Graph, shapes: dict, top: onnx.NodeProto):
    """(x, slope, nodes to remove) when `top` is a decomposed PReLU, else None."""
    orders = [(0, 1), (1, 0)] if top.op_type == "Add" else [(0, 1)]
    for a, b in orders:
        pos, neg = g.producer.get(top.input[a]), g.producer.get(top.input[b])
        if pos is None or neg is None or pos.op_type != "Relu" or neg.op_type != "Mul":
            continue
        for k in (0, 1):
            coef, relu_neg = g.const(neg.input[1 - k]), g.producer.get(neg.input[k])
            if coef is None or relu_neg is None or relu_neg.op_type != "Relu":
                continue
            negate = g.producer.get(relu_neg.input[0])
            if negate is None or negate.op_type != "Neg" or negate.input[0] != pos.input[0]:
                continue
            x = pos.input[0]
            inner = [pos.output[0], neg.output[0], relu_neg.output[0], negate.output[0]]
            # Neg's output feeds only its Relu; x itself may have other users
            if not all(g.only_use(t) for t in inner) or not _broadcasts_into(coef, shapes.get(x)):
                continue
            slope = (-coef if top.op_type == "Add" else coef).astype(coef.dtype)
            return x, slope, [pos, neg, relu_neg, negate]
    return None


def _broadcasts_into(coef: np.ndarray, shape: tuple[int, ...] | None) -> bool:
    """PRelu's slope must broadcast to x's shape without changing it (unidirectional)."""
    if not np.issubdtype(coef.dtype, np.floating):
        return False
    if shape is None:
        return coef.ndim == 0  # unknown rank: only a scalar is safe
    if coef.ndim > len(shape):
        return False
    return all(c in (1, s) for c, s in zip(coef.shape[::-1], shape[::-1]))


def matmul_add_to_gemm(model: onnx.ModelProto) -> int:
    """MatMul(A [N,K], W [K,M] constant) -> Add(bias constant, broadcast to [N,M]) -> Gemm."""
    g = _Graph(model.graph)
    shapes = _static_shapes(model)
    count, drop, add = 0, set(), {}
    for top in model.graph.node:
        if top.op_type != "Add":
            continue
        for k in (0, 1):
            mm, bias = g.producer.get(top.input[k]), g.const(top.input[1 - k])
            if mm is None or mm.op_type != "MatMul" or bias is None:
                continue
            w, a_shape = g.const(mm.input[1]), shapes.get(mm.input[0])
            if w is None or a_shape is None or len(a_shape) != 2 or w.ndim != 2:
                continue
            if not np.issubdtype(w.dtype, np.floating):
                continue
            if not g.only_use(mm.output[0]) or bias.dtype != w.dtype or bias.ndim > 2:
                continue
            if any(b not in (1, s) for b, s in zip(bias.shape[::-1], (w.shape[1], a_shape[0]))):
                continue
            inputs = [mm.input[0], mm.input[1], top.input[1 - k]]
            gemm = helper.make_node("Gemm", inputs, [top.output[0]], name=top.name or None)
            drop |= {id(mm), id(top)}
            add[id(top)] = [gemm]
            count += 1
            break
    _replace_nodes(model.graph, drop, add)
    return count


PASSES = (
    constants_to_initializers,
    explicit_pads,
    merge_transposes,
    fuse_prelu,
    matmul_add_to_gemm,
)


def canonicalize(model: onnx.ModelProto, passes=PASSES) -> onnx.ModelProto:
    """A copy of `model` with every pass applied (see the module docstring); `model.metadata_props`
    gains `onnxscope.canonicalize` listing what each pass changed."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    done = {}
    for fn in passes:
        count = fn(out)
        if count:
            done[fn.__name__] = count
    if done:
        text = ", ".join(f"{k}={v}" for k, v in done.items())
        helper.set_model_props(out, {**_props(out), "onnxscope.canonicalize": text})
    return out


def _props(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}
