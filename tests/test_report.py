"""The HTML report, its figures and the image conventions (onnxscope/report/: the report,
figures.py, images.py) on a tiny classifier and a tiny image-to-image model."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from html.parser import HTMLParser

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the report needs the [report] extra (matplotlib)")
Image = pytest.importorskip("PIL.Image", reason="the report needs the [report] extra (pillow)")

import onnx  # noqa: E402
from helpers import make_model  # noqa: E402

import onnxscope  # noqa: E402
from onnxscope import cli  # noqa: E402
from onnxscope.errors import InputError  # noqa: E402
from onnxscope.report import Progress, write_report  # noqa: E402
from onnxscope.report.images import load_image  # noqa: E402

RNG = np.random.default_rng(0)
LABELS = ["cat", "dog", "owl", "fox", "elk"]


def _w(*shape, s=0.4):
    return (RNG.standard_normal(shape) * s).astype(np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A classifier (1×3×12×12 → 5 logits) and an image-to-image net with free spatial dims and
    a second input `sigma` (a noise level added to the output), saved as files."""
    folder = tmp_path_factory.mktemp("models")
    classifier = make_model(
        [
            "u = Conv <pads=[1,1,1,1]> (x, W1, B1)",
            "h = Relu(u)",
            "p = MaxPool <kernel_shape=[2,2], strides=[2,2]> (h)",
            "g = GlobalAveragePool(p)",
            "f = Flatten(g)",
            "y = Gemm <transB=1> (f, W2, B2)",
        ],
        inputs={"x": (1, 3, 12, 12)},
        inits={"W1": _w(6, 3, 3, 3), "B1": _w(6), "W2": _w(5, 6), "B2": _w(5)},
    )
    denoiser = make_model(
        [
            "u = Conv <pads=[1,1,1,1]> (x, W1, B1)",
            "h = Relu(u)",
            "v = Conv <pads=[1,1,1,1]> (h, W2, B2)",
            "r = Add(x, v)",
            "y = Add(r, sigma)",
        ],
        inputs={"x": (1, 3, "H", "W"), "sigma": (1,)},
        inits={"W1": _w(8, 3, 3, 3), "B1": _w(8), "W2": _w(3, 8, 3, 3), "B2": _w(3)},
    )
    paths = {}
    for name, model in (("classifier", classifier), ("denoiser", denoiser)):
        paths[name] = str(folder / f"{name}.onnx")
        onnx.save(model, paths[name])
    image = RNG.integers(0, 256, (16, 14, 3), dtype=np.uint8)
    paths["image"] = str(folder / "image.png")
    Image.fromarray(image).save(paths["image"])
    return paths


class _Page(HTMLParser):
    """The <img> sources and the exactness table's data-value cells of a report page."""

    def __init__(self):
        super().__init__()
        self.images, self.values, self.external = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if "data-value" in attrs:
            self.values.append(float(attrs["data-value"]))
        if tag in ("link", "script") or (tag == "img" and not attrs["src"].startswith("data:")):
            self.external.append(tag)


def _read(index: str):
    page = _Page()
    with open(index, encoding="utf-8") as f:
        page.feed(f.read())
    with open(os.path.join(os.path.dirname(index), "report.json")) as f:
        numbers = json.load(f)
    return page, numbers


def _check_images(page: _Page, folder: str, expected: set[str]) -> None:
    """Every <img> is an embedded PNG that pillow reads, identical to the PNG file beside it."""
    assert not page.external
    names = set()
    for src in page.images:
        head, _, data = src.partition(",")
        assert head == "data:image/png;base64"
        png = base64.b64decode(data, validate=True)
        with Image.open(io.BytesIO(png)) as im:
            assert im.format == "PNG" and im.size[0] > 100
            im.load()
        name = next(f for f in os.listdir(folder) if f.endswith(".png") and _same(folder, f, png))
        names.add(name)
    assert names == expected


def _same(folder, name, data) -> bool:
    with open(os.path.join(folder, name), "rb") as f:
        return f.read() == data


def test_classifier_report(models, capsys):
    with open(models["classifier"], "rb") as f:
        before = hashlib.sha256(f.read()).hexdigest()
    out = os.path.join(os.path.dirname(models["image"]), "cls_report")
    index = write_report(models["classifier"], models["image"], out, labels=LABELS, top=2)
    assert index == os.path.join(out, "index.html")
    # off a terminal: no bar, a line per step
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith("report: step ") for line in lines), lines
    assert lines[-1].startswith("report: step 5/5: writing")
    page, numbers = _read(index)
    _check_images(page, out, {"votes_y.png", "logit_split_y.png", "masks.png"})

    x, conv = load_image(models["image"], [1, 3, 12, 12])
    assert conv.original_size == (16, 14) and conv.size == (12, 12)
    it = onnxscope.LinearScope(models["classifier"]).interpret(x)
    errors = it.verify()
    assert page.values == pytest.approx(list(errors.values()), rel=1e-6, abs=1e-12)
    assert numbers["exactness"]["pass"] and max(errors.values()) < 1e-5

    logits = it.output.ravel()
    classes = numbers["outputs"]["y"]["classes"]
    assert [c["class"] for c in classes[:2]] == list(np.argsort(-logits)[:2])
    assert len(classes) == 5  # the chart shows every class of a 5-class output
    for c in classes:  # Σ votes + bias = logit, and the votes are it.votes'
        k = c["class"]
        assert c["label"] == f"{LABELS[k]} (y[{k}])"
        assert c["votes"] + c["bias"] == pytest.approx(logits[k], abs=1e-5)
        assert c["votes"] == pytest.approx(float(it.votes(k).sum()), rel=1e-5, abs=1e-6)
        assert c["bias"] == pytest.approx(float(it.bias.ravel()[k]), abs=1e-7)
    with open(models["classifier"], "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == before


def test_image_to_image_report_cli(models, capsys):
    out = os.path.join(os.path.dirname(models["image"]), "i2i_report")
    argv = [
        "report",
        models["denoiser"],
        models["image"],
        "-o",
        out,
        "--other",
        "sigma=0.25",
        "--row",
        "2,3",
        "--row",
        "8,8",
        "--column",
        "5,5",
        "--crop",
        "4,4,4,4",
        "--svd",
        "3",
    ]
    assert cli.main(argv) == 0
    index = capsys.readouterr().out.strip().splitlines()[-1]
    assert index == os.path.join(out, "index.html")
    page, numbers = _read(index)
    _check_images(
        page,
        out,
        {"io_y.png", "rows_y.png", "columns_y.png", "bias_y.png", "svd_y.png", "masks.png"},
    )
    facts = numbers["conventions"]
    assert facts["size"] == facts["original_size"] == [16, 14]  # free dims keep the image size

    x, _ = load_image(models["image"], [1, 3, "H", "W"])
    sigma = np.full((1,), 0.25, np.float32)
    it = onnxscope.LinearScope(models["denoiser"]).interpret(x, sigma=sigma)
    assert page.values == pytest.approx(list(it.verify().values()), rel=1e-6, abs=1e-12)
    summary = numbers["outputs"]["y"]
    assert summary["rows_at"] == [[2, 3], [8, 8]] and summary["columns_at"] == [[5, 5]]
    ratio = np.linalg.norm(it.bias) / np.linalg.norm(it.output)
    assert summary["bias_ratio"] == pytest.approx(ratio, rel=1e-6)
    # the singular values of A_x on the crop, from the dense crop matrix built column by column
    crop = (slice(None), slice(None), slice(4, 8), slice(4, 8))
    js = np.flatnonzero(np.pad(np.ones((1, 3, 4, 4)), ((0, 0), (0, 0), (4, 8), (4, 6))))
    dense = it.columns(js)[(slice(None), *crop)].reshape(len(js), -1).T
    s = np.linalg.svd(dense.astype(np.float64), compute_uv=False)[:3]
    np.testing.assert_allclose(summary["singular_values"], s, rtol=1e-5)


def test_output_folder_is_replaced_atomically_and_checked(models, tmp_path):
    out = tmp_path / "report"
    write_report(models["classifier"], models["image"], out, top=1)
    (out / "stale.png").write_bytes(b"old")  # a user's file: the folder is not ours alone now
    with pytest.raises(InputError, match="'stale.png'"):
        write_report(models["classifier"], models["image"], out, top=1)
    assert (out / "stale.png").read_bytes() == b"old"
    (out / "stale.png").unlink()
    write_report(models["classifier"], models["image"], out, top=1)
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no temporary folders left
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="holds no earlier report"):
        write_report(models["classifier"], models["image"], foreign)
    with pytest.raises(InputError, match="inside the output folder"):
        write_report(models["classifier"], str(out / "stale.png"), out)
    with pytest.raises(InputError, match="other input"):  # sigma not given
        write_report(models["denoiser"], models["image"], tmp_path / "r2")
    assert (foreign / "notes.txt").read_text() == "mine"


def test_nhwc_image_to_image(tmp_path):
    """A channels-last model: rows, columns and the crop are placed in NHWC."""
    model = make_model(
        [
            "t = Transpose <perm=[0,3,1,2]> (x)",
            "u = Conv <pads=[1,1,1,1]> (t, W, B)",
            "h = Relu(u)",
            "y = Transpose <perm=[0,2,3,1]> (h)",
        ],
        inputs={"x": (1, 10, 9, 3)},
        inits={"W": _w(2, 3, 3, 3), "B": _w(2)},
    )
    picture = RNG.integers(0, 256, (10, 9, 3), dtype=np.uint8)
    index = write_report(model, picture, tmp_path / "r", rows=[(9, 8)], crop=(1, 2, 3, 3))
    page, numbers = _read(index)
    assert numbers["conventions"]["layout"] == "NHWC" and numbers["exactness"]["pass"]
    summary = numbers["outputs"]["y"]
    assert summary["crop"] == [1, 2, 3, 3] and len(summary["singular_values"]) == 4
    with pytest.raises(InputError, match="outside"):
        write_report(model, picture, tmp_path / "r", rows=[(10, 0)])


def test_image_conventions(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 200, 50
    path = str(tmp_path / "im.png")
    Image.fromarray(rgb).save(path)
    x, conv = load_image(path, ["N", 4, 5, 3])  # NHWC inferred from the shape
    assert conv.layout == "NHWC" and x.shape == (1, 4, 5, 3)
    assert x[0, 0, 0, 0] == pytest.approx(200 / 255)
    x, conv = load_image(path, [1, 3, 4, 5], color="bgr", scale="1/100", mean="1,0,0", std=2)
    assert (conv.layout, conv.color, conv.scale) == ("NCHW", "bgr", 0.01)
    assert x[0, :, 0, 0].tolist() == pytest.approx([(0.5 - 1) / 2, 0, 2 / 2])
    x, conv = load_image(path, [1, 1, 2, 2])  # gray, resized to the fixed 2×2
    assert conv.color == "gray" and x.shape == (1, 1, 2, 2) and conv.notes
    assert np.allclose(x, (0.299 * 200 + 0.114 * 50) / 255, atol=1e-6)
    x, _ = load_image(rgb, [1, 3, 4, 5])  # an array in memory reads like the file
    assert np.array_equal(x, load_image(path, [1, 3, 4, 5])[0])
    given = RNG.standard_normal((1, 3, 4, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", given)
    x, conv = load_image(str(tmp_path / "x.npy"), [1, 3, 4, 5])
    assert np.array_equal(x, given) and conv.color == "as given"
    with pytest.raises(InputError, match="3 channel.*takes 4"):
        load_image(path, [1, 4, 4, 5])
    with pytest.raises(InputError, match="does not exist"):
        load_image(str(tmp_path / "missing.png"), [1, 3, 4, 5])
    with pytest.raises(InputError, match="fraction"):
        load_image(path, [1, 3, 4, 5], scale="1/x")


def test_progress_bar_only_when_enabled(capsys):
    for enabled in (False, True):
        bar = Progress(2, enabled)
        bar.step("one")
        bar.step("two")
        bar.done()
    err = capsys.readouterr().err
    assert err.count("\r") == 3 and "two" in err and err.endswith("\n")
