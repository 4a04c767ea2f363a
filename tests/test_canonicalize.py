"""onnxscope.rewrite.canonicalize: each pass rewrites what it should, leaves alone what it should
not, and never changes the model's outputs (ONNX Runtime on random inputs: bitwise for the passes
that only move or cancel work, float rounding for MatMul+Add -> Gemm)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ort = pytest.importorskip("onnxruntime")

import onnxscope  # noqa: E402
from onnxscope.rewrite import canonicalize as cz  # noqa: E402

RNG = np.random.default_rng(0)


def make(nodes, x_shape, y_shape=None, inits=(), opset=17) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in dict(inits).items()]
    graph = helper.make_graph(nodes, "g", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model = onnx.shape_inference.infer_shapes(model)  # fills y's shape where it is known
    onnx.checker.check_model(model)
    return model


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    if _dilated_same(model):  # ORT refuses dilations with SAME padding: onnx's own evaluator
        from onnx.reference import ReferenceEvaluator

        return ReferenceEvaluator(model).run(None, {"x": x})[0]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _dilated_same(model) -> bool:
    return any(
        cz._attr(n, "dilations") not in (None, [1, 1]) and cz._attr(n, "auto_pad") is not None
        for n in model.graph.node
    )


def ops(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


def check(model, passes, shape, exact=True, trials=3) -> onnx.ModelProto:
    """Canonicalize with `passes`; the new model is valid and computes the same outputs."""
    before = model.SerializeToString()
    exact = exact and not _dilated_same(model)  # two implementations: float rounding apart
    out = cz.canonicalize(model, passes)
    assert model.SerializeToString() == before  # the input model is left as it was
    onnx.checker.check_model(out)
    for _ in range(trials):
        x = RNG.standard_normal(shape).astype(np.float32)
        want, got = run(model, x), run(out, x)
        if exact:
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
    return out


def test_constants_become_initializers():
    w = RNG.standard_normal((4, 3, 3, 3))
    nodes = [
        helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w.astype("f4"))),
        helper.make_node("Constant", [], ["s"], value_float=0.5),
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c", "s"], ["y"]),
    ]
    out = check(make(nodes, [1, 3, 8, 8]), [cz.constants_to_initializers], (1, 3, 8, 8))
    assert ops(out) == ["Conv", "Mul"]
    assert {t.name for t in out.graph.initializer} == {"w", "s"}


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize(
    ("op", "attrs", "size"),
    [
        ("Conv", {"strides": [2, 2]}, 9),  # odd size, stride 2: uneven padding
        ("Conv", {"dilations": [2, 1]}, 8),  # ORT cannot run this one before the pass
        ("MaxPool", {"kernel_shape": [3, 2], "strides": [2, 2]}, 7),
        ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 1]}, 8),
        ("AveragePool", {"kernel_shape": [2, 2], "count_include_pad": 1}, 5),
    ],
)
def test_same_padding_becomes_explicit(mode, op, attrs, size):
    inputs, inits = ["x"], {}
    if op == "Conv":
        inputs, inits = ["x", "w"], {"w": RNG.standard_normal((4, 3, 3, 3))}
    node = helper.make_node(op, inputs, ["y"], auto_pad=mode, **attrs)
    model = make([node], [1, 3, size, size + 1], inits=inits)
    out = check(model, [cz.explicit_pads], (1, 3, size, size + 1))
    (n,) = out.graph.node
    assert cz._attr(n, "auto_pad") is None and cz._attr(n, "pads") is not None
    pads = cz._attr(n, "pads")
    if sum(pads) % 2:  # where the total is odd, the extra pixel is at the end (UPPER) or start
        assert (sum(pads[2:]) > sum(pads[:2])) == (mode == "SAME_UPPER")


def test_same_padding_without_shapes_is_left_alone():
    node = helper.make_node("MaxPool", ["x"], ["y"], auto_pad="SAME_UPPER", kernel_shape=[3, 3])
    out = cz.canonicalize(make([node], [1, 3, "h", "w"]), [cz.explicit_pads])
    assert cz._attr(out.graph.node[0], "auto_pad") == b"SAME_UPPER"


def test_transpose_pairs_cancel_and_merge():
    w = RNG.standard_normal((4, 3, 3, 3))
    nodes = [  # NCHW -> NHWC -> NCHW around nothing, then a conv, then two that merge
        helper.make_node("Transpose", ["x"], ["a"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["a"], ["b"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["b", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Transpose", ["c"], ["d"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["d"], ["y"], perm=[0, 2, 1, 3]),
    ]
    out = check(make(nodes, [1, 3, 6, 5], inits={"w": w}), [cz.merge_transposes], (1, 3, 6, 5))
    assert ops(out) == ["Conv", "Transpose"]
    assert cz._attr(out.graph.node[1], "perm") == [0, 3, 2, 1]


def test_cancelling_pair_at_the_graph_output_keeps_the_output_name():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Transpose", ["r"], ["a"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["a"], ["y"], perm=[0, 3, 1, 2]),
    ]
    out = check(make(nodes, [1, 2, 3, 4]), [cz.merge_transposes], (1, 2, 3, 4))
    assert ops(out) == ["Relu"] and out.graph.node[0].output[0] == "y"


def test_transpose_with_two_users_is_kept():
    nodes = [
        helper.make_node("Transpose", ["x"], ["a"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["a"], ["b"], perm=[0, 3, 1, 2]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Transpose", ["r"], ["r2"], perm=[0, 3, 1, 2]),
        helper.make_node("Add", ["b", "r2"], ["y"]),
    ]
    out = check(make(nodes, [1, 2, 3, 4]), [cz.merge_transposes], (1, 2, 3, 4))
    assert ops(out).count("Transpose") == 3  # `a` is read twice: nothing may be dropped


def prelu_nodes(form: str, x="x", out="y"):
    """relu(x) + β·relu(−x) (tf2onnx's Keras PReLU) or relu(x) − α·relu(−x) (written out)."""
    top = "Sub" if form == "sub" else "Add"
    return [
        helper.make_node("Relu", [x], ["pos"]),
        helper.make_node("Neg", [x], ["negx"]),
        helper.make_node("Relu", ["negx"], ["neg"]),
        helper.make_node("Mul", ["neg", "coef"], ["scaled"]),
        helper.make_node(top, ["pos", "scaled"] if form != "add_swapped" else ["scaled", "pos"],
                         [out]),
    ]  # fmt: skip


@pytest.mark.parametrize("form", ["add", "add_swapped", "sub"])
def test_decomposed_prelu_is_fused(form):
    alpha = RNG.uniform(0.05, 0.4, (3, 1, 1))
    coef = alpha if form == "sub" else -alpha
    model = make(prelu_nodes(form), [1, 3, 5, 5], inits={"coef": coef})
    out = check(model, [cz.fuse_prelu], (1, 3, 5, 5))
    assert ops(out) == ["PRelu"]
    slope = numpy_helper.to_array(
        next(t for t in out.graph.initializer if t.name == out.graph.node[0].input[1])
    )
    np.testing.assert_array_equal(slope, alpha.astype(np.float32))


def test_prelu_pattern_whose_parts_are_reused_is_left_alone():
    nodes = prelu_nodes("add", out="p") + [helper.make_node("Add", ["p", "neg"], ["y"])]
    model = make(nodes, [1, 3, 5, 5], inits={"coef": -np.full((3, 1, 1), 0.2)})
    out = check(model, [cz.fuse_prelu], (1, 3, 5, 5))
    assert "PRelu" not in ops(out)


def test_prelu_slope_that_would_broadcast_x_is_left_alone():
    model = make(prelu_nodes("add"), [1, 3, 5, 1], inits={"coef": -np.full((3, 1, 4), 0.2)})
    out = cz.canonicalize(model, [cz.fuse_prelu])
    assert "PRelu" not in ops(out)


def test_rewriter_handles_decomposed_and_fused_prelu_alike():
    """Without canonicalization onnxscope already interprets relu(x) + β·relu(−x) exactly (two
    frozen Relus); fused, one PRelu: the interpretations agree."""
    model = make(
        prelu_nodes("add"), [1, 3, 5, 5], inits={"coef": -RNG.uniform(0.1, 0.3, (3, 1, 1))}
    )
    fused = cz.canonicalize(model)
    x = RNG.standard_normal((1, 3, 5, 5)).astype(np.float32)
    z = RNG.standard_normal((2, 1, 3, 5, 5)).astype(np.float32)
    its = [onnxscope.LinearScope(m).interpret(x) for m in (model, fused)]
    for it in its:
        assert max(it.verify().values()) <= 1e-5
    np.testing.assert_allclose(its[0].apply(z), its[1].apply(z), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(its[0].bias, its[1].bias, atol=1e-7)


def test_matmul_add_becomes_gemm():
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"]),
        helper.make_node("MatMul", ["f", "w"], ["m"]),
        helper.make_node("Add", ["b", "m"], ["y"]),
    ]
    inits = {"w": RNG.standard_normal((12, 5)), "b": RNG.standard_normal(5)}
    out = check(make(nodes, [2, 3, 4], inits=inits), [cz.matmul_add_to_gemm], (2, 3, 4), False)
    assert ops(out) == ["Flatten", "Gemm"]


def test_matmul_add_on_3d_is_left_alone():
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["y"]),
    ]
    inits = {"w": RNG.standard_normal((4, 5)), "b": RNG.standard_normal(5)}
    out = cz.canonicalize(make(nodes, [2, 3, 4], inits=inits), [cz.matmul_add_to_gemm])
    assert ops(out) == ["MatMul", "Add"]


def test_canonicalize_records_what_it_changed():
    model = make(prelu_nodes("sub"), [1, 3, 5, 5], inits={"coef": np.full((3, 1, 1), 0.2)})
    out = cz.canonicalize(model)
    props = {p.key: p.value for p in out.metadata_props}
    assert props["onnxscope.canonicalize"] == "fuse_prelu=1"
    assert not model.metadata_props


@pytest.mark.parametrize(
    ("name", "feeds"),
    [
        ("ppocrv4_det", {"x": (1, 3, 64, 96)}),  # PaddlePaddle: every weight in a Constant node
        ("multistyle26", {"image": (1, 3, 64, 64), "style_weights": (26,)}),
    ],
)
def test_real_models_keep_their_outputs(name, feeds):
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "samples"))
    import subjects

    try:
        model = onnx.load(subjects.onnx_model(name))
    except subjects.FetchError as exc:
        pytest.skip(f"subject '{name}' could not be fetched: {exc}")
    out = cz.canonicalize(model)
    assert len(out.graph.node) < len(model.graph.node)
    assert not [
        n for n in out.graph.node if n.op_type == "Constant" and n.attribute[0].name == "value"
    ]
    values = {k: RNG.uniform(0, 1, shape).astype(np.float32) for k, shape in feeds.items()}
    runs = [
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, values
        )[0]
        for m in (model, out)
    ]
    np.testing.assert_array_equal(runs[1], runs[0])
