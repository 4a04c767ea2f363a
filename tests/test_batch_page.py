"""OUT/index.html of `onnxscope batch` (onnxscope/batch/page.py) on a tiny classifier over a
folder of images with a corrupt file and a file name that is HTML, and over a .npy stack; and
onnxscope.report.build_report, the report's files without the folder."""

from __future__ import annotations

import base64
import html
import io
import json
import os
from html.parser import HTMLParser

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the page needs the [report] extra (matplotlib)")
Image = pytest.importorskip("PIL.Image", reason="the page needs the [report] extra (pillow)")
pq = pytest.importorskip("pyarrow.parquet", reason="batch needs pyarrow")

import onnx  # noqa: E402
from helpers import make_model  # noqa: E402

from onnxscope.batch import page, run_batch  # noqa: E402
from onnxscope.report import build_report, write_report  # noqa: E402

RNG = np.random.default_rng(3)
HOSTILE = "<script>alert('x')&.png"  # a file name that is HTML


def _w(*shape, s=0.4):
    return (RNG.standard_normal(shape) * s).astype(np.float32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A Conv-Relu-Flatten-Gemm classifier (N×3×8×8 → 5, free batch), a folder of six 8×8
    images, one of them corrupt and one named HOSTILE, and a .npy stack of three inputs."""
    folder = tmp_path_factory.mktemp("dataset")
    model = make_model(
        [
            "u = Conv <pads=[1,1,1,1]> (x, W1, B1)",
            "h = Relu(u)",
            "f = Flatten(h)",
            "y = Gemm <transB=1> (f, W2, B2)",
        ],
        inputs={"x": ("N", 3, 8, 8)},
        inits={"W1": _w(4, 3, 3, 3), "B1": _w(4), "W2": _w(5, 256), "B2": _w(5, s=2.0)},
    )
    paths = {"model": str(folder / "model.onnx"), "images": str(folder / "images")}
    onnx.save(model, paths["model"])
    os.mkdir(paths["images"])
    for name in ["a.png", "b.png", "c.png", "d.png", HOSTILE]:
        pixels = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(paths["images"], name), format="PNG")
    with open(os.path.join(paths["images"], "broken.png"), "wb") as f:
        f.write(b"not a png")
    paths["stack"] = str(folder / "stack.npy")
    np.save(paths["stack"], RNG.standard_normal((3, 3, 8, 8)).astype(np.float32))
    return paths


@pytest.fixture(scope="module")
def batch(dataset, tmp_path_factory):
    """The folder of one run over the images, with one most and one least bias-reliant input."""
    out = str(tmp_path_factory.mktemp("runs") / "out")
    summary = run_batch(dataset["model"], [dataset["images"]], out, reports=1, progress=False)
    return out, summary


class _Page(HTMLParser):
    """The tags, <img> sources, links and text of a page."""

    def __init__(self):
        super().__init__()
        self.tags, self.images, self.links, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "a":
            self.links.append(attrs["href"])

    def handle_data(self, data):
        self.text.append(data)


def _parse(path: str) -> tuple[_Page, str]:
    with open(path, encoding="utf-8") as f:
        source = f.read()
    parsed = _Page()
    parsed.feed(source)
    parsed.close()
    return parsed, source


def _listed(out: str) -> list[str]:
    with open(os.path.join(out, "batch.json")) as f:
        return json.load(f)["onnxscope_output"]["files"]


def _check_images(parsed: _Page, out: str) -> None:
    """Every <img> is an embedded PNG, the same bytes as a PNG file beside the page."""
    beside = {
        open(os.path.join(out, f), "rb").read() for f in os.listdir(out) if f.endswith(".png")
    }
    assert parsed.images
    for src in parsed.images:
        head, _, data = src.partition(",")
        assert head == "data:image/png;base64"
        png = base64.b64decode(data, validate=True)
        with Image.open(io.BytesIO(png)) as im:
            assert im.format == "PNG"
        assert png in beside


def test_page_of_a_folder(batch, dataset):
    out, summary = batch
    assert summary.page == os.path.join(out, "index.html") and summary.failed == 1
    parsed, source = _parse(summary.page)
    assert not {"script", "link", "iframe"} & set(parsed.tags)  # self-contained, and escaped
    _check_images(parsed, out)
    text = "".join(parsed.text)
    assert "6 inputs: 5 interpreted, 1 failed." in text
    assert "5 of 5 verified exact" in text
    rows = {r["path"]: r for r in pq.read_table(os.path.join(out, "results.parquet")).to_pylist()}
    ok = [r for r in rows.values() if r["error"] is None]
    leaning = sum(r["bias_share"] > 0.5 for r in ok)
    assert "leans on its bias" in text and f"{leaning} of 5 inputs" in text

    # the failed row, its error escaped (it quotes the path), in the headline and the table
    broken = rows[os.path.join(dataset["images"], "broken.png")]
    assert "Could not read" in broken["error"] and "'" in broken["error"]
    assert source.count(html.escape(broken["error"])) == 2
    # the hostile file name only ever as text
    hostile = os.path.join(dataset["images"], HOSTILE)
    assert hostile in rows and hostile in text and "<script>" not in source

    # the shown inputs: the largest bias share first, the smallest last, each with its report
    shown = source.split("<h3>")[1:]
    assert len(shown) == 2
    most = max(ok, key=lambda r: r["bias_share"])
    least = min(ok, key=lambda r: r["bias_share"])
    assert shown[0].startswith(html.escape(most["path"]) + ": bias share ")
    assert "most bias-reliant" in shown[0] and "least bias-reliant" in shown[1]
    assert shown[1].startswith(html.escape(least["path"]) + ": bias share ")
    reports = sorted({link for link in parsed.links if link.startswith("reports/")})
    assert len(reports) == 2
    listed = _listed(out)
    for link in reports:
        assert os.path.isfile(os.path.join(out, link)) and link in listed
        report, _ = _parse(os.path.join(out, link))
        assert report.images and link.replace("index.html", "report.json") in listed
    assert listed[-1] == "index.html"  # the page is written last, its links already there
    assert all(os.path.isfile(os.path.join(out, f)) for f in listed)


def test_saved_votes_are_read_and_the_table_is_capped(dataset, tmp_path, monkeypatch):
    """With --save votes the maps come from votes/ (nothing is interpreted again); past
    TABLE_LIMIT rows the table says so; reports=0 writes no report."""

    class Refuse(page.BatchJob):
        def __call__(self, items):
            raise AssertionError(f"recomputed {items}")

    monkeypatch.setattr(page, "BatchJob", Refuse)
    monkeypatch.setattr(page, "TABLE_LIMIT", 2)
    out = str(tmp_path / "out")
    run_batch(dataset["model"], [dataset["images"]], out, reports=2, save_votes=True)
    parsed, source = _parse(os.path.join(out, "index.html"))
    assert source.count("<h3>") == 4 and "The first 2 of 6 rows" in source
    assert source.count("<tr>") == 3  # the header and two rows
    _check_images(parsed, out)

    summary = run_batch(dataset["model"], [dataset["images"]], out, reports=0, restart=True)
    parsed, source = _parse(summary.page)
    assert "<h3>" not in source and not any(link.startswith("reports/") for link in parsed.links)


def test_page_of_a_stack_with_two_targets(dataset, tmp_path):
    """Rows of a .npy stack get reports too (the row is the input); two targets: a bias share
    histogram, a sentence and a column each."""
    out = str(tmp_path / "out")
    summary = run_batch(dataset["model"], [dataset["stack"]], out, reports=1, targets=("top", "2"))
    parsed, source = _parse(summary.page)
    text = "".join(parsed.text)
    assert "Bias for target top:" in text and "Bias for target 2:" in text
    assert "bias share top" in text and "bias share 2" in text
    reports = {link for link in parsed.links if link.startswith("reports/")}
    assert len(reports) == 2
    rows = pq.read_table(os.path.join(out, "results.parquet")).to_pylist()
    for row in rows:
        link = f"reports/{page.file_name(row['path'])}/index.html"
        if link not in reports:
            continue
        with open(os.path.join(out, link.replace("index.html", "report.json"))) as f:
            records = json.load(f)["outputs"]["y"]["classes"]
        # the report explains the row's classes, first, and splits them as the row does
        classes = list(dict.fromkeys([row["class_top"], row["class_2"]]))
        assert [r["class"] for r in records[: len(classes)]] == classes
        assert records[0]["share"] == pytest.approx(row["bias_share_top"], rel=1e-4, abs=1e-6)
        reports.remove(link)
    assert not reports
    _check_images(parsed, out)


def test_build_report_is_write_report_without_the_folder(dataset, tmp_path):
    image = os.path.join(dataset["images"], "a.png")
    files = build_report(dataset["model"], image, top=1)
    index = write_report(dataset["model"], image, tmp_path / "r", top=1)
    written = set(os.listdir(tmp_path / "r"))
    assert set(files) == written and {"index.html", "report.json"} <= written
    with open(index, "rb") as f:
        assert f.read() == files["index.html"]
