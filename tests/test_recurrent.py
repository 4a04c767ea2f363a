"""LSTM, GRU and RNN nodes, unrolled before analysis (onnxscope/graph/recurrent.py).

- PyTorch's nn.LSTM / nn.GRU / nn.RNN through both exporters: the mask graph's outputs equal a
  plain ONNX Runtime run of the export, and reconstruction, linearity and the adjoint hold at 1e-5;
- the rows A_x^T e_i equal torch's vjp of the same network with every unit frozen as onnxscope
  freezes it (see `test_rows_equal_torch_vjp_of_the_frozen_network`);
- every attribute of the ONNX specs on models written with onnx.helper: activations with their
  alpha/beta, clip, linear_before_reset, input_forget, peepholes, static sequence_lens, layout 1
  is left to the node tests (ONNX Runtime cannot run it, so it is refused in its words);
- a CRNN text recogniser (tests/zoo.py's, at a real size: conv stack, 2 BiLSTM, CTC head)
  verifies at 1e-5;
- refusals: an input-dependent sequence_lens, an activation no rule covers.
The ONNX node tests of these ops run in test_conformance.py (conformance_util counts recurrent
ops as expanded before analysis); here it is checked that they are collected there.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import check_model
from onnx import TensorProto, helper, numpy_helper

import onnxscope
from onnxscope.errors import ModelError
from onnxscope.graph import recurrent
from onnxscope.graph.recurrent import RECURRENT_OPS

torch = pytest.importorskip("torch")
from onnxscope.converters.pytorch import export  # noqa: E402

try:  # tests/ as a package, or (pytest's default rootdir-less import) as a plain directory
    from . import zoo  # noqa: E402
except ImportError:
    import zoo  # noqa: E402

SEQ, BATCH, FEATURES, HIDDEN = 5, 2, 4, 6


class Recurrent(torch.nn.Module):
    """One torch recurrent module; its output Y and its last state Y_h (optionally from a learned
    initial state), flattened side by side."""

    def __init__(self, kind: str, layers: int, bidirectional: bool, batch_first: bool, h0: bool):
        super().__init__()
        make = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN, "rnn_relu": None}
        args = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
        if kind == "rnn_relu":
            self.rnn = torch.nn.RNN(FEATURES, HIDDEN, nonlinearity="relu", **args)
        else:
            self.rnn = make[kind](FEATURES, HIDDEN, **args)
        self.kind, self.batch_first = kind, batch_first
        shape = (layers * (2 if bidirectional else 1), BATCH, HIDDEN)
        self.h0 = torch.nn.Parameter(torch.randn(shape) * 0.5) if h0 else None
        self.c0 = torch.nn.Parameter(torch.randn(shape) * 0.5) if h0 and kind == "lstm" else None

    def forward(self, x):
        state = None
        if self.h0 is not None:
            state = (self.h0, self.c0) if self.kind == "lstm" else self.h0
        y, last = self.rnn(x, state)
        h_n = last[0] if self.kind == "lstm" else last
        y = y if self.batch_first else y.transpose(0, 1)  # [batch, seq, dirs·hidden]
        return torch.cat([y.flatten(1), h_n.transpose(0, 1).flatten(1)], 1)


def example(batch_first: bool) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(SEQ, BATCH, FEATURES)
    return x.transpose(0, 1).contiguous() if batch_first else x


# (kind, layers, bidirectional, batch_first, initial states)
CONFIGS = [
    ("lstm", 1, False, False, False),
    ("lstm", 2, True, True, True),
    ("gru", 1, True, False, True),
    ("gru", 2, False, True, False),
    ("rnn", 2, True, False, False),
    ("rnn_relu", 1, False, True, True),
]


def exported(tmp_path, module, x, exporter: str) -> onnx.ModelProto:
    path = tmp_path / "model.onnx"
    export(module, x, path, dynamo=exporter == "dynamo")
    return onnx.load(str(path))


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(str(v) for v in c))
def test_torch_recurrent_modules_verify(tmp_path, config, exporter):
    torch.manual_seed(1)
    module = Recurrent(*config).eval()
    x = example(config[3])
    model = exported(tmp_path, module, x, exporter)
    if exporter == "legacy" or config[0] in ("lstm", "gru"):  # (dynamo writes RNN out in ops)
        assert any(n.op_type in RECURRENT_OPS for n in model.graph.node)
    checked = check_model(model, {"x": x.numpy()}, tol=1e-5, out_rtol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(checked.it.outputs["y"], module(x).numpy(), rtol=0, atol=1e-5)
    assert not any(n.op_type in RECURRENT_OPS for n in checked.scope.analyze({"x": x.shape}).nodes)


# -- rows against torch's vjp of the frozen network -----------------------------------------------

EPS = 1e-6  # below this |u| the secant is its limit f'(0), as the rules guard it


def secant(f, u: torch.Tensor) -> torch.Tensor:
    """(f(u) - f(0)) / u, f'(0) near 0 (DESIGN.md section 2), as a constant."""
    u = u.detach()
    f0 = f(torch.zeros((), dtype=u.dtype))
    slope = (f(torch.full((), 1e-4, dtype=u.dtype)) - f0) / 1e-4  # (only where |u| < EPS)
    return torch.where(u.abs() < EPS, slope, (f(u) - f0) / torch.where(u.abs() < EPS, 1, u))


class Pair:
    """A tensor of the real network (`real`, at x) and of the frozen one (`lin`, affine in z);
    `static`: computed from constants alone (onnxscope folds it: no linear part)."""

    def __init__(self, real, lin, static: bool = False):
        self.real, self.lin, self.static = real, lin, static

    def affine(self, weight, bias) -> Pair:
        return Pair(self.real @ weight.T + bias, self.lin @ weight.T + bias, self.static)

    def __add__(self, other: Pair) -> Pair:
        return Pair(self.real + other.real, self.lin + other.lin, self.static and other.static)

    def unit(self, f) -> Pair:  # f(u) frozen to g·u + f(0), g its secant at the real u
        if self.static:
            return Pair(f(self.real), f(self.real), True)
        if f is torch.relu:
            return Pair(f(self.real), (self.real > 0).to(self.lin.dtype) * self.lin)
        f0 = f(torch.zeros((), dtype=self.real.dtype))
        return Pair(f(self.real), secant(f, self.real) * self.lin + f0)

    def times_gate(self, gate: Pair) -> Pair:
        """feature ⊙ gate: the gate's value frozen where both vary; a product with a constant
        is affine, so a gate times a constant keeps its (secant-frozen) linear part."""
        if self.static:
            return Pair(self.real * gate.real, self.real * gate.lin, gate.static)
        return Pair(self.real * gate.real, self.lin * gate.real.detach())


def frozen_layer(module, kind: str, layer: int, reverse: bool, xs: list[Pair], h: Pair, c: Pair):
    """One layer and direction of a torch recurrent module, on both streams (torch's gate order:
    LSTM i f g o, GRU r z n)."""
    tag = f"l{layer}" + ("_reverse" if reverse else "")
    w_ih, w_hh = getattr(module, f"weight_ih_{tag}"), getattr(module, f"weight_hh_{tag}")
    b_ih, b_hh = getattr(module, f"bias_ih_{tag}"), getattr(module, f"bias_hh_{tag}")
    n = HIDDEN
    block = lambda t, j: t[j * n : (j + 1) * n]  # noqa: E731
    ys = [None] * len(xs)
    for t in reversed(range(len(xs))) if reverse else range(len(xs)):
        x = xs[t]
        pre = [
            x.affine(block(w_ih, j), block(b_ih, j)) + h.affine(block(w_hh, j), block(b_hh, j))
            for j in range(4 if kind == "lstm" else 3 if kind == "gru" else 1)
        ]
        if kind == "lstm":
            i, f, g, o = pre
            i, f, o = (p.unit(torch.sigmoid) for p in (i, f, o))
            c = c.times_gate(f) + g.unit(torch.tanh).times_gate(i)
            h = c.unit(torch.tanh).times_gate(o)
        elif kind == "gru":
            r = pre[0].unit(torch.sigmoid)
            z = pre[1].unit(torch.sigmoid)
            hn = h.affine(block(w_hh, 2), block(b_hh, 2))
            cand = (x.affine(block(w_ih, 2), block(b_ih, 2)) + hn.times_gate(r)).unit(torch.tanh)
            keep = Pair(1 - z.real, 1 - z.lin, z.static)
            h = cand.times_gate(keep) + h.times_gate(z)
        else:
            h = pre[0].unit(torch.relu if module.nonlinearity == "relu" else torch.tanh)
        ys[t] = h
    return ys


def frozen_forward(module, x: torch.Tensor, z: torch.Tensor, kind: str) -> Pair:
    """The module's output Y ([seq, batch, dirs·hidden], no initial state) on both streams."""
    xs = [Pair(x[t], z[t]) for t in range(x.shape[0])]
    zero = torch.zeros(BATCH, HIDDEN)
    for layer in range(module.num_layers):
        outs = []
        for reverse in [False, True] if module.bidirectional else [False]:
            state = Pair(zero, zero, static=True)  # (no initial state: zeros)
            outs.append(frozen_layer(module, kind, layer, reverse, xs, state, state))
        xs = [
            Pair(torch.cat([o[t].real for o in outs], -1), torch.cat([o[t].lin for o in outs], -1))
            for t in range(len(xs))
        ]
    return Pair(torch.stack([p.real for p in xs]), torch.stack([p.lin for p in xs]))


class OutputOnly(torch.nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)[0]


@pytest.mark.parametrize(
    ("kind", "layers", "bidirectional"), [("lstm", 2, True), ("gru", 1, True), ("rnn", 2, False)]
)
def test_rows_equal_torch_vjp_of_the_frozen_network(tmp_path, kind, layers, bidirectional):
    """What is compared: onnxscope's rows A_x^T e_i of the exported module's output Y (seq-first,
    no initial state, legacy exporter), for several output indices i, against
    torch.autograd.grad(F̂(z)[i], z) where F̂ is the same torch network (its own weights) with
    every unit frozen at x the way onnxscope freezes it: each sigmoid/tanh f(u) replaced by
    g·u + f(0) with g = (f(u0) − f(0))/u0 detached (its secant, DESIGN.md section 2), each ReLU by
    its 0/1 mask, and each gate product feature ⊙ gate by feature ⊙ value-of-gate (the Mul rule
    freezes the gate operand: LSTM f ⊙ C, c ⊙ i, tanh(C) ⊙ o; GRU r, z and 1 − z) — except where
    the feature is a constant (GRU's first step: r ⊙ (0·R + b_hn)), a product with a constant being
    affine: there the gate keeps its linear part, its sigmoid frozen by its secant. F̂ is affine in
    z, so its vjp is A_x^T e_i; F̂(x) = F(x) is checked too. This is the Jacobian's secant
    counterpart, not the Jacobian: the gates' own dependence on z is frozen away."""
    torch.manual_seed(2)
    make = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind]
    rnn = make(FEATURES, HIDDEN, num_layers=layers, bidirectional=bidirectional).eval()
    x = example(False)
    model = exported(tmp_path, OutputOnly(rnn), x, "legacy")
    it = onnxscope.LinearScope(model).interpret(x.numpy())
    z = x.clone().requires_grad_(True)
    with torch.no_grad():
        reference = rnn(x)[0]
    pair = frozen_forward(rnn, x, z, kind)
    np.testing.assert_allclose(pair.real.detach(), reference, rtol=0, atol=1e-6)
    np.testing.assert_allclose(pair.lin.detach(), reference, rtol=0, atol=1e-5)  # F̂(x) = F(x)
    flat = pair.lin.reshape(-1)
    for i in [0, 7, flat.numel() // 2, flat.numel() - 1]:
        (vjp,) = torch.autograd.grad(flat[i], z, retain_graph=True)
        row = it.rows(i)
        scale = float(vjp.abs().max())
        np.testing.assert_allclose(row.reshape(vjp.shape), vjp.numpy(), rtol=0, atol=1e-5 * scale)


# -- every attribute of the specs, on onnx.helper models ------------------------------------------


def recurrent_model(
    op: str,
    direction: str = "forward",
    lengths=None,
    h0=False,
    c0=False,
    peepholes=False,
    **attrs,
) -> onnx.ModelProto:
    """One `op` node on X [SEQ, BATCH, FEATURES] with random weights as initializers; its
    outputs Y, Y_h (and Y_c for LSTM)."""
    rng = np.random.default_rng(3)
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    dirs = 2 if direction == "bidirectional" else 1
    inits = {
        "W": rng.normal(0, 0.5, (dirs, gates * HIDDEN, FEATURES)),
        "R": rng.normal(0, 0.5, (dirs, gates * HIDDEN, HIDDEN)),
        "B": rng.normal(0, 0.5, (dirs, 2 * gates * HIDDEN)),
    }
    if lengths is not None:
        inits["lens"] = np.asarray(lengths, np.int32)
    if h0:
        inits["h0"] = rng.normal(0, 0.5, (dirs, BATCH, HIDDEN))
    if c0:
        inits["c0"] = rng.normal(0, 0.5, (dirs, BATCH, HIDDEN))
    if peepholes:
        inits["P"] = rng.normal(0, 0.5, (dirs, 3 * HIDDEN))
    inputs = ["X", "W", "R", "B", "lens" if lengths is not None else "", "h0" if h0 else ""]
    if op == "LSTM":
        inputs += ["c0" if c0 else "", "P" if peepholes else ""]
    while not inputs[-1]:
        inputs.pop()
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(
        op, inputs, outputs, name="cell", direction=direction, hidden_size=HIDDEN, **attrs
    )
    elem = TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "recurrent",
        [helper.make_tensor_value_info("X", elem, [SEQ, BATCH, FEATURES])],
        [
            helper.make_tensor_value_info(o, elem, shape)
            for o, shape in zip(outputs, [[SEQ, dirs, BATCH, HIDDEN], *2 * [[dirs, BATCH, HIDDEN]]])
        ],
        [
            numpy_helper.from_array(v if k == "lens" else v.astype(np.float32), k)
            for k, v in inits.items()
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def x_input() -> np.ndarray:
    return np.random.default_rng(4).normal(size=(SEQ, BATCH, FEATURES)).astype(np.float32)


SPEC_CASES = {
    "rnn-defaults": ("RNN", {}),
    "rnn-bidirectional-lens-h0": ("RNN", dict(direction="bidirectional", lengths=[3, 5], h0=True)),
    "rnn-relu-leaky": (
        "RNN",
        dict(direction="bidirectional", activations=["Relu", "LeakyRelu"], activation_alpha=[0.2]),
    ),
    "rnn-affine-clip": (
        "RNN",
        dict(activations=["Affine"], activation_alpha=[0.7], activation_beta=[0.1], clip=1.5),
    ),
    "rnn-scaledtanh": (
        "RNN",
        dict(activations=["ScaledTanh"], activation_alpha=[1.3], activation_beta=[0.6]),
    ),
    "rnn-elu-thresholded": (
        "RNN",
        dict(
            direction="bidirectional",
            activations=["Elu", "ThresholdedRelu"],
            activation_alpha=[0.5, 0.3],
        ),
    ),
    "rnn-softsign": ("RNN", dict(direction="reverse", activations=["Softsign"])),
    "rnn-softplus": ("RNN", dict(activations=["Softplus"])),
    "gru-lbr0": ("GRU", dict(direction="bidirectional", h0=True)),
    "gru-lbr1-lens-reverse": (
        "GRU",
        dict(direction="reverse", linear_before_reset=1, lengths=[2, 4]),
    ),
    "gru-hardsigmoid-clip": (
        "GRU",
        dict(
            activations=["HardSigmoid", "Tanh"],
            activation_alpha=[0.3],
            activation_beta=[0.4],
            clip=2.0,
        ),
    ),
    "lstm-peepholes-states": (
        "LSTM",
        dict(direction="bidirectional", h0=True, c0=True, peepholes=True),
    ),
    "lstm-lens-bidirectional": (
        "LSTM",
        dict(direction="bidirectional", lengths=[4, 1], peepholes=True),
    ),
    "lstm-input-forget-clip": ("LSTM", dict(input_forget=1, clip=0.8)),
    "lstm-activations": (
        "LSTM",
        dict(
            activations=["HardSigmoid", "Elu", "Softsign"],
            activation_alpha=[0.25, 0.9],
            activation_beta=[0.45],
        ),
    ),
}


@pytest.mark.parametrize("case", list(SPEC_CASES))
def test_spec_attributes_verify(case):
    """(float32 only: ONNX Runtime's LSTM, GRU and RNN kernels do not run float64.)"""
    op, kwargs = SPEC_CASES[case]
    check_model(recurrent_model(op, **kwargs), {"X": x_input()}, tol=1e-5, out_rtol=1e-5)


def test_sequence_lens_mask_steps_and_hold_states():
    """Past a batch element's length, Y is 0 and Y_h is the last valid step's state."""
    model = recurrent_model("GRU", direction="bidirectional", lengths=[2, 5])
    it = onnxscope.LinearScope(model).interpret(x_input())
    y = it.outputs["Y"]  # [seq, dirs, batch, hidden]
    assert np.all(y[2:, :, 0] == 0) and np.all(np.abs(y[:2, :, 0]) > 0)
    np.testing.assert_array_equal(it.outputs["Y_h"][0, 0], y[1, 0, 0])  # forward: step 1
    np.testing.assert_array_equal(it.outputs["Y_h"][1, 0], y[0, 1, 0])  # reverse: step 0


# -- a CRNN text recogniser ------------------------------------------------------------------------


def test_crnn_verifies(tmp_path):
    """The zoo's CRNN (tests/zoo.py) at a real size: conv widths 32-256 on a 1×32×128 text line
    → 32 columns of 256 features → 2 BiLSTM of hidden size 128 → 37 classes."""
    torch.manual_seed(5)
    module = zoo.CRNN(widths=(32, 64, 128, 256), hidden=128).eval()
    x = torch.rand(1, 1, 32, 128)
    model = exported(tmp_path, module, x, "legacy")
    assert sum(n.op_type == "LSTM" for n in model.graph.node) == 2
    checked = check_model(model, {"x": x.numpy()}, tol=1e-5, out_rtol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(checked.it.outputs["y"], module(x).numpy(), rtol=0, atol=1e-4)


# -- refusals -------------------------------------------------------------------------------------


def test_input_dependent_sequence_lens_is_refused():
    """sequence_lens computed from X (1 + argmax over time of feature 0): named, and why."""
    model = recurrent_model("RNN")
    graph = model.graph
    axis0 = numpy_helper.from_array(np.array([0], np.int64), "feature0")
    graph.initializer.extend([axis0, numpy_helper.from_array(np.array(1, np.int64), "one")])
    graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    graph.node.insert(0, helper.make_node("Cast", ["lens64"], ["lens"], to=TensorProto.INT32))
    graph.node.insert(0, helper.make_node("Add", ["arg", "one"], ["lens64"]))
    graph.node.insert(0, helper.make_node("Squeeze", ["arg1", "axis1"], ["arg"]))
    graph.node.insert(0, helper.make_node("Gather", ["argmax", "feature0"], ["arg1"], axis=1))
    graph.node.insert(0, helper.make_node("ArgMax", ["X"], ["argmax"], axis=0, keepdims=0))
    cell = graph.node[-1]
    cell.input[:] = ["X", "W", "R", "B", "lens"]
    with pytest.raises(ModelError, match=r"RNN node 'cell'.*sequence_lens 'lens' depends on"):
        onnxscope.LinearScope(model).interpret(x_input())


def test_activation_without_rule_is_refused(monkeypatch):
    """Every activation the specs allow has a rule, so the unroller's refusal is exercised by
    taking one (Softsign) out of its table: the error names node, op and activation. A name
    outside the specs (Gelu) is refused earlier, in ONNX Runtime's own words."""
    model = recurrent_model("RNN", activations=["Softsign"])
    monkeypatch.delitem(recurrent.ACTIVATIONS, "Softsign")
    with pytest.raises(ModelError, match=r"RNN node 'cell': activation 'Softsign' has no lin"):
        onnxscope.LinearScope(model).interpret(x_input())
    with pytest.raises(ModelError, match=r"ONNX Runtime cannot run.*Gelu"):
        onnxscope.LinearScope(recurrent_model("RNN", activations=["Gelu"])).interpret(x_input())


def test_node_tests_of_recurrent_ops_are_collected():
    """test_conformance runs the onnx wheel's LSTM/GRU/RNN node tests: they are applicable."""
    from conformance_util import node_tests

    names = ("test_lstm_", "test_gru_", "test_rnn_", "test_simple_rnn_")
    found = [t for t in node_tests() if t.name.startswith(names)]
    assert len(found) >= 15
    assert all(t.app.applicable for t in found), [t.name for t in found if not t.app.applicable]
