"""Front-ends: `onnxscope convert` (Keras file, SavedModel, TFLite, TorchScript), its failures
(exit 2, one paragraph, the source untouched), tf2onnx's untranslated ops, open input sizes, and
the PyTorch exporter's reported opset and external data."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

ort = pytest.importorskip("onnxruntime")

from onnxscope.converters import common  # noqa: E402

from onnxscope import cli  # noqa: E402

RNG = np.random.default_rng(0)


def run_onnx(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[
        0
    ]


def convert_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["convert", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_paragraph_error(code, err, *words):
    assert code == 2
    assert err.startswith("onnxscope: error:") and err.strip().count("\n") == 0, err
    assert "Traceback" not in err
    for w in words:
        assert w in err, err


# -- TensorFlow sources --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keras_sources(tmp_path_factory):
    """One small Keras model (conv, PReLU, pool, dense) saved in every form the CLI reads."""
    pytest.importorskip("tensorflow", reason="needs the [tf] extra (tensorflow-cpu)")
    pytest.importorskip("tf2onnx", reason="needs the [tf] extra (tf2onnx)")
    import keras
    from onnxscope.converters import tensorflow as tfc

    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 3), name="img")
    h = keras.layers.Conv2D(6, 3, padding="same", bias_initializer="random_normal")(inp)
    h = keras.layers.PReLU(shared_axes=[1, 2], alpha_initializer="random_uniform")(h)
    h = keras.layers.MaxPooling2D()(h)
    out = keras.layers.Dense(4)(keras.layers.Flatten()(h))
    model = keras.Model(inp, out)
    folder = tmp_path_factory.mktemp("keras-sources")
    model.save(folder / "m.keras")
    model.save(folder / "m.h5")
    model.export(str(folder / "saved"), verbose=False)
    tfc.keras_to_tflite(model, folder / "m.tflite")
    x = RNG.standard_normal((1, 12, 12, 3)).astype(np.float32)
    return model, x, folder


@pytest.mark.parametrize("source", ["m.keras", "m.h5", "saved", "m.tflite"])
@pytest.mark.parametrize("nchw", [False, True])
def test_convert_cli(keras_sources, capsys, source, nchw):
    model, x, folder = keras_sources
    out = folder / f"{source}-{nchw}.onnx"
    code, text, err = convert_cli(capsys, folder / source, "-o", out, *(["--nchw"] if nchw else []))
    assert code == 0, err
    assert f"Wrote {out}" in text and "opset 17" in text
    loaded = onnx.load(out)
    layout = "NCHW" if nchw else "NHWC"
    assert common.layouts(loaded) == {"x": layout}
    feed = x.transpose(0, 3, 1, 2) if nchw else x
    assert [d.dim_value for d in loaded.graph.input[0].type.tensor_type.shape.dim] == list(
        feed.shape
    )
    want = np.asarray(model(x, training=False))
    np.testing.assert_allclose(run_onnx(out, feed), want, rtol=1e-5, atol=1e-5)
    if source != "m.tflite":  # tf2onnx's Keras PReLU arrives decomposed: canonicalization fuses it
        assert "fuse_prelu=1" in text
    assert "PRelu" in {n.op_type for n in loaded.graph.node}
    assert not [f for f in os.listdir(folder) if f.startswith(".onnxscope-")]


def test_convert_never_overwrites_the_source(keras_sources, capsys):
    _, _, folder = keras_sources
    source = folder / "m.keras"
    before = source.read_bytes()
    code, _, err = convert_cli(capsys, source, "-o", source)
    assert_one_paragraph_error(code, err, "overwrite")
    code, _, err = convert_cli(capsys, folder / "saved", "-o", folder / "saved" / "in.onnx")
    assert_one_paragraph_error(code, err, "source")
    assert source.read_bytes() == before
    assert not (folder / "saved" / "in.onnx").exists()


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("missing.h5", ["does not exist"]),
        ("model.onnx", ["already ONNX"]),
        ("weights.bin", ["--from"]),
        ("broken.keras", ["Keras could not load"]),
        ("broken.tflite", ["not a readable TFLite"]),
    ],
)
def test_convert_failures_are_one_paragraph(keras_sources, capsys, tmp_path, name, words):
    if name != "missing.h5":
        (tmp_path / name).write_bytes(b"not a model")
    code, _, err = convert_cli(capsys, tmp_path / name, "-o", tmp_path / "out.onnx")
    assert_one_paragraph_error(code, err, *words)
    assert not (tmp_path / "out.onnx").exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".onnxscope-")]


def test_untranslated_tf_op_is_named_with_the_remedy(keras_sources, tmp_path):
    """tf2onnx has no Lgamma: the error names the op and how to supply a replacement, and a
    handler given the way the message says makes the conversion go through."""
    import keras
    import tensorflow as tf
    from onnxscope.converters import tensorflow as tfc

    class Lgamma(keras.layers.Layer):
        def call(self, h):
            return tf.math.lgamma(h)

    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(3)(Lgamma()(inp)))
    with pytest.raises(common.ConversionError, match=r"'Lgamma'.*custom_op_handlers") as info:
        tfc.from_keras(model, tmp_path / "m.onnx")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "m.onnx").exists()

    def as_softplus(ctx, node, name, args):  # a stand-in translation, to exercise the mapping
        node.type = "Softplus"

    done = tfc.from_keras(
        model, tmp_path / "m.onnx", custom_op_handlers={"Lgamma": (as_softplus, [])}
    )
    ops = {n.op_type for n in onnx.load(done.path).graph.node}
    assert "Softplus" in ops and "Lgamma" not in ops


def test_open_input_sizes_need_a_shape(keras_sources, tmp_path, capsys):
    import keras

    inp = keras.Input((None, None, 3))
    model = keras.Model(inp, keras.layers.Conv2D(2, 3, padding="same")(inp))
    model.save(tmp_path / "fcn.keras")
    code, _, err = convert_cli(capsys, tmp_path / "fcn.keras", "-o", tmp_path / "a.onnx")
    assert_one_paragraph_error(code, err, "--input-shape")
    code, text, err = convert_cli(
        capsys, tmp_path / "fcn.keras", "-o", tmp_path / "a.onnx", "--input-shape", "1x10x14x3",
        "--nchw",
    )  # fmt: skip
    assert code == 0, err
    assert "x [1, 3, 10, 14] NCHW" in text
    x = RNG.standard_normal((1, 10, 14, 3)).astype(np.float32)
    want = np.asarray(model(x)).transpose(0, 3, 1, 2)
    got = run_onnx(tmp_path / "a.onnx", x.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert common.layouts(onnx.load(tmp_path / "a.onnx")) == {"x": "NCHW", "y": "NCHW"}


def test_subclassed_model_with_two_outputs(keras_sources, tmp_path):
    """A subclassed model declares no inputs: it needs input_shape; its two outputs (an image and
    a vector) come out as y0 (NCHW with --nchw) and y1."""
    import keras
    from onnxscope.converters import tensorflow as tfc

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv, self.dense = keras.layers.Conv2D(4, 3, padding="same"), keras.layers.Dense(3)

        def call(self, x):
            h = keras.ops.relu(self.conv(x))
            return h, self.dense(keras.ops.mean(h, axis=(1, 2)))

    net = Net()
    with pytest.raises(common.ConversionError, match="input_shape"):
        tfc.from_keras(net, tmp_path / "a.onnx")
    done = tfc.from_keras(net, tmp_path / "a.onnx", input_shape=(1, 8, 8, 3), nchw=True)
    assert done.layouts == {"x": "NCHW", "y0": "NCHW"}
    x = RNG.standard_normal((1, 8, 8, 3)).astype(np.float32)
    sess = ort.InferenceSession(done.path, providers=["CPUExecutionProvider"])
    image, vector = sess.run(["y0", "y1"], {"x": x.transpose(0, 3, 1, 2)})
    want_image, want_vector = (np.asarray(t) for t in net(x))
    np.testing.assert_allclose(image, want_image.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vector, want_vector, rtol=1e-5, atol=1e-6)


def test_opset_is_passed_through(keras_sources, capsys):
    _, _, folder = keras_sources
    code, text, _ = convert_cli(
        capsys, folder / "m.keras", "-o", folder / "o15.onnx", "--opset", 15
    )
    assert code == 0 and "opset 15" in text
    assert common.onnx_opset(onnx.load(folder / "o15.onnx")) == 15


# -- what tf2onnx does not take as Keras 3 and TFLite write it (issue 16) ------------------------
def test_grouped_conv_normalization_and_double_bias_convert_exactly(keras_sources, tmp_path):
    """Three Keras 3 patterns tf2onnx fails on, in one model:
    a grouped Conv2D (Keras runs it in a jit-compiled nested tf.function, which reached tf2onnx
    as an untranslated StatefulPartitionedCall: keras.applications' ConvNeXt), a Normalization
    layer with given mean and variance (captured constants, which became dangling ONNX inputs:
    EfficientNet, ConvNeXt), and BiasAdd(BiasAdd(Conv2D)) (tf2onnx wrote a Conv with four
    inputs: ResNetV2 at small inputs). The result has one input and two three-input Convs,
    equals Keras' output and verifies at 1e-5."""
    import keras
    import tensorflow as tf

    import onnxscope

    class ExtraBias(keras.layers.Layer):
        def build(self, shape):
            self.b = self.add_weight(shape=(shape[-1],), initializer="random_normal", name="b")

        def call(self, h):
            return tf.nn.bias_add(h, self.b)

    keras.utils.set_random_seed(3)
    inp = keras.Input((10, 10, 8), batch_size=1)
    h = keras.layers.Normalization(mean=[0.3] * 8, variance=[2.0] * 8)(inp)
    h = keras.layers.Conv2D(8, 3, padding="same", groups=8, bias_initializer="random_normal")(h)
    h = keras.layers.Conv2D(6, 1, bias_initializer="random_normal")(keras.layers.ReLU()(h))
    model = keras.Model(inp, ExtraBias()(h))
    from onnxscope.converters import tensorflow as tfc

    done = tfc.from_keras(model, tmp_path / "m.onnx", nchw=True)
    loaded = onnx.load(done.path)
    assert [i.name for i in loaded.graph.input] == ["x"]
    convs = [n for n in loaded.graph.node if n.op_type == "Conv"]
    assert len(convs) == 2 and all(len(n.input) == 3 for n in convs)
    assert "StatefulPartitionedCall" not in {n.op_type for n in loaded.graph.node}
    x = RNG.standard_normal((1, 10, 10, 8)).astype(np.float32)
    want = np.asarray(model(x, training=False)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(run_onnx(done.path, x.transpose(0, 3, 1, 2)), want, atol=1e-5)
    errors = onnxscope.LinearScope(done.path).interpret(x.transpose(0, 3, 1, 2)).verify()
    assert max(errors.values()) <= 1e-5, errors


def test_grouped_conv_through_the_cli(keras_sources, tmp_path, capsys):
    """`onnxscope convert` on a .keras file with ConvNeXt's two troubles (a depthwise Conv2D with
    groups = channels, a Normalization layer with fixed statistics): exit 0, Keras' outputs."""
    import keras

    keras.utils.set_random_seed(5)
    inp = keras.Input((9, 9, 6))
    h = keras.layers.Normalization(mean=[0.1] * 6, variance=[3.0] * 6)(inp)
    h = keras.layers.Conv2D(6, 7, padding="same", groups=6, bias_initializer="random_normal")(h)
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h)))
    model.save(tmp_path / "dw.keras")
    code, _, err = convert_cli(capsys, tmp_path / "dw.keras", "-o", tmp_path / "dw.onnx", "--nchw")
    assert code == 0, err
    x = RNG.standard_normal((1, 9, 9, 6)).astype(np.float32)
    got = run_onnx(tmp_path / "dw.onnx", x.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(got, np.asarray(model(x)), rtol=1e-5, atol=1e-5)


def test_a_call_left_after_inlining_is_named(keras_sources, tmp_path, monkeypatch):
    """Should a nested call survive inlining (here: the no-inline marks kept), the refusal names
    the call node and says what to change, instead of an untranslated op with a handler hint."""
    import keras
    from onnxscope.converters import tensorflow as tfc

    monkeypatch.setattr(tfc, "_allow_inlining", lambda graph_def: None)
    inp = keras.Input((6, 6, 4), batch_size=1)
    model = keras.Model(inp, keras.layers.Conv2D(4, 3, groups=2)(inp))
    with pytest.raises(common.ConversionError, match=r"nested TensorFlow function call \(node '"):
        tfc.from_keras(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def sparse_tflite(folder):
    """A conv (1x1 kernel, 3/4 of it zero) and a dense layer (zero in 4x1 blocks), written by
    TFLite's converter with EXPERIMENTAL_SPARSITY: the conv kernel in CSR, the dense kernel in
    block-CSR, each behind a DENSIFY op."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(4)
    inp = keras.Input((6, 6, 24), batch_size=1)
    conv, dense = keras.layers.Conv2D(16, 1), keras.layers.Dense(8)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(conv(inp)))
    model = keras.Model(inp, dense(keras.layers.Dense(32)(h)))
    rng = np.random.default_rng(4)
    kernel = np.asarray(conv.kernel)
    kernel[rng.random(kernel.shape) < 0.75] = 0
    conv.kernel.assign(kernel)
    kernel = np.asarray(dense.kernel)  # [32 in, 8 out]: blocks of 4 inputs
    kernel[np.repeat(rng.random((8, 8)) < 0.7, 4, axis=0)] = 0
    dense.kernel.assign(kernel)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    path = folder / "sparse.tflite"
    path.write_bytes(converter.convert())
    return path


def tflite_run(path, x):
    import tensorflow as tf

    interp = tf.lite.Interpreter(model_path=str(path))
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


def test_sparse_tflite_weights_are_densified(keras_sources, tmp_path, capsys):
    """tf2onnx read the sparse buffers as dense ones ("cannot reshape array of size ..."): they
    are now decoded and stored dense, and the converted model gives TFLite's outputs."""
    from onnxscope.converters import tflite_sparsity

    import onnxscope

    path = sparse_tflite(tmp_path)
    from tensorflow.lite.tools import flatbuffer_utils

    sparse = flatbuffer_utils.read_model(str(path))
    formats = {
        tuple(d.format for d in t.sparsity.dimMetadata)
        for t in sparse.subgraphs[0].tensors
        if t.sparsity is not None
    }
    assert len(formats) == 2 and any(len(f) == 3 for f in formats), formats  # CSR and block-CSR
    _, names = tflite_sparsity.densified(path.read_bytes())
    assert len(names) == 2
    code, _, err = convert_cli(capsys, path, "-o", tmp_path / "s.onnx")
    assert code == 0, err
    x = RNG.standard_normal((1, 6, 6, 24)).astype(np.float32)
    want = tflite_run(path, x)
    np.testing.assert_allclose(run_onnx(tmp_path / "s.onnx", x), want, rtol=1e-5, atol=1e-6)
    errors = onnxscope.LinearScope(str(tmp_path / "s.onnx")).interpret(x).verify()
    assert max(errors.values()) <= 1e-5, errors


def csr(segments, indices):
    from types import SimpleNamespace

    vec = SimpleNamespace
    return vec(format=1, arraySegments=vec(values=segments), arrayIndices=vec(values=indices))


def dense_level(size):
    from types import SimpleNamespace

    return SimpleNamespace(format=0, denseSize=size)


@pytest.mark.parametrize(
    ("want", "order", "block_map", "levels", "values"),
    [
        (  # CSR over rows: [[0, 5, 0], [6, 0, 7]]
            [[0, 5, 0], [6, 0, 7]], [0, 1], None,
            [dense_level(2), csr([0, 1, 3], [1, 0, 2])], [5, 6, 7],
        ),
        (  # the same matrix traversed column first (traversal_order [1, 0])
            [[0, 5, 0], [6, 0, 7]], [1, 0], [],
            [dense_level(3), csr([0, 1, 2, 3], [1, 0, 1])], [6, 5, 7],
        ),
        (  # 2x2 blocks of a 4x4 matrix, blocks (0, 0) and (1, 1) stored, each row-major
            [[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 3, 4]], [0, 1, 2, 3], [0, 1],
            [dense_level(2), csr([0, 1, 2], [0, 1]), dense_level(2), dense_level(2)],
            [1, 0, 0, 2, 0, 0, 3, 4],
        ),
    ],
)  # fmt: skip
def test_sparse_tensor_decoding_follows_the_schema(want, order, block_map, levels, values):
    """Hand-written examples of TFLite's SparsityParameters (schema.fbs), including a traversal
    order and blocks that TFLite's converter did not write in the test above."""
    from types import SimpleNamespace

    from onnxscope.converters.tflite_sparsity import to_dense

    sparsity = SimpleNamespace(traversalOrder=order, blockMap=block_map, dimMetadata=levels)
    want = np.array(want, np.float32)
    got = to_dense(np.array(values, np.float32), want.shape, sparsity, "w")
    np.testing.assert_array_equal(got, want)


def test_inconsistent_sparsity_is_refused(keras_sources):
    from types import SimpleNamespace

    from onnxscope.converters.tflite_sparsity import to_dense

    sparsity = SimpleNamespace(
        traversalOrder=[0, 1], blockMap=None, dimMetadata=[dense_level(2), csr([0, 1, 2], [0, 1])]
    )
    with pytest.raises(common.ConversionError, match="'w': 3 stored values for 2 positions"):
        to_dense(np.zeros(3, np.float32), (2, 2), sparsity, "w")


# -- PyTorch -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def torch_net():
    torch = pytest.importorskip("torch", reason="needs the [torch] extra")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.PReLU(16), torch.nn.AdaptiveAvgPool2d(1)
    )
    return net.eval(), torch.randn(1, 3, 8, 8)


@pytest.mark.parametrize("dynamo", [False, True])
@pytest.mark.parametrize("external", [False, True])
def test_pytorch_export_reports_its_opset_and_external_data(torch_net, tmp_path, dynamo, external):
    if dynamo:
        pytest.importorskip("onnxscript", reason="torch's dynamo exporter needs onnxscript")
    from onnxscope.converters.pytorch import export

    net, x = torch_net
    path = tmp_path / "net.onnx"
    written = export(net, x, path, opset=17, dynamo=dynamo, external_data=external)
    assert written == str(path) and isinstance(written, str)  # the old API: a path
    declared = common.onnx_opset(onnx.load(path, load_external_data=False))
    assert written.opset == declared and declared in (17, 18)
    assert written.external_data == external == (path.parent / "net.onnx.data").exists()
    np.testing.assert_allclose(
        run_onnx(path, x.numpy()), net(x).detach().numpy(), rtol=1e-5, atol=1e-6
    )


def test_torchscript_through_the_cli(torch_net, tmp_path, capsys):
    import torch

    net, x = torch_net
    torch.jit.save(torch.jit.trace(net, x), tmp_path / "net.pt")
    code, _, err = convert_cli(capsys, tmp_path / "net.pt", "-o", tmp_path / "a.onnx")
    assert_one_paragraph_error(code, err, "--input-shape")
    code, text, err = convert_cli(
        capsys, tmp_path / "net.pt", "-o", tmp_path / "a.onnx", "--input-shape", "x=1x3x8x8"
    )
    assert code == 0, err
    assert "Canonicalized" not in text or "fuse" not in text  # torch writes PRelu itself
    np.testing.assert_allclose(
        run_onnx(tmp_path / "a.onnx", x.numpy()), net(x).detach().numpy(), rtol=1e-5, atol=1e-6
    )


def test_pytorch_export_canonical(torch_net, tmp_path):
    """canonical=True fuses a PReLU written out as relu(x) − a·relu(−x) (the torch zoo's
    keras_prelu keeps torch's own export: canonical is off by default)."""
    import torch
    from onnxscope.converters.pytorch import export

    class WrittenOut(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.a = torch.nn.Parameter(torch.rand(4, 1, 1))

        def forward(self, x):
            h = self.conv(x)
            return torch.relu(h) - self.a * torch.relu(-h)

    net, (_, x) = WrittenOut().eval(), torch_net
    plain = export(net, x, tmp_path / "plain.onnx")
    fused = export(net, x, tmp_path / "fused.onnx", canonical=True)
    assert "PRelu" not in {n.op_type for n in onnx.load(plain).graph.node}
    assert "PRelu" in {n.op_type for n in onnx.load(fused).graph.node}
    np.testing.assert_array_equal(run_onnx(fused, x.numpy()), run_onnx(plain, x.numpy()))
