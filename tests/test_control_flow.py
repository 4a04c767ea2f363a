"""Static control flow (issue 16): an If whose condition is fixed once the input shapes are is
folded into the branch it takes before analysis; an If decided by the input's values is still
refused, naming the node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import check_model
from onnx import TensorProto, helper

import onnxscope
from onnxscope.errors import OnnxscopeError


def _branch(name: str, nodes, out: str, shape) -> onnx.GraphProto:
    return helper.make_graph(
        nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)]
    )


def _squeeze_like(condition_from: str = "shape"):
    """y = W · Relu(x) if x.shape[1] == 4 else Sigmoid(x) (a static If), as PyTorch's
    squeeze(dim) on a dynamic dimension exports it; with condition_from='value' the condition
    is ReduceSum(x) > 0, decided by the data."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((3, 4)).astype(np.float32)
    then = _branch(
        "then",
        [
            helper.make_node("Relu", ["x"], ["r"]),  # outer-scope read of x
            helper.make_node("Gemm", ["r", "W"], ["t_out"], transB=1),
        ],
        "t_out",
        [2, 3],
    )
    otherwise = _branch(
        "else",
        [
            helper.make_node("Sigmoid", ["x"], ["s"]),
            helper.make_node("Gemm", ["s", "W"], ["e_out"], transB=1),
        ],
        "e_out",
        [2, 3],
    )
    if condition_from == "shape":
        pre = [
            helper.make_node("Shape", ["x"], ["shape"]),
            helper.make_node("Gather", ["shape", "one"], ["dim"], axis=0),
            helper.make_node("Equal", ["dim", "four"], ["cond"]),
        ]
    else:
        pre = [
            helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
            helper.make_node("Greater", ["total", "zero"], ["cond"]),
        ]
    nodes = [*pre, helper.make_node("If", ["cond"], ["y"], name="the_if", then_branch=then,
                                    else_branch=otherwise)]  # fmt: skip
    inits = [
        onnx.numpy_helper.from_array(W, "W"),
        onnx.numpy_helper.from_array(np.array(1, np.int64), "one"),
        onnx.numpy_helper.from_array(np.array(4, np.int64), "four"),
        onnx.numpy_helper.from_array(np.array(0, np.float32), "zero"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_if_decided_by_shapes_is_folded_into_its_branch():
    model = _squeeze_like()
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    checked = check_model(model, {"x": x})  # the standard checks: exact and adjoint
    scope = onnxscope.LinearScope(model)
    it = scope.interpret(x)
    units = [u["op"] for u in it._s.artifacts.manifest["units"]]
    assert units == ["Relu"]  # the taken branch's unit is frozen as any unit
    assert checked is not None


def test_inspect_counts_the_units_of_the_taken_branch(tmp_path, capsys):
    from onnxscope.cli import main

    path = tmp_path / "m.onnx"
    onnx.save(_squeeze_like(), path)
    assert main(["inspect", str(path)]) == 0
    assert "1 frozen unit(s)" in capsys.readouterr().out


def test_an_if_decided_by_the_data_is_refused_by_name():
    model = _squeeze_like("value")
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    with pytest.raises(OnnxscopeError, match="the_if"):
        onnxscope.LinearScope(model).interpret(x)


def test_pytorch_squeeze_on_a_dynamic_dimension():
    """The legacy exporter writes Shape -> Gather -> Equal -> If for squeeze(1) on a dynamic
    axis: folded at the fixed shapes, both ReLUs frozen, exact."""
    torch = pytest.importorskip("torch")

    class Squeezed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(8, 5)

        def forward(self, x):
            return torch.relu(self.linear(torch.relu(x).squeeze(1)))

    torch.manual_seed(0)
    module = Squeezed().eval()
    x = torch.randn(2, 1, 8)
    import io

    buffer = io.BytesIO()
    torch.onnx.export(
        module, (x,), buffer, dynamo=False, opset_version=17, input_names=["x"],
        output_names=["y"], dynamic_axes={"x": {0: "n", 1: "one"}, "y": {0: "n"}},
    )  # fmt: skip
    model = onnx.load_from_string(buffer.getvalue())
    assert "If" in {n.op_type for n in model.graph.node}
    it = onnxscope.LinearScope(model).interpret(x.numpy())
    assert it.verify().ok
    assert [u["op"] for u in it._s.artifacts.manifest["units"]] == ["Relu", "Relu"]
    with torch.no_grad():
        np.testing.assert_allclose(it.output, module(x).numpy(), rtol=1e-6, atol=1e-7)


def test_inspect_reads_free_batch_dimensions_as_1_and_names_the_others(tmp_path, capsys):
    from helpers import make_model

    from onnxscope.cli import main

    path = tmp_path / "m.onnx"
    onnx.save(make_model(["y = Relu(x)"], {"x": ("batch", 3, "height", "width")}), path)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert "'height' (axis 2), 'width' (axis 3)" in err
    assert "--input-shape x=1x3x<height>x<width>" in err
    assert main(["inspect", str(path), "--input-shape", "x=1x3x8x8"]) == 0
    onnx.save(make_model(["y = Relu(x)"], {"x": ("N", 3, 8, 8)}), path)
    assert main(["inspect", str(path)]) == 0
    assert "free batch dimension(s) 'x' axis 0 (N) read as 1" in capsys.readouterr().err


# -- Loop and Scan: unrolled at the fixed shapes ---------------------------------------------------


def _vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _recurrent_body(with_scan: bool = True) -> onnx.GraphProto:
    """Loop body: v' = Relu(v·W + i·b) (the iteration number read), scan output Sigmoid(v')."""
    nodes = [
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        helper.make_node("Cast", ["i"], ["i_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["i_f", "b"], ["ib"]),  # outer-scope read of b
        helper.make_node("MatMul", ["v_in", "W"], ["vw"]),
        helper.make_node("Add", ["vw", "ib"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["v_out"]),
    ]
    outputs = [_vi("cond_out", [], TensorProto.BOOL), _vi("v_out", [2, 4])]
    if with_scan:
        nodes.append(helper.make_node("Sigmoid", ["v_out"], ["s"]))
        outputs.append(_vi("s", [2, 4]))
    inputs = [_vi("i", [], TensorProto.INT64), _vi("cond_in", [], TensorProto.BOOL)]
    inputs.append(_vi("v_in", [2, 4]))
    return helper.make_graph(nodes, "body", inputs, outputs)


def _loop_model(trips_from: str = "constant", body=None) -> onnx.ModelProto:
    """y, scan = Loop(M, true, x) with the body above; M a constant 3, x.shape[0] + 1 (static at
    fixed shapes) or Cast(ReduceMax(x) > 0) + 2 (decided by the data)."""
    rng = np.random.default_rng(0)
    inits = [
        onnx.numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "W"),
        onnx.numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
        onnx.numpy_helper.from_array(np.array(True), "true"),
        onnx.numpy_helper.from_array(np.array(3, np.int64), "three"),
        onnx.numpy_helper.from_array(np.array([0], np.int64), "zero_idx"),
        onnx.numpy_helper.from_array(np.array(1, np.int64), "one"),
        onnx.numpy_helper.from_array(np.array(0, np.float32), "zero"),
    ]
    if trips_from == "constant":
        pre, trips = [], "three"
    elif trips_from == "shape":
        pre = [
            helper.make_node("Shape", ["x"], ["shape"]),
            helper.make_node("Gather", ["shape", "zero_idx"], ["rows"], axis=0),
            helper.make_node("ReduceSum", ["rows"], ["n"], keepdims=0),
            helper.make_node("Add", ["n", "one"], ["trips"]),
        ]
        trips = "trips"
    else:
        pre = [
            helper.make_node("ReduceMax", ["x"], ["top"], keepdims=0),
            helper.make_node("Greater", ["top", "zero"], ["positive"]),
            helper.make_node("Cast", ["positive"], ["flag"], to=TensorProto.INT64),
            helper.make_node("Add", ["flag", "one"], ["trips"]),
        ]
        trips = "trips"
    body = body or _recurrent_body()
    scans = len(body.output) - 2
    outs = ["y"] + ["scan"] * scans
    loop = helper.make_node("Loop", [trips, "true", "x"], outs, name="the_loop", body=body)
    outputs = [_vi("y", [2, 4])] + [_vi("scan", [3, 2, 4])] * scans
    graph = helper.make_graph([*pre, loop], "g", [_vi("x", [2, 4])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("trips_from", ["constant", "shape"])
def test_a_loop_with_a_static_trip_count_is_unrolled(trips_from):
    model = _loop_model(trips_from)
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    checked = check_model(model, {"x": x})
    assert checked is not None
    it = onnxscope.LinearScope(model).interpret(x)
    trips = 3
    units = [u["op"] for u in it._s.artifacts.manifest["units"]]
    assert sorted(units) == ["Relu"] * trips + ["Sigmoid"] * trips
    assert it.outputs["scan"].shape == (trips, 2, 4)
    # the same recurrence written out by hand in numpy
    W = onnx.numpy_helper.to_array(model.graph.initializer[0])
    b = onnx.numpy_helper.to_array(model.graph.initializer[1])
    v, scans = x, []
    for i in range(trips):
        v = np.maximum(v @ W + i * b, 0)
        scans.append(1 / (1 + np.exp(-v)))
    np.testing.assert_allclose(it.outputs["y"], v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(it.outputs["scan"], np.stack(scans), rtol=1e-5, atol=1e-6)


def test_a_loop_whose_trip_count_the_data_decides_is_refused_by_name():
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    with pytest.raises(OnnxscopeError, match="the_loop"):
        onnxscope.LinearScope(_loop_model("data")).interpret(x)


def test_a_loop_whose_body_computes_its_condition_is_refused_clearly():
    body = _recurrent_body(with_scan=False)
    body.node[0].CopyFrom(  # cond_out = i < 1: a while loop
        helper.make_node("Less", ["i", "one"], ["cond_out"])
    )
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    with pytest.raises(OnnxscopeError, match="the_loop.*computes the loop condition"):
        onnxscope.LinearScope(_loop_model("constant", body)).interpret(x)


@pytest.mark.parametrize("reverse", [0, 1])
def test_a_scan_rnn_is_unrolled_over_its_sequence(reverse):
    """h_t = Tanh(x_t·W + h_{t−1}·U) over a [batch, time, features] sequence scanned on axis 1
    (as tf2onnx writes some recurrent layers), the states stacked on axis 1."""
    rng = np.random.default_rng(2)
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["x_t", "W"], ["xw"]),
            helper.make_node("MatMul", ["h_in", "U"], ["hu"]),
            helper.make_node("Add", ["xw", "hu"], ["pre"]),
            helper.make_node("Tanh", ["pre"], ["h_out"]),
            helper.make_node("Identity", ["h_out"], ["y_t"]),
        ],
        "cell",
        [_vi("h_in", [2, 3]), _vi("x_t", [2, 5])],
        [_vi("h_out", [2, 3]), _vi("y_t", [2, 3])],
    )
    scan = helper.make_node(
        "Scan", ["h0", "x"], ["h", "ys"], name="the_scan", body=body, num_scan_inputs=1,
        scan_input_axes=[1], scan_input_directions=[reverse], scan_output_axes=[1],
    )  # fmt: skip
    W = rng.standard_normal((5, 3)).astype(np.float32)
    U = rng.standard_normal((3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [scan], "g", [_vi("h0", [2, 3]), _vi("x", [2, 6, 5])],
        [_vi("h", [2, 3]), _vi("ys", [2, 6, 3])],
        [onnx.numpy_helper.from_array(W, "W"), onnx.numpy_helper.from_array(U, "U")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"h0": rng.standard_normal((2, 3)).astype(np.float32) * 0.1,
             "x": rng.standard_normal((2, 6, 5)).astype(np.float32)}  # fmt: skip
    checked = check_model(model, feeds, wrt="x")
    assert checked is not None
    it = onnxscope.LinearScope(model, wrt="x").interpret(feeds["x"], h0=feeds["h0"])
    assert [u["op"] for u in it._s.artifacts.manifest["units"]] == ["Tanh"] * 6
    h, ys = feeds["h0"], []
    steps = range(5, -1, -1) if reverse else range(6)
    for t in steps:
        h = np.tanh(feeds["x"][:, t] @ W + h @ U)
        ys.append(h)
    np.testing.assert_allclose(it.outputs["h"], h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(it.outputs["ys"], np.stack(ys, axis=1), rtol=1e-5, atol=1e-6)


def test_a_torchscript_for_loop_is_unrolled():
    """torch.jit.script keeps a Python for-loop as an ONNX Loop (legacy exporter); its trip count
    is the input's static sequence length."""
    torch = pytest.importorskip("torch")

    class Recurrent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = torch.nn.Linear(8, 8)

        def forward(self, x):
            h = torch.zeros_like(x[:, 0])
            for t in range(x.shape[1]):
                h = torch.relu(self.cell(h) + x[:, t])
            return h

    torch.manual_seed(0)
    module = torch.jit.script(Recurrent().eval())
    x = torch.randn(2, 5, 8)
    import io

    buffer = io.BytesIO()
    torch.onnx.export(module, (x,), buffer, dynamo=False, opset_version=17, input_names=["x"])
    model = onnx.load_from_string(buffer.getvalue())
    assert "Loop" in {n.op_type for n in model.graph.node}
    it = onnxscope.LinearScope(model).interpret(x.numpy())
    assert it.verify().ok
    assert [u["op"] for u in it._s.artifacts.manifest["units"]] == ["Relu"] * 5
    with torch.no_grad():
        np.testing.assert_allclose(it.output, module(x).numpy(), rtol=1e-5, atol=1e-6)
