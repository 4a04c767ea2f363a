"""The explorer's screenshots in docs/images/ (headless Debian Chromium, Playwright):

    .venv/bin/python docs/make_explorer_screenshots.py

- explorer_classifier.png: MTCNN's ONet (samples/00_default) at the bundled face, read through
  its logits, the class `face` clicked (its votes over the face) and a crop dragged;
- explorer_image2image.png: the PP-OCRv4 text detector (samples/subjects.py, cached) on a 96×192
  crop of skimage's `page`, an output pixel on a text line clicked (its row and the zoom on its
  support).
Each is served in this process on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
from test_report_browser import CHROMIUM, FLAGS  # noqa: E402

from onnxscope.serve.explore import make_explorers  # noqa: E402
from onnxscope.serve.models import load  # noqa: E402
from onnxscope.serve.server import Server, Service  # noqa: E402

FACE = {"scale": "1", "mean": "127.5", "std": "128"}
PAGE = {"color": "bgr", "mean": "0.5", "std": "0.5"}


def text_detector() -> str:
    command = [sys.executable, os.path.join(ROOT, "samples", "subjects.py"), "onnx"]
    found = subprocess.run([*command, "ppocrv4_det"], capture_output=True, text=True, check=True)
    return found.stdout.strip().splitlines()[-1]


def page_crop() -> np.ndarray:
    from skimage import data

    return np.repeat(data.page()[0:96, 0:192, None], 3, axis=2)  # gray text as BGR


def centre(box: dict, y: float, x: float, size: tuple[int, int]) -> tuple[float, float]:
    return box["x"] + (x + 0.5) * box["width"] / size[1], box["y"] + (y + 0.5) * box[
        "height"
    ] / size[0]


def shoot(browser, url: str, name: str, steps) -> None:
    path = os.path.join(HERE, "images", f"explorer_{name}.png")
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    errors = []
    page.on("response", lambda r: r.status >= 400 and errors.append(r.url + " " + r.text()))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    with page.expect_response(lambda r: r.url.endswith("/verify")):
        page.goto(url)
    for step in steps:
        step(page)
    page.wait_for_timeout(300)
    page.screenshot(path=path, full_page=True)
    assert not errors, (errors, page.locator("#message").inner_text())
    page.close()
    print(path)


def wait_for(page, path: str, action) -> None:
    with page.expect_response(lambda r: f"/{path}" in r.url):
        action()


def main() -> None:
    import playwright.sync_api as sync

    onet = load(os.path.join(ROOT, "samples", "00_default", "onet.onnx"), "onet", logits=True)
    ocr = load(text_detector(), "text", input_shapes={"x": [1, 3, 96, 192]})
    explorers = {
        **make_explorers(onet, conventions=FACE, labels=["not_face", "face"]),
        **make_explorers(ocr, page_crop(), conventions=PAGE, source="skimage's page, 96×192 crop"),
    }
    served = Service([*onet, *ocr])
    with Server(served, port=0, grpc_port=None, explorers=explorers) as server:
        with sync.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)

            def click_face(page):
                wait_for(page, "votes", lambda: page.locator(".bar[data-class='1']").click())

            def drag_crop(page):
                box = page.locator("#input").bounding_box()
                page.mouse.move(*centre(box, 14, 14, (48, 48)))
                page.mouse.down()
                page.mouse.move(*centre(box, 21, 33, (48, 48)), steps=4)
                with page.expect_response(lambda r: "/svd" in r.url):
                    page.mouse.up()

            shoot(browser, f"{server.http_url}/explore/onet", "classifier", [drag_crop, click_face])

            def click_text(page):
                box = page.locator("#output").bounding_box()
                wait_for(page, "row", lambda: page.mouse.click(*centre(box, 24, 60, (96, 192))))

            shoot(browser, f"{server.http_url}/explore/text", "image2image", [click_text])
            browser.close()


if __name__ == "__main__":
    main()
