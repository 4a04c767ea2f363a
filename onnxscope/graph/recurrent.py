"""Recurrent ops (`LSTM`, `GRU`, `RNN`) unrolled before analysis at the static sequence length,
into ops that have rules (MatMul, Add, Mul, Gather, Concat, the activations), so that their gates
and units are frozen as any gate or unit is:

    analyzed = unroll_recurrent(analyzed)  # same object if the model has no recurrent node

The unrolled computation follows the ONNX operator specs (onnx/defs/rnn/defs.cc), per direction
(forward, reverse, or both for "bidirectional"), with X_t the step's input and H the state:

    RNN:  H = f(X_t W^T + H R^T + Wb + Rb)
    GRU:  z = f(X_t Wz^T + H Rz^T + Wbz + Rbz),   r = f(... Wr, Rr ...)
          n = g(X_t Wh^T + (r ⊙ H) Rh^T + Rbh + Wbh)          linear_before_reset = 0
          n = g(X_t Wh^T + r ⊙ (H Rh^T + Rbh) + Wbh)          linear_before_reset = 1
          H = (1 − z) ⊙ n + z ⊙ H
    LSTM: i = f(X_t Wi^T + H Ri^T + Pi ⊙ C + Wbi + Rbi),   f_t likewise with Pf (1 − i when
          input_forget), c = g(X_t Wc^T + H Rc^T + Wbc + Rbc), C = f_t ⊙ C + i ⊙ c,
          o = f(X_t Wo^T + H Ro^T + Po ⊙ C + Wbo + Rbo),   H = o ⊙ h(C)

`clip` clips every activation's input. Each gate product is written Mul(feature, gate) — the
state or candidate first, the gate second — which is the operand order in which the Mul rule
(rules/arithmetic.bilinear_plan) keeps the feature linear and freezes the gate. With static
`sequence_lens`, batch element b's steps t ≥ len_b leave its state as it is and give Y = 0; the
reverse direction starts at step len_b − 1. Each round of unrolling is checked: the unrolled
model's outputs must equal the model's at the analysis inputs to float rounding (relative error
≤ `CHECK_RTOL` of each output's largest magnitude), else the unrolling is refused.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..errors import ModelError
from .controlflow import MAX_UNROLLED_NODES, Inliner, node_attr, outputs_at_analysis_inputs
from .model import AnalyzedModel, default_opset, graph_names

RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})
CHECK_RTOL = 1e-5

# per op: the gates in the order of W's rows, and the default activations of one direction
GATES = {"RNN": "i", "GRU": "zrh", "LSTM": "iofc"}
DEFAULT_ACTIVATIONS = {
    "RNN": ["Tanh"],
    "GRU": ["Sigmoid", "Tanh"],
    "LSTM": ["Sigmoid"] + 2 * ["Tanh"],
}
# activation → (ONNX op it is written with or None, its parameters' defaults: alpha, beta)
ACTIVATIONS: dict[str, tuple[str | None, tuple[float, ...]]] = {
    "Relu": ("Relu", ()),
    "Tanh": ("Tanh", ()),
    "Sigmoid": ("Sigmoid", ()),
    "Softsign": ("Softsign", ()),
    "Softplus": ("Softplus", ()),
    "LeakyRelu": ("LeakyRelu", (0.01,)),
    "ThresholdedRelu": ("ThresholdedRelu", (1.0,)),
    "Elu": ("Elu", (1.0,)),
    "HardSigmoid": ("HardSigmoid", (0.2, 0.5)),
    "Affine": (None, (1.0, 0.0)),  # alpha·u + beta
    "ScaledTanh": (None, (1.0, 1.0)),  # alpha·tanh(beta·u)
}


def unroll_recurrent(analyzed: AnalyzedModel) -> AnalyzedModel:
    """`analyzed`, or the analysis of its model with every LSTM, GRU and RNN node unrolled."""
    found = {
        k: n
        for k, n in enumerate(analyzed.nodes)
        if n.op_type in RECURRENT_OPS and n.domain in ("", "ai.onnx")
    }
    if not found:
        return analyzed
    model = onnx.ModelProto()
    model.CopyFrom(analyzed.model)
    graph = model.graph
    used, budget, opset = graph_names(graph), [MAX_UNROLLED_NODES], default_opset(model)
    nodes = []
    for k, node in enumerate(graph.node):
        if k not in found:
            nodes.append(node)
            continue
        out = Inliner(graph, node, k, used, budget, opset)
        _Unroller(analyzed, node, out).run()
        budget[0] -= len(out.nodes)
        if budget[0] < 0:
            raise ModelError(
                f"{node.op_type} node '{node.name}' would unroll to more than "
                f"{MAX_UNROLLED_NODES} nodes; not unrolled."
            )
        nodes.extend(out.nodes)
    del graph.node[:]
    graph.node.extend(nodes)
    unrolled = AnalyzedModel(model, analyzed.input_shapes, analyzed._values)
    _check_close(analyzed, unrolled, list(found.values()))
    return unrolled


class _Unroller:
    """The nodes that compute one recurrent node's outputs, step by step."""

    def __init__(self, analyzed: AnalyzedModel, node: onnx.NodeProto, out: Inliner):
        self.a, self.node, self.out = analyzed, node, out
        self.op = node.op_type
        self.where = f"{self.op} node '{node.name}'"
        self.dtype = analyzed.dtype(node.input[0])
        self.layout = node_attr(node, "layout", 0)
        direction = node_attr(node, "direction", b"forward")
        self.direction = direction.decode() if isinstance(direction, bytes) else direction
        # R: [directions, gates·H, H]
        self.hidden = node_attr(node, "hidden_size") or analyzed.shape(node.input[2])[-1]
        self.clip = node_attr(node, "clip")
        self.reverse = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}.get(
            self.direction
        )
        if self.reverse is None:
            raise ModelError(f"{self.where}: unknown direction '{self.direction}'.")
        self.activations = self._activations()

    # -- inputs ----------------------------------------------------------------------------
    def _input(self, k: int) -> str:
        return self.node.input[k] if len(self.node.input) > k else ""

    def _constant(self, k: int, what: str) -> np.ndarray | None:
        name = self._input(k)
        if not name:
            return None
        if not self.a.is_static(name):
            raise ModelError(
                f"{self.where}: its {what} '{name}' depends on the input data; the unrolling "
                f"needs {what} known at the fixed input shapes (feed them as a constant)."
            )
        return np.asarray(self.a.static_value(name))

    def _activations(self) -> list[tuple[str, tuple[float, ...]]]:
        """(name, parameters) of each activation, for each direction in turn; the alphas and
        betas are consumed in order by the activations that take them (as ONNX Runtime reads
        the attributes), defaults where the lists end."""
        given = node_attr(self.node, "activations", [])
        names = [n.decode() if isinstance(n, bytes) else n for n in given]
        per_direction = len(DEFAULT_ACTIVATIONS[self.op])
        if not names:
            names = DEFAULT_ACTIVATIONS[self.op] * len(self.reverse)
        if len(names) != per_direction * len(self.reverse):
            raise ModelError(
                f"{self.where}: {len(names)} activations given; {per_direction} per direction "
                f"are needed."
            )
        alphas = list(node_attr(self.node, "activation_alpha", []))
        betas = list(node_attr(self.node, "activation_beta", []))
        found = []
        for name in names:
            canonical = {k.lower(): k for k in ACTIVATIONS}.get(name.lower())
            if canonical is None:
                raise ModelError(
                    f"{self.where}: activation '{name}' has no linearization rule (supported: "
                    f"{', '.join(ACTIVATIONS)})."
                )
            defaults = ACTIVATIONS[canonical][1]
            params = []
            for j, default in enumerate(defaults):
                pool = alphas if j == 0 else betas
                params.append(float(pool.pop(0)) if pool else default)
            found.append((canonical, tuple(params)))
        return found

    # -- building blocks -------------------------------------------------------------------
    def const(self, value, hint: str = "const") -> str:
        return self.out.const(np.asarray(value, self.dtype), hint)

    def index(self, name: str, k: int, axis: int) -> str:
        """name[k] along `axis` (the axis dropped)."""
        return self.out.op("Gather", [name, self.out.const(np.array(k, np.int64), "k")], axis=axis)

    def activate(self, u: str, activation: tuple[str, tuple[float, ...]]) -> str:
        if self.clip is not None:
            u = self._clip(u)
        name, params = activation
        op = ACTIVATIONS[name][0]
        if name == "Affine":
            scaled = self.out.op("Mul", [u, self.const(params[0], "alpha")])
            return self.out.op("Add", [scaled, self.const(params[1], "beta")])
        if name == "ScaledTanh":
            inner = self.out.op("Mul", [u, self.const(params[1], "beta")])
            return self.out.op(
                "Mul", [self.out.op("Tanh", [inner]), self.const(params[0], "alpha")]
            )
        attrs = dict(zip(("alpha", "beta"), params))
        return self.out.op(op, [u], **attrs)

    def _clip(self, u: str) -> str:
        bound = float(self.clip)
        if self.out.opset >= 11:
            return self.out.op("Clip", [u, self.const(-bound, "lo"), self.const(bound, "hi")])
        return self.out.op("Clip", [u], min=-bound, max=bound)

    def add(self, *terms: str) -> str:
        total = terms[0]
        for t in terms[1:]:
            total = self.out.op("Add", [total, t])
        return total

    def gate_product(self, feature: str, gate: str) -> str:
        """feature ⊙ gate, in the operand order that freezes the gate (see the module doc)."""
        return self.out.op("Mul", [feature, gate])

    def blend(self, new: str, old: str, valid: np.ndarray) -> str:
        """new where the batch element's step is valid, else old (static mask [batch, 1])."""
        if valid.all():
            return new
        keep = self.out.op("Mul", [new, self.const(valid[:, None], "valid")])
        held = self.out.op("Mul", [old, self.const(~valid[:, None], "held")])
        return self.out.op("Add", [keep, held])

    # -- the unrolling -----------------------------------------------------------------------
    def run(self) -> None:
        node, out, gates = self.node, self.out, GATES[self.op]
        x = node.input[0]
        if self.layout == 1:  # [batch, seq, input] → [seq, batch, input]
            x = out.op("Transpose", [x], perm=[1, 0, 2])
        steps, batch = self.a.shape(node.input[0])[:2][:: -1 if self.layout else 1]
        if steps == 0:
            raise ModelError(f"{self.where}: its sequence is empty at these shapes.")
        lengths = self._constant(4, "sequence_lens")
        lengths = np.full(batch, steps) if lengths is None else lengths.reshape(-1)
        states = [self._initial(5), self._initial(6)]
        size = self.hidden
        ys, hs, cs = [], [], []
        per_direction = len(self.activations) // len(self.reverse)
        for d, reverse in enumerate(self.reverse):
            params = self._parameters(d, gates)
            params.act = self.activations[d * per_direction : (d + 1) * per_direction]
            h = states[0][d] if states[0] else self.const(np.zeros((batch, size)), "h0")
            c = states[1][d] if states[1] else self.const(np.zeros((batch, size)), "c0")
            projected = self._project(x, params)
            y = [None] * steps
            for t in reversed(range(steps)) if reverse else range(steps):
                valid = t < lengths
                step_in = {g: self.index(p, t, 0) for g, p in projected.items()}
                h_new, c_new = self._step(step_in, h, c, params)
                h = self.blend(h_new, h, valid)
                c = self.blend(c_new, c, valid) if c_new else c
                y[t] = h_new if valid.all() else out.op("Mul", [h_new, self.const(valid[:, None])])
            ys.append(y)
            hs.append(h)
            cs.append(c)
        self._outputs(ys, hs, cs)

    def _rows(self, k: int, d: int, block: int) -> str | None:
        """Rows block·hidden … (block+1)·hidden of input k's direction d (None if absent)."""
        name = self._input(k)
        if not name:
            return None
        rows = np.arange(block * self.hidden, (block + 1) * self.hidden, dtype=np.int64)
        return self.out.op("Gather", [self.index(name, d, 0), self.out.const(rows, "rows")], axis=0)

    def _parameters(self, d: int, gates: str) -> _Parameters:
        """Direction d's weights by gate, as graph tensors (W and R transposed for MatMul)."""
        n = len(gates)
        transposed = lambda k, j: self.out.op("Transpose", [self._rows(k, d, j)], perm=[1, 0])  # noqa: E731
        peepholes = [self._rows(7, d, j) for j in range(3)] if self.op == "LSTM" else []
        return _Parameters(
            {g: transposed(1, j) for j, g in enumerate(gates)},
            {g: transposed(2, j) for j, g in enumerate(gates)},
            {g: self._rows(3, d, j) for j, g in enumerate(gates)},
            {g: self._rows(3, d, n + j) for j, g in enumerate(gates)},
            peepholes if any(peepholes) else None,
        )

    def _initial(self, k: int) -> list[str]:
        """The initial state of each direction ([batch, hidden]), [] where absent."""
        name = self._input(k)
        if not name or (k == 6 and self.op != "LSTM"):
            return []
        axis = 1 if self.layout == 1 else 0  # [batch, dirs, hidden] with layout 1
        return [self.index(name, d, axis) for d in range(len(self.reverse))]

    def _project(self, x: str, p: _Parameters) -> dict[str, str]:
        """X W_g^T + input bias, for every step at once ([seq, batch, hidden] per gate)."""
        projected = {}
        for g, w in p.w.items():
            projected[g] = self.out.op("MatMul", [x, w])
            if p.wb[g] is None:  # (no B: zero biases)
                continue
            projected[g] = self.out.op("Add", [projected[g], p.wb[g]])
            if not (self.op == "GRU" and g == "h" and self.lbr):  # (that Rbh is inside r ⊙ …)
                projected[g] = self.out.op("Add", [projected[g], p.rb[g]])
        return projected

    @property
    def lbr(self) -> bool:
        return bool(node_attr(self.node, "linear_before_reset", 0))

    def recur(self, h: str, p: _Parameters, g: str) -> str:
        return self.out.op("MatMul", [h, p.r[g]])

    def _step(self, x, h, c, p: _Parameters) -> tuple[str, str | None]:
        """(new H, new C or None) from this step's projected inputs and the previous state."""
        out = self.out
        if self.op == "RNN":
            return self.activate(self.add(x["i"], self.recur(h, p, "i")), p.act[0]), None
        if self.op == "GRU":
            f, g = p.act
            z = self.activate(self.add(x["z"], self.recur(h, p, "z")), f)
            r = self.activate(self.add(x["r"], self.recur(h, p, "r")), f)
            if self.lbr:
                hr = self.recur(h, p, "h")
                hr = hr if p.rb["h"] is None else out.op("Add", [hr, p.rb["h"]])
                n = self.activate(self.add(x["h"], self.gate_product(hr, r)), g)
            else:
                n = self.activate(self.add(x["h"], self.recur(self.gate_product(h, r), p, "h")), g)
            keep = out.op("Sub", [self.const(1.0, "one"), z])
            return self.add(self.gate_product(n, keep), self.gate_product(h, z)), None
        f, g, hact = p.act

        def peep(j: int, state: str) -> list[str]:  # P_j ⊙ C, j in the order i, o, f
            if p.p is None:
                return []
            return [out.op("Mul", [state, p.p[j]])]

        i = self.activate(self.add(x["i"], self.recur(h, p, "i"), *peep(0, c)), f)
        if node_attr(self.node, "input_forget", 0):
            forget = out.op("Sub", [self.const(1.0, "one"), i])
        else:
            forget = self.activate(self.add(x["f"], self.recur(h, p, "f"), *peep(2, c)), f)
        cand = self.activate(self.add(x["c"], self.recur(h, p, "c")), g)
        c_new = self.add(self.gate_product(c, forget), self.gate_product(cand, i))
        o = self.activate(self.add(x["o"], self.recur(h, p, "o"), *peep(1, c_new)), f)
        return self.gate_product(self.activate(c_new, hact), o), c_new

    def _outputs(self, ys: list[list[str]], hs: list[str], cs: list[str]) -> None:
        out, names = self.out, list(self.node.output) + ["", "", ""]
        y, y_h, y_c = names[:3]
        if y:  # [seq, dirs, batch, hidden] (layout 1: [batch, seq, dirs, hidden])
            per_step = [
                out.op("Concat", [out.unsqueeze(ys[d][t], 0) for d in range(len(ys))], axis=0)
                for t in range(len(ys[0]))
            ]
            stacked = out.fresh("y") if self.layout else y
            out.stack(per_step, 0, stacked)
            if self.layout:
                out.op("Transpose", [stacked], y, perm=[2, 0, 1, 3])
        for name, parts in ((y_h, hs), (y_c, cs if self.op == "LSTM" else [])):
            if not name or not parts:
                continue
            out.stack(parts, 1 if self.layout else 0, name)  # layout 1: [batch, dirs, hidden]


class _Parameters:
    """One direction's tensors by gate: w and r (input and recurrence weights, transposed), wb
    and rb (their biases, None without B), p (the peepholes i, o, f, or None) and act (its
    activations)."""

    def __init__(self, w, r, wb, rb, p, act=()):
        self.w, self.r, self.wb, self.rb, self.p, self.act = w, r, wb, rb, p, act


def _check_close(before: AnalyzedModel, after: AnalyzedModel, unrolled) -> None:
    """The unrolled model computes the same outputs to float rounding at the analysis inputs."""
    for name, a, b in zip(
        before.outputs, outputs_at_analysis_inputs(before), outputs_at_analysis_inputs(after)
    ):
        a, b = np.asarray(a), np.asarray(b)
        scale = float(np.max(np.abs(a))) if a.size and np.issubdtype(a.dtype, np.floating) else 0
        if a.shape != b.shape or not np.allclose(b, a, rtol=0, atol=CHECK_RTOL * scale):
            names = ", ".join(f"'{n.name}'" for n in unrolled)
            raise ModelError(
                f"Unrolling the recurrent node(s) {names} changed output '{name}'; not unrolled."
            )


__all__ = ["unroll_recurrent", "RECURRENT_OPS"]
