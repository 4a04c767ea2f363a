"""Opsets 9 and 10: the attribute forms of Clip, Pad and Slice, Upsample and Resize-10."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxscope

SCALES = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")


def model(nodes, out_shape, opset, inits=()):
    graph = helper.make_graph(
        [helper.make_node("Tanh", ["x"], ["t"]), *nodes],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
        list(inits),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


CASES = {
    "upsample_nearest_9": (
        model(
            [helper.make_node("Upsample", ["t", "scales"], ["y"], mode="nearest")],
            (1, 2, 8, 8),
            9,
            [SCALES],
        )
    ),
    "upsample_linear_9": (
        model(
            [helper.make_node("Upsample", ["t", "scales"], ["y"], mode="linear")],
            (1, 2, 8, 8),
            9,
            [SCALES],
        )
    ),
    "resize_linear_10": (
        model(
            [helper.make_node("Resize", ["t", "scales"], ["y"], mode="linear")],
            (1, 2, 8, 8),
            10,
            [SCALES],
        )
    ),
    "clip_attrs_9": model(
        [helper.make_node("Clip", ["t"], ["y"], min=-0.3, max=0.5)], (1, 2, 4, 4), 9
    ),
    "pad_attrs_9": model(
        [helper.make_node("Pad", ["t"], ["y"], pads=[0, 0, 1, 2, 0, 0, 2, 1], value=0.7)],
        (1, 2, 7, 7),
        9,
    ),
    "slice_attrs_9": model(
        [helper.make_node("Slice", ["t"], ["y"], starts=[1, -3], ends=[4, 4], axes=[2, -1])],
        (1, 2, 3, 3),
        9,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_old_opset_forms(name):
    m = CASES[name]
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)
    it = onnxscope.LinearScope(m).interpret(x)
    errors = it.verify()
    assert errors["reconstruction"] <= 1e-5 and errors["linearity"] <= 1e-5, errors
    expected = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(it.output, expected, rtol=1e-6)
    if name.startswith("pad"):  # the pad value is bias only
        assert np.allclose(it.bias[..., 0, :], 0.7)


def test_an_ir3_opset8_file_is_upgraded_checked_and_interpreted(tmp_path):
    """IR 3 with initializers not listed as inputs (ONNX Runtime runs such files), opset 8
    (Upsample-7 of a super-resolution net): read as IR 4 / opset 9, outputs checked equal, said
    in a warning; the file is not touched."""
    import hashlib

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import onnxscope

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Upsample", ["r"], ["y"], mode="nearest", scales=[1.0, 1.0, 2.0, 2.0]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)])
    model.ir_version = 3
    path = tmp_path / "old.onnx"
    onnx.save(model, path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.warns(UserWarning, match=r"IR 3 -> 4, opset 8 -> 9 \(outputs checked equal"):
        scope = onnxscope.LinearScope(str(path))
    x = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
    it = scope.interpret(x)
    assert it.verify().ok
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
