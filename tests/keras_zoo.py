"""The Keras conformance zoo: the architectures of tests/zoo.py that make sense in Keras, written
in Keras 3 (channels-last, as Keras users write them), converted to ONNX by
onnxscope.converters.tensorflow (tf2onnx) with NCHW inputs and image outputs.

Models are tiny (8-32 channels, 16x16 to 32x32 inputs) with seeded random weights; `randomize`
gives every BatchNorm non-trivial statistics, every bias, norm scale and PReLU slope a random
value (Keras initializes them to 0/1, which would hide a dropped bias or a skipped normalizer).
Nothing downloads. `build(name)` returns (keras model, NHWC input x); `convert(name, model, x,
path)` writes the ONNX model (Keras directly, or through a TFLite flatbuffer for the "tflite_*"
entries) and returns the NCHW input.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers as L  # noqa: E402
from onnxscope.converters import tensorflow as tfc  # noqa: E402

SEED = 1234


def conv_bn(h, filters, k=3, stride=1, act="relu", use_bias=False):
    h = L.Conv2D(filters, k, stride, padding="same", use_bias=use_bias)(h)
    h = L.BatchNormalization()(h)
    return L.Activation(act)(h) if act else h


# -- classifiers ----------------------------------------------------------------------------------
def vgg(x):
    h = x
    for filters in (8, "M", 16, "M", 24, 24, "M"):
        h = L.MaxPooling2D()(h) if filters == "M" else conv_bn(h, filters, use_bias=True)
    h = L.Flatten()(h)
    h = L.Dropout(0.5)(L.Dense(32, activation="relu")(h))
    return L.Dense(10)(h)


def resnet(x):
    """Stem, one identity block, one downsampling block with a 1x1 projection, GAP, Dense."""
    h = conv_bn(x, 16)
    for filters, stride in ((16, 1), (32, 2)):
        y = conv_bn(h, filters, stride=stride)
        y = conv_bn(y, filters, act=None)
        skip = h if stride == 1 else conv_bn(h, filters, 1, stride, act=None)
        h = L.ReLU()(L.Add()([y, skip]))
    return L.Dense(10)(L.GlobalAveragePooling2D()(h))


def densenet(x):
    """Pre-activation dense layers (BN-ReLU-1x1-BN-ReLU-3x3, concatenated), a transition with
    average pooling, and a final BN-ReLU-GAP."""
    h = L.Conv2D(16, 3, padding="same")(x)
    for block in range(2):
        for _ in range(2):
            y = L.Conv2D(16, 1, use_bias=False)(L.ReLU()(L.BatchNormalization()(h)))
            y = L.Conv2D(8, 3, padding="same", use_bias=False)(L.ReLU()(L.BatchNormalization()(y)))
            h = L.Concatenate()([h, y])
        if block == 0:
            h = L.Conv2D(16, 1, use_bias=False)(L.ReLU()(L.BatchNormalization()(h)))
            h = L.AveragePooling2D(2)(h)
    h = L.ReLU()(L.BatchNormalization()(h))
    return L.Dense(10)(L.GlobalAveragePooling2D()(h))


def inverted_residual(h, cout, expand, stride, act="relu6", se=False):
    cin = h.shape[-1]
    y = conv_bn(h, cin * expand, 1, act=act) if expand != 1 else h
    y = L.DepthwiseConv2D(3, stride, padding="same", use_bias=False)(y)
    y = L.Activation(act)(L.BatchNormalization()(y))
    if se:  # squeeze-and-excitation: a sigmoid gate per channel
        s = L.GlobalAveragePooling2D(keepdims=True)(y)
        s = L.Conv2D(max(cin // 4, 4), 1, activation="silu")(s)
        y = L.Multiply()([y, L.Conv2D(y.shape[-1], 1, activation="sigmoid")(s)])
    y = conv_bn(y, cout, 1, act=None)
    return L.Add()([h, y]) if stride == 1 and cin == cout else y


def mobilenetv2(x):
    h = conv_bn(x, 16, stride=2, act="relu6")
    h = inverted_residual(h, 16, 1, 1)
    h = inverted_residual(h, 24, 4, 2)
    h = inverted_residual(h, 24, 4, 1)
    return L.Dense(10)(L.GlobalAveragePooling2D()(conv_bn(h, 32, 1, act="relu6")))


def efficientnet(x):
    """MBConv blocks with SiLU and squeeze-and-excitation."""
    h = conv_bn(x, 16, stride=2, act="silu")
    h = inverted_residual(h, 16, 1, 1, act="silu", se=True)
    h = inverted_residual(h, 24, 4, 2, act="silu", se=True)
    h = inverted_residual(h, 24, 4, 1, act="silu", se=True)
    return L.Dense(10)(L.Dropout(0.2)(L.GlobalAveragePooling2D()(h)))


def channel_shuffle(h, groups=2):
    """[N, H, W, g·c] -> [N, H, W, g, c] -> swap g and c -> [N, H, W, c·g]."""
    n, hh, ww, c = h.shape
    h = L.Reshape((hh, ww, groups, c // groups))(h)
    h = L.Permute((1, 2, 4, 3))(h)
    return L.Reshape((hh, ww, c))(h)


def shufflenet(x):
    """ShuffleNetV2 units: split the channels, transform one half, concatenate, shuffle."""
    h = conv_bn(x, 16, stride=2)
    for _ in range(2):
        left, right = keras.ops.split(h, 2, axis=-1)
        right = conv_bn(right, 8, 1)
        right = L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same")(right))
        right = conv_bn(right, 8, 1)
        h = channel_shuffle(L.Concatenate()([left, right]))
    return L.Dense(10)(L.GlobalAveragePooling2D()(h))


def inception(x):
    """Parallel 1x1, 1x1-3x3, 1x1-3x3-3x3, max-pool-1x1 and average-pool branches."""
    h = conv_bn(x, 16)
    b1 = conv_bn(h, 8, 1)
    b2 = conv_bn(conv_bn(h, 8, 1), 8)
    b3 = conv_bn(conv_bn(conv_bn(h, 4, 1), 8), 8)
    b4 = conv_bn(L.MaxPooling2D(3, 1, padding="same")(h), 8, 1)
    b5 = L.AveragePooling2D(3, 1, padding="same")(h)
    h = L.MaxPooling2D()(L.Concatenate()([b1, b2, b3, b4, b5]))
    return L.Dense(10)(L.GlobalAveragePooling2D()(h))


def convnext(x):
    """Patchify stem, ConvNeXt blocks (7x7 depthwise, LayerNorm, 4x MLP with GELU, layer scale)."""
    h = L.LayerNormalization(epsilon=1e-6)(L.Conv2D(16, 4, 4)(x))
    for _ in range(2):
        y = L.DepthwiseConv2D(7, padding="same")(h)
        y = L.LayerNormalization(epsilon=1e-6)(y)
        y = L.Dense(16, use_bias=True)(L.Activation("gelu")(L.Dense(64)(y)))
        h = L.Add()([h, LayerScale()(y)])
    h = L.LayerNormalization(epsilon=1e-6)(L.GlobalAveragePooling2D()(h))
    return L.Dense(10)(h)


class LayerScale(L.Layer):
    """y · γ, one learned scale per channel (ConvNeXt, CaiT)."""

    def build(self, shape):
        self.gamma = self.add_weight(shape=(shape[-1],), initializer="ones", name="gamma")

    def call(self, y):
        return y * self.gamma


class PositionEmbedding(L.Layer):
    """Adds a learned [tokens, dim] embedding."""

    def build(self, shape):
        self.pos = self.add_weight(shape=tuple(shape[1:]), initializer="zeros", name="pos")

    def call(self, h):
        return h + self.pos


def vit(x):
    """4x4 patches, learned positions, two pre-norm blocks of MultiHeadAttention + GELU MLP."""
    h = L.Conv2D(32, 4, 4)(x)
    h = PositionEmbedding()(L.Reshape((-1, 32))(h))
    for _ in range(2):
        y = L.LayerNormalization()(h)
        h = L.Add()([h, L.MultiHeadAttention(num_heads=4, key_dim=8)(y, y)])
        y = L.Dense(64, activation="gelu")(L.LayerNormalization()(h))
        h = L.Add()([h, L.Dense(32)(y)])
    h = L.GlobalAveragePooling1D()(L.LayerNormalization()(h))
    return L.Dense(10)(h)


def softmax_classifier(x):
    """Conv-BN-ELU / LeakyReLU, hard sigmoid and tanh units, then a Softmax over the classes."""
    h = conv_bn(x, 8, act="elu")
    h = L.MaxPooling2D()(L.LeakyReLU(0.1)(L.Conv2D(16, 3, padding="same")(h)))
    h = L.Activation("hard_sigmoid")(L.Conv2D(16, 3, padding="same")(h))
    h = L.Activation("tanh")(L.Dense(16)(L.GlobalAveragePooling2D()(h)))
    return L.Softmax()(L.Dense(10)(h))


def keras_prelu(x):
    """Keras PReLU (per channel, shared over space) after convs and after a Dense layer."""
    h = L.PReLU(shared_axes=[1, 2])(L.Conv2D(8, 3, padding="same")(x))
    h = L.MaxPooling2D()(h)
    h = L.PReLU(shared_axes=[1, 2])(L.Conv2D(16, 3, padding="same")(h))
    h = L.PReLU()(L.Dense(16)(L.Flatten()(h)))
    return L.Dense(4)(h)


# -- image to image -------------------------------------------------------------------------------
def unet(x):
    """Two downsamplings (MaxPool), a bottleneck, transposed-conv and bilinear upsampling with skip
    concatenations, 1x1 output conv."""

    def block(h, c):
        return conv_bn(conv_bn(h, c), c)

    e1 = block(x, 8)
    e2 = block(L.MaxPooling2D()(e1), 16)
    b = block(L.MaxPooling2D()(e2), 24)
    d2 = block(L.Concatenate()([L.Conv2DTranspose(16, 2, 2)(b), e2]), 16)
    d1 = block(L.Concatenate()([L.UpSampling2D(interpolation="bilinear")(d2), e1]), 8)
    return L.Conv2D(2, 1)(d1)


class DepthToSpace(L.Layer):
    """tf.nn.depth_to_space (pixel shuffle in TensorFlow's DCR order)."""

    def __init__(self, r, **kw):
        super().__init__(**kw)
        self.r = r

    def call(self, h):
        return tf.nn.depth_to_space(h, self.r)


def espcn(x, r=2):
    """Shi et al. 2016: conv5x5-tanh, conv3x3-tanh, conv3x3 to 3·r² channels, depth-to-space."""
    h = L.Conv2D(16, 5, padding="same", activation="tanh")(x)
    h = L.Conv2D(8, 3, padding="same", activation="tanh")(h)
    return DepthToSpace(r)(L.Conv2D(3 * r * r, 3, padding="same")(h))


def dncnn(x, depth=4):
    """Zhang et al. 2017: conv-ReLU, (conv-BN-ReLU) x depth, conv; output x − noise."""
    h = L.Conv2D(16, 3, padding="same", activation="relu")(x)
    for _ in range(depth):
        h = conv_bn(h, 16)
    return L.Subtract()([x, L.Conv2D(3, 3, padding="same")(h)])


@dataclasses.dataclass(frozen=True)
class Arch:
    fn: object
    shape: tuple[int, ...]  # NHWC, batch 1
    piecewise: bool  # only ReLU-type units, max pools and affine layers: A_x is the Jacobian
    ops: tuple[str, ...]  # ONNX ops the converted model must hold ("A|B": either)
    tflite: bool = False  # converted through a TFLite flatbuffer


ARCHITECTURES: dict[str, Arch] = {
    "vgg": Arch(vgg, (1, 32, 32, 3), True, ("Conv", "Relu", "MaxPool")),
    "resnet": Arch(resnet, (1, 16, 16, 3), True, ("Conv", "Relu", "Add", "GlobalAveragePool")),
    "densenet": Arch(
        densenet, (1, 16, 16, 3), True, ("Concat", "AveragePool", "BatchNormalization|Mul")
    ),
    "mobilenetv2": Arch(mobilenetv2, (1, 32, 32, 3), True, ("Clip", "Conv", "Add")),
    "efficientnet": Arch(efficientnet, (1, 32, 32, 3), False, ("Sigmoid", "Mul")),
    "shufflenet": Arch(shufflenet, (1, 16, 16, 3), True, ("Split|Slice", "Transpose")),
    "inception": Arch(inception, (1, 16, 16, 3), True, ("MaxPool", "AveragePool", "Concat")),
    "convnext": Arch(
        convnext, (1, 32, 32, 3), False, ("LayerNormalization|ReduceMean", "Erf|Gelu")
    ),
    "vit": Arch(vit, (1, 16, 16, 3), False, ("Softmax", "MatMul", "Erf|Gelu")),
    "softmax_classifier": Arch(
        softmax_classifier,
        (1, 16, 16, 3),
        False,
        ("Elu", "LeakyRelu", "HardSigmoid|Clip", "Tanh", "Softmax"),
    ),
    "keras_prelu": Arch(keras_prelu, (1, 16, 16, 3), True, ("PRelu",)),
    "unet": Arch(unet, (1, 16, 16, 3), False, ("ConvTranspose", "Resize", "Concat")),
    "espcn": Arch(espcn, (1, 16, 16, 3), False, ("Tanh", "DepthToSpace")),
    "dncnn": Arch(dncnn, (1, 16, 16, 3), True, ("Conv", "Relu", "Sub")),
    "tflite_mobilenetv2": Arch(mobilenetv2, (1, 32, 32, 3), True, ("Clip|Relu6|Relu",), True),
    "tflite_prelu": Arch(keras_prelu, (1, 16, 16, 3), True, ("PRelu",), True),
    "tflite_unet": Arch(unet, (1, 16, 16, 3), False, ("ConvTranspose", "Resize"), True),
}


def randomize(model: keras.Model, seed: int = SEED) -> keras.Model:
    """Seeded random values for every weight, with BatchNorm variances and norm scales positive
    (Keras starts biases, betas and moving means at 0, gammas and variances at 1)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape, name = tuple(v.shape), v.name
        if name in ("moving_variance", "gamma") or "scale" in name:
            value = rng.uniform(0.5, 1.5, shape)
        elif name == "alpha":  # PReLU slopes
            value = rng.uniform(0.05, 0.4, shape)
        elif name in ("moving_mean", "beta", "bias", "pos"):
            value = 0.2 * rng.standard_normal(shape)
        else:  # kernels: variance-preserving, fan-in over all but the last axis
            fan_in = max(int(np.prod(shape[:-1])), 1) if len(shape) > 1 else 1
            value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        v.assign(value.astype(np.float32))
    return model


def calibrate_batchnorm(model: keras.Model, batch: np.ndarray, center: bool = True) -> keras.Model:
    """Every BatchNormalization's moving statistics set to those of what it sees on `batch`
    (inputs as the model takes them; many of them, since at a 1x1 layer a BN sees one value per
    input): random statistics do not match a BN's actual input, so nothing normalizes and the
    scale of a deep residual stack grows block after block (keras.applications' EfficientNetB7
    reaches activations of ~1e3 and turns chaotic). `center`: the mean and variance of the
    input, as training leaves them; else the BN keeps its moving mean and takes as variance the
    mean square of its input about it (unit-sized outputs without subtracting the input's mean).

    Layer by layer in order, in one pass: with momentum 0 a training-mode forward pass
    normalizes each BN by its input's batch moments, which depend on the BNs before it already
    normalized, and stores them as the moving ones. Dropout is off for that pass; the calibrated
    model in inference mode must then give that pass's output on `batch` (no other layer behaved
    differently while training), else this raises."""
    layers = list(model._flatten_layers(include_self=False))
    norms = [lay for lay in layers if isinstance(lay, L.BatchNormalization)]
    if not norms:
        return model
    dropouts = [lay for lay in layers if isinstance(getattr(lay, "rate", None), float)]
    saved = [(lay, lay.momentum, lay.trainable) for lay in norms]
    rates = [(lay, lay.rate) for lay in dropouts]
    try:
        for lay in norms:
            lay.momentum, lay.trainable = 0.0, True
            if not center:
                lay._moments = _moments_about_moving_mean(lay)
        for lay in dropouts:
            lay.rate = 0.0
        trained = np.asarray(model(batch, training=True))
    finally:
        for lay, momentum, trainable in saved:
            lay.momentum, lay.trainable = momentum, trainable
            lay.__dict__.pop("_moments", None)
        for lay, rate in rates:
            lay.rate = rate
    inferred = forward(model, batch)
    gap = float(np.linalg.norm(inferred - trained) / max(np.linalg.norm(trained), 1e-30))
    if not gap <= 1e-4:
        raise ValueError(
            f"{model.name}: after calibration the inference-mode output differs from the "
            f"calibrating pass by {gap:.1e} (a layer other than BatchNormalization or Dropout "
            "depends on training)"
        )
    return model


def _moments_about_moving_mean(norm: L.BatchNormalization):
    """A BN's batch moments for calibrate_batchnorm(center=False): its own moving mean, and the
    mean square of its input about that mean (the variance that leaves it unit-sized)."""

    def moments(inputs, mask):
        mean = keras.ops.cast(norm.moving_mean, inputs.dtype)
        square = keras.ops.square(inputs - mean)
        return mean, keras.ops.mean(square, axis=norm._reduction_axes)

    return moments


def build(name: str) -> tuple[keras.Model, np.ndarray]:
    arch = ARCHITECTURES[name]
    keras.utils.set_random_seed(SEED)
    inp = keras.Input(arch.shape[1:], batch_size=1, name="image")
    model = randomize(keras.Model(inp, arch.fn(inp), name=name))
    x = np.random.default_rng(SEED + 1).standard_normal(arch.shape).astype(np.float32)
    return model, x


def forward(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Keras' own output at NHWC x (inference mode)."""
    return np.asarray(model(x, training=False))


def to_nchw(a: np.ndarray) -> np.ndarray:
    return a.transpose(0, 3, 1, 2) if a.ndim == 4 else a


def convert(name: str, model: keras.Model, path) -> tfc.Converted:
    """Keras -> ONNX (NCHW), directly or through a float TFLite flatbuffer."""
    if not ARCHITECTURES[name].tflite:
        return tfc.from_keras(model, path, nchw=True)
    tflite = tfc.keras_to_tflite(model, os.fspath(path) + ".tflite")
    return tfc.from_tflite(tflite, path, nchw=True)
