"""The report as a person sees it: rendered by a real browser (Debian's Chromium, headless,
driven by Playwright), on a classifier, a multi-head model and an image-to-image model. Every
image must load, nothing may log an error, and no two text boxes of the page may overlap.

The browser is a requirement of the test suite (`.ci/run` installs it): when it is missing the
tests fail, they do not skip. $ONNXSCOPE_CHROMIUM names another executable."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from helpers import make_model

from onnxscope.report import write_report

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = os.path.join(HERE, "..", "samples", "00_default")
CHROMIUM = os.environ.get("ONNXSCOPE_CHROMIUM", "/usr/bin/chromium")
FLAGS = [  # no network: the page is self-contained, and this machine reaches no Google host
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip

# the page's text boxes, which must not overlap one another
BOXES = "h1, h2, p, figcaption, table, dt, dd, img"
MEASURE = """(selector) => {
  const boxes = Array.from(document.querySelectorAll(selector)).map((e) => {
    const r = e.getBoundingClientRect();
    return {tag: e.tagName, text: (e.textContent || e.alt || '').slice(0, 40),
            x0: r.left, y0: r.top + window.scrollY, x1: r.right, y1: r.bottom + window.scrollY};
  });
  const images = Array.from(document.images).map((i) => ({
    alt: i.alt, ok: i.complete && i.naturalWidth > 0, width: i.naturalWidth}));
  return {boxes, images, scroll: document.documentElement.scrollWidth,
          width: window.innerWidth};
}"""


@pytest.fixture(scope="module")
def browser():
    import playwright.sync_api as sync  # the [dev] extra: a missing browser fails, not skips

    assert os.path.exists(CHROMIUM), (
        f"no browser at {CHROMIUM}: install Debian's chromium (apt-get install chromium), as "
        ".ci/run does, or set ONNXSCOPE_CHROMIUM"
    )
    with sync.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def _image_to_image(path):
    rng = np.random.default_rng(0)
    inits = {
        "W": (0.5 * rng.standard_normal((6, 3, 3, 3))).astype(np.float32),
        "V": (0.5 * rng.standard_normal((3, 6, 3, 3))).astype(np.float32),
    }
    nodes = [
        "c = Conv <pads=[1,1,1,1]> (x, W)",
        "r = Relu(c)",
        "y = Conv <pads=[1,1,1,1]> (r, V)",
    ]
    onnx.save(make_model(nodes, {"x": (1, 3, 32, 32)}, inits=inits), path)
    return str(path)


def _reports(tmp_path):
    face = os.path.join(DEFAULT, "face.png")
    yield "classifier", write_report(
        os.path.join(DEFAULT, "tinynet.onnx"), face, tmp_path / "classifier",
        labels=[f"class {k}" for k in range(10)], progress=False,
    )  # fmt: skip
    yield "multi-head", write_report(
        os.path.join(DEFAULT, "onet.onnx"), face, tmp_path / "onet", logits=True,
        labels=["not face", "face"], scale=1, mean=127.5, std=128, progress=False,
    )  # fmt: skip
    yield (
        "image-to-image",
        write_report(
            _image_to_image(tmp_path / "i2i.onnx"), face, tmp_path / "i2i", progress=False
        ),
    )


def _overlaps(boxes):
    """Pairs of boxes that intersect (neither inside the other: a table holds its text)."""
    found = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            inter_x = min(a["x1"], b["x1"]) - max(a["x0"], b["x0"])
            inter_y = min(a["y1"], b["y1"]) - max(a["y0"], b["y0"])
            if inter_x <= 1 or inter_y <= 1:
                continue
            inside = lambda p, q: (  # noqa: E731
                p["x0"] >= q["x0"] - 1 and p["x1"] <= q["x1"] + 1
                and p["y0"] >= q["y0"] - 1 and p["y1"] <= q["y1"] + 1
            )  # fmt: skip
            if not (inside(a, b) or inside(b, a)):
                found.append((a["tag"], a["text"], b["tag"], b["text"]))
    return found


def test_reports_render_in_a_real_browser(browser, tmp_path):
    for kind, index in _reports(tmp_path):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("console", lambda m, errors=errors: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
        page.goto(f"file://{index}")
        page.wait_for_load_state("load")
        seen = page.evaluate(MEASURE, BOXES)
        shot = tmp_path / f"{kind}.png"  # (ONNXSCOPE_SHOTS=DIR keeps them)
        shot = os.path.join(os.environ.get("ONNXSCOPE_SHOTS", tmp_path), f"{kind}.png")
        page.screenshot(path=str(shot), full_page=True)
        page.close()
        assert errors == [], (kind, errors)
        assert seen["images"] and all(i["ok"] for i in seen["images"]), (kind, seen["images"])
        assert _overlaps(seen["boxes"]) == [], (kind, _overlaps(seen["boxes"]))
        assert seen["scroll"] <= seen["width"], f"{kind}: the page scrolls sideways"
        assert os.path.getsize(shot) > 10_000
        text = open(index, encoding="utf-8").read()
        assert "Glossary" in text and "class=finding" in text, kind
        if kind == "image-to-image":
            assert "io_y.png" in text  # the input and the output themselves
