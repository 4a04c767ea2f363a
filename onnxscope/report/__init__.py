"""A self-contained HTML report of one model at one image: `onnxscope report MODEL IMAGE -o DIR`.

The page opens with the exactness checks (`Interpretation.verify()`, pass/fail at 1e-5), then the
facts (model, input, image conventions), then one section per model output chosen by its shape:

- a vector (logits, scores, regressions): pixel-wise votes x ⊙ A_xᵀe_k of the top classes, and
  each class's output split into Σ votes + bias c_x[k] (with the bias share);
- an image (N×C×H×W with H·W > 1): rows A_xᵀe_i at output positions, columns A_x e_j at input
  positions (each beside a zoom on its neighbourhood), the bias image c_x with ‖c_x‖/‖F(x)‖,
  and the top singular vectors of A_x on a crop;

and last the frozen decisions of one layer. Figures are written as PNG files beside index.html
and embedded in it as data URIs (no network, no external files); report.json holds the numbers.
"""

from __future__ import annotations

import os
import sys
import time
import warnings

import numpy as np

from ..errors import InputError
from ..files.outputs import OutputSet
from .images import load_image
from .page import MARKER, TOLERANCE, assemble
from .sections import Report


def write_report(model, image, out_dir, *, other: dict | None = None, **options) -> str:
    """Write the report of `model` (path or ModelProto) at `image` (a PNG/JPEG or .npy path, or
    an array; see onnxscope.report.images.load_image) into the folder `out_dir`
    (created, or replaced atomically if it holds an earlier report) and return the path of its
    index.html. The model file is only read. The options are build_report's."""
    from . import figures

    figures.require_matplotlib()
    sources = _sources(model, image, other)
    out_dir = REPORT.check(out_dir, sources=sources)  # before any work: a refused folder is cheap
    files = build_report(model, image, other=other, **options)
    REPORT.publish(out_dir, files, sources=sources)
    return os.path.join(out_dir, "index.html")


def build_report(
    model,
    image,
    *,
    wrt: str | None = None,
    outputs: list[str] | None = None,
    classes: list[int] | None = None,
    top: int = 3,
    labels: list[str] | None = None,
    rows: list[tuple[int, int]] | None = None,
    columns: list[tuple[int, int]] | None = None,
    channel: int = 0,
    crop: tuple[int, int, int, int] | None = None,
    svd_k: int = 4,
    radius: int = 4,
    mask_layer: str | None = None,
    other: dict | None = None,
    device: str = "cpu",
    layout: str | None = None,
    color: str | None = None,
    size: tuple[int, int] | None = None,
    scale=None,
    mean=None,
    std=None,
    resize: str | None = None,
    logits: bool = False,
    mode: str = "secant",
    sign: str = "all",
    clip: float = 99.5,
    alpha: float = 0.7,
    progress: bool | None = None,
) -> dict[str, bytes]:
    """The files of the report of `model` (path or ModelProto) at `image` (a PNG/JPEG or .npy
    path, or an array; see onnxscope.report.images.load_image), {name: bytes}: index.html, its
    figures as PNG files and report.json (write_report publishes them as a folder). The model
    file is only read.

    Options (all keyword-only; None picks the default):
      wrt        the model input to interpret (default: the first float input).
      outputs    model outputs to report on (default: all).
      classes    output indices to explain with votes (default: the `top` largest, 3).
      labels     class names, in output order (for every vector output of that length).
      rows       output positions (y, x) for rows A_xᵀe_i (default: 3 along the diagonal).
      columns    input positions (y, x) for columns A_x e_j (default: 3 along the diagonal).
      channel    the channel of those positions (clamped to the tensor's channel count), 0.
      crop       (y, x, h, w) input crop for the singular vectors (default: central 8×8; the
                 output crop is the same region scaled to the output's size).
      svd_k      how many singular triplets (4); radius: half-size of the zoom panels (4).
      mask_layer node name whose frozen decisions are shown (default: the first spatial unit).
      other      values of the model's other inputs: {name: number | array | 'FILE.npy'}.
      device     'cpu' or 'cuda'.
      layout, color, size, scale, mean, std, resize: image conventions (see
                 onnxscope.report.images).
      logits     interpret the logits under outputs computed by a Softmax or LogSoftmax (votes
                 on logits, as the paper reads them) instead of the probabilities.
      mode       'secant' (the paper's interpreter), 'tangent' (A_x the Jacobian at x) or
                 'both': the secant report plus each vector output's votes in both modes side
                 by side.
      sign, clip, alpha: how signed maps are drawn (onnxscope.report.figures.Display): all,
                 positive, negative or absolute; the colour scale's percentile of |value|
                 (99.5); the opacity of maps over the input (0.7).
      progress   a progress bar on stderr (default: a bar on a terminal, else a line per step;
                 False: nothing).
    """
    from ..graph.model import graph_inputs, input_spec
    from ..runtime.scope import LinearScope
    from . import figures

    figures.require_matplotlib()
    display = figures.Display(sign, clip, alpha)
    bar = Progress(5, sys.stderr.isatty() if progress is None else progress, lines=progress is None)
    bar.step("rewriting the model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (no Softmax: the page says what was read)
        if mode not in ("secant", "tangent", "both"):
            raise InputError(f"mode must be secant, tangent or both, not {mode!r}.")
        scope = LinearScope(
            model,
            wrt=wrt,
            providers=device,
            logits=logits,
            mode="secant" if mode == "both" else mode,
        )
    cut = scope.cut
    specs = {vi.name: input_spec(vi) for vi in graph_inputs(scope.model)}
    x, conv = load_image(
        image,
        specs[scope.wrt][0],
        layout=layout,
        color=color,
        size=size,
        scale=scale,
        mean=mean,
        std=std,
        resize=resize,
        dtype=specs[scope.wrt][1],
    )
    others = _other_inputs(other or {}, specs, scope.wrt)
    bar.step("interpreting")
    it = scope.interpret(x, **others)
    errors = it.verify(tol=TOLERANCE)
    r = Report(it, conv, labels, radius, channel, display, classes=bool(labels or cut))
    r.facts(model, scope, specs, others, device, cut, both=mode == "both")
    chosen = outputs or it.output_names
    unknown = set(chosen) - set(it.output_names)
    if unknown:
        raise InputError(f"Unknown output(s) {sorted(unknown)}; outputs: {it.output_names}.")
    sizes = [
        it.outputs[n].size
        for n in chosen
        if output_kind(it.outputs[n].shape, conv.layout) == "vector"
    ]
    if labels and len(labels) not in sizes:
        raise InputError(
            f"{len(labels)} labels given, but no vector output has that many "
            f"elements (they have {sizes})."
        )
    tangent = None
    if mode == "both":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tangent_scope = LinearScope(
                model, wrt=wrt, providers=device, logits=logits, mode="tangent"
            )
        tangent = tangent_scope.interpret(x, **others)
    bar.total = 4 + len(chosen)
    for name in chosen:
        bar.step(f"output {name}")
        kind = output_kind(it.outputs[name].shape, conv.layout)
        if kind == "vector":
            r.vector_section(name, classes, top)
            if tangent is not None:
                r.modes_section(name, tangent, classes, top)
        elif kind == "image":
            r.image_section(name, rows, columns, crop, svd_k)
        else:
            r.other_section(name)
    bar.step("masks")
    r.mask_section(scope.artifacts({k: v.shape for k, v in it.inputs.items()}), mask_layer)
    bar.step("writing")
    files = assemble(r, errors)
    bar.done()
    return files


def output_kind(shape, layout: str = "NCHW") -> str:
    """'vector' (one value per class), 'image' (batch 1, rank 4, H·W > 1) or 'other'."""
    if len(shape) <= 2:
        return "vector"
    if len(shape) == 4 and shape[0] == 1:
        h, w = shape[2:4] if layout == "NCHW" else shape[1:3]
        return "image" if h * w > 1 else "vector"
    return "other"


class Progress:
    """Progress on stderr: a one-line bar (enabled, on a terminal), or with `lines` a line per
    step with the time so far (off a terminal), or nothing."""

    def __init__(self, total: int, enabled: bool, width: int = 24, lines: bool = False):
        self.total, self.enabled, self.width, self.count = total, enabled, width, 0
        self.lines = lines and not enabled
        self.start = time.monotonic()

    def step(self, what: str) -> None:
        if self.enabled:
            filled = self.width * min(self.count, self.total) // self.total
            bar = "#" * filled + "." * (self.width - filled)
            sys.stderr.write(f"\r[{bar}] {what[:50]:50s}")
            sys.stderr.flush()
        elif self.lines:
            elapsed = time.monotonic() - self.start
            sys.stderr.write(
                f"report: step {self.count + 1}/{self.total}: {what} ({elapsed:.0f} s)\n"
            )
            sys.stderr.flush()
        self.count += 1

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write(f"\r[{'#' * self.width}] {'done':50s}\n")


def _other_inputs(given: dict, specs: dict, wrt: str) -> dict[str, np.ndarray]:
    """Arrays for the model's other inputs (files.inputs.input_value: a number fills the input's
    shape, a string ending in .npy is loaded); inputs not given are an error."""
    from ..files.inputs import input_value
    from ..graph.model import input_feeds

    others = {name: spec for name, spec in specs.items() if name != wrt}
    arrays = {}
    for name, value in given.items():
        if name not in others:
            raise InputError(
                f"'{name}' is not another input of the model; they are {list(others)}."
            )
        arrays[name] = input_value(value, others[name], name)
    hint = "give each a value with --other NAME=VALUE or --other NAME=FILE.npy"
    return input_feeds(others, arrays, missing=f"The model has other input(s) {{names}}: {hint}.")


def _legacy_report(numbers: dict) -> set[str] | None:
    """The files of a report written before report.json listed them (onnxscope < issue 11)."""
    figures = numbers.get("figures")
    if numbers.get("onnxscope_report") == 1 and isinstance(figures, list):
        return {"index.html", MARKER, *(f for f in figures if isinstance(f, str))}
    return None


REPORT = OutputSet("report", MARKER, _legacy_report)  # index.html, PNGs, report.json


def _sources(model, image, other) -> list[tuple[str, object]]:
    """The files the report reads, never to be written or deleted."""
    found = [("input model", model), ("input image", image)]
    for name, value in (other or {}).items():
        if isinstance(value, (str, os.PathLike)) and os.fspath(value).lower().endswith(".npy"):
            found.append((f"--other file of '{name}'", value))
    return found
