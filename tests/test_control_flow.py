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
