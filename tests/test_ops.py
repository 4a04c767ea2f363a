"""Op coverage: one table of small inline models (`SPECS`), each run through the checks of
DESIGN.md section 4, plus tests of kinks, ties and refusals.

The table lives in tests/op_specs/, one file per rule family of onnxscope/rewrite/rules/ (a
family file lists the specs of its rules); `SPECS` collects them.

For every spec:
- `test_op`: reconstruction and linearity (and the adjoint identity, where an adjoint graph is
  built) ≤ tol (`it.verify()`), the mask graph's outputs equal a plain ONNX Runtime run of the
  model, and the mask, linear and bias artifacts pass the full ONNX checker;
- `test_masks` (specs with `ref`): the frozen decisions equal a naive numpy reference computed
  from the original model's intermediate tensors (Relu mask == u > 0, MaxPool selection == first
  maximum of each window, Tanh gain == tanh(u)/u, a frozen gate == the gate's value...);
- `test_finite_difference` (piecewise-linear specs, `pwl=True`): A_x e_j equals the central
  difference (F(x + h e_j) − F(x − h e_j)) / 2h at indices j whose ±h steps cross no kink or tie
  (checked by re-interpreting at x ± h e_j): for these models A_x is the Jacobian at x.

Inputs are standard normal, pushed at least `margin` away from 0, so the units that act directly
on x sit away from their kinks; the kink and tie conventions are tested separately below.

Conventions pinned down here (see the "kinks and ties" tests):
- Relu at exactly u = 0 is off (gain 0); LeakyRelu/PRelu at 0 take the negative slope.
- Abs at exactly 0 takes gain +1.
- Clip at exactly a bound counts as saturated (gain 0, intercept = the bound).
- MaxPool ties select the first maximum of the window (C order over the kernel), GlobalMaxPool
  and ReduceMax ties the lowest flat index.
- Max/Min ties select the earlier operand.

Known onnxscope bugs are pinned by strict xfails whose reasons start with "onnxscope bug"; the
tests stay real checks and start passing (XPASS fails the run) once a bug is fixed, so the
marker must then be removed.
"""

from __future__ import annotations

import pkgutil
from functools import cache, lru_cache

import numpy as np
import onnx
import pytest
from helpers import (
    Checked,
    assert_columns_match_fd,
    check_artifacts,
    check_model,
    interpret,
    make_model,
    node,
    run,
    run_all,
)
from onnx import TensorProto, helper
from op_specs import FAMILIES
from op_specs.refs import SELU_ALPHA, SELU_GAMMA, maxpool_window, reduce_argmax
from op_specs.spec import F32, F64, ON_CUDA, Spec, f, i64, weights

import onnxscope
from onnxscope.rewrite import rules
from onnxscope.rewrite.registry import RULES

_LIVE_INTERPRETATIONS = 16 if ON_CUDA else None  # see ON_CUDA

w, _ = weights("test_ops")  # the weights of the tests below the table

SPECS: list[Spec] = [s for specs in FAMILIES.values() for s in specs]
_ids = [s.id for s in SPECS]
assert len(_ids) == len(set(_ids)), "duplicate spec ids"
SPEC_BY_ID = {s.id: s for s in SPECS}


def params(kind: str, select=lambda s: True):
    out = []
    for s in SPECS:
        if not select(s):
            continue
        reason = s.xfail.get(kind) or s.xfail.get("*")
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        out.append(pytest.param(s.id, id=s.id, marks=marks))
    return out


@cache
def built(spec_id: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    spec = SPEC_BY_ID[spec_id]
    model = spec.model()
    if spec.valid_onnx:
        onnx.checker.check_model(model, full_check=True)  # the test model itself is valid
    return model, spec.feeds(model)


@lru_cache(maxsize=_LIVE_INTERPRETATIONS)
def checked(spec_id: str) -> Checked:
    model, feeds = built(spec_id)
    return check_model(model, feeds, tol=SPEC_BY_ID[spec_id].device_tol)


# -- the table's tests -------------------------------------------------------------------------


@pytest.mark.parametrize("spec_id", params("check"))
def test_op(spec_id):
    c = checked(spec_id)
    assert c.errors["reconstruction"] <= SPEC_BY_ID[spec_id].device_tol


@pytest.mark.parametrize("spec_id", params("masks", lambda s: s.ref is not None))
def test_masks(spec_id):
    spec = SPEC_BY_ID[spec_id]
    c = checked(spec_id)
    env = run_all(c.model, c.inputs)
    masks = c.masks()
    for (unit, label), expected in spec.ref(env).items():
        assert unit in masks, f"no frozen unit {unit!r}; units: {list(masks)}"
        assert label in masks[unit], f"unit {unit!r} has masks {list(masks[unit])}, not {label!r}"
        got = masks[unit][label]
        expected = np.asarray(expected)
        assert got.size == expected.size, f"{unit}/{label}: shape {got.shape} vs {expected.shape}"
        if got.shape != expected.shape:  # the grouped layout of a mask may keep other dims
            expected = expected.reshape(got.shape)
        if expected.dtype == np.bool_ or np.issubdtype(expected.dtype, np.integer):
            assert got.dtype.kind == expected.dtype.kind or (
                got.dtype.kind in "iu" and expected.dtype.kind in "iu"
            ), f"{unit}/{label}: dtype {got.dtype}, expected {expected.dtype}"
            bad = np.argwhere(got != expected)
            assert not len(bad), (
                f"{unit}/{label}: {len(bad)} of {got.size} entries differ, first at "
                f"{tuple(bad[0])}: {got[tuple(bad[0])]} vs {expected[tuple(bad[0])]}"
            )
        else:
            np.testing.assert_allclose(
                got.astype(np.float64),
                expected.astype(np.float64),
                rtol=1e-4,
                atol=1e-5,
                err_msg=f"{unit}/{label}",
            )


@pytest.mark.parametrize("spec_id", params("fd", lambda s: s.pwl))
def test_finite_difference(spec_id):
    c = checked(spec_id)
    rtol = 1e-9 if c.inputs[c.wrt].dtype == F64 else 2e-4
    assert_columns_match_fd(c, count=4, rtol=rtol)


def _ops(specs) -> set[str]:
    return {onnx.parser.parse_node(n).op_type for s in specs for n in s.nodes}


def _checked_rules() -> dict[str, object]:
    """The registry's rules that the table must cover: all but the value rules (comparisons,
    Shape, ArgMax, Floor...), whose linear part is zero: they only freeze a value, which the specs
    exercise where it feeds a condition or an index."""
    return {op: rule for op, rule in RULES.items() if rule.kind != "value"}


def test_table_covers_the_ops():
    """Every op with a rule has a spec: a rule added without one fails here."""
    missing = sorted(set(_checked_rules()) - _ops(SPECS))
    assert not missing, f"ops with a rule but no spec: {missing}"


def test_specs_sit_with_their_rule_family():
    """op_specs/ mirrors rules/: one spec file per family module, and the specs of a rule defined
    in rules/<family>.py are in op_specs/<family>.py. Rules built from a kind of rules/kinds.py
    as it is (Neg, Identity: `register_self_linear`) name no family and are not placed here."""
    modules = {m.name for m in pkgutil.iter_modules(rules.__path__)} - {"kinds"}
    assert set(FAMILIES) == modules, "one tests/op_specs/<family>.py per rules/<family>.py"
    misplaced = []
    for op, rule in _checked_rules().items():
        family = type(rule).__module__.rsplit(".", 1)[-1]
        if family in FAMILIES and op not in _ops(FAMILIES[family]):
            misplaced.append(f"{op}: no spec in tests/op_specs/{family}.py")
    assert not misplaced, misplaced


def test_bilinear_units_are_gates():
    """A product of two input-dependent tensors freezes one operand and reports a gate."""
    c = checked("SqueezeExcitation")
    unit = c.unit("y")
    assert unit["op"] == "Mul" and unit["kind"] == "gate"
    assert list(unit["masks"]) == ["frozen:s"]
    assert "'s'" in unit["frozen"]
    # the frozen gate is exported as a float mask shaped like the gate
    assert unit["masks"]["frozen:s"]["dtype"] == "float32"
    assert unit["masks"]["frozen:s"]["shape"] == [1, 4, 1, 1]


# -- kinks and ties ----------------------------------------------------------------------------


def _single(model, x, **kw) -> Checked:
    return check_model(model, {"x": np.asarray(x, F32)}, **kw)


def test_relu_kink_at_zero_gain_zero():
    x = f([[-1.0, 0.0, 2.0], [0.0, 3.0, -0.0]])
    c = _single(make_model(["y = Relu(x)"], {"x": (2, 3)}), x)
    assert np.array_equal(c.mask("y", "piece"), x > 0)
    cols = c.it.columns(np.arange(6)).reshape(6, 6)
    np.testing.assert_array_equal(cols, np.diag((x > 0).ravel().astype(F32)))


def test_leakyrelu_and_prelu_at_zero_take_negative_slope():
    x = f([[0.0, 1.0, -1.0]])
    c = _single(make_model(["y = LeakyRelu <alpha=0.2> (x)"], {"x": (1, 3)}), x)
    np.testing.assert_allclose(c.it.columns([0, 1, 2]).reshape(3, 3), np.diag([0.2, 1.0, 0.2]))
    c = _single(make_model(["y = PRelu(x, s)"], {"x": (1, 3)}, inits={"s": f([0.3, 0.4, 0.5])}), x)
    np.testing.assert_allclose(
        c.it.columns([0, 1, 2]).reshape(3, 3), np.diag([0.3, 1.0, 0.5]), rtol=1e-6
    )


def test_abs_at_zero_gain_plus_one():
    x = f([[0.0, -2.0, 3.0]])
    c = _single(make_model(["y = Abs(x)"], {"x": (1, 3)}), x)
    np.testing.assert_array_equal(c.it.columns([0, 1, 2]).reshape(3, 3), np.diag([1.0, -1.0, 1.0]))


def test_clip_at_exact_bounds_is_saturated():
    x = f([[-0.5, 0.7, 0.0, -1.0, 1.0]])
    model = make_model(["y = Clip(x, lo, hi)"], {"x": (1, 5)}, inits={"lo": f(-0.5), "hi": f(0.7)})
    c = _single(model, x)
    assert c.mask("y", "piece").tolist() == [[0, 2, 1, 0, 2]]
    np.testing.assert_array_equal(c.it.columns(range(5)).reshape(5, 5), np.diag([0, 0, 1, 0, 0]))
    np.testing.assert_allclose(c.it.bias, f([[-0.5, 0.7, 0.0, -0.5, 0.7]]))


@pytest.mark.parametrize(
    "strides, pads, size, label, stored, picked",
    [  # stride 1 stores ONNX Runtime's flat indices, stride 2 the window offsets (C order)
        ([1, 1], [1, 1, 0, 0], 3, "argmax", [0, 0, 1, 0, 0, 1, 3, 3, 4], None),  # picked = stored
        ([2, 2], [1] * 4, 4, "window", [3, 2, 2, 1, 0, 0, 1, 0, 0], [0, 1, 3, 4, 5, 7, 12, 13, 15]),
        ([2, 2], [0] * 4, 4, "window", [0, 0, 0, 0], [0, 2, 8, 10]),  # tiles: SpaceToDepth
    ],
    ids=["stride1_flat_index", "stride2_window_offset", "tiles_window_offset"],
)
def test_maxpool_ties_pick_the_first_maximum(strides, pads, size, label, stored, picked):
    # 2x2 windows on a constant image: every window keeps its first element inside the image
    ints = lambda v: "[" + ",".join(map(str, v)) + "]"  # noqa: E731
    node = f"y = MaxPool <kernel_shape=[2,2], strides={ints(strides)}, pads={ints(pads)}> (x)"
    x = np.full((1, 1, size, size), 0.5, F32)
    c = _single(make_model([node], {"x": x.shape}), x)
    got = c.mask("y", label)
    flat = label == "argmax"
    np.testing.assert_array_equal(
        got, maxpool_window(x, got.shape, [2, 2], strides, pads, flat=flat)
    )
    assert got.ravel().tolist() == stored
    # A_x is the selection of the picked pixels (one per output), A_x^T the scatter back
    picked = stored if picked is None else picked
    want = (np.asarray(picked)[None, :] == np.arange(size * size)[:, None]).astype(F32)
    np.testing.assert_array_equal(c.it.columns(range(size * size)).reshape(want.shape), want)
    np.testing.assert_array_equal(c.it.rows(range(len(picked))).reshape(want.T.shape), want.T)


def test_globalmaxpool_and_reducemax_ties_pick_the_first_maximum():
    x = f([[[[1.0, 3.0], [3.0, 0.0]], [[2.0, 2.0], [2.0, 2.0]]]])  # (1, 2, 2, 2)
    c = _single(make_model(["y = GlobalMaxPool(x)"], {"x": (1, 2, 2, 2)}), x)
    assert c.mask("y", "argmax").ravel().tolist() == [1, 4]
    c = _single(make_model(["y = ReduceMax <axes=[1,3], keepdims=0> (x)"], {"x": (1, 2, 2, 2)}), x)
    np.testing.assert_array_equal(c.mask("y", "argmax"), reduce_argmax(x, [1, 3], False))
    assert c.mask("y", "argmax").ravel().tolist() == [1, 2]


def test_max_min_ties_pick_the_earlier_operand():
    x = f([[0.5, -1.0, 2.0]])
    c_val = f([0.5, 0.0, 2.0])  # ties at elements 0 and 2
    # Max(x, c): x is earlier, so tied elements copy x (gain 1)
    c = _single(make_model(["y = Max(x, c)"], {"x": (1, 3)}, inits={"c": c_val}), x)
    assert c.mask("y", "winner").tolist() == [[False, True, False]]
    np.testing.assert_array_equal(c.it.columns(range(3)).reshape(3, 3), np.diag([1.0, 0.0, 1.0]))
    # Max(c, x): c is earlier, so tied elements copy the constant (gain 0)
    c = _single(make_model(["y = Max(c, x)"], {"x": (1, 3)}, inits={"c": c_val}), x)
    np.testing.assert_array_equal(c.it.columns(range(3)).reshape(3, 3), np.diag([0.0, 0.0, 0.0]))
    # Min of three with a three-way tie at element 0: operand 0 (the constant) wins
    model = make_model(
        ["t = Mul(x, one)", "y = Min(c, x, t)"],
        {"x": (1, 3)},
        inits={"c": f([0.5, 5.0, 5.0]), "one": f(1.0)},
    )
    c = _single(model, x)
    assert c.mask("y", "winner").tolist() == [[0, 1, 1]]  # x and t tie elsewhere: x is earlier
    np.testing.assert_array_equal(c.it.columns(range(3)).reshape(3, 3), np.diag([0.0, 1.0, 1.0]))


@pytest.mark.parametrize(
    "unit, left, right",
    [("Elu <alpha=0.5>", 0.5, 1.0), ("Selu", SELU_GAMMA * SELU_ALPHA, SELU_GAMMA)],
    ids=["Elu_alpha0.5", "Selu"],
)
def test_secant_gain_on_both_sides_of_a_kink(unit, left, right):
    """Elu (alpha != 1) and Selu have a kink at 0: the secant y/u is near the left slope just
    below 0 and the right slope just above (|u| = 1e-3: secant - slope ~ f''(0) u / 2, and float32
    rounding of the runtime's own y stays far below that). At u = 0 exactly the gain is the right
    slope."""
    x = f([[-1.0, -2.0, 1.0, 0.0]]) * 1e-3
    c = interpret(make_model([f"y = {unit} (x)"], {"x": (1, 4)}), {"x": x})
    np.testing.assert_allclose(c.mask("y", "gain").ravel(), [left, left, right, right], rtol=3e-3)


SMALL_INPUT_UNITS = [
    ("Elu <alpha=0.5>", None),
    ("Selu", None),
    ("Celu <alpha=0.5>", None),
    *[(u, None) for u in ["Tanh", "Erf", "Sigmoid", "Exp", "Softplus", "Gelu", "Softsign"]],
    ("HardSwish", None),
]


@pytest.mark.parametrize(
    "unit",
    [
        pytest.param(
            u,
            id=u.split()[0],
            marks=[pytest.mark.xfail(strict=True, reason=why)] if why else [],
        )
        for u, why in SMALL_INPUT_UNITS
    ],
)
def test_secant_units_reconstruct_small_inputs(unit):
    """All inputs small (1e-5 ≤ |u| ≤ 1e-4): A_x x + c_x must still reproduce ORT's F(x)."""
    rng = np.random.default_rng(5)
    x = (rng.uniform(1e-5, 1e-4, (2, 8)) * rng.choice([-1, 1], (2, 8))).astype(F32)
    check_model(make_model([f"y = {unit} (x)"], {"x": (2, 8)}, opset=20), {"x": x})


def test_div_constant_numerator_is_a_unit_not_a_constant():
    """c / u(x) must be linearized like c * Reciprocal(u) (gain c/u^2 on u), not frozen."""
    x = np.random.default_rng(3).standard_normal((2, 3)).astype(F32)
    inits = {"one": f(1.0), "c": f(2.5)}
    as_div = make_model(
        ["e = Exp(x)", "d = Add(e, one)", "y = Div(c, d)"], {"x": (2, 3)}, inits=inits
    )
    as_reciprocal = make_model(
        ["e = Exp(x)", "d = Add(e, one)", "r = Reciprocal(d)", "y = Mul(r, c)"],
        {"x": (2, 3)},
        inits=inits,
    )
    a = check_model(as_div, {"x": x}).it.columns(range(6))
    b = check_model(as_reciprocal, {"x": x}).it.columns(range(6))
    assert np.abs(b).max() > 0.1
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# -- refusals ----------------------------------------------------------------------------------


def _refused(model, shapes) -> onnxscope.UnsupportedModelError:
    scope = onnxscope.LinearScope(model)
    with pytest.raises(onnxscope.UnsupportedModelError) as info:
        scope.artifacts(shapes)
    # interpreting refuses the same way
    with pytest.raises(onnxscope.UnsupportedModelError):
        scope.interpret(np.ones(shapes["x"], F32))
    return info.value


def test_consecutive_frozen_factors_multiply_the_probes_once():
    # a squeeze-and-excitation block: Relu's mask, then the frozen gate; the linear and adjoint
    # graphs multiply the probes once by their product, and stay exact
    model = make_model(
        [
            "u = Conv (x, W)",
            "r = Relu(u)",
            "p = GlobalAveragePool(r)",
            "s = Sigmoid(p)",
            "y = Mul(r, s)",
        ],
        {"x": (1, 2, 5, 5)},
        inits={"W": w(4, 2, 3, 3)},
    )
    c = check_model(
        model, {"x": np.random.default_rng(5).standard_normal((1, 2, 5, 5)).astype(F32)}
    )
    for graph in (c.artifacts.linear, c.artifacts.adjoint):
        probes = {i.name for i in graph.graph.input if "probe" in i.name}
        dependent, probe_muls = set(probes), 0
        for n in graph.graph.node:
            if any(i in dependent for i in n.input):
                dependent.update(n.output)
                probe_muls += n.op_type == "Mul"
        assert probe_muls == 1, f"{graph.graph.name}: {probe_muls} multiplications of the probes"


@pytest.mark.parametrize(
    "op, w_shape, img_shape",
    [("Conv", (2, 1, 2, 2), (1, 1, 4, 4)), ("ConvTranspose", (1, 2, 2, 2), (1, 1, 3, 3))],
)
def test_convolution_of_a_constant_image_by_input_weights_is_refused(op, w_shape, img_shape):
    """Linear in the weights, but not written yet: refused loudly rather than frozen (A_x = 0)."""
    model = make_model([f"y = {op}(img, x)"], {"x": w_shape}, inits={"img": w(*img_shape)})
    err = _refused(model, {"x": w_shape})
    assert "weights that depend on the input" in str(err) and op in str(err)


def test_unsupported_op_on_the_input_path_is_named():
    model = make_model(
        ["t = Tanh(x)", "v, i = TopK <axis=-1> (t, k)", "y = Relu(v)"],
        {"x": (2, 6)},
        outputs=["y"],
        inits={"k": i64([3])},
    )
    err = _refused(model, {"x": (2, 6)})
    assert len(err.problems) == 1
    name, op, why = err.problems[0]
    assert (name, op) == ("v", "TopK") and why
    msg = str(err)
    assert "'v'" in msg and "TopK" in msg and why in msg


def test_every_unsupported_node_is_listed_in_one_error():
    model = make_model(
        [
            "a = Sin(x)",
            "v, i = TopK <axis=-1> (x, k)",
            "g = com.microsoft.FastGelu(x)",
            "s = Sum(a, v, g)",
            "nz = NonZero(x)",
            "nzf = Cast <to=1> (nz)",
        ],
        {"x": (2, 6)},
        outputs=["s", "nzf"],
        inits={"k": i64([6])},
        domains={"com.microsoft": 1},
    )
    err = _refused(model, {"x": (2, 6)})
    listed = {(n, op) for n, op, _ in err.problems}
    assert {("a", "Sin"), ("v", "TopK"), ("g", "FastGelu"), ("nz", "NonZero")} <= listed
    msg = str(err)
    for name, op in [("a", "Sin"), ("v", "TopK"), ("g", "FastGelu"), ("nz", "NonZero")]:
        assert f"'{name}'" in msg and op in msg
    assert all(why for _, _, why in err.problems)


def test_unsupported_op_off_the_input_path_is_fine():
    # Sin of a constant and TopK on a second, non-interpreted input carry no linear part
    model = make_model(
        ["cs = Sin(c)", "v, i = TopK <axis=-1> (other, k)", "t = Mul(x, cs)", "y = Add(t, v)"],
        {"x": (2, 3), "other": (2, 3)},
        inits={"c": w(3), "k": i64([3])},
    )
    rng = np.random.default_rng(0)
    c = check_model(
        model,
        {
            "x": rng.standard_normal((2, 3)).astype(F32),
            "other": rng.standard_normal((2, 3)).astype(F32),
        },
        wrt="x",
    )
    assert c.units == []


def _if_model(cond_nodes, cond_inits):
    then_g = helper.make_graph(
        [node("ty = Relu(x)")],
        "then",
        [],
        [helper.make_tensor_value_info("ty", TensorProto.FLOAT, [2, 3])],
    )
    else_g = helper.make_graph(
        [node("ey = Neg(x)")],
        "else",
        [],
        [helper.make_tensor_value_info("ey", TensorProto.FLOAT, [2, 3])],
    )
    if_node = helper.make_node("If", ["c"], ["y"], name="y", then_branch=then_g, else_branch=else_g)
    return make_model([*cond_nodes, if_node], {"x": (2, 3)}, inits=cond_inits)


@pytest.mark.parametrize(
    "cond_nodes, cond_inits",
    [
        (["s = ReduceSum <keepdims=0> (x)", "c = Greater(s, zero)"], {"zero": f(0.0)}),
        ([], {"c": np.array(True)}),
    ],
    ids=["input_dependent_condition", "constant_condition"],
)
def test_if_on_the_input_path_is_refused_unless_static(cond_nodes, cond_inits):
    model = _if_model(cond_nodes, cond_inits)
    x = np.ones((2, 3), F32)
    np.testing.assert_array_equal(run(model, {"x": x})["y"], x)  # the model itself runs
    if not cond_nodes:  # a constant condition: folded into its branch (issue 16), exact
        check_model(model, {"x": x})
        return
    err = _refused(model, {"x": (2, 3)})
    assert ("y", "If") in {(n, op) for n, op, _ in err.problems}
    assert "control flow" in str(err)


def test_custom_domain_op_is_refused_with_its_name():
    # ONNX Runtime cannot run an unknown custom op at all: onnxscope must still name the node
    model = make_model(
        ["t = Tanh(x)", "y = com.example.Frobnicate(t)"],
        {"x": (2, 3)},
        outputs=[("y", (2, 3))],
        domains={"com.example": 1},
    )
    scope = onnxscope.LinearScope(model)
    with pytest.raises(onnxscope.UnsupportedModelError) as info:
        scope.artifacts({"x": (2, 3)})
    assert [(n, op) for n, op, _ in info.value.problems] == [("y", "Frobnicate")]
    assert "'y'" in str(info.value) and "Frobnicate" in str(info.value)


def test_check_artifacts_helper_rejects_an_invalid_graph():
    c = checked("Relu")
    broken = onnx.ModelProto()
    broken.CopyFrom(c.artifacts.linear)
    broken.graph.node[0].input[0] = "does_not_exist"

    class Fake:
        mask, linear, bias = c.artifacts.mask, broken, c.artifacts.bias

    with pytest.raises(AssertionError, match="linear graph"):
        check_artifacts(Fake)
