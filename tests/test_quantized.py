"""Quantized models (onnxscope/rewrite/rules/quantized.py).

- QDQ models that ONNX Runtime's own quantization tool writes (`quantize_static`, QDQ format,
  calibrated on random inputs): a torch ResNet of samples/architectures/torch_models.py, per-tensor
  and per-channel weights, int8 and uint8 activations. Each QuantizeLinear -> DequantizeLinear pair
  on the input's path is a frozen unit; check_model's reconstruction, linearity and adjoint at
  1e-5; the mask graph's outputs equal to the bit a plain (unoptimized) ONNX Runtime run; the gains
  are the pairs' secants qdq(u)/u at the model's own tensors, 0 where u = 0.
- The QOperator format (QLinearConv) and a QuantizeLinear without its DequantizeLinear: refused,
  naming the node and saying to export QDQ.
- Weight-only DequantizeLinear on constants (per-tensor, per-axis, blocked; int8, uint8, int4):
  values, not on the input's path; the models verify.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import check_model, make_model, run_all
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxscope.converters.pytorch import export
from zoo import tm

import onnxscope
from onnxscope.errors import UnsupportedModelError
from onnxscope.runtime.sessions import session_options

SHAPE = (1, 3, 24, 24)


class RandomInputs(CalibrationDataReader):
    """A few seeded standard-normal inputs for ONNX Runtime's calibration."""

    def __init__(self, count: int = 3):
        rng = np.random.default_rng(7)
        self.feeds = iter(
            [{"x": rng.standard_normal(SHAPE).astype(np.float32)} for _ in range(count)]
        )

    def get_next(self):
        return next(self.feeds, None)


@pytest.fixture(scope="module")
def float_resnet(tmp_path_factory) -> str:
    net = tm.init_weights(tm.TinyResNet()).eval()
    path = tmp_path_factory.mktemp("quantized") / "resnet.onnx"
    return export(net, torch.zeros(SHAPE), path, opset=17, dynamo=False)


def quantized(path: str, fmt=QuantFormat.QDQ, per_channel=False, activations=QuantType.QInt8):
    out = path.replace(".onnx", f"-{fmt.name}-{per_channel}-{activations.name}.onnx")
    quantize_static(
        path,
        out,
        RandomInputs(),
        quant_format=fmt,
        per_channel=per_channel,
        activation_type=activations,
        weight_type=QuantType.QInt8,
    )
    return onnx.load(out)


def seeded_input(seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)


@pytest.mark.parametrize(
    "per_channel, activations",
    [(False, QuantType.QInt8), (True, QuantType.QUInt8)],
    ids=["per-tensor-int8", "per-channel-uint8"],
)
def test_qdq_resnet_verifies(float_resnet, per_channel, activations):
    model = quantized(float_resnet, per_channel=per_channel, activations=activations)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert not any(op.startswith("QLinear") for op in ops)
    x = seeded_input()
    checked = check_model(model, {"x": x})
    # the mask graph computes the model's outputs to the bit, in the same session options (an
    # unoptimized run rounds Conv sums differently, and a quantizer can turn that into a step)
    plain = run_in_session_options(model, {"x": x}, [o.name for o in model.graph.output])
    for name, ref in plain.items():
        np.testing.assert_array_equal(checked.it.outputs[name], ref)
    # one unit per QuantizeLinear on the input's path, its gain the pair's secant qdq(u)/u: u, d
    # and the gain read in one run of the mask graph (its fused Convs round u differently from
    # an unoptimized run by ~1e-5, and a rounding across a step moves d by a whole step)
    units = {u["node"]: u for u in checked.units if u["op"] == "QuantizeLinear"}
    quantize = {n.name: n for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert units and set(units) <= set(quantize)
    pairs = {}
    for name in units:
        q = quantize[name]
        dq = next(n for n in model.graph.node if n.input and n.input[0] == q.output[0])
        pairs[name] = (q.input[0], dq.output[0], units[name]["masks"]["gain"]["output"])
    values = run_in_session_options(
        checked.artifacts.mask, {"x": x}, [t for p in pairs.values() for t in p]
    )
    for u, d, gain in ((values[t] for t in p) for p in pairs.values()):
        nonzero = u != 0
        np.testing.assert_allclose(gain[nonzero], d[nonzero] / u[nonzero], rtol=1e-6)
        assert np.all(gain[~nonzero] == 0) and np.all(np.isfinite(gain))
    assert any(np.any(values[p[2]] == 0) for p in pairs.values())  # steps around 0 are frozen


def run_in_session_options(model: onnx.ModelProto, feeds, names) -> dict[str, np.ndarray]:
    """The tensors `names` of one run of `model`, in onnxscope's own session options."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    listed = {o.name for o in exposed.graph.output}
    for name in dict.fromkeys(names):
        if name not in listed:
            exposed.graph.output.append(onnx.ValueInfoProto(name=name))
    sess = ort.InferenceSession(
        exposed.SerializeToString(), session_options(), providers=["CPUExecutionProvider"]
    )
    return dict(zip(names, sess.run(list(names), feeds)))


def test_qoperator_format_is_refused(float_resnet):
    model = quantized(float_resnet, fmt=QuantFormat.QOperator)
    assert "QLinearConv" in {n.op_type for n in model.graph.node}
    with pytest.raises(UnsupportedModelError) as err:
        check_model(model, {"x": seeded_input()})
    message = str(err.value)
    first_q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    assert f"node '{first_q.name}' (QuantizeLinear)" in message
    assert "(QLinearConv)" in message and "QuantFormat.QDQ" in message
    # every integer-domain node is named with the same advice, com.microsoft's ones included
    for op in ("QLinearConv", "QLinearAdd", "QGemm"):
        node = next(n for n in model.graph.node if n.op_type == op)
        assert f"node '{node.name}' ({op}): an integer-domain op" in message


def test_tangent_mode_refuses_the_pairs(float_resnet):
    model = quantized(float_resnet)
    scope = onnxscope.LinearScope(model, mode="tangent")
    with pytest.raises(UnsupportedModelError, match="piecewise constant, its Jacobian is 0"):
        scope.interpret(seeded_input())


def test_contrib_quantize_dequantize_is_refused():
    model = make_model(
        [
            onnx.helper.make_node(
                "QuantizeLinear", ["x", "s", "zp"], ["q"], name="q", domain="com.microsoft"
            ),
            onnx.helper.make_node(
                "DequantizeLinear", ["q", "s", "zp"], ["y"], name="y", domain="com.microsoft"
            ),
        ],
        inputs={"x": (1, 4)},
        outputs=[("y", (1, 4))],
        inits={"s": np.float32(0.1), "zp": np.int8(0)},
        domains={"com.microsoft": 1},
    )
    with pytest.raises(UnsupportedModelError) as err:
        check_model(model, {"x": np.ones((1, 4), np.float32)})
    assert "node 'q' (QuantizeLinear): com.microsoft's QuantizeLinear has no rule" in str(err.value)


def _scale_zp(kind: str):
    return {"int8": (np.float32(0.05), np.int8(3)), "uint8": (np.float32(0.05), np.uint8(128))}[
        kind
    ]


@pytest.mark.parametrize("kind", ["int8", "uint8"])
def test_quantize_dequantize_pair_by_hand(kind):
    # x -> Q -> DQ -> Conv -> Relu, the pair read by two identical DQs (a fan-out)
    rng = np.random.default_rng(0)
    scale, zp = _scale_zp(kind)
    model = make_model(
        [
            "q = QuantizeLinear(x, s, zp)",
            "d1 = DequantizeLinear(q, s, zp)",
            "d2 = DequantizeLinear(q, s, zp)",
            "c = Conv <pads=[1,1,1,1]> (d1, W)",
            "y0 = Relu(c)",
            "y = Add(y0, d2)",
        ],
        inputs={"x": (1, 2, 6, 6)},
        inits={"s": scale, "zp": zp, "W": rng.standard_normal((2, 2, 3, 3)).astype(np.float32)},
    )
    x = (rng.standard_normal((1, 2, 6, 6)) * 3).astype(np.float32)
    x[0, 0, 0, :3] = [0.0, 0.01, -0.02]  # exactly 0 and inside the step around 0
    checked = check_model(model, {"x": x})
    assert checked.unit("q")["op"] == "QuantizeLinear"
    gain = checked.mask("q", "gain")
    assert gain[0, 0, 0, 0] == 0 and gain[0, 0, 0, 1] == 0 and gain[0, 0, 0, 2] == 0


def test_quantize_without_dequantize_is_refused():
    model = make_model(
        ["q = QuantizeLinear(x, s, zp)", "y = Cast <to=1> (q)"],
        inputs={"x": (1, 4)},
        inits={"s": np.float32(0.1), "zp": np.int8(0)},
    )
    with pytest.raises(UnsupportedModelError) as err:
        check_model(model, {"x": np.ones((1, 4), np.float32)})
    message = str(err.value)
    assert "node 'q' (QuantizeLinear)" in message and "'y' (Cast)" in message
    assert "QuantFormat.QDQ" in message


def test_dequantizers_that_differ_are_refused():
    model = make_model(
        [
            "q = QuantizeLinear(x, s, zp)",
            "d1 = DequantizeLinear(q, s, zp)",
            "d2 = DequantizeLinear(q, s2, zp)",
            "y = Add(d1, d2)",
        ],
        inputs={"x": (1, 4)},
        inits={"s": np.float32(0.1), "s2": np.float32(0.2), "zp": np.int8(0)},
    )
    with pytest.raises(UnsupportedModelError, match="different scales or zero points"):
        check_model(model, {"x": np.ones((1, 4), np.float32)})


def _quantize_weights(w: np.ndarray, scale: np.ndarray, zp: np.ndarray, dtype) -> np.ndarray:
    info = np.iinfo(dtype) if dtype in (np.int8, np.uint8) else None
    lo, hi = (info.min, info.max) if info else (-8, 7)
    return np.clip(np.rint(w / scale) + zp, lo, hi)


def test_weight_only_per_tensor_and_per_axis():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    g = rng.standard_normal((5, 4 * 4 * 4)).astype(np.float32)
    axis_scale = (np.abs(w).reshape(4, -1).max(1) / 127).astype(np.float32)
    wq = _quantize_weights(w, axis_scale[:, None, None, None], 0, np.int8).astype(np.int8)
    g_scale, g_zp = np.float32(np.abs(g).max() / 100), np.uint8(120)
    gq = _quantize_weights(g, g_scale, g_zp, np.uint8).astype(np.uint8)
    model = make_model(
        [
            "W = DequantizeLinear <axis=0> (Wq, ws)",
            "G = DequantizeLinear(Gq, gs, gzp)",
            "c = Conv <strides=[2,2], pads=[1,1,1,1]> (x, W)",
            "r = Relu(c)",
            "f = Flatten(r)",
            "y = Gemm <transB=1> (f, G)",
        ],
        inputs={"x": (1, 3, 8, 8)},
        inits={"Wq": wq, "ws": axis_scale, "Gq": gq, "gs": g_scale, "gzp": g_zp},
    )
    checked = check_model(model, {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)})
    assert [u["op"] for u in checked.units] == ["Relu"]  # the dequantized weights are values


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_weight_only_blocked(dtype):
    # opset 21 blocked DequantizeLinear: one scale per block of 4 along the input axis
    rng = np.random.default_rng(2)
    w = rng.standard_normal((8, 6)).astype(np.float32)  # MatMul [1, 8] x [8, 6]
    blocks = w.reshape(2, 4, 6)
    scale = (np.abs(blocks).max(1) / (7 if dtype == "int4" else 127)).astype(np.float32)
    wq = _quantize_weights(blocks, scale[:, None, :], 0, np.int8).reshape(8, 6)
    elem = onnx.TensorProto.INT4 if dtype == "int4" else onnx.TensorProto.INT8
    quantized_weight = onnx.helper.make_tensor("Wq", elem, wq.shape, wq.astype(int).ravel())
    model = make_model(
        [
            "W = DequantizeLinear <axis=0, block_size=4> (Wq, ws)",
            "m = MatMul(x, W)",
            "y = Tanh(m)",
        ],
        inputs={"x": (1, 8)},
        outputs=[("y", (1, 6))],  # (the weight is added below: its type is known now)
        inits={"ws": scale},
        opset=21,
    )
    model.graph.initializer.append(quantized_weight)
    checked = check_model(model, {"x": rng.standard_normal((1, 8)).astype(np.float32)})
    env = run_all(model, {"x": np.zeros((1, 8), np.float32)})
    np.testing.assert_allclose(env["W"], wq * np.repeat(scale, 4, axis=0), rtol=1e-6)
    assert [u["op"] for u in checked.units] == ["Tanh"]
