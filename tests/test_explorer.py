"""The explorer (`onnxscope serve --explore`, /explore/NAME) in a real browser: Debian's
Chromium, headless, driven by Playwright, as test_report_browser.py launches it (a missing
browser fails, it does not skip). The page is loaded, a class, an output pixel and an input
pixel are clicked, a crop is dragged, an image is chosen and one is dropped; every answer the
page received (intercepted) must equal the Python API's (LinearScope.interpret at the same
input: votes, rows, columns, svd, bias) to 1e-5, and the console must log no error. Then the
endpoints' validation over plain HTTP: every bad request is a 4xx and the server keeps
serving."""

from __future__ import annotations

import http.client
import io
import json

import numpy as np
import pytest
import test_report_browser
from helpers import make_model

import onnxscope
from onnxscope.report.images import load_image
from onnxscope.serve.explore import MAX_UPLOAD_BYTES, decode, make_explorers
from onnxscope.serve.models import load
from onnxscope.serve.server import Server, Service

TOL = 1e-5
browser = test_report_browser.browser  # the fixture: Debian's Chromium under Playwright
LABELS = ["cat", "dog", "owl", "fox"]


def _weights(rng, *shape, scale=0.5):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def image_to_image():
    rng = np.random.default_rng(0)
    inits = {"W": _weights(rng, 6, 3, 3, 3), "B": _weights(rng, 6),
             "V": _weights(rng, 3, 6, 3, 3), "C": _weights(rng, 3)}  # fmt: skip
    nodes = ["u = Conv <pads=[1,1,1,1]> (x, W, B)", "r = Relu(u)",
             "y = Conv <pads=[1,1,1,1]> (r, V, C)"]  # fmt: skip
    return make_model(nodes, inputs={"x": (1, 3, 16, 16)}, inits=inits)


def classifier():
    rng = np.random.default_rng(1)
    inits = {"W": _weights(rng, 6, 3, 3, 3), "B": _weights(rng, 6),
             "M": _weights(rng, 6, 4, scale=1.0), "D": _weights(rng, 4)}  # fmt: skip
    nodes = ["u = Conv <pads=[1,1,1,1]> (x, W, B)", "r = Relu(u)",
             "p = GlobalAveragePool(r)", "f = Flatten(p)", "y = Gemm(f, M, D)"]  # fmt: skip
    return make_model(nodes, inputs={"x": (1, 3, 16, 16)}, inits=inits)


MODELS = {"seg": image_to_image, "cls": classifier}


@pytest.fixture(scope="module")
def served():
    """A server of both models with their explorers, and the ONNX models themselves."""
    protos = {name: make() for name, make in MODELS.items()}
    models = [m for name, proto in protos.items() for m in load(proto, name)]
    explorers = make_explorers(models, labels=LABELS)
    with Server(Service(models), port=0, grpc_port=None, explorers=explorers) as server:
        yield server, explorers, protos


def close(got, want, what: str) -> None:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = max(float(np.abs(want).max()), 1e-12)
    gap = float(np.abs(got - want).max()) / scale
    assert gap <= TOL, f"{what}: relative gap {gap:.3g} > {TOL}"


def interpretation(protos, explorer):
    """The Python API's reading of the explorer's current input."""
    return onnxscope.LinearScope(protos[explorer.name]).interpret(explorer.x)


def png_bytes(seed: int, size=(20, 24)) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class Page:
    """A page of the explorer with its console errors collected."""

    def __init__(self, browser, url: str):
        self.page = browser.new_page(viewport={"width": 1280, "height": 1000})
        self.page.set_default_timeout(15_000)
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        with self.page.expect_response(lambda r: r.url.endswith("/verify")):
            self.page.goto(url)

    def answer(self, path: str, action) -> dict:
        """Do `action` and return the JSON answer to the request for `path` it makes, taken on
        its way to the page (the request is routed through Playwright, which fetches it)."""
        caught = []

        def relay(route):
            response = route.fetch()
            caught.append({"status": response.status, **json.loads(response.body())})
            route.fulfill(response=response)

        pattern = f"**/{path}*"
        self.page.route(pattern, relay)
        try:
            with self.page.expect_response(lambda r: f"/{path}" in r.url):
                action()
        finally:
            self.page.unroute(pattern, relay)
        assert len(caught) == 1, caught
        return caught[0]

    def pixel(self, canvas: str, y: int, x: int, size: tuple[int, int]) -> tuple[float, float]:
        box = self.page.locator(canvas).bounding_box()
        return box["x"] + (x + 0.5) * box["width"] / size[1], box["y"] + (y + 0.5) * box[
            "height"
        ] / size[0]

    def click(self, canvas: str, y: int, x: int, size=(16, 16)) -> None:
        self.page.mouse.click(*self.pixel(canvas, y, x, size))

    def drag(self, canvas: str, start, end, size) -> None:
        mouse = self.page.mouse
        mouse.move(*self.pixel(canvas, *start, size))
        mouse.down()
        mouse.move(*self.pixel(canvas, *end, size), steps=4)
        mouse.up()


def test_classifier_page(served, browser, tmp_path):
    server, explorers, protos = served
    explorer = explorers["cls"]
    page = Page(browser, f"{server.http_url}/explore/cls")
    it = interpretation(protos, explorer)
    assert page.page.locator(".bar").count() == 4
    assert "exact" in page.page.locator("#badge").inner_text()

    got = page.answer("votes", lambda: page.page.locator(".bar[data-class='2']").click())
    close(decode(got["votes"]), it.votes(2), "votes of class 2")
    close(got["bias"], it.bias[0, 2], "bias of class 2")
    assert got["label"] == "owl"
    close(got["bias_share"], it.bias_share(2)["share"], "bias share")
    assert "owl" in page.page.locator("#class-caption").inner_text()
    for sign in ("absolute", "positive", "negative", "all"):  # the display options redraw
        page.page.select_option("#sign", sign)
    page.page.fill("#clip", "90")
    page.page.locator("#clip").dispatch_event("change")
    assert "owl" in page.page.locator("#input-caption").inner_text()

    got = page.answer("column", lambda: page.click("#input", 5, 7))
    close(decode(got["column"]), it.columns([(0, 0, 5, 7)])[0], "column at (0, 5, 7)")

    got = page.answer("svd", lambda: page.drag("#input", (2, 3), (5, 8), (16, 16)))
    assert got["crop"] == [2, 3, 4, 6]
    want = it.svd(3, input_region=(slice(None), slice(None), slice(2, 6), slice(3, 9)))
    close(got["s"], want.s, "singular values of the crop")
    alignment = np.abs(np.sum(decode(got["Vt"]) * want.Vt, axis=(1, 2, 3, 4)))
    close(alignment, np.ones(3), "right singular vectors (up to sign)")

    chosen = tmp_path / "chosen.png"
    chosen.write_bytes(png_bytes(3))
    got = page.answer("input", lambda: page.page.set_input_files("#file", str(chosen)))
    x, _ = load_image(str(chosen), [1, 3, 16, 16])
    np.testing.assert_array_equal(explorer.x, x)
    close(got["classes"]["vote_sum"], interpretation(protos, explorer).apply(x)[0], "Σ votes")
    assert "chosen.png" in got["conventions"]["source"]
    assert page.errors == []


def test_image_to_image_page(served, browser):
    server, explorers, protos = served
    explorer = explorers["seg"]
    page = Page(browser, f"{server.http_url}/explore/seg")
    it = interpretation(protos, explorer)
    assert "exact" in page.page.locator("#badge").inner_text()

    page.page.fill("#pixel-channel", "2")
    got = page.answer("row", lambda: page.click("#output", 4, 9))
    close(decode(got["row"]), it.rows([(0, 2, 4, 9)])[0], "row of output (2, 4, 9)")
    page.page.fill("#pixel-channel", "0")
    assert page.page.locator("#zoom-panel").is_visible()

    got = page.answer("column", lambda: page.click("#input", 11, 2))
    close(decode(got["column"]), it.columns([(0, 0, 11, 2)])[0], "column of input (0, 11, 2)")

    got = page.answer("svd", lambda: page.drag("#input", (6, 6), (9, 10), (16, 16)))
    crop = (slice(None), slice(None), slice(6, 10), slice(6, 11))
    want = it.svd(3, input_region=crop, output_region=crop)
    close(got["s"], want.s, "singular values of the crop")

    got = page.answer("bias", lambda: page.page.reload())
    close(decode(got["bias"]), it.bias, "bias image")

    # an image dropped on the input panel
    data = list(png_bytes(5, (30, 30)))
    drop = """(bytes) => {
      const file = new File([new Uint8Array(bytes)], "dropped.png", {type: "image/png"});
      const transfer = new DataTransfer();
      transfer.items.add(file);
      document.getElementById("input-panel").dispatchEvent(
        new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }"""
    got = page.answer("input", lambda: page.page.evaluate(drop, data))
    assert got["status"] == 200 and "dropped.png" in got["conventions"]["source"]
    close(decode(got["y"]), interpretation(protos, explorer).output, "F(dropped image)")
    page.page.wait_for_function("document.getElementById('badge').textContent.includes('exact')")
    assert page.errors == []


def test_a_non_image_gets_a_message_on_the_page(served, browser, tmp_path):
    server, _, _ = served
    page = Page(browser, f"{server.http_url}/explore/seg")
    bogus = tmp_path / "notes.png"
    bogus.write_text("this is not an image")
    got = page.answer("input", lambda: page.page.set_input_files("#file", str(bogus)))
    assert got["status"] == 400
    message = page.page.locator("#message")
    message.wait_for(state="visible")
    assert "not an image" in message.inner_text()
    # the browser's own line for the 400 is the only error logged
    assert all("400" in e for e in page.errors) and len(page.errors) <= 1


# -- the endpoints' validation, over plain HTTP ---------------------------------------------------


def request(server, method: str, path: str, body: bytes | None = None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        kind = response.getheader("content-type", "")
        return response.status, (json.loads(data) if "json" in kind else data)
    finally:
        connection.close()


@pytest.mark.parametrize(
    "method, path, status, words",
    [
        ("GET", "/explore/nope", 404, "No explorer"),
        ("GET", "/explore/nope/state", 404, "No explorer"),
        ("GET", "/explore/seg/row?c=0&y=16&x=0", 400, "outside the output"),
        ("GET", "/explore/seg/row?c=3&y=0&x=0", 400, "outside the output"),
        ("GET", "/explore/seg/row?c=0&y=-1&x=0", 400, "outside the output"),
        ("GET", "/explore/seg/row?y=1", 400, "'x' is missing"),
        ("GET", "/explore/seg/column?c=0&y=1.5&x=0", 400, "must be an integer"),
        ("GET", "/explore/seg/column?c=0&y=0&x=99999999999", 400, "must be an integer"),
        ("GET", "/explore/cls/row?c=0&y=0&x=0", 400, "image output"),
        ("GET", "/explore/cls/votes?class=4", 400, "from 0 to 3"),
        ("GET", "/explore/cls/votes", 400, "'class' is missing"),
        ("GET", "/explore/seg/svd?y=0&x=0&h=40&w=2", 400, "1 to 32"),
        ("GET", "/explore/seg/svd?y=14&x=0&h=4&w=2", 400, "leaves"),
        ("GET", "/explore/seg/svd?y=0&x=0&h=2&w=2&k=9", 400, "k must be"),
        ("GET", "/explore/seg/masks?layer=nope", 404, "No layer"),
        ("GET", "/explore-files/..%2Fpage.html", 404, ""),
        ("GET", "/explore-files/__init__.py", 404, "No explorer file"),
        ("POST", "/explore/seg/state", 405, ""),
    ],
)
def test_bad_requests_are_refused(served, method, path, status, words):
    server, _, _ = served
    got, body = request(server, method, path)
    assert got == status, body
    if words:
        assert words in body["error"]
    assert request(server, "GET", "/explore/seg/verify")[0] == 200  # still serving


def test_uploads_are_checked(served):
    server, explorers, _ = served
    before = explorers["seg"].x.copy()
    status, body = request(server, "POST", "/explore/seg/input", b"GIF89a nonsense")
    assert status == 400 and "not an image" in body["error"]
    status, body = request(server, "POST", "/explore/seg/input", b"")
    assert status == 400 and "empty" in body["error"]
    status, body = request(server, "POST", "/explore/seg/input", b"0" * (MAX_UPLOAD_BYTES + 1))
    assert status == 413, body
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (5000, 4000)).save(buffer, format="PNG")  # 20 M pixels, a small file
    status, body = request(server, "POST", "/explore/seg/input", buffer.getvalue())
    assert status == 413 and "pixels" in body["error"]
    np.testing.assert_array_equal(explorers["seg"].x, before)  # the input did not change
    status, body = request(server, "POST", "/explore/seg/input", png_bytes(9))
    assert status == 200 and body["kind"] == "image"


def test_an_nhwc_input_is_read_in_its_own_coordinates():
    """A channels-last classifier: columns at (c, y, x) are the API's at (0, y, x, c), and the
    crop of an svd is taken over the input's H and W axes."""
    rng = np.random.default_rng(2)
    inits = {"W": _weights(rng, 4, 3, 3, 3), "M": _weights(rng, 4, 3, scale=1.0)}
    nodes = ["t = Transpose <perm=[0,3,1,2]> (x)", "u = Conv <pads=[1,1,1,1]> (t, W)",
             "r = Relu(u)", "p = GlobalAveragePool(r)", "f = Flatten(p)",
             "y = MatMul(f, M)"]  # fmt: skip
    proto = make_model(nodes, inputs={"x": (1, 12, 10, 3)}, inits=inits)
    models = load(proto, "nhwc")
    explorer = make_explorers(models)["nhwc"]
    assert explorer.layout == "NHWC"
    it = onnxscope.LinearScope(proto).interpret(explorer.x)
    close(decode(explorer.column(2, 7, 4)["column"]), it.columns([(0, 7, 4, 2)])[0], "column")
    close(decode(explorer.class_votes(1)["votes"]), it.votes(1), "votes")
    found = explorer.singular(3, 2, 4, 5, 2)
    want = it.svd(2, input_region=(slice(None), slice(3, 7), slice(2, 7)))
    close(found["s"], want.s, "singular values of an NHWC crop")
    assert decode(found["Vt"]).shape == (2, 1, 4, 5, 3)


def test_the_page_loads_nothing_from_elsewhere(served):
    server, _, _ = served
    status, page = request(server, "GET", "/explore/seg")
    assert status == 200
    text = page.decode()
    assert "http://" not in text and "https://" not in text
    for name in ("explore.js", "explore.css"):
        status, body = request(server, "GET", f"/explore-files/{name}")
        assert status == 200 and b"https://" not in body and b"http://" not in body


# -- the commands ---------------------------------------------------------------------------------


def start(command: list[str], timeout: float = 60.0):
    """A command that prints `explore URL` once listening: the process and the URL."""
    import subprocess
    import sys
    import threading

    process = subprocess.Popen(
        [sys.executable, "-m", "onnxscope", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    found = threading.Event()

    def read():
        for line in process.stdout:
            lines.append(line)
            if "/explore/" in line:
                found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(timeout):
        process.kill()
        raise AssertionError(f"no explorer URL within {timeout} s: {''.join(lines)}")
    url = next(line.split()[-1] for line in lines if "/explore/" in line)
    return process, url


@pytest.mark.parametrize("command", ["explore", "serve"])
def test_the_commands_print_the_url_and_serve_the_page(command, tmp_path):
    import urllib.request

    import onnx

    path = tmp_path / "tiny.onnx"
    onnx.save(image_to_image(), str(path))
    picture = tmp_path / "picture.png"
    picture.write_bytes(png_bytes(4))
    if command == "explore":
        args = ["explore", str(path), str(picture), "--port", "0"]
    else:
        args = ["serve", str(path), "--explore", "--image", str(picture), "--port", "0",
                "--no-grpc"]  # fmt: skip
    process, url = start(args)
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/explore/tiny")
        with urllib.request.urlopen(url, timeout=30) as response:
            assert b"explore.js" in response.read()
        with urllib.request.urlopen(url + "/state", timeout=30) as response:
            state = json.loads(response.read())
        assert "picture.png" in state["conventions"]["source"]
        x, _ = load_image(str(picture), [1, 3, 16, 16])
        want = onnxscope.LinearScope(image_to_image()).interpret(x).output
        close(decode(state["y"]), want, "F(x) of the given image")
    finally:
        process.terminate()
        process.wait(10)
