"""Random small ONNX graphs for the property-based tests (tests/test_properties.py).

A graph is grown node by node with `onnx.helper` (no exporter): every step picks an op from the
families of one test, an operand among the input-dependent tensors made so far (often the newest,
sometimes an older one, so that tensors fan out to several nodes) and the op's attributes, and
adds the new tensor(s) to the pool. Tensors no node consumes become the graph's outputs. Only ops
and attributes onnxscope supports are generated (by construction: each emitter knows the opsets
and shapes its op takes); `UNSUPPORTED` lists emitters of nodes onnxscope must refuse.

Every node's output shape comes from ONNX Runtime itself (the node run alone on zeros), not from
ONNX shape inference, so pooling with ceil_mode and Resize get the runtime's geometry.

Constants are drawn from a numpy generator seeded by hypothesis, scaled with the input: at input
scale s, biases, clip bounds and pad values are ~s, weights are ~1/sqrt(fan-in), so that every
piece of a piecewise unit is reached at every scale.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

OPSETS = (10, 11, 13, 17, 18, 19, 21)
MAX_ELEMENTS = 400  # per tensor: keeps the dense adjoint check and every session tiny
SCALES = (1e-3, 1.0, 1e3)
PATTERNS = ("normal", "grid", "zeros", "ties", "negative")
F32 = np.float32


# -- the builder ----------------------------------------------------------------------------------


@dataclass
class Builder:
    opset: int
    scale: float
    rng: np.random.Generator
    names: Callable[[str], str] | None = None  # tensor naming (the name-collision test)
    nodes: list = field(default_factory=list)
    inits: dict = field(default_factory=dict)
    shapes: dict = field(default_factory=dict)  # every float tensor: its runtime shape
    pool: list = field(default_factory=list)  # input-dependent tensors, oldest first
    consumed: set = field(default_factory=set)
    kinds: set = field(default_factory=set)  # "smooth", "bilinear", "norm" (not piecewise)
    doubles: set = field(default_factory=set)  # float64 tensors (a Cast round trip)
    lines: list = field(default_factory=list)
    counter: itertools.count = field(default_factory=itertools.count)

    # names and constants
    def fresh(self, hint: str) -> str:
        name = f"{hint}{next(self.counter)}"
        return self.names(name) if self.names else name

    def const(self, value, hint: str = "c", dtype=F32) -> str:
        name = self.fresh(hint)
        self.inits[name] = np.asarray(value, dtype)
        return name

    def ints(self, values, hint: str = "i") -> str:
        return self.const(np.asarray(values, np.int64), hint, np.int64)

    def normal(self, shape, std=1.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * std).astype(F32)

    def away(self, shape, low=0.5) -> np.ndarray:
        """Values with |v| in [low, 1.5] and a random sign (divisors, gains)."""
        mag = self.rng.uniform(low, 1.5, shape)
        return (mag * self.rng.choice([-1.0, 1.0], shape)).astype(F32)

    # nodes
    def node(self, op: str, inputs: list[str], n_out: int = 1, pool=True, **attrs) -> list[str]:
        outs = [self.fresh("t") for _ in range(n_out)]
        name = self.fresh(f"n_{op}_")
        node = helper.make_node(op, inputs, outs, name=name, **attrs)
        shapes = _ort_shapes(
            node.SerializeToString(),
            self.opset,
            tuple((i, self.shapes[i]) for i in dict.fromkeys(inputs) if i and i in self.shapes),
            tuple(
                (i, self.inits[i].tobytes(), self.inits[i].dtype.str, self.inits[i].shape)
                for i in dict.fromkeys(inputs)
                if i in self.inits
            ),
        )
        self.nodes.append(node)
        for o, s in zip(outs, shapes):
            self.shapes[o] = s
            assert int(np.prod(s)) <= 4 * MAX_ELEMENTS, f"{op} made a tensor of shape {s}"
        self.consumed.update(inputs)
        shown = ", ".join(
            f"{i}{list(self.inits[i].shape)}" if i in self.inits else (i or "''") for i in inputs
        )
        text = ", ".join(f"{k}={_short(v)}" for k, v in sorted(attrs.items()))
        self.lines.append(
            f"{', '.join(outs)} = {op}<{text}>({shown}) -> {[list(v) for v in shapes[:n_out]]}"
        )
        if pool:
            self.pool.extend(outs)
        return outs

    def op(self, op: str, inputs: list[str], pool=True, **attrs) -> str:
        return self.node(op, inputs, 1, pool, **attrs)[0]

    def shape(self, t: str) -> tuple[int, ...]:
        return self.shapes[t]

    def model(self, x_shape) -> onnx.ModelProto:
        outputs = [t for t in self.pool if t not in self.consumed and t != self.input_name]
        graph = helper.make_graph(
            self.nodes,
            "random",
            [helper.make_tensor_value_info(self.input_name, TensorProto.FLOAT, list(x_shape))],
            [
                helper.make_tensor_value_info(o, TensorProto.FLOAT, list(self.shapes[o]))
                for o in outputs
            ],
            [numpy_helper.from_array(v, k) for k, v in self.inits.items()],
        )
        opsets = [helper.make_opsetid("", self.opset)]
        model = helper.make_model(graph, opset_imports=opsets)
        model.ir_version = max(8, helper.find_min_ir_version_for(opsets))
        return model

    @property
    def input_name(self) -> str:
        return self.pool[0]


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, bytes):
        return v.decode()
    return str(v)


@functools.lru_cache(maxsize=4096)
def _ort_shapes(node_bytes: bytes, opset: int, inputs: tuple, consts: tuple) -> list[tuple]:
    """The output shapes of one node as ONNX Runtime computes them (the node alone, on zeros)."""
    node = onnx.NodeProto()
    node.ParseFromString(node_bytes)
    inits = [
        numpy_helper.from_array(np.frombuffer(b, np.dtype(dt)).reshape(shape).copy(), name)
        for name, b, dt, shape in consts
    ]
    graph = helper.make_graph(
        [node],
        "one",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs],
        [onnx.ValueInfoProto(name=o) for o in node.output],
        inits,
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = max(8, helper.find_min_ir_version_for(opsets))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = {n: np.full(s, 0.5, F32) for n, s in inputs}
    return [tuple(v.shape) for v in sess.run(None, feeds)]


# -- emitters: (draw, builder, operand) -> None (they add nodes and pool entries) ---------------


@dataclass(frozen=True)
class Op:
    name: str
    emit: Callable
    min_opset: int = 10
    ranks: tuple = (0, 1, 2, 3, 4)
    applies: Callable = lambda b, s: True


def _elementwise_unit(op, **fixed):
    def emit(d, b, t):
        b.op(op, [t], **fixed)

    return emit


def _clip(b, t, lo, hi, pool=True) -> str:
    if b.opset < 11:
        attrs = {}
        if lo is not None:
            attrs["min"] = float(lo)
        if hi is not None:
            attrs["max"] = float(hi)
        return b.op("Clip", [t], pool, **attrs)
    inputs = [
        t,
        b.const(lo, "lo") if lo is not None else "",
        b.const(hi, "hi") if hi is not None else "",
    ]
    while inputs[-1] == "":
        inputs.pop()
    return b.op("Clip", inputs, pool)


def emit_clip(d, b, t):
    s = b.scale
    form = d(st.sampled_from(["both", "lo", "hi", "crossed"]))
    lo, hi = (
        F32(s * d(st.sampled_from([-0.5, -0.1, 0.0]))),
        F32(s * d(st.sampled_from([0.0, 0.3, 1.0]))),
    )
    if form == "crossed" and b.opset < 11:
        form = "both"
    if form == "lo":
        hi = None
    elif form == "hi":
        lo = None
    elif form == "crossed" and b.opset >= 11:  # min > max: max everywhere (ORT's Clip-6 refuses)
        lo, hi = F32(s * 0.5), F32(-s * 0.5)
    elif lo == hi:
        hi = F32(hi + s)
    _clip(b, t, lo, hi)


def emit_leaky(d, b, t):
    b.op("LeakyRelu", [t], alpha=d(st.sampled_from([0.01, 0.25, 0.0, -0.5, 2.0])))


def emit_prelu(d, b, t):
    s = b.shape(t)
    kind = d(st.sampled_from(["scalar", "channel", "full"]))
    if kind == "channel" and len(s) >= 2:
        shape = [s[1]] + [1] * (len(s) - 2)
    elif kind == "full" and len(s) >= 1:
        shape = list(s[1:]) or [1]
    else:
        shape = [1]
    b.op("PRelu", [t, b.const(b.normal(shape, 0.7), "slope")])


def emit_hardsigmoid(d, b, t):
    alpha = d(st.sampled_from([0.2, 1.0 / 6.0, 1.0, 3.0]))
    beta = d(st.sampled_from([0.5, 0.1, 0.9]))
    b.op("HardSigmoid", [t], alpha=alpha / b.scale if d(st.booleans()) else alpha, beta=beta)


def emit_thresholded(d, b, t):
    b.op("ThresholdedRelu", [t], alpha=float(b.scale * d(st.sampled_from([0.0, 0.3, 1.0]))))


def emit_max_const(d, b, t):
    s = b.shape(t)
    shape = d(st.sampled_from([[], [1], list(s[-1:]) or [1]]))
    c = b.const(b.normal(shape, b.scale * 0.5), "m")
    inputs = [t, c] if d(st.booleans()) else [c, t]
    b.op(d(st.sampled_from(["Max", "Min"])), inputs)


def _same_shape(d, b, t, fan_out_ok=True) -> str:
    """Another pool tensor with t's shape (often t itself: a fan-out)."""
    same = [u for u in b.pool if b.shape(u) == b.shape(t)]
    return same[d(st.integers(0, len(same) - 1))] if same else t


def emit_max_tensors(d, b, t):
    n = d(st.integers(2, 3))
    inputs = [t] + [_same_shape(d, b, t) for _ in range(n - 1)]
    b.op(d(st.sampled_from(["Max", "Min"])), inputs)


def emit_bounded(d, b, t, bound=10.0) -> str:
    """Clip(t, -bound, bound) (not in the pool): keeps Exp and Pow finite at every scale."""
    return _clip(b, t, F32(-bound), F32(bound), pool=False)


def emit_exp(d, b, t):
    b.op("Exp", [emit_bounded(d, b, t)])


def emit_pow(d, b, t):
    p = d(st.sampled_from([2.0, 3.0, 0.5]))
    base = emit_bounded(d, b, t)
    if p == 0.5:
        base = b.op("Add", [b.op("Abs", [base], pool=False), b.const(0.25, "c")], pool=False)
    b.op("Pow", [base, b.const(p, "p")])


def emit_sqrt_recip(d, b, t):
    op = d(st.sampled_from(["Sqrt", "Reciprocal", "DivC"]))
    pos = b.op("Add", [b.op("Abs", [t], pool=False), b.const(0.5 * b.scale, "c")], pool=False)
    if op == "DivC":  # c / u: a unit through the origin
        b.op("Div", [b.const(b.normal([], b.scale), "num"), pos])
    else:
        b.op(op, [pos])


def emit_elu(d, b, t):
    b.op(
        d(st.sampled_from(["Elu", "Celu"])) if b.opset >= 12 else "Elu",
        [t],
        alpha=d(st.sampled_from([1.0, 0.5, 2.0])),
    )


def emit_selu(d, b, t):
    b.op("Selu", [t])


def emit_softmax(d, b, t):
    rank = len(b.shape(t))
    op = d(st.sampled_from(["Softmax", "LogSoftmax"]))
    axis = d(st.integers(-rank, rank - 1))
    u = t
    shift = d(st.sampled_from(["none", "none", "-20", "-100", "-inf mask"]))
    if shift in ("-20", "-100"):
        u = b.op("Add", [t, b.const(F32(float(shift) * max(b.scale, 1.0)), "shift")], pool=False)
    elif shift == "-inf mask" and op == "Softmax":
        # -inf at random places, never at index 0 of the normalized (last) axis
        mask = np.where(b.rng.random(b.shape(t)) < 0.4, -np.inf, 0.0).astype(F32)
        mask[..., 0] = 0.0
        if b.opset < 13:
            keep = axis % rank
            idx = [slice(None)] * rank
            for a in range(keep, rank):
                idx[a] = slice(0, 1)
            mask[tuple(idx)] = 0.0
        else:
            mask = np.moveaxis(mask, axis, -1)
            mask[..., 0] = 0.0
            mask = np.moveaxis(mask, -1, axis)
        u = b.op("Add", [t, b.const(mask, "mask")], pool=False)
    b.op(op, [u], axis=axis)


def emit_bilinear_mul(d, b, t):
    form = d(st.sampled_from(["mul", "square", "gate", "div", "matmul", "channel"]))
    s = b.shape(t)
    if form == "square":
        b.op("Mul", [t, t])
    elif form == "mul":
        b.op("Mul", [t, _same_shape(d, b, t)])
    elif form == "gate":
        gate = b.op(
            d(st.sampled_from(["Sigmoid", "Tanh", "HardSigmoid"])),
            [_same_shape(d, b, t)],
            pool=False,
        )
        b.op("Mul", [gate, t] if d(st.booleans()) else [t, gate])
    elif form == "div":
        den = b.op(
            "Add",
            [b.op("Abs", [_same_shape(d, b, t)], pool=False), b.const(b.scale, "c")],
            pool=False,
        )
        b.op("Div", [t, den])
    elif form == "channel" and len(s) == 4:
        g = (
            b.op("ReduceMean", [_same_shape(d, b, t)], pool=False, axes=[2, 3], keepdims=1)
            if b.opset < 18
            else b.op("ReduceMean", [_same_shape(d, b, t), b.ints([2, 3])], pool=False, keepdims=1)
        )
        b.op("Mul", [t, g])
    elif len(s) >= 2:  # attention-like: t @ u^T
        perm = list(range(len(s)))
        perm[-1], perm[-2] = perm[-2], perm[-1]
        ut = b.op("Transpose", [_same_shape(d, b, t)], pool=False, perm=perm)
        if s[-2] * s[-2] * int(np.prod(s[:-2])) <= MAX_ELEMENTS:
            b.op("MatMul", [t, ut])
        else:
            b.op("Mul", [t, t])
    else:
        b.op("Mul", [t, t])
    b.kinds.add("bilinear")


# linear ops


def _conv_out(n, k, s, d, pb, pe):
    return (n + pb + pe - ((k - 1) * d + 1)) // s + 1


def emit_conv(d, b, t):
    n, c, h, w = b.shape(t)
    groups = [1] + ([c] if c > 1 else [])
    group = d(st.sampled_from(groups))
    m = c * d(st.integers(1, 2)) if group > 1 else d(st.integers(1, 4))
    k = [d(st.integers(1, min(3, h + 2))), d(st.integers(1, min(3, w + 2)))]
    strides = [d(st.integers(1, 2)), d(st.integers(1, 2))]
    dil = [d(st.integers(1, 2)) if k[0] > 1 else 1, 1]
    pads = [d(st.integers(0, k[0] - 1)), d(st.integers(0, k[1] - 1))]
    pads = pads + [d(st.integers(0, k[0] - 1)), d(st.integers(0, k[1] - 1))]
    ext = [(k[i] - 1) * dil[i] + 1 for i in range(2)]
    for i, size in enumerate((h, w)):
        while size + pads[i] + pads[i + 2] < ext[i]:
            pads[i] += 1
    auto = d(st.sampled_from(["NOTSET"] * 4 + ["SAME_UPPER", "SAME_LOWER", "VALID"]))
    attrs = dict(kernel_shape=k, strides=strides, dilations=dil, group=group)
    if auto == "VALID" and h >= ext[0] and w >= ext[1]:
        attrs["auto_pad"] = "VALID"
    elif auto.startswith("SAME") and dil == [1, 1]:  # ORT: no SAME with dilations
        attrs["auto_pad"] = auto
    else:
        attrs["pads"] = pads
    out = [
        _conv_out(h, k[0], strides[0], dil[0], pads[0], pads[2]),
        _conv_out(w, k[1], strides[1], dil[1], pads[1], pads[3]),
    ]
    if n * m * max(out[0], h) * max(out[1], w) > MAX_ELEMENTS:
        m = group  # the fewest output channels a grouped Conv allows
    weights = b.normal([m, c // group, *k], 1.0 / np.sqrt(c // group * k[0] * k[1]))
    inputs = [t, b.const(weights, "W")]
    if d(st.booleans()):
        inputs.append(b.const(b.normal([m], 0.5 * b.scale), "B"))
    b.op("Conv", inputs, **attrs)


def emit_conv_transpose(d, b, t):
    n, c, h, w = b.shape(t)
    m = d(st.integers(1, 3))
    k = [d(st.integers(1, 3)), d(st.integers(1, 3))]
    strides = [d(st.integers(1, 2)), d(st.integers(1, 2))]
    dil = [d(st.integers(1, 2)) if k[0] > 1 else 1, 1]
    ext = [(k[i] - 1) * dil[i] + 1 for i in range(2)]
    out_pad = [d(st.integers(0, strides[i] - 1)) for i in range(2)]
    pads = [d(st.integers(0, ext[i] - 1)) for i in range(2)] * 2
    size = [strides[i] * ((h, w)[i] - 1) + out_pad[i] + ext[i] - 2 * pads[i] for i in range(2)]
    if min(size) < 1 or n * m * size[0] * size[1] > MAX_ELEMENTS:
        pads, out_pad, strides = [0, 0, 0, 0], [0, 0], [1, 1]
        size = [(h, w)[i] + ext[i] - 1 for i in range(2)]
        if n * m * size[0] * size[1] > MAX_ELEMENTS:
            m, k, dil = 1, [1, 1], [1, 1]
    weights = b.normal([c, m, *k], 1.0 / np.sqrt(c * k[0] * k[1]))
    inputs = [t, b.const(weights, "W")]
    if d(st.booleans()):
        inputs.append(b.const(b.normal([m], 0.5 * b.scale), "B"))
    b.op(
        "ConvTranspose",
        inputs,
        kernel_shape=k,
        strides=strides,
        dilations=dil,
        pads=pads,
        output_padding=out_pad,
    )


def emit_gemm(d, b, t):
    if len(b.shape(t)) != 2:
        t = b.op("Flatten", [t], pool=False, axis=1)
    rows, k = b.shape(t)
    nout = d(st.integers(1, 6))
    trans_b = d(st.integers(0, 1))
    weight = b.normal([nout, k] if trans_b else [k, nout], 1.0 / np.sqrt(k))
    inputs = [t, b.const(weight, "G")]
    cform = d(st.sampled_from(["none", "vector", "row", "scalar"]))
    if b.opset < 11 and cform == "none":  # C is required before opset 11
        cform = "vector"
    if cform != "none":
        shape = {"vector": [nout], "row": [1, nout], "scalar": []}[cform]
        inputs.append(b.const(b.normal(shape, b.scale), "C"))
    alpha = d(st.sampled_from([1.0, 0.5, -2.0]))
    beta = d(st.sampled_from([1.0, 0.5, -2.0]))
    b.op("Gemm", inputs, transB=trans_b, alpha=alpha, beta=beta)


def emit_matmul_const(d, b, t):
    s = b.shape(t)
    form = d(st.sampled_from(["right", "left", "vector"]))
    if form == "vector" or len(s) < 2:
        b.op("MatMul", [t, b.const(b.normal([s[-1]], 1.0 / np.sqrt(s[-1])), "v")])
        return
    if form == "right":
        m = d(st.integers(1, 5))
        while int(np.prod(s[:-1])) * m > MAX_ELEMENTS and m > 1:
            m -= 1
        b.op("MatMul", [t, b.const(b.normal([s[-1], m], 1.0 / np.sqrt(s[-1])), "M")])
    else:
        m = d(st.integers(1, 5))
        while int(np.prod(s)) // s[-2] * m > MAX_ELEMENTS and m > 1:
            m -= 1
        b.op("MatMul", [b.const(b.normal([m, s[-2]], 1.0 / np.sqrt(s[-2])), "M"), t])


def _broadcast_const_shape(d, b, s):
    options = [[], [1], list(s)]
    if len(s) == 4:
        options.append([s[1], 1, 1])
    if len(s) >= 1:
        options.append([s[-1]])
    return d(st.sampled_from(options))


def emit_arith_const(d, b, t):
    op = d(st.sampled_from(["Add", "Sub", "Mul", "Div"]))
    shape = _broadcast_const_shape(d, b, b.shape(t))
    if op in ("Mul", "Div"):
        c = b.const(b.away(shape), "k")
    else:
        c = b.const(b.normal(shape, b.scale), "k")
    if op != "Div" and d(st.booleans()):
        b.op(op, [c, t])
    else:
        b.op(op, [t, c])


def emit_neg(d, b, t):
    b.op("Neg", [t])


def emit_add_tensors(d, b, t):
    op = d(st.sampled_from(["Add", "Sub", "Sum", "Mean"]))
    n = d(st.integers(2, 3)) if op in ("Sum", "Mean") else 2
    b.op(op, [t] + [_same_shape(d, b, t) for _ in range(n - 1)])


def emit_batchnorm(d, b, t):
    c = b.shape(t)[1]
    inputs = [
        t,
        b.const(b.away([c]), "bn_s"),
        b.const(b.normal([c], b.scale), "bn_b"),
        b.const(b.normal([c], b.scale), "bn_m"),
        b.const(b.rng.uniform(0.25, 2.0, [c]) * b.scale**2, "bn_v"),
    ]
    b.op("BatchNormalization", inputs, epsilon=d(st.sampled_from([1e-5, 1e-3])))


def _pool_attrs(d, b, s, safe: bool, dilations_ok: bool):
    h, w = s[2], s[3]
    k = [d(st.integers(1, min(3, h))), d(st.integers(1, min(3, w)))]
    strides = [d(st.integers(1, 3)), d(st.integers(1, 3))]
    dil = [1, 1]
    if dilations_ok and not safe:
        dil = [
            d(st.integers(1, 2)) if k[0] > 1 and 2 * k[0] - 1 <= h else 1,
            d(st.integers(1, 2)) if k[1] > 1 and 2 * k[1] - 1 <= w else 1,
        ]
    if safe:
        pads = [d(st.integers(0, k[i] // 2)) for i in range(2)] * 2
        ceil = 0
    else:
        pads = [d(st.integers(0, k[i] - 1)) for i in range(2)] + [
            d(st.integers(0, k[i] - 1)) for i in range(2)
        ]
        ceil = d(st.integers(0, 1))
    attrs = dict(kernel_shape=k, strides=strides)
    auto = (
        "NOTSET"
        if safe
        else d(st.sampled_from(["NOTSET"] * 5 + ["SAME_UPPER", "SAME_LOWER", "VALID"]))
    )
    if auto.startswith("SAME") and any(s_ > k_ for s_, k_ in zip(strides, k)):
        auto = "NOTSET"  # ORT: SAME padding would be negative
    if auto == "NOTSET":
        attrs["pads"] = pads
    else:
        attrs["auto_pad"] = auto
    if ceil:
        attrs["ceil_mode"] = 1
    if dil != [1, 1]:
        attrs["dilations"] = dil
    return attrs


def emit_maxpool(d, b, t, safe=True):
    attrs = _pool_attrs(d, b, b.shape(t), safe, dilations_ok=True)
    b.op("MaxPool", [t], **attrs)


def emit_avgpool(d, b, t, safe=True):
    attrs = _pool_attrs(d, b, b.shape(t), safe, dilations_ok=b.opset >= 19)
    if d(st.booleans()):
        attrs["count_include_pad"] = 1
    b.op("AveragePool", [t], **attrs)


def emit_global_pool(d, b, t):
    b.op(d(st.sampled_from(["GlobalAveragePool", "GlobalMaxPool"])), [t])


def _reduce(b, op, t, axes, keep, pool=True):
    axes_input = b.opset >= 18 or (op == "ReduceSum" and b.opset >= 13)
    if axes_input:
        return b.op(op, [t, b.ints(axes)] if axes is not None else [t], pool, keepdims=keep)
    return b.op(op, [t], pool, keepdims=keep, **({"axes": axes} if axes is not None else {}))


def emit_reduce(d, b, t, ops=("ReduceMean", "ReduceSum")):
    rank = len(b.shape(t))
    if rank == 0:
        b.op("Neg", [t])
        return
    axes = sorted(
        set(d(st.lists(st.integers(-rank, rank - 1), min_size=1, max_size=rank))),
        key=lambda a: a % rank,
    )
    axes = list(dict.fromkeys(a % rank for a in axes))
    if d(st.booleans()):
        axes = [a - rank for a in axes]
    keep = d(st.sampled_from([1, 1, 0]))
    _reduce(b, d(st.sampled_from(list(ops))), t, None if d(st.integers(0, 5)) == 0 else axes, keep)


def emit_reduce_select(d, b, t):
    emit_reduce(d, b, t, ("ReduceMax", "ReduceMin"))


def emit_identity(d, b, t):
    op = d(st.sampled_from(["Identity", "Dropout", "Cast"]))
    if op == "Cast":
        wide = b.op("Cast", [t], pool=False, to=TensorProto.DOUBLE)
        b.doubles.add(wide)
        b.op("Cast", [wide], to=TensorProto.FLOAT)
    else:
        b.op(op, [t])


def emit_cumsum(d, b, t):
    rank = len(b.shape(t))
    b.op(
        "CumSum",
        [t, b.ints(d(st.integers(-rank, rank - 1)))],
        exclusive=d(st.integers(0, 1)),
        reverse=d(st.integers(0, 1)),
    )


def emit_where(d, b, t):
    cond = b.const(b.rng.random(b.shape(t)) < 0.5, "cond", np.bool_)
    other = _same_shape(d, b, t) if d(st.booleans()) else b.const(b.normal([], b.scale), "k")
    b.op("Where", [cond, t, other] if d(st.booleans()) else [cond, other, t])


# normalizations


def emit_instance_norm(d, b, t):
    c = b.shape(t)[1]
    b.op(
        "InstanceNormalization",
        [t, b.const(b.away([c]), "in_s"), b.const(b.normal([c], b.scale), "in_b")],
        epsilon=d(st.sampled_from([1e-5, 1e-2])),
    )
    b.kinds.add("norm")


def emit_layer_norm(d, b, t):
    s = b.shape(t)
    axis = d(st.integers(-len(s) + 1, -1)) if len(s) > 1 else -1
    shape = list(s[axis:])
    inputs = [t, b.const(b.away(shape), "ln_s")]
    if d(st.booleans()):
        inputs.append(b.const(b.normal(shape, b.scale), "ln_b"))
    b.op("LayerNormalization", inputs, axis=axis, epsilon=d(st.sampled_from([1e-5, 1e-2])))
    b.kinds.add("norm")


def emit_group_norm(d, b, t):
    c = b.shape(t)[1]
    groups = d(st.sampled_from([g for g in range(1, c + 1) if c % g == 0]))
    n = c if b.opset >= 21 else groups
    b.op(
        "GroupNormalization",
        [t, b.const(b.away([n]), "gn_s"), b.const(b.normal([n], b.scale), "gn_b")],
        num_groups=groups,
        epsilon=d(st.sampled_from([1e-5, 1e-2])),
    )
    b.kinds.add("norm")


# data movement


def _factor(d, n):
    divisors = [k for k in range(1, n + 1) if n % k == 0]
    return d(st.sampled_from(divisors))


def emit_reshape(d, b, t):
    n = int(np.prod(b.shape(t)))
    a = _factor(d, n)
    c = _factor(d, n // a)
    shape = [1, a, c, n // a // c]
    if d(st.booleans()):
        shape[d(st.integers(1, 3))] = -1
    b.op("Reshape", [t, b.ints(shape)])


def emit_flatten(d, b, t):
    rank = len(b.shape(t))
    b.op("Flatten", [t], axis=d(st.integers(0, rank)) if rank else 0)


def emit_transpose(d, b, t):
    rank = len(b.shape(t))
    perm = d(st.permutations(list(range(rank))))
    if d(st.integers(0, 4)):
        b.op("Transpose", [t], perm=list(perm))
    else:  # no perm: reverse the axes
        b.op("Transpose", [t])


def emit_concat(d, b, t):
    s = b.shape(t)
    rank = len(s)
    axis = d(st.integers(0, rank - 1))
    fits = [
        u
        for u in b.pool
        if len(b.shape(u)) == rank and all(b.shape(u)[k] == s[k] for k in range(rank) if k != axis)
    ]
    other = fits[d(st.integers(0, len(fits) - 1))]
    parts = [t, other] if d(st.booleans()) else [other, t]
    if int(np.prod(s)) + int(np.prod(b.shape(other))) > MAX_ELEMENTS:
        parts = [t]
    b.op("Concat", parts, axis=axis - rank if d(st.booleans()) else axis)


def emit_split(d, b, t):
    s = b.shape(t)
    candidates = [a for a in range(len(s)) if s[a] >= 2]
    if not candidates:
        b.op("Identity", [t])
        return
    axis = d(st.sampled_from(candidates))
    first = d(st.integers(1, s[axis] - 1))
    sizes = [first, s[axis] - first]
    if b.opset < 13:
        b.node("Split", [t], 2, axis=axis, split=sizes)
    elif b.opset >= 18 and s[axis] % 2 == 0 and d(st.booleans()):
        b.node("Split", [t], 2, axis=axis, num_outputs=2)
    else:
        b.node("Split", [t, b.ints(sizes)], 2, axis=axis)


def emit_slice(d, b, t):
    s = b.shape(t)
    axes = [a for a in range(len(s)) if s[a] >= 2] or [0]
    axes = d(st.lists(st.sampled_from(axes), min_size=1, max_size=2, unique=True))
    starts, ends, steps = [], [], []
    for a in axes:
        step = d(st.sampled_from([1, 1, 2, -1]))
        lo = d(st.integers(0, s[a] - 1))
        hi = d(st.integers(lo + 1, s[a]))
        if step > 0:
            starts.append(lo if d(st.booleans()) else lo - s[a])
            ends.append(hi if d(st.integers(0, 3)) else 2**62)
        else:
            starts.append(hi - 1)
            ends.append(lo - 1 if lo > 0 else -(2**62))
        steps.append(step)
    inputs = [
        t,
        b.ints(starts),
        b.ints(ends),
        b.ints([a - len(s) if d(st.booleans()) else a for a in axes]),
    ]
    if any(x != 1 for x in steps) or d(st.booleans()):
        inputs.append(b.ints(steps))
    b.op("Slice", inputs)


def emit_pad(d, b, t):
    s = b.shape(t)
    rank = len(s)
    modes = ["constant", "reflect", "edge"] + (["wrap"] if b.opset >= 19 else [])
    mode = d(st.sampled_from(modes))
    pads = []
    for _side in range(2):
        for a in range(rank):
            top = 0 if a == 0 else 2
            if mode == "reflect":
                top = min(top, s[a] - 1)
            if mode == "wrap":
                top = min(top, s[a])
            low = -1 if mode == "constant" and s[a] >= 3 and a > 0 else 0
            pads.append(d(st.integers(low, top)))
    grown = int(np.prod([s[a] + pads[a] + pads[a + rank] for a in range(rank)]))
    if grown > MAX_ELEMENTS:
        pads = [0] * (2 * rank)
    value = F32(b.scale * d(st.sampled_from([0.0, 0.7, -1.5])))
    if b.opset < 11:
        b.op(
            "Pad",
            [t],
            mode=mode,
            pads=pads,
            **({"value": float(value)} if mode == "constant" else {}),
        )
        return
    inputs = [t, b.ints(pads)]
    if mode == "constant" and value:
        inputs.append(b.const(value, "pv"))
    b.op("Pad", inputs, mode=mode)


def emit_resize(d, b, t):
    n, c, h, w = b.shape(t)
    mode = d(st.sampled_from(["nearest", "linear", "cubic"]))
    coord = d(
        st.sampled_from(
            ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"]
            + (["tf_half_pixel_for_nn"] if mode == "nearest" else [])
        )
    )
    attrs = dict(mode=mode, coordinate_transformation_mode=coord)
    if mode == "nearest":
        attrs["nearest_mode"] = d(
            st.sampled_from(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
        )
    if mode == "cubic":
        attrs["cubic_coeff_a"] = d(st.sampled_from([-0.75, -0.5]))
        attrs["exclude_outside"] = d(st.integers(0, 1))
    factors = [d(st.sampled_from([0.5, 1.0, 1.5, 2.0])) for _ in range(2)]
    while n * c * int(h * factors[0]) * int(w * factors[1]) > MAX_ELEMENTS:
        factors = [max(0.5, f / 2) for f in factors]
    if min(int(h * factors[0]), int(w * factors[1])) < 1:
        factors = [1.0, 1.0]
    by_sizes = d(st.booleans())
    empty = b.const(np.zeros(0, F32), "empty")
    use_axes = b.opset >= 18 and d(st.booleans())
    if use_axes:
        attrs["axes"] = [2, 3]
    full = [1.0, 1.0, *factors] if not use_axes else factors
    if by_sizes:
        sizes = [n, c, int(h * factors[0]), int(w * factors[1])]
        sizes = sizes[2:] if use_axes else sizes
        roi = empty if b.opset < 13 else ""
        scales = empty if b.opset < 13 else ""
        b.op("Resize", [t, roi, scales, b.ints(sizes)], **attrs)
    else:
        roi = empty if b.opset < 13 else ""
        b.op("Resize", [t, roi, b.const(np.asarray(full, F32), "scales")], **attrs)


def emit_depth_space(d, b, t):
    n, c, h, w = b.shape(t)
    to_space = [k for k in (2, 3) if c % (k * k) == 0]
    to_depth = [k for k in (2, 3) if h % k == 0 and w % k == 0]
    if to_space and (not to_depth or d(st.booleans())):
        attrs = dict(blocksize=d(st.sampled_from(to_space)))
        if b.opset >= 11:
            attrs["mode"] = d(st.sampled_from(["DCR", "CRD"]))
        b.op("DepthToSpace", [t], **attrs)
    elif to_depth:
        b.op("SpaceToDepth", [t], blocksize=d(st.sampled_from(to_depth)))
    else:  # make channels divisible by 4 next time
        b.op("Concat", [t, t, t, t] if 4 * n * c * h * w <= MAX_ELEMENTS else [t], axis=1)


def emit_squeeze(d, b, t):
    s = b.shape(t)
    axis = d(st.integers(0, len(s)))
    if b.opset < 13:
        u = b.op("Unsqueeze", [t], pool=False, axes=[axis])
    else:
        u = b.op("Unsqueeze", [t, b.ints([axis])], pool=False)
    ones = [a for a, v in enumerate(b.shape(u)) if v == 1]
    drop = [d(st.sampled_from(ones))]
    if b.opset < 13:
        b.op("Squeeze", [u], axes=drop)
    else:
        b.op("Squeeze", [u, b.ints(drop)])


def emit_tile_expand(d, b, t):
    s = b.shape(t)
    if d(st.booleans()):
        reps = [d(st.integers(1, 2)) for _ in s]
        while int(np.prod(s)) * int(np.prod(reps)) > MAX_ELEMENTS:
            reps[reps.index(max(reps))] = 1
        b.op("Tile", [t, b.ints(reps)])
    else:
        target = [v if v != 1 else d(st.integers(1, 3)) for v in s]
        if int(np.prod(target)) > MAX_ELEMENTS:
            target = list(s)
        b.op("Expand", [t, b.ints(target)])


def emit_gather(d, b, t):
    s = b.shape(t)
    axis = d(st.integers(0, len(s) - 1))
    count = d(st.integers(1, 4))
    idx = [d(st.integers(-s[axis], s[axis] - 1)) for _ in range(count)]
    if d(st.integers(0, 3)) == 0:
        b.op("Gather", [t, b.ints(idx[0])], axis=axis)  # a scalar index drops the axis
    elif int(np.prod(s)) // s[axis] * count <= MAX_ELEMENTS:
        b.op("Gather", [t, b.ints(idx)], axis=axis - len(s) if d(st.booleans()) else axis)
    else:
        b.op("Identity", [t])


# -- op families -----------------------------------------------------------------------------

R4 = (4,)
ANY = (0, 1, 2, 3, 4)
POS = (1, 2, 3, 4)

PL_UNITS = [
    Op("Relu", _elementwise_unit("Relu")),
    Op("LeakyRelu", emit_leaky),
    Op("PRelu", emit_prelu),
    Op("Clip", emit_clip),
    Op("HardSigmoid", emit_hardsigmoid),
    Op("ThresholdedRelu", emit_thresholded),
    Op("Abs", _elementwise_unit("Abs")),
    Op("MaxConst", emit_max_const),
]
SELECTIONS = [
    Op("MaxTensors", emit_max_tensors),
    Op("MaxPool", emit_maxpool, ranks=R4),
    Op("GlobalPool", emit_global_pool, ranks=R4),
    Op("ReduceMaxMin", emit_reduce_select),
]
SMOOTH = [
    Op("Sigmoid", _elementwise_unit("Sigmoid")),
    Op("Tanh", _elementwise_unit("Tanh")),
    Op("Erf", _elementwise_unit("Erf")),
    Op("Elu", emit_elu),
    Op("Selu", emit_selu),
    Op("Softplus", _elementwise_unit("Softplus")),
    Op("Softsign", _elementwise_unit("Softsign")),
    Op("HardSwish", _elementwise_unit("HardSwish"), min_opset=14),
    Op("Mish", _elementwise_unit("Mish"), min_opset=18),
    Op("Gelu", _elementwise_unit("Gelu"), min_opset=20),
    Op("Exp", emit_exp),
    Op("Pow", emit_pow),
    Op("SqrtReciprocal", emit_sqrt_recip),
]
SOFTMAX = [Op("Softmax", emit_softmax, ranks=POS)]
BILINEAR = [Op("Bilinear", emit_bilinear_mul, ranks=POS)]
LINEAR = [
    Op("Conv", emit_conv, ranks=R4),
    Op("ConvTranspose", emit_conv_transpose, ranks=R4),
    Op("Gemm", emit_gemm, ranks=POS),
    Op("MatMulConst", emit_matmul_const, ranks=POS),
    Op("ArithConst", emit_arith_const),
    Op("Neg", emit_neg),
    Op("AddTensors", emit_add_tensors),
    Op("BatchNorm", emit_batchnorm, ranks=R4),
    Op("AveragePool", emit_avgpool, ranks=R4),
    Op("Reduce", emit_reduce),
    Op("Identity", emit_identity),
    Op("CumSum", emit_cumsum, min_opset=11, ranks=POS),
    Op("Where", emit_where),
]
NORMS = [
    Op("BatchNorm", emit_batchnorm, ranks=R4),
    Op("InstanceNorm", emit_instance_norm, ranks=R4),
    Op("LayerNorm", emit_layer_norm, min_opset=17, ranks=POS),
    Op("GroupNorm", emit_group_norm, min_opset=18, ranks=R4),
]
POOLS = [
    Op("MaxPoolAny", functools.partial(emit_maxpool, safe=False), ranks=R4),
    Op("AveragePoolAny", functools.partial(emit_avgpool, safe=False), ranks=R4),
    Op("MaxPool", emit_maxpool, ranks=R4),
    Op("GlobalPool", emit_global_pool, ranks=R4),
]
SHAPES = [
    Op("Reshape", emit_reshape, ranks=ANY),
    Op("Flatten", emit_flatten, ranks=POS),
    Op("Transpose", emit_transpose, ranks=POS),
    Op("Concat", emit_concat, ranks=POS),
    Op("Split", emit_split, ranks=POS),
    Op("Slice", emit_slice, ranks=POS),
    Op("Pad", emit_pad, ranks=POS),
    Op("Resize", emit_resize, min_opset=11, ranks=R4),
    Op("DepthSpace", emit_depth_space, ranks=R4),
    Op("Squeeze", emit_squeeze, ranks=POS),
    Op("TileExpand", emit_tile_expand, ranks=POS),
    Op("Gather", emit_gather, ranks=POS),
]

FAMILIES = {
    "piecewise": PL_UNITS + SELECTIONS + LINEAR,
    "smooth": SMOOTH + PL_UNITS + LINEAR,
    "softmax": SOFTMAX + SOFTMAX + LINEAR + PL_UNITS[:2],
    "bilinear": BILINEAR + BILINEAR + SMOOTH[:3] + PL_UNITS + LINEAR,
    "norm": NORMS + NORMS + PL_UNITS + LINEAR,
    "pool": POOLS + POOLS + PL_UNITS + LINEAR[:2],
    "shape": SHAPES + PL_UNITS + SELECTIONS[:1] + LINEAR[:1],
    # every family together; pools with ceil_mode, dilations and large pads are test_pool's own
    # (known geometry bugs there would end every mixed run at its first failure)
    "mixed": PL_UNITS + SELECTIONS + SMOOTH + SOFTMAX + BILINEAR + LINEAR + NORMS + SHAPES,
    "names": PL_UNITS + SELECTIONS + LINEAR + SMOOTH[:2],
}


# -- unsupported nodes (onnxscope must refuse them with UnsupportedModelError) -----------------


def _unsupported_simple(op, **attrs):
    def emit(d, b, t):
        return b.op(op, [t], **attrs)

    return emit


def emit_log(d, b, t):
    pos = b.op("Add", [b.op("Abs", [t], pool=False), b.const(1.0, "c")], pool=False)
    return b.op("Log", [pos])


def emit_topk(d, b, t):
    k = min(2, b.shape(t)[-1])
    values, _ = b.node("TopK", [t, b.ints([k])], 2, pool=False)
    b.pool.append(values)
    return values


def emit_clip_dependent(d, b, t):
    lo = b.op("Neg", [b.op("Abs", [t], pool=False)], pool=False)
    return b.op("Clip", [t, b.op("ReduceMin", [lo], pool=False, keepdims=0)])


def emit_prelu_dependent(d, b, t):
    return b.op("PRelu", [t, b.op("Sigmoid", [t], pool=False)])


def emit_pow_dependent(d, b, t):
    return b.op("Pow", [b.const(2.0, "base"), b.op("Tanh", [t], pool=False)])


def emit_conv_dependent_weights(d, b, t):
    n, c, h, w = b.shape(t)
    image = b.const(b.normal([1, c, h, w]), "img")
    return b.op("Conv", [image, t], kernel_shape=[h, w])


def emit_maxpool_storage(d, b, t):
    values, _ = b.node(
        "MaxPool", [t], 2, pool=False, kernel_shape=[1, 1], strides=[1, 1], storage_order=1
    )
    b.pool.append(values)
    return values


UNSUPPORTED = [
    Op("Sin", _unsupported_simple("Sin")),
    Op("Cos", _unsupported_simple("Cos")),
    Op("Atan", _unsupported_simple("Atan")),
    Op("Sinh", _unsupported_simple("Sinh")),
    Op("Log", emit_log),
    Op("Hardmax", _unsupported_simple("Hardmax"), min_opset=13, ranks=POS),
    Op("LRN", _unsupported_simple("LRN", size=3), ranks=R4),
    Op("LpNormalization", _unsupported_simple("LpNormalization", axis=1), ranks=R4),
    Op("GlobalLpPool", _unsupported_simple("GlobalLpPool"), ranks=R4),
    Op("ReduceL2", _unsupported_simple("ReduceL2", keepdims=1), ranks=POS),
    Op("ReduceLogSumExp", _unsupported_simple("ReduceLogSumExp", keepdims=1), ranks=POS),
    Op("ReduceProd", _unsupported_simple("ReduceProd", keepdims=1), ranks=POS),
    Op("ReduceSumSquare", _unsupported_simple("ReduceSumSquare", keepdims=1), ranks=POS),
    Op("MeanVarianceNormalization", _unsupported_simple("MeanVarianceNormalization"), ranks=R4),
    Op("Shrink", _unsupported_simple("Shrink", lambd=0.5)),
    Op("Trilu", _unsupported_simple("Trilu"), min_opset=14, ranks=(2, 3, 4)),
    Op("TopK", emit_topk, ranks=POS),
    Op("ClipDependentBound", emit_clip_dependent, min_opset=11),
    Op("PReluDependentSlope", emit_prelu_dependent),
    Op("PowDependentExponent", emit_pow_dependent),
    Op("ConvDependentWeights", emit_conv_dependent_weights, ranks=R4),
    Op("MaxPoolStorageOrder", emit_maxpool_storage, ranks=R4),
]


# -- strategies ------------------------------------------------------------------------------


@dataclass
class Case:
    model: onnx.ModelProto
    x: np.ndarray
    family: str
    piecewise: bool
    text: str
    floats: dict = field(default_factory=dict)  # every float32 tensor of the model: its shape
    bad_node: str | None = None  # the unsupported node's name (test_unsupported)
    bad_op: str | None = None

    def __repr__(self) -> str:
        return (
            f"Case(family={self.family}, opset={self.model.opset_import[0].version})\n{self.text}"
        )


def _pick(d, b, op: Op) -> str | None:
    """An operand for `op`: usually the newest tensor, sometimes an older one (fan-out)."""
    ok = [t for t in reversed(b.pool) if len(b.shape(t)) in op.ranks and op.applies(b, b.shape(t))]
    if not ok:
        return None
    return ok[d(st.integers(0, len(ok) - 1))]


def _grow(d, b, ops: list[Op], steps: int) -> None:
    usable = [op for op in ops if op.min_opset <= b.opset]
    for _ in range(steps):
        op = d(st.sampled_from(usable))
        t = _pick(d, b, op)
        if t is None:  # no operand of a rank this op takes: back to 4-D first
            t = b.pool[-1]
            emit_reshape(d, b, t)
            continue
        if op in SMOOTH or op in SOFTMAX:
            b.kinds.add("smooth")
        op.emit(d, b, t)


def input_array(rng, shape, scale, pattern) -> np.ndarray:
    """An input at `scale` with a `pattern`: ties and exact zeros (grid, zeros, ties), or every
    element negative (softmax logits far below 0 at scale 1e3)."""
    x = rng.standard_normal(shape) * scale
    if pattern == "grid":  # a coarse grid: many ties and exact zeros
        x = np.round(x / scale * 2.0) / 2.0 * scale
    elif pattern == "zeros":
        x[rng.random(shape) < 0.3] = 0.0
    elif pattern == "ties":  # a few distinct values
        x = rng.choice(np.asarray([-1.0, -0.5, 0.0, 0.5, 1.0, 2.0]) * scale, shape)
    elif pattern == "negative":
        x = -np.abs(x) - scale
    x = x.astype(F32)
    if not np.any(x):
        x.flat[0] = F32(scale)
    return x


TRICKY_PREFIXES = ("linear/", "bias/", "adjoint/", "probe", "mask/", "x")


@st.composite
def cases(draw, family: str, min_steps: int = 3, max_steps: int = 10, tricky=False) -> Case:
    """A random graph of `family`; with `tricky`, every tensor and node name starts with one of
    the prefixes onnxscope uses for its own names ("linear/", "probe", ...)."""
    d = draw
    names = None
    if tricky:
        prefix = d(st.sampled_from(TRICKY_PREFIXES))
        names = lambda n: n if n == "probe" else prefix + n  # noqa: E731
    opset = d(st.sampled_from(OPSETS))
    shape = (1, d(st.integers(1, 4)), d(st.integers(3, 6)), d(st.integers(3, 6)))
    scale = d(st.sampled_from(SCALES))
    pattern = d(st.sampled_from(PATTERNS))
    seed = d(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    b = Builder(opset, scale, rng, names)
    b.pool.append(b.names("x") if names else "x")
    b.shapes[b.input_name] = shape
    _grow(d, b, FAMILIES[family], d(st.integers(min_steps, max_steps)))
    x = input_array(rng, shape, scale, pattern)
    model = b.model(shape)
    piecewise = not b.kinds and not any(n.op_type in SMOOTH_OPS for n in model.graph.node)
    text = (
        f"opset {opset}, x {list(shape)} scale {scale:g} pattern {pattern} seed {seed}\n  "
        + "\n  ".join(b.lines)
    )
    floats = {k: v for k, v in b.shapes.items() if k not in b.doubles}
    return Case(model, x, family, piecewise, text, floats)


@st.composite
def unsupported_cases(draw) -> Case:
    d = draw
    opset = d(st.sampled_from(OPSETS))
    shape = (1, d(st.integers(1, 4)), d(st.integers(3, 6)), d(st.integers(3, 6)))
    scale = d(st.sampled_from(SCALES))
    seed = d(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    b = Builder(opset, scale, rng)
    b.pool.append("x")
    b.shapes["x"] = shape
    _grow(d, b, FAMILIES["piecewise"], d(st.integers(0, 3)))
    usable = [op for op in UNSUPPORTED if op.min_opset <= opset]
    op = d(st.sampled_from(usable))
    t = _pick(d, b, op)
    if t is None:
        t = b.pool[-1]
        emit_reshape(d, b, t)
        t = b.pool[-1]
    before = len(b.nodes)
    op.emit(d, b, t)
    bad = next(n for n in b.nodes[before:] if n.op_type in UNSUPPORTED_OP_TYPES[op.name])
    _grow(d, b, FAMILIES["piecewise"], d(st.integers(0, 2)))
    x = input_array(rng, shape, scale, "normal")
    text = f"opset {opset}, x {list(shape)} scale {scale:g} seed {seed}\n  " + "\n  ".join(b.lines)
    return Case(b.model(shape), x, "unsupported", False, text, {}, bad.name, bad.op_type)


UNSUPPORTED_OP_TYPES = {op.name: {op.name} for op in UNSUPPORTED}
UNSUPPORTED_OP_TYPES.update(
    ClipDependentBound={"Clip"},
    PReluDependentSlope={"PRelu"},
    PowDependentExponent={"Pow"},
    ConvDependentWeights={"Conv"},
    MaxPoolStorageOrder={"MaxPool"},
)

SMOOTH_OPS = {
    "Sigmoid", "Tanh", "Erf", "Elu", "Celu", "Selu", "Softplus", "Softsign", "HardSwish", "Mish",
    "Gelu", "Exp", "Pow", "Sqrt", "Reciprocal", "Softmax", "LogSoftmax", "InstanceNormalization",
    "LayerNormalization", "GroupNormalization",
}  # fmt: skip
