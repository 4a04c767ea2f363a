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
intermediate tensor so perturbed too (the model's own float noise, which bounds how exactly any
float evaluation can reproduce F(x); `jittered_model`) and the affine map A_x z + c_x at x̃ with
its value of each of the model's tensors so perturbed (`jittered_affine`), their sum
`noise["reconstruction"]`; A_x at z̃₁
and A_xᵀ at w̃ (the noise of the linear and adjoint graphs themselves), each in the units of
its error. A check passes when its error is at
most max(tol, NOISE_FACTOR × its noise): an exact rewrite of a deep, cancelling net (a Gemm over
50,176 inputs at a random x) passes at its model's own precision, and a map that is zero up to
rounding (GlobalAveragePool of an InstanceNorm) passes, while a wrong answer, off by far more than
any rounding, still fails.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import numpy as np
import onnx

if TYPE_CHECKING:
    from .scope import Interpretation

# a check passes when its error is at most max(tol, NOISE_FACTOR x its measured noise floor)
NOISE_FACTOR = 8.0
DEFAULT_TOL = 1e-5
# sin(f * t) for each f: pseudo-random factors 1 + eps sin(f t) per element of a tensor t, one
# draw per frequency. A factor rounds to 1 - eps/2, 1, or 1 + eps, so one draw leaves two
# elements that cancel (x_i - x_k) rounded alike about one time in four; the worst of four
# draws misses about one time in 250.
JITTERS = (12345.678, 23456.789, 34567.891, 45678.912)
FREQUENCY = "onnxscope_jitter/frequency"  # the jittered graphs' input for f
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
        # a batch of samples: each sample's own Verification (None for one input)
        self.per_sample: list[Verification] | None = None

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
        """The largest error `name` may have and pass: max(tol, NOISE_FACTOR x its noise); tol
        where the noise was not measured (NaN: the error was within tol)."""
        noise = self.noise.get(name, 0.0)
        return max(self.tol, NOISE_FACTOR * noise) if noise == noise else self.tol

    def passed(self, name: str) -> bool:
        return bool(self.errors[name] <= self.bound(name))  # NaN fails

    @property
    def ok(self) -> bool:
        """Every identity that was checked holds (see `adjoint_checked` for the adjoint), over
        the whole batch and for each sample."""
        whole = all(self.passed(name) for name in self.errors)
        return whole and all(v.ok for v in self.per_sample or ())

    def failed_samples(self) -> list[int]:
        """The samples whose own identities fail (empty for one input)."""
        return [n for n, v in enumerate(self.per_sample or ()) if not v.ok]

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
            **({"per_sample": [v.as_dict() for v in self.per_sample]} if self.per_sample else {}),
        }

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}={v:.3g}" for n, v in self.errors.items())
        return f"Verification({parts}, ok={self.ok})"


def verify(
    it: Interpretation, seed: int = 0, tol: float = DEFAULT_TOL, noise: str = "always"
) -> Verification:
    """The three identities at `it`'s x, with random probes drawn from `seed`; for a batch of
    samples, also each sample's own (`Verification.per_sample`). A sample's adjoint identity
    holds only if A_x is block-diagonal over the samples (no sample's output reads another
    sample), which is what lets one probe answer a target per sample.

    noise="needed": the reconstruction's noise floor (the model and its affine map run again,
    jittered: most of verify's time) is measured only where the error exceeds `tol`, the only
    case where it can change the verdict; elsewhere it is reported as NaN (not measured)."""
    rng = np.random.default_rng(seed)
    x = it.x
    wiggle = lambda v: _rounded_otherwise(v, rng)  # noqa: E731
    z1, z2 = rng.standard_normal((2, *x.shape)).astype(x.dtype)
    a, b = 0.7, -1.3
    # one batch of probes: x, z1, z2, a z1 + b z2 and z1 rounded otherwise
    images = it.apply_all(np.stack([x, z1, z2, a * z1 + b * z2, wiggle(z1)]))
    probes = {"x": x, "z1": z1, "z2": z2}
    for k, key in enumerate(("ax", "az1", "az2", "direct", "az1_wiggled")):
        probes[key] = {n: v[k] for n, v in images.items()}
    probes["f"], probes["c"] = it.outputs, it.biases
    x_wiggled = wiggle(x)

    @functools.cache
    def floors():
        """(A_x x + c_x, [(F, the affine map) jittered, per draw]): the reconstruction's floor."""
        draws = zip(it.jittered_outputs(x_wiggled), it.affine_outputs(x_wiggled, jittered=True))
        return it.affine_outputs(x), list(draws)

    probes["floors"] = floors
    if noise == "always":
        floors()
    adjoint_error = it.adjoint_unavailable()
    if adjoint_error is None:  # <A z, w> = <z, A^T w> for random z, w
        w = {n: rng.standard_normal(v.shape).astype(v.dtype) for n, v in it.outputs.items()}
        both = {n: np.stack([v, wiggle(v)]) for n, v in w.items()}
        atw = it.apply_T_all(both)
        probes["w"], probes["atw"], probes["atw_wiggled"] = w, atw[0], atw[1]
    if noise not in ("always", "needed"):
        raise ValueError(f"noise must be 'always' or 'needed', not {noise!r}")
    measure = lambda sample: _measure(probes, (a, b), sample, tol, adjoint_error)  # noqa: E731
    whole = measure(None)
    if it.samples and it.samples > 1:
        whole.per_sample = [measure(n) for n in range(it.samples)]
    return whole


def _measure(p: dict, ab, sample: int | None, tol: float, adjoint_error) -> Verification:
    """The errors and noise floors of the identities over everything (`sample` None) or over
    one sample's part of every tensor (axis 0)."""
    flat = lambda values: _flat(values, sample)  # noqa: E731
    norm = _norm
    a, b = ab
    ax, az1, az2, direct, az1_wiggled = (
        flat(p[k]) for k in ("ax", "az1", "az2", "direct", "az1_wiggled")
    )
    f, c = flat(p["f"]), flat(p["c"])
    size, terms = norm(f), norm(ax) + norm(c)
    errors = {"reconstruction": _ratio(norm(f - (ax + c)), size)}
    noise = {"reconstruction": math.nan}  # not measured: only where it can matter (verify)
    if p["floors"].cache_info().currsize or not errors["reconstruction"] <= tol:
        # F's own noise, plus that of A_x x + c_x: the model's tensors rounded otherwise,
        # carried through the frozen map (more than F shows where a frozen gain exceeds the
        # unit's slope); each the worst of the draws
        affine, draws = p["floors"]()
        affine, floor = flat(affine), 0.0
        for f_draw, a_draw in draws:
            floor = max(floor, norm(flat(f_draw) - f) + norm(flat(a_draw) - affine))
        noise["reconstruction"] = _ratio(floor, size)
    conditioning = _ratio(terms, size) if size or terms else 1.0  # 0 = 0 + 0: conditioned

    z1, z2 = flat({"": p["z1"]}), flat({"": p["z2"]})
    combo = a * az1 + b * az2
    scale = max(norm(combo), abs(a) * norm(az1) + abs(b) * norm(az2))
    # A's rounding noise per unit of probe, times the size of the probes combined
    per_probe = _ratio(norm(az1_wiggled - az1), norm(z1))
    probes = abs(a) * norm(z1) + abs(b) * norm(z2) + norm(a * z1 + b * z2)
    errors["linearity"] = _ratio(norm(direct - combo), scale)
    noise["linearity"] = _ratio(per_probe * probes, scale)

    if adjoint_error is None:
        w_flat = flat(p["w"])
        atw, atw_wiggled = flat({"": p["atw"]}), flat({"": p["atw_wiggled"]})
        gap = abs(float(az1 @ w_flat) - float(z1 @ atw))
        scale = max(norm(az1) * norm(w_flat), norm(z1) * norm(atw))
        floor = norm(w_flat) * norm(az1_wiggled - az1) + norm(z1) * norm(atw_wiggled - atw)
        errors["adjoint"] = _ratio(gap, scale)
        noise["adjoint"] = _ratio(floor, scale)
    return Verification(errors, noise, float(conditioning), tol, adjoint_error)


def sample_leak(it: Interpretation, seed: int = 0) -> float:
    """How much A_x couples the samples of a batch: the largest over samples n of
    |⟨(A z)_n, w_n⟩ − ⟨z_n, (Aᵀw)_n⟩| / max(‖(A z)_n‖‖w_n‖, ‖z_n‖‖(Aᵀw)_n‖) for random z, w,
    which is zero (up to rounding) for every n only if no off-diagonal block is; without an
    adjoint, ‖A z₀ outside sample 0‖ / ‖A z₀‖ for z₀ random in sample 0 only."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(it.x.shape).astype(it.x.dtype)
    if it.adjoint_unavailable() is not None:
        z[1:] = 0
        az = it.apply_all(z)
        rest, total = _flat({n: v[1:] for n, v in az.items()}), _flat(az)
        return _ratio(_norm(rest), _norm(total))
    az = it.apply_all(z)
    w = {n: rng.standard_normal(v.shape).astype(v.dtype) for n, v in it.outputs.items()}
    atw = it.apply_T_all(w)
    worst = 0.0
    for n in range(len(z)):
        azn, wn = _flat(az, n), _flat(w, n)
        zn, atwn = z[n].ravel().astype(np.float64), atw[n].ravel().astype(np.float64)
        scale = max(_norm(azn) * _norm(wn), _norm(zn) * _norm(atwn))
        worst = max(worst, _ratio(abs(float(azn @ wn) - float(zn @ atwn)), scale))
    return worst


def jittered_model(model: onnx.ModelProto, analysis) -> onnx.ModelProto:
    """`model` (a graph of the analysed model's tensors, such as the mask graph) with every
    float32/float64 tensor that depends on the inputs (shape computations and constants left
    as they are) rounded another way (`_jittered`). How far its outputs move is the model's own
    float noise, including what the rounding of an intermediate does downstream (logits
    -x - 20000 are only known to ulp(20000)). A normalization's output also moves by its
    kernel's own rounding, which no rounding of its input shows (`Normalization.rounding_scale`)."""
    from ..rewrite.registry import rule_for
    from ..rewrite.rules.normalization import Normalization

    def dtype_of(name: str):
        try:  # values that depend on the inputs; not shape computations or constants
            return None if analysis.is_static(name) else np.dtype(analysis.dtype(name))
        except Exception:  # a tensor of the rewrite's own, or without static facts
            return None

    def kernel_rounding(node, b, dtype) -> str | None:
        rule = rule_for(node)
        if not isinstance(rule, Normalization):
            return None
        scale_rank = len(analysis.shape(node.input[1]))
        return rule.rounding_scale(node, b, analysis.shape(node.input[0]), dtype, scale_rank)

    return _jittered(model, dtype_of, kernel_rounding)


def affine_map(bias: onnx.ModelProto, values: Mapping[str, str], wrt: str):
    """The bias graph fed z instead of its zero probe: A_x z + c_x, the affine map the
    interpretation is, in one graph (`values`: model tensor -> bias-graph tensor, `values[wrt]`
    its zero probe). Returns (model, the probe input's name)."""
    out = onnx.ModelProto()
    out.CopyFrom(bias)
    graph, probe = out.graph, values[wrt]
    (zero,) = [t for t in graph.initializer if t.name == probe]
    graph.initializer.remove(zero)
    graph.input.insert(0, onnx.helper.make_tensor_value_info(probe, zero.data_type, zero.dims))
    return out, probe


def jittered_affine(affine: onnx.ModelProto, values: Mapping[str, str], wrt: str, analysis):
    """`affine_map`'s graph with its value of each of the model's input-dependent float
    tensors rounded another way. At z = x̃ its outputs move by the model's own rounding carried
    to the outputs by the frozen map: where a frozen gain (the secant of a saturated unit)
    exceeds the unit's slope, that is more than F's own noise shows, and it is what separates
    A_x x + c_x from the model's F(x). Only the model's own tensors are rounded otherwise: the
    terms of a rule that dwarf their sum are not, so a rule that cancels still fails."""
    dtypes = {}
    for name, twin in values.items():
        if name != wrt and not analysis.is_static(name):
            dtypes[twin] = np.dtype(analysis.dtype(name))
    return _jittered(affine, dtypes.get)


def _jittered(model: onnx.ModelProto, dtype_of, kernel_rounding=None) -> onnx.ModelProto:
    """`model` with each node output t for which `dtype_of(t)` is float32/float64 multiplied by
    1 + eps * sin(f * t) (eps the dtype's machine epsilon, f the float64 input FREQUENCY): the
    same computation with t rounded another way, pseudo-randomly per element (ONNX Runtime lacks
    RandomUniformLike at opset 22); plus eps times `kernel_rounding(node, builder, dtype)` where
    that gives one."""
    from ..graph.builder import GraphBuilder
    from ..graph.model import default_opset, graph_names

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    b = GraphBuilder(default_opset(out), graph_names(graph) | {FREQUENCY}, "onnxscope_jitter/")
    graph.input.append(onnx.helper.make_tensor_value_info(FREQUENCY, onnx.TensorProto.DOUBLE, []))
    frequencies: dict[np.dtype, str] = {}  # the frequency in each float dtype
    nodes = []
    for node in list(graph.node):
        nodes.append(node)
        for j, name in enumerate(node.output):
            dtype = dtype_of(name) if name else None
            if dtype not in EPS:
                continue
            raw = b.fresh(name)
            node.output[j] = raw
            start = len(b.nodes)
            if dtype not in frequencies:
                to = onnx.helper.np_dtype_to_tensor_dtype(dtype)
                frequencies[dtype] = b.op("Cast", [FREQUENCY], "frequency", to=to)
            jitter = frequencies[dtype]
            eps, one = (b.const(np.asarray(v, dtype)) for v in (EPS[dtype], 1))
            wave = b.op("Sin", [b.op("Mul", [raw, jitter])], "wave")
            scale = b.op("Add", [b.op("Mul", [wave, eps]), one], "scale")
            terms = kernel_rounding(node, b, dtype) if kernel_rounding and j == 0 else None
            if terms is None:
                b.op("Mul", [raw, scale], outputs=[name])
            else:
                jittered = b.op("Mul", [raw, scale], "jittered")
                b.op("Add", [jittered, b.op("Mul", [terms, eps])], outputs=[name])
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


def _flat(values: Mapping[str, np.ndarray], sample: int | None = None) -> np.ndarray:
    """Every value (or each one's part of sample `sample`, axis 0) as one float64 vector."""
    pick = (lambda v: v) if sample is None else (lambda v: v[sample])  # noqa: E731
    return np.concatenate([np.ravel(pick(v)).astype(np.float64) for v in values.values()])
