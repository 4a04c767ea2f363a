"""The exactness checks of one interpretation (DESIGN.md section 4), each with the float noise
floor measured in the same run, so that `verify` says neither "ok" on a wrong answer nor
"FAILED" on an exact one.

- reconstruction ‖F(x) − (A_x x + c_x)‖ / ‖F(x)‖. Relative to the output itself: where A_x x
  and c_x are far larger than F(x) and cancel, the decomposition has lost F(x)'s digits, and
  that is a failure of the rule, not a pass. Their ratio is reported as `conditioning`,
  (‖A_x x‖ + ‖c_x‖) / ‖F(x)‖ (1 for a well-conditioned split).
- linearity ‖A(αz₁ + βz₂) − (αAz₁ + βAz₂)‖ / max(‖αAz₁ + βAz₂‖, |α|‖Az₁‖ + |β|‖Az₂‖) for
  random z₁, z₂, relative to the terms added: float32 cannot resolve a sum better than its terms.
- adjoint |⟨A z, w⟩ − ⟨z, Aᵀw⟩| / max(‖A z‖ ‖w‖, ‖z‖ ‖Aᵀw‖) for random z, w: a zero or tiny map
  (A z exactly 0) is not a failure unless Aᵀw disagrees.

Noise floors: float arithmetic cannot evaluate a map more exactly than the map moves when its
argument is perturbed at its own precision. So each check also runs its map rounded otherwise
(each element scaled by 1 ± eps, eps the dtype's machine epsilon): the model at x̃ with every
intermediate tensor so perturbed too (`noise["reconstruction"]`: the model's own float noise,
which bounds how exactly any float evaluation can reproduce F(x); `jittered_model`), A_x at z̃₁
and A_xᵀ at w̃ (the noise of the linear and adjoint graphs themselves), each in the units of
its error. A check passes when its error is at
most max(tol, NOISE_FACTOR × its noise): an exact rewrite of a deep, cancelling net (a Gemm over
50,176 inputs at a random x) passes at its model's own precision, and a map that is zero up to
rounding (GlobalAveragePool of an InstanceNorm) passes, while a wrong answer, off by far more than
any rounding, still fails.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import numpy as np
import onnx

if TYPE_CHECKING:
    from .scope import Interpretation

# a check passes when its error is at most max(tol, NOISE_FACTOR x its measured noise floor)
NOISE_FACTOR = 8.0
DEFAULT_TOL = 1e-5
JITTER = 12345.678  # sin(JITTER * t): a pseudo-random sign per element of a tensor t
EPS = {np.dtype(t): float(np.finfo(t).eps) for t in (np.float32, np.float64)}


class Verification(Mapping):
    """The errors of the three identities (a mapping: name -> relative error), with the noise
    floor of each (`noise`), the conditioning of F(x) = A_x x + c_x, and the verdict."""

    def __init__(self, errors, noise, conditioning: float, tol: float, adjoint_error: str | None):
        self.errors: dict[str, float] = errors
        self.noise: dict[str, float] = noise
        self.conditioning = conditioning
        self.tol = tol
        self.adjoint_error = adjoint_error  # why the adjoint was not checked, or None

    def __getitem__(self, name: str) -> float:
        return self.errors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.errors)

    def __len__(self) -> int:
        return len(self.errors)

    @property
    def adjoint_checked(self) -> bool:
        return "adjoint" in self.errors

    def bound(self, name: str) -> float:
        """The largest error `name` may have and pass: max(tol, NOISE_FACTOR x its noise)."""
        return max(self.tol, NOISE_FACTOR * self.noise.get(name, 0.0))

    def passed(self, name: str) -> bool:
        return bool(self.errors[name] <= self.bound(name))  # NaN fails

    @property
    def ok(self) -> bool:
        """Every identity that was checked holds (see `adjoint_checked` for the adjoint)."""
        return all(self.passed(name) for name in self.errors)

    def as_dict(self) -> dict:
        return {
            "errors": dict(self.errors),
            "noise": dict(self.noise),
            "bounds": {n: self.bound(n) for n in self.errors},
            "passed": {n: self.passed(n) for n in self.errors},
            "conditioning": self.conditioning,
            "tol": self.tol,
            "adjoint_checked": self.adjoint_checked,
            "adjoint_error": self.adjoint_error,
            "ok": self.ok,
        }

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}={v:.3g}" for n, v in self.errors.items())
        return f"Verification({parts}, ok={self.ok})"


def verify(it: Interpretation, seed: int = 0, tol: float = DEFAULT_TOL) -> Verification:
    """The three identities at `it`'s x, with random probes drawn from `seed`."""
    rng = np.random.default_rng(seed)
    x = it.x
    wiggle = lambda v: _rounded_otherwise(v, rng)  # noqa: E731
    z1, z2 = rng.standard_normal((2, *x.shape)).astype(x.dtype)
    a, b = 0.7, -1.3
    # one batch of probes: x, z1, z2, a z1 + b z2 and z1 rounded otherwise
    images = it.apply_all(np.stack([x, z1, z2, a * z1 + b * z2, wiggle(z1)]))
    ax, az1, az2, direct, az1_wiggled = (
        _flat({n: v[k] for n, v in images.items()}) for k in range(5)
    )
    f, c = _flat(it.outputs), _flat(it.biases)
    f_wiggled = _flat(it.jittered_outputs(wiggle(x)))
    norm = _norm
    size, terms = norm(f), norm(ax) + norm(c)
    errors = {"reconstruction": _ratio(norm(f - (ax + c)), size)}
    noise = {"reconstruction": _ratio(norm(f_wiggled - f), size)}
    conditioning = _ratio(terms, size) if size or terms else 1.0  # 0 = 0 + 0: conditioned

    combo = a * az1 + b * az2
    scale = max(norm(combo), abs(a) * norm(az1) + abs(b) * norm(az2))
    # A's rounding noise per unit of probe, times the size of the probes combined
    per_probe = _ratio(norm(az1_wiggled - az1), norm(z1))
    probes = abs(a) * norm(z1) + abs(b) * norm(z2) + norm(a * z1 + b * z2)
    errors["linearity"] = _ratio(norm(direct - combo), scale)
    noise["linearity"] = _ratio(per_probe * probes, scale)

    adjoint_error = it.adjoint_unavailable()
    if adjoint_error is None:  # <A z, w> = <z, A^T w> for random z, w
        w = {n: rng.standard_normal(v.shape).astype(v.dtype) for n, v in it.outputs.items()}
        both = {n: np.stack([v, wiggle(v)]) for n, v in w.items()}
        atw, atw_wiggled = (v.ravel().astype(np.float64) for v in it.apply_T_all(both))
        w_flat, z_flat = _flat(w), z1.ravel().astype(np.float64)
        gap = abs(float(az1 @ w_flat) - float(z_flat @ atw))
        scale = max(norm(az1) * norm(w_flat), norm(z_flat) * norm(atw))
        floor = norm(w_flat) * norm(az1_wiggled - az1) + norm(z_flat) * norm(atw_wiggled - atw)
        errors["adjoint"] = _ratio(gap, scale)
        noise["adjoint"] = _ratio(floor, scale)
    return Verification(errors, noise, float(conditioning), tol, adjoint_error)


def jittered_model(model: onnx.ModelProto, analysis) -> onnx.ModelProto:
    """`model` (a graph of the analysed model's tensors, such as the mask graph) with every
    float32/float64 tensor that depends on the inputs (shape computations and constants left
    as they are) multiplied by 1 + eps * sin(JITTER * t), eps the
    dtype's machine epsilon: the same computation with each intermediate rounded another way,
    pseudo-randomly per element (ONNX Runtime lacks RandomUniformLike at opset 22). How far its
    outputs move is the model's own float noise, including what the rounding of an intermediate
    does downstream (logits -x - 20000 are only known to ulp(20000))."""
    from .builder import GraphBuilder
    from .model import default_opset, graph_names
    from .registry import rule_for
    from .rules.normalization import Normalization

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    b = GraphBuilder(default_opset(out), graph_names(graph), "onnxscope_jitter/")
    nodes = []
    for node in list(graph.node):
        nodes.append(node)
        for j, name in enumerate(node.output):
            try:  # values that depend on the inputs; not shape computations or constants
                dtype = np.dtype(analysis.dtype(name))
                if not name or analysis.is_static(name) or dtype not in EPS:
                    continue
            except Exception:  # a tensor of the rewrite's own, or without static facts
                continue
            raw = b.fresh(name)
            node.output[j] = raw
            jitter, eps, one = (b.const(np.asarray(v, dtype)) for v in (JITTER, EPS[dtype], 1))
            start = len(b.nodes)
            wave = b.op("Sin", [b.op("Mul", [raw, jitter])], "wave")
            scale = b.op("Add", [b.op("Mul", [wave, eps]), one], "scale")
            rule = rule_for(node)
            if j == 0 and isinstance(rule, Normalization):
                # its kernel's own rounding, which no rounding of its input shows (the output
                # of a group of equal values is bias whatever they are)
                jittered = b.op("Mul", [raw, scale], "jittered")
                scale_max = float(np.max(np.abs(analysis.static_value(node.input[1]))))
                terms = rule.rounding_scale(
                    node, b, analysis.shape(node.input[0]), dtype, scale_max
                )
                b.op("Add", [jittered, b.op("Mul", [terms, eps])], outputs=[name])
            else:
                b.op("Mul", [raw, scale], outputs=[name])
            nodes.extend(b.nodes[start:])
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(b.initializers.values())
    return out


def _rounded_otherwise(v: np.ndarray, rng) -> np.ndarray:
    """v with each element scaled by 1 ± eps: the same value to the dtype's precision, rounded
    another way."""
    if not np.issubdtype(v.dtype, np.floating):  # an integer output: exact as it is
        return v
    eps = np.finfo(v.dtype).eps
    signs = rng.choice(np.array([-1.0, 1.0]), size=v.shape)
    return (v.astype(np.float64) * (1.0 + eps * signs)).astype(v.dtype)


def _norm(v: np.ndarray) -> float:
    """‖v‖ without overflow: float64 norms of float64 outputs near the dtype's limits (a MaxPool
    window of padding only outputs -1.8e308) would be inf."""
    top = float(np.max(np.abs(v))) if v.size else 0.0
    if top == 0.0 or not np.isfinite(top):
        return top
    return top * float(np.linalg.norm(v / top))


def _ratio(num: float, den: float) -> float:
    """num / den, with 0 / 0 = 0 and x / 0 = inf (NaN stays NaN)."""
    num, den = float(num), float(den)
    if num == 0.0:
        return 0.0
    return num / den if den else float("inf")


def _flat(values: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.ravel(v).astype(np.float64) for v in values.values()])
