"""Property-based tests: random small ONNX graphs of every supported op family
(tests/random_graphs.py) checked against plain ONNX Runtime (graph optimizations DISABLED),
with hypothesis.

For a graph F, an input x and its interpretation `it = LinearScope(F).interpret(x)`:

- outputs: it.outputs equals F(x) of the plain model;
- reconstruction: F(x) = A_x x + c_x, with A_x x = it.apply_all(x[None]) and c_x = it.biases;
- linearity: A(a z1 + b z2) = a A z1 + b A z2 for random z1, z2;
- adjoint: <A z, w> = <z, A^T w> for random z, w, and, where the input and output are small
  (always, for these graphs), the dense matrix of A (columns, from the linear graph) equals the
  transpose of the dense matrix of A^T (rows, from the adjoint graph) entry by entry;
- finite differences on piecewise-linear graphs (no smooth unit, no normalization, no bilinear
  product): (F(x + h d) - F(x)) = A_x (h d), exactly up to rounding, at a step h halved until
  every frozen decision (bool / integer mask of it.masks) at x + h d is the one at x, in a random
  direction d or -d. Equal decisions at both ends mean equal decisions along the whole segment
  (each decision is the sign or arg-max of functions affine along it), so the identity holds
  without any truncation error and the tolerance is float32 rounding alone.

Tolerances (float32; eps = 2^-23 = 1.19e-7): every check is `error <= RTOL * size + floor`, with
RTOL = 1e-5 relative to the natural size of the result (‖F(x)‖ for reconstruction and outputs,
the terms added for linearity, max(‖Az‖‖w‖, ‖z‖‖A^T w‖) for the adjoint, ‖A_x h d‖ for finite
differences) and an absolute floor for the float32 noise of the terms, NOISE = 8 eps times:

- for checks against F, K_NOISE times ν + ν_A per output. ν is the model's own float32 noise,
  measured: the largest change of F over four runs of the model with x and every float tensor a
  node computes rounded 4 ulps otherwise (all up, all down, two random sign patterns), a
  normalization's output also moved by 4 ulps of the terms its kernel adds (`kernel_terms`).
  ν_A is the same for A_x x + c_x: the bias graph fed x, its value of each of the model's tensors
  rounded otherwise (onnxscope's `affine_outputs(x, jittered=True)`, verify's own floor): a
  secant's frozen gain carries an intermediate's rounding further than the unit's slope does in
  F (Elu(LogSoftmax(x + 2e4)): ulps of 2e4 times the secant). Neither scales with A_x x or c_x
  themselves: a rule whose terms dwarf their sum (Softmax frozen as exp(u)/S with exp(-LSE) =
  3e8 cancelling to 0 for logits near -20) is a failure of the rule, and is reported with its
  conditioning (‖A_x x‖ + ‖c_x‖) / ‖F(x)‖;
- G = max_t ‖t‖ / ‖x‖ (the model's largest amplification from x to any tensor) times the size of
  the probes, for the checks of the linear map alone: a map that is exactly 0 in exact arithmetic
  (GlobalAveragePool after InstanceNorm: the mean of a centred tensor) comes out as rounding of the
  intermediates, which are about G times the probe.

Profiles (hypothesis.settings profiles, chosen by $ONNXSCOPE_PROPERTY_PROFILE):

- "ci" (default): a few hundred cases in all, derandomized (the same cases every run), no
  example database, no shrinking (a failure prints the whole graph and input: `note` lines);
- "long": >= 20,000 cases in all, random, with shrinking, for a run before a release:
  ONNXSCOPE_PROPERTY_PROFILE=long pytest tests/test_properties.py.

Set ONNXSCOPE_PROPERTY_DUMP=DIR to write each failing model and input to DIR (model.onnx, x.npy)
for a reproducer outside hypothesis.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, Phase, assume, event, given, note, settings
from onnx import helper, numpy_helper

import onnxscope

try:  # tests/ as a package, or (pytest's default rootdir-less import) as a plain directory
    from . import random_graphs as rg
except ImportError:
    import random_graphs as rg

EPS32 = float(np.finfo(np.float32).eps)
RTOL = 1e-5
NOISE = 8 * EPS32
K_NOISE = 2.0  # multiples of the measured noise ν allowed against F
DENSE_LIMIT = 60_000  # n_in * n_out up to which A is compared densely with (A^T)^T

_COMMON = dict(
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)
settings.register_profile(
    "ci", derandomize=True, phases=[Phase.explicit, Phase.generate], **_COMMON
)
settings.register_profile("long", derandomize=False, **_COMMON)
PROFILE = os.environ.get("ONNXSCOPE_PROPERTY_PROFILE", "ci")
if PROFILE not in ("ci", "long"):
    raise ValueError(f"ONNXSCOPE_PROPERTY_PROFILE must be 'ci' or 'long', not {PROFILE!r}")
# cases per test: CI_BASE (or LONG_BASE) times the family's weight
CI_BASE, LONG_BASE = 20, 1400
WEIGHTS = {
    "piecewise": 3,
    "pool": 2,
    "shape": 2,
    "smooth": 2,
    "softmax": 1,
    "bilinear": 1.5,
    "norm": 1,
    "mixed": 2,
    "names": 0.5,
    "unsupported": 0.5,
}  # sum 15.5: 310 cases in "ci", 21,700 in "long"


def budget(family: str) -> settings:
    base = CI_BASE if PROFILE == "ci" else LONG_BASE
    return settings(
        settings.get_profile(PROFILE), max_examples=max(1, round(base * WEIGHTS[family]))
    )


# -- plain ONNX Runtime ---------------------------------------------------------------------


def plain_session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def exposed(model: onnx.ModelProto, floats: dict) -> onnx.ModelProto:
    """The model with every float32 tensor it computes as an extra output."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    listed = {o.name for o in m.graph.output}
    for node in m.graph.node:
        for o in node.output:
            if o in floats and o not in listed:
                m.graph.output.append(
                    helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None)
                )
                listed.add(o)
    return m


NORMALIZATIONS = ("InstanceNormalization", "LayerNormalization", "GroupNormalization")


def noisy(model: onnx.ModelProto, floats: dict) -> tuple[onnx.ModelProto, list[str]]:
    """The model with every float32 tensor a node computes multiplied by a factor fed as an
    extra input (1 ± 4 eps at random: four ulps of rounding injected at every node), and a
    normalization's output also offset by an input (`kernel_terms`)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    nodes, factors = [], []
    for node in m.graph.node:
        nodes.append(node)
        for k, o in enumerate(node.output):
            if o not in floats:
                continue
            raw, factor = f"{o}__raw", f"{o}__factor"
            node.output[k] = raw
            extra = [factor]
            if k == 0 and node.op_type in NORMALIZATIONS:
                extra.append(f"{o}__offset")
                nodes.append(helper.make_node("Mul", [raw, factor], [f"{o}__scaled"]))
                nodes.append(helper.make_node("Add", [f"{o}__scaled", extra[1]], [o]))
            else:
                nodes.append(helper.make_node("Mul", [raw, factor], [o], name=f"{o}__noise"))
            m.graph.input.extend(
                # no declared shape: ONNX shape inference and the runtime can disagree
                # (MaxPool with ceil_mode), and the runtime's is the one fed
                helper.make_tensor_value_info(e, onnx.TensorProto.FLOAT, None)
                for e in extra
            )
            factors.extend(extra)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    # every tensor as its node made it is an output too: ONNX Runtime plans buffer reuse by
    # ONNX's inferred sizes, which are wrong after some pools (see the mask graph's as_inferred)
    raws = [o for n in nodes for o in n.output if o.endswith("__raw")]
    m.graph.output.extend(onnx.ValueInfoProto(name=o) for o in raws)
    return m, factors


def kernel_terms(node: onnx.NodeProto, u: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """max|u| max|scale| / sigma of u's group, at every element of a normalization's output:
    the size of the terms ONNX Runtime's kernel adds (u s + (bias - mean s)). Their rounding is
    noise no rounding of u shows: a group of equal values (one element, ties) normalizes to
    the bias whatever u is, and the kernel returns the bias plus ulps of u s."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    u = u.astype(np.float64)
    if node.op_type == "GroupNormalization":
        g = u.reshape(u.shape[0], attrs["num_groups"], -1)
        axes = (2,)
    else:
        first = 2 if node.op_type == "InstanceNormalization" else attrs.get("axis", -1) % u.ndim
        g, axes = u, tuple(range(first, u.ndim))
    sigma = np.sqrt(g.var(axis=axes, keepdims=True) + attrs.get("epsilon", 1e-5))
    top = np.abs(g).max(axis=axes, keepdims=True)
    terms = top * float(np.max(np.abs(scale))) / sigma
    return np.broadcast_to(terms, g.shape).reshape(u.shape)


class Plain:
    """F by plain ONNX Runtime, and the model's own float32 noise at an input."""

    def __init__(self, case: rg.Case):
        self.names = [o.name for o in case.model.graph.output]
        self.session = plain_session(case.model)
        model, self.factors = noisy(case.model, case.floats)
        self.noisy = plain_session(model)
        self.everything = plain_session(exposed(case.model, case.floats))
        self.shapes = dict(case.floats)
        self.input = case.model.graph.input[0].name
        inits = {t.name: numpy_helper.to_array(t) for t in case.model.graph.initializer}
        self.norms = {  # offset input -> (node, scale) of each normalization
            f"{n.output[0]}__offset": (n, inits[n.input[1]])
            for n in case.model.graph.node
            if n.op_type in NORMALIZATIONS
        }

    def __call__(self, x) -> dict[str, np.ndarray]:
        return dict(zip(self.names, self.session.run(self.names, {self.input: x})))

    def noise(self, x, f: dict) -> dict[str, float]:
        """ν per output: the largest change of F(x) over four runs with 4 ulps of rounding
        injected at every node (the model's own float32 noise, measured): every factor 1 + 4 eps,
        every factor 1 - 4 eps (no cancellation along a path), and two random sign patterns."""
        rng = np.random.default_rng(7)
        worst = dict.fromkeys(self.names, 0.0)
        values = self.values(x) if self.norms else {}
        for draw in ("up", "down", "random", "random"):
            # x itself rounded too: the first nodes' own rounding (a sum that cancels) shows
            # only through their inputs
            if draw == "random":
                x_signs = rng.choice(np.asarray([-4.0, 4.0]), x.shape)
            else:
                x_signs = np.full(x.shape, 4.0 if draw == "up" else -4.0)
            feeds = {self.input: (x * (1.0 + x_signs * EPS32)).astype(np.float32)}
            for name in self.factors:
                offset = name in self.norms
                shape = self.shapes[name[: -len("__offset" if offset else "__factor")]]
                if draw == "random":
                    signs = rng.choice(np.asarray([-4.0, 4.0]), shape)
                else:
                    signs = np.full(shape, 4.0 if draw == "up" else -4.0)
                if offset:
                    node, scale = self.norms[name]
                    terms = kernel_terms(node, values[node.input[0]], scale)
                    feeds[name] = np.asarray(signs * EPS32 * terms, np.float32)
                else:
                    feeds[name] = np.asarray(1.0 + signs * EPS32, np.float32)
            for n, v in zip(self.names, self.noisy.run(self.names, feeds)):
                diff = np.asarray(v, np.float64) - np.asarray(f[n], np.float64)
                worst[n] = max(worst[n], norm(diff))
        return worst

    def values(self, x) -> dict[str, np.ndarray]:
        """Every float tensor of the model at x (and x)."""
        names = [o.name for o in self.everything.get_outputs()]
        return {self.input: x, **dict(zip(names, self.everything.run(names, {self.input: x})))}

    def gain(self, x) -> float:
        """G of the module docstring: max ‖t‖ / ‖x‖ over the model's float tensors."""
        values = self.values(x).values()
        return max(norm(np.asarray(v, np.float64)) for v in values) / norm(x)


def flat(values: dict, names) -> np.ndarray:
    return np.concatenate([np.ravel(values[n]).astype(np.float64) for n in names])


def norm(v) -> float:
    return float(np.linalg.norm(v))


def discrete(masks: dict) -> dict:
    return {k: v for k, v in masks.items() if not np.issubdtype(v.dtype, np.floating)}


def dump(case: rg.Case, what: str) -> None:
    folder = os.environ.get("ONNXSCOPE_PROPERTY_DUMP")
    if not folder:
        return
    digest = hashlib.sha1(case.model.SerializeToString() + case.x.tobytes()).hexdigest()[:10]
    path = os.path.join(folder, f"{case.family}-{what}-{digest}")
    os.makedirs(path, exist_ok=True)
    onnx.save(case.model, os.path.join(path, "model.onnx"))
    np.save(os.path.join(path, "x.npy"), case.x)
    with open(os.path.join(path, "case.txt"), "w") as f:
        f.write(repr(case) + "\n")


class PropertyFailure(AssertionError):
    pass


_FAILURES: dict[str, type] = {}


def check(case: rg.Case, what: str, error: float, bound: float, detail: str = "") -> None:
    if not error <= bound:  # also catches NaN
        dump(case, what)
        # one exception class per identity, so that hypothesis reports each one separately
        name = "".join(w.capitalize() for w in what.split()) + "Failure"
        kind = _FAILURES.setdefault(what, type(name, (PropertyFailure,), {}))
        raise kind(f"{what}: error {error:.3g} > bound {bound:.3g} {detail}\n{case!r}")


# -- the checks -----------------------------------------------------------------------------


def check_case(case: rg.Case) -> None:
    note(repr(case))
    x = case.x
    try:
        plain = Plain(case)
        f_dict = plain(x)
    except ort.capi.onnxruntime_pybind11_state.Fail:
        # ONNX Runtime refuses the model itself, at load or in a run: its load-time inference
        # contradicts its own kernels (a ceil-mode pool's size against a constant sized at run
        # time; its memory planner then reuses a buffer of the inferred size for a pool after
        # such a pool). There is no plain F(x) to compare with: onnxscope either refuses the
        # model as a bad one (a ModelError), or (its analysis run, which exposes every tensor,
        # plans no such reuse) interprets it, and then its own verify must hold
        event("the model does not run in plain ONNX Runtime")
        try:
            it = onnxscope.LinearScope(case.model).interpret(x)
        except onnxscope.errors.ModelError:
            return
        v = it.verify()
        assert v.ok, v.as_dict()
        return
    names = plain.names
    f = flat(f_dict, names)
    assume(np.all(np.isfinite(f)))  # rare: an overflow of the random model itself
    nu = plain.noise(x, f_dict)
    gain = plain.gain(x)
    note(f"‖F‖ = {norm(f):.3g}, noise ν = {nu}, G = {gain:.3g}")

    scope = onnxscope.LinearScope(case.model)
    it = scope.interpret(x)
    ax_all = it.apply_all(x[None])
    biases = it.biases
    # the model's tensors rounded otherwise inside A_x x + c_x (verify's second floor): the
    # frozen gain of a saturated unit (a secant) carries an intermediate's rounding further
    # than the unit's slope does in F
    affine = it.affine_outputs(x)
    draws = it.affine_outputs(x, jittered=True)
    nu_affine = {n: max(norm(d[n] - affine[n]) for d in draws) for n in names}
    for n in names:  # each output on its own: a small output is not hidden by a large one
        fn = np.asarray(f_dict[n], np.float64)
        # the mask graph's own outputs are the model's
        out = np.asarray(it.outputs[n], np.float64)
        check(case, f"outputs [{n}]", norm(out - fn), RTOL * norm(fn) + K_NOISE * nu[n])
        # reconstruction F(x) = A_x x + c_x, relative to ‖F(x)‖
        ax = np.asarray(ax_all[n][0], np.float64)
        c = np.asarray(biases[n], np.float64)
        residual = norm(fn - (ax + c))
        conditioning = (norm(ax) + norm(c)) / max(norm(fn), 1e-300)
        check(
            case,
            f"reconstruction [{n}]",
            residual,
            RTOL * norm(fn) + K_NOISE * (nu[n] + nu_affine[n]),
            f"(relative {residual / max(norm(fn), 1e-300):.3g}; ‖A_x x‖ {norm(ax):.3g}, "
            f"‖c_x‖ {norm(c):.3g}, ‖F‖ {norm(fn):.3g}, ν {nu[n]:.3g}, "
            f"ν of A_x x + c_x {nu_affine[n]:.3g}, "
            f"conditioning {conditioning:.3g})",
        )

    # linearity
    digest = hashlib.sha1(case.model.SerializeToString() + x.tobytes()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    z1, z2 = rng.standard_normal((2, *x.shape)).astype(np.float32)
    a, b = 0.7, -1.3
    both = it.apply_all(np.stack([z1, z2, (a * z1 + b * z2).astype(np.float32)]))
    az1, az2, direct = (flat({n: v[k] for n, v in both.items()}, names) for k in range(3))
    combo = a * az1 + b * az2
    terms = abs(a) * norm(az1) + abs(b) * norm(az2)
    check(
        case,
        "linearity",
        norm(direct - combo),
        RTOL * terms + NOISE * gain * (abs(a) * norm(z1) + abs(b) * norm(z2)),
    )

    # adjoint: the dot-product identity for random z, w
    w = {n: rng.standard_normal(np.shape(f_dict[n])).astype(np.float32) for n in names}
    wf = flat(w, names)
    atw = it.apply_T_all(w).astype(np.float64).ravel()
    z = z1.astype(np.float64).ravel()
    gap = abs(float(az1 @ wf) - float(z @ atw))
    size = max(norm(az1) * norm(wf), norm(z) * norm(atw))
    check(case, "adjoint", gap, RTOL * size + NOISE * gain * norm(z) * norm(wf))

    # adjoint, densely: the columns of A are the rows of A^T
    n_in, n_out = x.size, f.size
    if n_in * n_out <= DENSE_LIMIT:
        cols = it.apply_all(np.eye(n_in, dtype=np.float32).reshape(n_in, *x.shape))
        m1 = np.concatenate([cols[n].reshape(n_in, -1).astype(np.float64) for n in names], axis=1)
        eye = np.eye(n_out, dtype=np.float32)
        probes, start = {}, 0
        for n in names:
            shape = np.shape(f_dict[n])
            count = int(np.prod(shape))
            probes[n] = eye[:, start : start + count].reshape(n_out, *shape)
            start += count
        m2 = it.apply_T_all(probes).reshape(n_out, n_in).astype(np.float64).T
        check(
            case,
            "dense adjoint",
            norm(m1 - m2),
            RTOL * max(norm(m1), norm(m2)) + NOISE * gain * np.sqrt(n_in),
        )

    if case.piecewise:
        finite_differences(case, scope, it, plain, f_dict, nu)


def finite_differences(case, scope, it, plain, f_dict, nu) -> None:
    x, names = case.x, plain.names
    base = discrete(it.masks)
    rng = np.random.default_rng(1)
    direction = rng.standard_normal(x.shape)
    reach = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    for sign in (1.0, -1.0):
        h = 0.5
        for _ in range(40):
            xs = (x + sign * h * reach * direction).astype(np.float32)
            masks = discrete(scope.interpret(xs).masks)
            if all(np.array_equal(masks[k], v) for k, v in base.items()) and not np.array_equal(
                xs, x
            ):
                break
            h /= 2
        else:
            continue
        delta = (xs.astype(np.float64) - x.astype(np.float64)).astype(np.float32)
        fs = plain(xs)
        nu_step = plain.noise(xs, fs)
        ad_all = it.apply_all(delta[None])
        checked = 0
        for n in names:
            df = np.asarray(fs[n], np.float64) - np.asarray(f_dict[n], np.float64)
            ad = np.asarray(ad_all[n][0], np.float64)
            floor = K_NOISE * (nu[n] + nu_step[n])
            if norm(ad) <= 100 * floor and norm(df) <= 100 * floor:
                continue  # a step within the noise: nothing to see
            check(
                case,
                f"finite differences [{n}]",
                norm(df - ad),
                RTOL * norm(ad) + floor,
                f"(h = {h:.3g} x rms(x) {reach:.3g}, ‖A δ‖ {norm(ad):.3g}, ‖ΔF‖ {norm(df):.3g})",
            )
            checked += 1
        event("finite differences: checked" if checked else "finite differences: below the noise")
        return
    event("finite differences: no step keeps every decision")


# -- the tests: one per op family ---------------------------------------------------------


def _family_test(family: str):
    @budget(family)
    @given(case=rg.cases(family, tricky=family == "names"))
    def test(case):
        check_case(case)

    test.__name__ = test.__qualname__ = f"test_{family}"
    test.__doc__ = f"Random graphs of the '{family}' family: every identity of check_case."
    return test


test_piecewise = _family_test("piecewise")
test_pool = _family_test("pool")
test_shape = _family_test("shape")
test_smooth = _family_test("smooth")
test_softmax = _family_test("softmax")
test_bilinear = _family_test("bilinear")
test_norm = _family_test("norm")
test_mixed = _family_test("mixed")
# tensor and node names that start like onnxscope's own ("linear/", "bias/", "probe", ...)
test_names = _family_test("names")


@budget("unsupported")
@given(case=rg.unsupported_cases())
def test_unsupported(case):
    """A graph with one node onnxscope has no rule for (or no rule for that use of the op) on
    the input's path: ONNX Runtime runs it, onnxscope refuses it with UnsupportedModelError
    naming that node and its op."""
    note(repr(case))
    plain_session(case.model).run(None, {case.model.graph.input[0].name: case.x})  # valid
    with pytest.raises(onnxscope.UnsupportedModelError) as info:
        onnxscope.LinearScope(case.model).interpret(case.x)
    assert case.bad_node in str(info.value)
    assert any(p[0] == case.bad_node and p[1] == case.bad_op for p in info.value.problems), (
        info.value.problems
    )
