"""Every architecture family of `keras.applications`, converted by onnxscope.converters.tensorflow
(tf2onnx, NCHW input) and interpreted exactly.

Each model is built with `weights=None` (nothing downloads), ten classes given as logits (no
softmax: with random weights it saturates to one-hot, and a constant map verifies trivially), the
smallest input its family allows, and seeded random weights (keras_zoo.randomize: biases and scales
away from Keras' 0/1 defaults; depthwise kernels at their own fan-in), in the EfficientNet families
every BatchNorm's moving variance then calibrated to the mean square of its own input about its
moving mean, on 1024 other random inputs (keras_zoo.calibrate_batchnorm, center=False): random
statistics that do not match what a BN sees let the activations of their deep residual stacks grow
block after block, to ~1e3 in EfficientNetB7, which turned chaotic. The other families keep the
random statistics: calibrated, the positive mean of post-ReLU features makes A_x x and the bias far
larger than F(x), cancelling in float32 (‖A_x x‖/‖F(x)‖ 7-30 and reconstruction 1.5e-5 to 3.4e-5 in
ResNet50, MobileNet, MobileNetV2, NASNetMobile, InceptionV3; centred, DenseNet121 at 53 and
4.3e-5). The input is random (in pixel range where the model rescales pixels itself, as
EfficientNet and MobileNetV3 do; else standard normal). Checked for each: verify()'s
reconstruction, linearity and adjoint errors are ≤ 1e-5, and A_x x is not ~0 (‖A_x x‖/‖F(x)‖ >
1e-4); the converted model under plain ONNX Runtime gives Keras' own prediction to float tolerance
(‖ONNX − Keras‖/‖Keras‖ ≤ 1e-4); the interpretation's output equals ONNX Runtime's. A network that
its weights make chaotic (Keras' own eager and graph runs differing by > 1e-5) fails with that
named, rather than with a meaningless comparison.

The CI run takes the smallest member of each family (`CI_MEMBER`). Two exceptions, for time on a
2-core machine: VGG16 is built without its two 4096-wide dense layers (include_top=False with
average pooling: 14.7M of its 33.6M parameters, ~50 s -> ~9 s), and InceptionResNetV2 (the only
member of its family, 54M parameters, ~75 s) runs only in the slow profile. `ONNXSCOPE_SLOW=1`
runs every member of every family, each with its classifier, and prints one table row per model
(member, parameters, input, convert seconds, verify errors, ‖A_x x‖/‖F(x)‖, ‖ONNX − Keras‖/‖Keras‖).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="keras.applications needs the [tf] extra")
pytest.importorskip("tf2onnx", reason="keras.applications needs the [tf] extra (tf2onnx)")
ort = pytest.importorskip("onnxruntime")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras_zoo as kz  # noqa: E402
import tensorflow as tf  # noqa: E402
from onnxscope.converters import tensorflow as tfc  # noqa: E402

import onnxscope  # noqa: E402

EXACT = 1e-5
SLOW = os.environ.get("ONNXSCOPE_SLOW") == "1"
CLASSES = 10
# inputs whose statistics every BatchNormalization takes (kz.calibrate_batchnorm). At the deepest
# layers (1x1 at these input sizes) a BN sees one value per input: with 16 or 64 of them the
# estimates fit those inputs, and another input (x) meets a gain above 1 at each BN, compounding
# over ~250 of them (EfficientNetV2L, centred: Keras eager vs graph 1.0e-5 with 256, 2.2e-6 with
# 1024)
CALIBRATION = 1024


@dataclasses.dataclass(frozen=True)
class Family:
    members: tuple[str, ...]  # keras.applications constructors, smallest first
    size: int  # the smallest square input the family takes
    ci: bool = True  # its smallest member runs in the CI suite
    ci_headless: bool = False  # in CI: include_top=False, pooling="avg"
    # BatchNorm statistics calibrated (see build): the families whose deep residual stacks grow
    # without bound under random statistics
    calibrated: bool = False


FAMILIES = {
    "ConvNeXt": Family(
        ("ConvNeXtTiny", "ConvNeXtSmall", "ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtXLarge"), 32
    ),
    "DenseNet": Family(("DenseNet121", "DenseNet169", "DenseNet201"), 32),
    "EfficientNet": Family(tuple(f"EfficientNetB{k}" for k in range(8)), 32, calibrated=True),
    "EfficientNetV2": Family(
        tuple(f"EfficientNetV2{k}" for k in ("B0", "B1", "B2", "B3", "S", "M", "L")),
        32,
        calibrated=True,
    ),
    "InceptionResNetV2": Family(("InceptionResNetV2",), 75, ci=False),
    "InceptionV3": Family(("InceptionV3",), 75),
    "MobileNet": Family(("MobileNet",), 32),
    "MobileNetV2": Family(("MobileNetV2",), 32),
    "MobileNetV3": Family(("MobileNetV3Small", "MobileNetV3Large"), 32),
    "NASNet": Family(("NASNetMobile", "NASNetLarge"), 32),
    "ResNet": Family(("ResNet50", "ResNet101", "ResNet152"), 32),
    "ResNetV2": Family(("ResNet50V2", "ResNet101V2", "ResNet152V2"), 32),
    "VGG": Family(("VGG16", "VGG19"), 32, ci_headless=True),
    "Xception": Family(("Xception",), 71),
}
CI_MEMBER = {f.members[0]: (name, f.ci_headless) for name, f in FAMILIES.items() if f.ci}
EVERY_MEMBER = [(name, m) for name, f in FAMILIES.items() for m in f.members]


def build(member: str, family: Family, headless: bool = False):
    """The architecture with seeded random weights, and a seeded random NHWC input."""
    import keras

    keras.utils.set_random_seed(kz.SEED)
    top = (
        {"include_top": False, "pooling": "avg"}
        if headless
        else {"classes": CLASSES, "classifier_activation": None}
    )
    shape = (family.size, family.size, 3)
    model = getattr(keras.applications, member)(weights=None, input_shape=shape, **top)
    pixels = any(isinstance(layer, keras.layers.Rescaling) for layer in model.layers[:4])

    def draw(n: int, rng) -> np.ndarray:
        x = rng.standard_normal((n, *shape)).astype(np.float32)
        if pixels:
            # the model scales pixels itself (EfficientNet: x/255): a unit-sized input would reach
            # it as ~1/255 and leave the output to the biases
            x = rng.uniform(0, 255, x.shape).astype(np.float32)
        return x

    x = draw(1, np.random.default_rng(kz.SEED + 1))
    depthwise_at_their_fan_in(kz.randomize(model))
    if family.calibrated:
        # every BatchNorm's variance that of its own input about its (random) mean, on inputs
        # drawn as x is but other than x
        kz.calibrate_batchnorm(model, draw(CALIBRATION, np.random.default_rng(kz.SEED + 3)), False)
    return model, x


def depthwise_at_their_fan_in(model):
    """keras_zoo.randomize takes every kernel axis but the last as fan-in; a depthwise kernel
    [kh, kw, C, 1] mixes only kh·kw inputs into each output, so at √(2/(kh·kw·C)) the signal of a
    deep stack of them (MobileNet, EfficientNet, Xception) fades until A_x ≈ 0. Those kernels are
    drawn again at √(2/(kh·kw))."""
    import keras

    rng = np.random.default_rng(kz.SEED + 2)
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kernel = layer.kernel
        elif isinstance(layer, keras.layers.SeparableConv2D):
            kernel = layer.depthwise_kernel
        else:
            continue
        kh, kw = kernel.shape[:2]
        kernel.assign(rng.standard_normal(kernel.shape).astype(np.float32) * np.sqrt(2 / (kh * kw)))
    return model


def check(member: str, family: Family, tmp_path, headless: bool = False) -> str:
    """Convert, compare with Keras and verify; returns the table row."""
    model, x = build(member, family, headless)
    path = str(tmp_path / f"{member}.onnx")
    start = time.perf_counter()
    tfc.from_keras(model, path, nchw=True)
    seconds = time.perf_counter() - start
    want = kz.forward(model, x)
    graph = np.asarray(tf.function(lambda t: model(t, training=False))(tf.constant(x)))
    chaos = float(np.linalg.norm(graph - want) / np.linalg.norm(want))
    assert chaos <= 1e-5, (
        f"{member}: with these random weights the network is chaotic (Keras' own eager and graph "
        f"runs differ by {chaos:.1e}), so no comparison with Keras can hold"
    )
    feed = kz.to_nchw(x)
    (plain,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": feed})
    assert plain.shape == want.shape
    # float tolerance, in norm: random deep nets amplify rounding (EfficientNetV2B0 at pixel-range
    # input: logits of ~260 that differ from Keras' in the 5th digit)
    gap = float(np.linalg.norm(plain - want) / np.linalg.norm(want))
    assert gap <= 1e-4, f"‖ONNX − Keras‖/‖Keras‖ = {gap:.1e}"
    scale = float(np.abs(want).max())
    it = onnxscope.LinearScope(path).interpret(feed)
    np.testing.assert_allclose(it.output, plain, rtol=1e-5, atol=1e-6 * scale)
    # the map is not constant (a saturated output would verify trivially, at 0 errors)
    share = float(np.linalg.norm(it.apply(feed[None])[0]) / np.linalg.norm(plain))
    assert share > 1e-4, f"‖A_x x‖/‖F(x)‖ = {share:.1e}"
    errors = it.verify()
    assert set(errors) == {"reconstruction", "linearity", "adjoint"}, errors
    row = (
        f"| {member}{' (no top)' if headless else ''} | {model.count_params() / 1e6:.1f}M "
        f"| {family.size}² | {seconds:.1f} | "
        + " | ".join(f"{errors[k]:.1e}" for k in ("reconstruction", "linearity", "adjoint"))
        + f" | {share:.1e} | {gap:.1e} |"
    )
    print(row)
    assert max(errors.values()) <= EXACT, errors
    return row


@pytest.fixture(autouse=True)
def fresh_keras_session():
    """Each model is large: drop Keras' graph state after each test (memory stays flat)."""
    yield
    import gc

    import keras

    keras.backend.clear_session()
    gc.collect()


@pytest.mark.parametrize("member", list(CI_MEMBER))
def test_smallest_member_of_each_family(member, tmp_path):
    family, headless = CI_MEMBER[member]
    check(member, FAMILIES[family], tmp_path, headless)


@pytest.mark.skipif(not SLOW, reason="every keras.applications member (~1 h): ONNXSCOPE_SLOW=1")
@pytest.mark.parametrize(("family", "member"), EVERY_MEMBER, ids=[m for _, m in EVERY_MEMBER])
def test_every_member(family, member, tmp_path):
    check(member, FAMILIES[family], tmp_path)


def test_every_family_is_listed():
    """The table names every architecture keras.applications has (a new one fails here), and the
    CI run leaves out only the family said above."""
    import keras

    constructors = {n for n in dir(keras.applications) if n[0].isupper()}
    listed = {m for f in FAMILIES.values() for m in f.members}
    assert constructors == listed, constructors ^ listed
    assert {n for n, f in FAMILIES.items() if not f.ci} == {"InceptionResNetV2"}
