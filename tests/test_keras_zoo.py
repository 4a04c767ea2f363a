"""The Keras conformance zoo (tests/keras_zoo.py): Keras 3 models converted by
onnxscope.converters.tensorflow (tf2onnx; three of them through a TFLite flatbuffer), with NCHW
inputs.

For every architecture: verify()'s reconstruction, linearity and adjoint errors are ≤ 1e-5; the
converted model (plain ONNX Runtime) and the mask graph reproduce Keras' own output; the export
holds the ONNX ops the architecture is there to cover; the recorded layouts are NCHW. For the
piecewise-linear ones A_x^T w equals TensorFlow's own vector-Jacobian product (GradientTape) at x,
so the interpreter is checked against the framework, not only against itself.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the Keras zoo needs the [tf] extra (tensorflow-cpu)")
pytest.importorskip("tf2onnx", reason="the Keras zoo needs the [tf] extra (tf2onnx)")
ort = pytest.importorskip("onnxruntime")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras_zoo as kz  # noqa: E402
import onnx  # noqa: E402
import tensorflow as tf  # noqa: E402
from helpers import check_readings  # noqa: E402
from onnxscope.converters import tensorflow as tfc  # noqa: E402

import onnxscope  # noqa: E402

EXACT = 1e-5
NAMES = list(kz.ARCHITECTURES)
PIECEWISE = [n for n, a in kz.ARCHITECTURES.items() if a.piecewise]


class Case:
    def __init__(self, name, tmp):
        self.name = name
        self.model, self.x_nhwc = kz.build(name)
        self.path = str(tmp / f"{name}.onnx")
        self.converted = kz.convert(name, self.model, self.path)
        self.x = kz.to_nchw(self.x_nhwc)
        self._it = None

    @property
    def it(self) -> onnxscope.Interpretation:
        if self._it is None:
            self._it = onnxscope.LinearScope(self.path).interpret(self.x)
        return self._it


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = Case(name, tmp_path_factory.mktemp(f"keras-{name}"))
        return cache[name]

    return get


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.mark.parametrize("name", NAMES)
def test_reading_graphs_equal_the_python_api(case, name):
    """The reading graphs, one ONNX Runtime run each, equal the Python API to 1e-6 (issue 13)."""
    check_readings(case(name).it)


@pytest.mark.parametrize("name", NAMES)
def test_verify(case, name):
    errors = case(name).it.verify()
    print(f"{name}: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
    assert set(errors) == {"reconstruction", "linearity", "adjoint"}, errors
    assert max(errors.values()) <= EXACT, errors


@pytest.mark.parametrize("name", NAMES)
def test_outputs_match_keras(case, name):
    c = case(name)
    want = kz.to_nchw(kz.forward(c.model, c.x_nhwc))
    (plain,) = ort.InferenceSession(c.path, providers=["CPUExecutionProvider"]).run(
        None, {"x": c.x}
    )
    assert plain.shape == want.shape == c.it.output.shape
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(plain, want, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(c.it.output, plain, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("name", NAMES)
def test_export_holds_the_covered_ops_and_layouts(case, name):
    c = case(name)
    model = onnx.load(c.path)
    ops = {n.op_type for n in model.graph.node}
    missing = [w for w in kz.ARCHITECTURES[name].ops if not set(w.split("|")) & ops]
    assert not missing, f"{name} has no {missing}; ops: {sorted(ops)}"
    assert c.converted.opset == tfc.DEFAULT_OPSET
    assert c.converted.inputs == {"x": c.x.shape}
    image_out = c.it.output.ndim == 4
    assert tfc.layouts(model) == {"x": "NCHW", **({"y": "NCHW"} if image_out else {})}


@pytest.mark.parametrize("name", PIECEWISE)
def test_apply_T_equals_tensorflow_vjp(case, name):
    """For ReLU-type networks A_x is the Jacobian at x: rows of A_x (the adjoint graph) equal
    TensorFlow's gradient of <F(x), w> (computed in NHWC and brought to NCHW)."""
    c = case(name)
    rng = np.random.default_rng(3)
    w = rng.standard_normal((2, *c.it.output.shape)).astype(np.float32)
    got = c.it.apply_T(w)
    x = tf.constant(c.x_nhwc)
    for k in range(len(w)):
        wk = w[k].transpose(0, 2, 3, 1) if w[k].ndim == 4 else w[k]
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = c.model(x, training=False)
            dot = tf.reduce_sum(y * wk)
        want = kz.to_nchw(tape.gradient(dot, x).numpy())
        err = rel(got[k], want)
        print(f"{name}: apply_T vs tf vjp {err:.2e}")
        assert err <= EXACT


def test_zoo_covers_the_brief():
    assert {
        "vgg",
        "resnet",
        "densenet",
        "mobilenetv2",
        "efficientnet",
        "shufflenet",
        "inception",
        "convnext",
        "vit",
        "unet",
        "espcn",
        "dncnn",
        "keras_prelu",
    } <= set(kz.ARCHITECTURES)
    assert sum(a.tflite for a in kz.ARCHITECTURES.values()) >= 2


def test_randomize_leaves_no_default_statistics():
    """The zoo's weights are not Keras' defaults (zero biases, unit BatchNorm statistics)."""
    model, _ = kz.build("densenet")
    for v in model.weights:
        value = np.asarray(v)
        assert not np.all(value == 0) and not np.all(value == 1), v.path


# -- the same network in PyTorch and in Keras, with the same weights -------------------------------
def agreement_pair(tmp):
    """conv-BN-ReLU-maxpool-conv-PReLU-flatten-dense in Keras (NHWC) and in torch (NCHW) with
    Keras' weights copied across: kernels [kh, kw, cin, cout] -> [cout, cin, kh, kw]; the dense
    layer after Flatten reads (h, w, c) in Keras and (c, h, w) in torch, so its input axis is
    reordered; BatchNorm keeps Keras' epsilon (1e-3)."""
    torch = pytest.importorskip("torch", reason="the agreement test needs the [torch] extra")
    from onnxscope.converters.pytorch import export
    from torch import nn

    keras, layers = kz.keras, kz.L
    keras.utils.set_random_seed(kz.SEED)
    inp = keras.Input((8, 8, 3), batch_size=1)
    h = layers.Conv2D(8, 3, padding="same")(inp)
    h = layers.MaxPooling2D()(layers.ReLU()(layers.BatchNormalization()(h)))
    h = layers.PReLU(shared_axes=[1, 2])(layers.Conv2D(6, 3, padding="same")(h))
    k_model = kz.randomize(keras.Model(inp, layers.Dense(5)(layers.Flatten()(h))))
    conv1, bn, conv2, prelu, dense = [lay for lay in k_model.layers if lay.weights]

    t_model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8, eps=bn.epsilon),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 6, 3, padding=1),
        nn.PReLU(6),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 5),
    ).eval()
    t = lambda a: torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float32)))  # noqa: E731
    kernel = lambda lay: t(np.asarray(lay.kernel).transpose(3, 2, 0, 1))  # noqa: E731
    dense_w = np.asarray(dense.kernel).reshape(4, 4, 6, 5).transpose(3, 2, 0, 1).reshape(5, -1)
    with torch.no_grad():
        for tm, km in ((t_model[0], conv1), (t_model[4], conv2)):
            tm.weight.copy_(kernel(km))
            tm.bias.copy_(t(km.bias))
        t_model[1].weight.copy_(t(bn.gamma))
        t_model[1].bias.copy_(t(bn.beta))
        t_model[1].running_mean.copy_(t(bn.moving_mean))
        t_model[1].running_var.copy_(t(bn.moving_variance))
        t_model[5].weight.copy_(t(np.asarray(prelu.alpha).reshape(-1)))
        t_model[7].weight.copy_(t(dense_w))
        t_model[7].bias.copy_(t(dense.bias))
    x = np.random.default_rng(kz.SEED + 2).standard_normal((1, 8, 8, 3)).astype(np.float32)
    tfc.from_keras(k_model, tmp / "keras.onnx", nchw=True)
    export(t_model, t(kz.to_nchw(x)), tmp / "torch.onnx")
    return k_model, t_model, x


def test_torch_and_keras_interpretations_agree(tmp_path):
    k_model, t_model, x = agreement_pair(tmp_path)
    xn = kz.to_nchw(x)
    import torch

    with torch.no_grad():
        t_out = t_model(torch.from_numpy(xn)).numpy()
    assert rel(t_out, kz.forward(k_model, x)) <= EXACT  # the weights were copied right
    it_k, it_t = (
        onnxscope.LinearScope(str(tmp_path / f"{n}.onnx")).interpret(xn) for n in ("keras", "torch")
    )
    rng = np.random.default_rng(5)
    z = rng.standard_normal((3, *xn.shape)).astype(np.float32)
    w = rng.standard_normal((3, *it_k.output.shape)).astype(np.float32)
    checks = {
        "output": (it_k.output, it_t.output),
        "bias": (it_k.bias, it_t.bias),
        "columns": (it_k.columns([0, 77, xn.size - 1]), it_t.columns([0, 77, xn.size - 1])),
        "rows": (it_k.rows(range(5)), it_t.rows(range(5))),
        "apply": (it_k.apply(z), it_t.apply(z)),
        "apply_T": (it_k.apply_T(w), it_t.apply_T(w)),
    }
    for what, (a, b) in checks.items():
        err = rel(a, b)
        print(f"keras vs torch {what}: {err:.2e}")
        assert err <= EXACT, what
    assert np.abs(it_k.bias).max() > 1e-2  # the biases are not trivially zero
