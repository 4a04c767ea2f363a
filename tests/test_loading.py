"""Loading: weights in Constant nodes or external data, free dims, extra inputs, API boundaries."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxscope

RNG = np.random.default_rng(0)
W = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)
B = RNG.standard_normal(4).astype(np.float32)


def conv_relu(weights_as="initializer", x_dims=(1, 2, 6, 6), opset=17):
    nodes, inits = [], []
    if weights_as == "constant":
        nodes += [
            helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(W)),
            helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(B)),
        ]
    else:
        inits += [numpy_helper.from_array(W, "w"), numpy_helper.from_array(B, "b")]
    nodes += [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Tanh", ["c"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    graph.output[0].type.tensor_type.shape.SetInParent()
    imports = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = max(4, helper.find_min_ir_version_for(imports))  # older runtimes
    return model


def reference(model, x):
    sess = ort.InferenceSession(model.SerializeToString())
    return sess.run(None, {"x": x})[0]


def test_weights_in_constant_nodes():
    model = conv_relu("constant")
    x = RNG.standard_normal((1, 2, 6, 6)).astype(np.float32)
    it = onnxscope.LinearScope(model).interpret(x)
    errors = it.verify()
    assert errors["reconstruction"] <= 1e-5 and errors["linearity"] <= 1e-5
    np.testing.assert_allclose(it.output, reference(model, x), rtol=1e-6)
    # the bias image carries the Conv bias through Tanh's secant: c = g * b
    assert np.abs(it.bias).max() > 0


def test_external_data(tmp_path):
    model = conv_relu()
    x = RNG.standard_normal((1, 2, 6, 6)).astype(np.float32)
    expected = reference(model, x)
    path = tmp_path / "ext.onnx"
    onnx.save(model, path, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    assert (tmp_path / "ext.onnx.data").exists()
    it = onnxscope.LinearScope(str(path)).interpret(x)
    assert it.verify()["reconstruction"] <= 1e-5
    np.testing.assert_allclose(it.output, expected, rtol=1e-6)


def test_free_batch_dim_defaults_to_one_and_shapes_are_cached():
    model = conv_relu(x_dims=("N", 2, 6, 6))
    scope = onnxscope.LinearScope(model)
    x = RNG.standard_normal((1, 2, 6, 6)).astype(np.float32)
    first = scope.interpret(x)
    second = scope.interpret(2 * x)
    assert len(scope._cache) == 1
    assert not np.allclose(first.output, second.output)


def test_free_spatial_dims_follow_the_input():
    model = conv_relu(x_dims=(1, 2, "H", "W"))
    scope = onnxscope.LinearScope(model)
    for size in (5, 8):
        x = RNG.standard_normal((1, 2, size, size)).astype(np.float32)
        assert scope.interpret(x).verify()["reconstruction"] <= 1e-5
    with pytest.raises(onnxscope.InputError, match="--input-shape"):
        scope.artifacts({})


def test_old_opset_is_upgraded_and_a_future_one_refused_with_advice():
    with pytest.warns(UserWarning, match="opset 8 -> 9"):
        scope = onnxscope.LinearScope(conv_relu(opset=8))
    assert scope.interpret(RNG.standard_normal((1, 2, 6, 6)).astype(np.float32)).verify().ok
    future = conv_relu()
    future.opset_import[0].version = 99
    with pytest.raises(onnxscope.ModelError, match="opset 99"):
        onnxscope.LinearScope(future)


def test_the_users_model_object_is_not_modified():
    model = conv_relu()
    before = model.SerializeToString()
    onnxscope.LinearScope(model).interpret(RNG.standard_normal((1, 2, 6, 6)).astype(np.float32))
    assert model.SerializeToString() == before


def test_bad_inputs_are_refused():
    scope = onnxscope.LinearScope(conv_relu())
    with pytest.raises(onnxscope.InputError, match="shape"):
        scope.interpret(np.zeros((1, 3, 6, 6), np.float32))
    with pytest.raises(onnxscope.InputError, match="NaN"):
        scope.interpret(np.full((1, 2, 6, 6), np.inf, np.float32))
    with pytest.raises(onnxscope.InputError, match="Unknown input"):
        scope.interpret(np.zeros((1, 2, 6, 6), np.float32), sigma=np.zeros(1))
    it = scope.interpret(np.zeros((1, 2, 6, 6), np.float32))
    with pytest.raises(onnxscope.InputError, match="probe"):
        it.apply(np.zeros((2, 1, 2, 6, 5), np.float32))
    with pytest.raises(onnxscope.InputError, match="out of range"):
        it.columns([72])


def test_probe_batches_and_leading_dims():
    scope = onnxscope.LinearScope(conv_relu(), probe_batch=3)
    x = RNG.standard_normal((1, 2, 6, 6)).astype(np.float32)
    it = scope.interpret(x)
    z = RNG.standard_normal((2, 4, 1, 2, 6, 6)).astype(np.float32)
    az = it.apply(z)
    assert az.shape == (2, 4, 1, 4, 6, 6)
    one = it.apply(z[1, 2])
    np.testing.assert_allclose(az[1, 2], one, rtol=1e-5, atol=1e-6)
    cols = it.columns([0, 5, 71])
    assert cols.shape == (3, 1, 4, 6, 6)
    e = np.zeros(72, np.float32)
    e[5] = 1
    np.testing.assert_allclose(cols[1], it.apply(e.reshape(1, 2, 6, 6)), rtol=1e-6)


def test_a_second_input_is_a_frozen_value():
    """An FFDNet-like model: a noise-level map enters by Concat and Mul; interpret wrt the image."""
    w = numpy_helper.from_array(RNG.standard_normal((3, 3, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Concat", ["x", "sigma"], ["xs"], axis=1),
        helper.make_node("Conv", ["xs", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c", "sigma"], ["m"]),
        helper.make_node("Relu", ["m"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5]),
            helper.make_tensor_value_info("sigma", TensorProto.FLOAT, [1, 1, 5, 5]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 5, 5])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    scope = onnxscope.LinearScope(model)
    assert scope.wrt == "x"
    x = RNG.standard_normal((1, 2, 5, 5)).astype(np.float32)
    sigma = np.full((1, 1, 5, 5), 0.3, np.float32)
    it = scope.interpret(x, sigma=sigma)
    errors = it.verify()
    assert errors["reconstruction"] <= 1e-5 and errors["linearity"] <= 1e-5
    # sigma enters the bias image (its Concat channel), not A_x
    assert np.abs(it.bias).max() > 0
    with pytest.raises(onnxscope.InputError, match="Missing"):
        scope.interpret(x)


def test_auto_probe_batch_follows_memory(monkeypatch):
    """probe_batch="auto" fits probes in a share of the free memory, capped; never below one."""
    from onnxscope.runtime import scope as scope_module

    x = RNG.standard_normal((1, 2, 6, 6)).astype(np.float32)
    scope = onnxscope.LinearScope(conv_relu())
    it = scope.interpret(x)
    per_probe = it._s.probe_bytes
    # the linear path: x [1,2,6,6], conv out and relu out [1,4,6,6], float32
    assert per_probe == 4 * (72 + 144 + 144)
    assert it.batch == scope_module.PROBE_CAP["cpu"]
    monkeypatch.setattr(scope_module, "available_memory", lambda device: 10 * per_probe)
    assert scope.interpret(x).batch == int(scope_module.MEMORY_SHARE * 10)
    monkeypatch.setattr(scope_module, "available_memory", lambda device: 0)
    small = scope.interpret(x)
    assert small.batch == 1
    z = RNG.standard_normal((3, 1, 2, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(small.apply(z), it.apply(z), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bad", [0, -2, 2.5, "big"])
def test_probe_batch_is_checked(bad):
    with pytest.raises(onnxscope.InputError, match="probe_batch"):
        onnxscope.LinearScope(conv_relu(), probe_batch=bad)


def test_cuda_request_without_cuda_falls_back_with_one_line(capfd):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the fallback is not reachable")
    scope = onnxscope.LinearScope(conv_relu(), providers="cuda")
    it = scope.interpret(RNG.standard_normal((1, 2, 6, 6)).astype(np.float32))
    assert it.verify()["reconstruction"] < 1e-6
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDAExecutionProvider" in err[0] and "running on" in err[0]


def test_default_device_from_the_environment(monkeypatch):
    monkeypatch.setenv("ONNXSCOPE_DEVICE", "cpu")
    assert onnxscope.LinearScope(conv_relu()).providers == ["CPUExecutionProvider"]
    monkeypatch.setenv("ONNXSCOPE_DEVICE", "tpu")
    with pytest.raises(onnxscope.OnnxscopeError, match="tpu"):
        onnxscope.LinearScope(conv_relu())


def test_padded_probe_batches_give_the_same_results():
    """Under CUDA every run keeps one probe-batch shape (short batches are padded with zero
    probes and the padding is cut off): the results must not change."""
    scope = onnxscope.LinearScope(conv_relu(), probe_batch=4)
    x = RNG.standard_normal((1, 2, 6, 6)).astype(np.float32)
    it = scope.interpret(x)
    z = RNG.standard_normal((6, 1, 2, 6, 6)).astype(np.float32)
    w = RNG.standard_normal((7, 1, 4, 6, 6)).astype(np.float32)
    want_az, want_atw, want_layers = it.apply(z), it.apply_T(w), it.bias_by_layer()
    it._s.fixed_shapes = True
    try:
        np.testing.assert_array_equal(it.apply(z), want_az)
        np.testing.assert_array_equal(it.apply_T(w), want_atw)
        got_layers = it.bias_by_layer()
        assert got_layers.keys() == want_layers.keys()
        for name, value in got_layers.items():
            np.testing.assert_array_equal(value, want_layers[name])
        assert it.apply(z[:0]).shape == (0, 1, 4, 6, 6)
    finally:
        it._s.fixed_shapes = False


def test_softmax_outputs_to_logits():
    """The logits under a Softmax output replace it (renamed NAME_logits); the user's model is
    not modified and other outputs stay."""
    from onnxscope.graph.model import softmax_outputs_to_logits

    w = numpy_helper.from_array(RNG.standard_normal((5, 4)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["prob"], axis=-1),
            helper.make_node("Relu", ["logits"], ["r"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5])],
        [
            helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 4]),
        ],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    before = model.SerializeToString()
    cut_model, cut = softmax_outputs_to_logits(model)
    assert cut == ["prob"] and model.SerializeToString() == before
    assert [o.name for o in cut_model.graph.output] == ["prob_logits", "r"]
    x = RNG.standard_normal((1, 5)).astype(np.float32)
    it = onnxscope.LinearScope(cut_model).interpret(x)
    want = x @ numpy_helper.to_array(w)
    np.testing.assert_allclose(it.outputs["prob_logits"], want, rtol=1e-6)
    votes = it.votes(2, "prob_logits")
    assert votes.sum() + it.biases["prob_logits"].ravel()[2] == pytest.approx(want[0, 2], rel=1e-5)


def test_a_model_onnx_runtime_cannot_run_is_said_in_its_words_first():
    """A block-quantized weight with a one-element scale: ONNX's checker accepts it, ONNX Runtime
    refuses it at run time; that is the error, not a rule's complaint about the MaxPool after."""
    from onnxscope.errors import ModelError

    weights = numpy_helper.from_array(np.ones((4, 2, 3, 3), np.int8), "wq")
    scale = numpy_helper.from_array(np.array([0.1], np.float32), "s")
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "s"], ["w"], axis=0, block_size=2),
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5])],
        [weights, scale],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    with pytest.raises(ModelError, match="^ONNX Runtime cannot run this model.*DequantizeLinear"):
        onnxscope.LinearScope(model).interpret(np.zeros((1, 2, 8, 8), np.float32))
