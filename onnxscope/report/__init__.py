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

import base64
import html
import json
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .images import display_image, load_image, parse_number, to_hwc

TOLERANCE = 1e-5
MARKER = "report.json"  # the report's index: lists its files (onnxscope.files.outputs)


def write_report(
    model,
    image,
    out_dir,
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
    logits: bool = False,
    progress: bool | None = None,
) -> str:
    """Write the report of `model` (path or ModelProto) at `image` (a PNG/JPEG or .npy path, or
    an array; see onnxscope.report.images.load_image) into the folder `out_dir`
    (created, or replaced atomically if it holds an earlier report) and return the path of its
    index.html. The model file is only read.

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
      layout, color, size, scale, mean, std: image conventions (see onnxscope.report.images).
      logits     interpret the logits under outputs computed by a Softmax (votes on logits, as
                 the paper reads them) instead of the probabilities.
      progress   a progress bar on stderr (default: only when stderr is a terminal).
    """
    from ..graph.model import graph_inputs, input_spec
    from ..runtime.scope import LinearScope
    from . import figures

    figures.require_matplotlib()
    sources = _sources(model, image, other)
    out_dir = _check_destination(out_dir, sources)
    bar = Progress(5, sys.stderr.isatty() if progress is None else progress)
    bar.step("rewriting the model")
    cut = []
    if logits:
        from ..graph.model import softmax_outputs_to_logits

        interpreted, cut = softmax_outputs_to_logits(model)
    scope = LinearScope(interpreted if logits else model, wrt=wrt, providers=device)
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
        dtype=specs[scope.wrt][1],
    )
    others = _other_inputs(other or {}, specs, scope.wrt)
    bar.step("interpreting")
    it = scope.interpret(x, **others)
    errors = it.verify(tol=TOLERANCE)
    r = Report(it, conv, labels, radius, channel)
    r.facts(model, scope, specs, others, device, cut)
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
    bar.total = 4 + len(chosen)
    for name in chosen:
        bar.step(f"output {name}")
        kind = output_kind(it.outputs[name].shape, conv.layout)
        if kind == "vector":
            r.vector_section(name, classes, top)
        elif kind == "image":
            r.image_section(name, rows, columns, crop, svd_k)
        else:
            r.other_section(name)
    bar.step("masks")
    r.mask_section(scope.artifacts({k: v.shape for k, v in it.inputs.items()}), mask_layer)
    bar.step("writing")
    files = r.files(errors)
    _publish(out_dir, files, sources)
    bar.done()
    return os.path.join(out_dir, "index.html")


def output_kind(shape, layout: str = "NCHW") -> str:
    """'vector' (one value per class), 'image' (batch 1, rank 4, H·W > 1) or 'other'."""
    if len(shape) <= 2:
        return "vector"
    if len(shape) == 4 and shape[0] == 1:
        h, w = shape[2:4] if layout == "NCHW" else shape[1:3]
        return "image" if h * w > 1 else "vector"
    return "other"


class Progress:
    """A one-line progress bar on stderr, drawn only when enabled."""

    def __init__(self, total: int, enabled: bool, width: int = 24):
        self.total, self.enabled, self.width, self.count = total, enabled, width, 0

    def step(self, what: str) -> None:
        if self.enabled:
            filled = self.width * min(self.count, self.total) // self.total
            bar = "#" * filled + "." * (self.width - filled)
            sys.stderr.write(f"\r[{bar}] {what[:50]:50s}")
            sys.stderr.flush()
        self.count += 1

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write(f"\r[{'#' * self.width}] {'done':50s}\n")


@dataclass
class Png:
    file: str
    png: bytes
    caption: str


@dataclass
class Report:
    """Collects the sections (HTML), figures and numbers of one report."""

    it: object
    conv: object
    labels: list[str] | None
    radius: int
    channel: int
    sections: list[tuple[str, str]] = field(default_factory=list)
    figures: list[Png] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)

    # -- pieces --------------------------------------------------------------------------------
    def add_figure(self, fig, file: str, caption: str) -> str:
        from .figures import to_png

        self.figures.append(Png(file, to_png(fig), caption))
        return f"@@figure:{file}@@"  # replaced by the <img> when the page is assembled

    def picture(self) -> np.ndarray:
        color = self.conv.color if self.conv.color in ("rgb", "bgr") else "rgb"
        return display_image(self.it.x, self.conv.layout, color)

    def chw(self, array: np.ndarray) -> np.ndarray:
        """An input- or output-shaped batch-1 tensor as C×H×W (the input's layout)."""
        return to_hwc(array, self.conv.layout).transpose(2, 0, 1)

    def flat_index(self, shape, c: int, y: int, x: int) -> int:
        """Flat index of element (c, y, x) of a batch-1 tensor in the input's layout."""
        c = min(max(c, 0), (shape[1] if self.conv.layout == "NCHW" else shape[3]) - 1)
        where = (0, c, y, x) if self.conv.layout == "NCHW" else (0, y, x, c)
        try:
            return int(np.ravel_multi_index(where, shape))
        except ValueError:
            raise InputError(f"Position ({y}, {x}) is outside the tensor {tuple(shape)}.") from None

    def spatial(self, shape) -> tuple[int, int]:
        return tuple(shape[2:4]) if self.conv.layout == "NCHW" else tuple(shape[1:3])

    # -- sections ------------------------------------------------------------------------------
    def facts(self, model, scope, specs, others, device, cut=()) -> None:
        from ..runtime.sessions import provider_name

        it, conv = self.it, self.conv
        source = model if isinstance(model, (str, os.PathLike)) else "(in-memory ModelProto)"
        opset = next(i.version for i in scope.model.opset_import if i.domain in ("", "ai.onnx"))
        rows = [
            ("model", os.fspath(source)),
            ("opset / producer", f"{opset} / {scope.model.producer_name or '?'}"),
            ("inputs", "; ".join(f"{n} {v[0]} {v[1]}" for n, v in specs.items())),
            ("interpreted input", f"{scope.wrt} {list(it.x.shape)}"),
            ("outputs", "; ".join(f"{n} {list(v.shape)}" for n, v in it.outputs.items())),
            ("device", f"{device} (providers: {', '.join(map(provider_name, scope.providers))})"),
            ("image", conv.source),
            (
                "image size",
                f"{conv.original_size[0]}×{conv.original_size[1]} → {conv.size[0]}×{conv.size[1]}",
            ),
            ("layout / colour", f"{conv.layout} / {conv.color}"),
            ("pixel → input", f"(p · {conv.scale:.6g} − {_vals(conv.mean)}) / {_vals(conv.std)}"),
            ("x range", f"[{float(it.x.min()):.4g}, {float(it.x.max()):.4g}]"),
        ]
        rows += [("note", n) for n in conv.notes]
        rows += [("note", f"the Softmax under output {n} is cut: {n}_logits is shown") for n in cut]
        rows += [(f"other input {n}", _summary(v)) for n, v in others.items()]
        self.numbers["facts"] = dict(rows[:6])
        self.numbers["conventions"] = conv.as_dict()
        self.sections.append(("Model and input", _table(("", ""), rows)))

    def vector_section(self, name: str, classes, top: int) -> None:
        from . import figures

        it = self.it
        out = it.outputs[name].ravel()
        names = self.labels if self.labels and len(self.labels) == out.size else None
        label = lambda k: f"{names[k]} ({name}[{k}])" if names else f"{name}[{k}]"  # noqa: E731
        order = [int(k) for k in np.argsort(-out, kind="stable")]
        if classes and not all(-out.size <= k < out.size for k in classes):
            raise InputError(f"Classes {classes} out of range for output '{name}' ({out.size}).")
        shown = [int(k) % out.size for k in classes] if classes else order[: max(1, top)]
        charted = list(dict.fromkeys(shown + order[:10]))
        votes = it.x * it.rows(charted, name)  # x ⊙ A_xᵀe_k, one per class
        sums = votes.reshape(len(charted), -1).sum(axis=1, dtype=np.float64)
        bias = it.biases[name].ravel()[charted].astype(np.float64)
        record = [_vote_record(k, label(k), out[k], v, b) for k, v, b in zip(charted, sums, bias)]
        maps, how = [], ""
        for k in shown:
            (m,), _, how = figures.channel_maps(self.chw(votes[charted.index(k)]), False)
            maps.append(m)
        titles = [f"{label(k)}: output {out[k]:.4g}" for k in shown]
        fig = figures.vote_maps(self.picture(), maps, titles, how)
        caption = "Red pixels vote for the class, blue against; Σ votes + bias = output."
        body = self.add_figure(fig, f"votes_{_safe(name)}.png", caption)
        fig = figures.logit_split([label(k) for k in charted], sums, bias, out[charted])
        caption = "Each output as the sum of its votes (A_x x) and its bias c_x[k]."
        body += self.add_figure(fig, f"logit_split_{_safe(name)}.png", caption)
        body += _table(VOTE_COLUMNS, [tuple(_fmt(c[key]) for key in VOTE_KEYS) for c in record])
        self.numbers.setdefault("outputs", {})[name] = {"kind": "vector", "classes": record}
        self.sections.append((f"Output '{name}' {list(it.outputs[name].shape)}: votes", body))

    def image_section(self, name: str, rows, columns, crop, k: int) -> None:
        from . import figures

        it, ch = self.it, self.channel
        y_shape, x_shape = it.outputs[name].shape, it.x.shape
        (oh, ow), (ih, iw) = self.spatial(y_shape), self.spatial(x_shape)
        fy, fx = ih / oh, iw / ow  # input pixels per output pixel
        rows, columns, safe = rows or _diagonal(oh, ow), columns or _diagonal(ih, iw), _safe(name)
        found = it.rows([self.flat_index(y_shape, ch, *p) for p in rows], name)
        marks = [((y + 0.5) * fy - 0.5, (x + 0.5) * fx - 0.5) for y, x in rows]
        title = f"Rows A_xᵀe_i (input-shaped, summed over channels): what output channel {ch} at i"
        body = self.positions(
            found, marks, [f"row at output {p}" for p in rows], f"{title} looks at",
            f"rows_{safe}.png", "× marks the input pixel under the output position (scaled).",
        )  # fmt: skip
        found = _named(it.columns([self.flat_index(x_shape, ch, *p) for p in columns]), name)
        marks = [((y + 0.5) / fy - 0.5, (x + 0.5) / fx - 0.5) for y, x in columns]
        title = f"Columns A_x e_j (output-shaped, summed over channels): where input channel {ch}"
        body += self.positions(
            found, marks, [f"column at input {p}" for p in columns], f"{title} at j goes",
            f"columns_{safe}.png", "× marks the output pixel over the input position (scaled).",
        )  # fmt: skip
        c, f = it.biases[name], it.outputs[name]
        ratio = float(np.linalg.norm(c) / max(np.linalg.norm(f), 1e-30))
        stack = self.chw(c)
        maps, titles, how = figures.channel_maps(stack, per_channel=len(stack) <= 4)
        title = f"Bias image c_x = F̂_x(0) ({how}); ‖c_x‖/‖F(x)‖ = {ratio:.3g}"
        caption = "What the biases and unit intercepts alone produce."
        body += self.add_figure(figures.signed_images(maps, titles, title), f"bias_{safe}.png",
                                caption)  # fmt: skip
        body += f"<p>‖c_x‖ / ‖F(x)‖ = <b>{ratio:.4g}</b></p>"
        svd = self.svd_figure(name, crop, k, (fy, fx), safe)
        body += svd.pop("html")
        self.numbers.setdefault("outputs", {})[name] = {
            "kind": "image", "rows_at": rows, "columns_at": columns, "channel": ch,
            "bias_ratio": ratio, **svd,
        }  # fmt: skip
        self.sections.append((f"Output '{name}' {list(y_shape)}: rows, columns, bias", body))

    def positions(self, tensors, marks, titles, title, file, caption) -> str:
        """A figure of rows or columns (summed over channels) with a zoom beside each."""
        from .figures import position_maps

        maps = [self.chw(t).sum(axis=0) for t in tensors]
        return self.add_figure(
            position_maps(maps, marks, titles, title, self.radius), file, caption
        )

    def svd_figure(self, name, crop, k, factors, safe) -> dict:
        from .figures import singular_vectors

        it = self.it
        (ih, iw), (oh, ow) = self.spatial(it.x.shape), self.spatial(it.outputs[name].shape)
        ch, cw = min(8, ih), min(8, iw)
        y, x, h, w = crop or ((ih - ch) // 2, (iw - cw) // 2, ch, cw)
        if not (0 <= y and 0 <= x and h > 0 and w > 0 and y + h <= ih and x + w <= iw):
            raise InputError(f"Crop (y={y}, x={x}, h={h}, w={w}) is outside the {ih}×{iw} input.")
        fy, fx = factors  # the output crop covers the same region, at the output's scale
        oy0, ox0 = int(y / fy), int(x / fx)
        oy1 = max(oy0 + 1, min(oh, int(np.ceil((y + h) / fy))))
        ox1 = max(ox0 + 1, min(ow, int(np.ceil((x + w) / fx))))
        region = {
            "input": self.region(y, y + h, x, x + w),
            "output": self.region(oy0, oy1, ox0, ox1),
        }
        crop_in = it.x[region["input"]].shape
        crop_out = it.outputs[name][region["output"]].shape
        k = max(1, min(k, int(np.prod(crop_in)), int(np.prod(crop_out))))
        u, s, vt = it.svd(k, region=region, output=name)
        right = [self.chw(v.reshape(crop_in)).sum(axis=0) for v in vt]
        left = [self.chw(v.reshape(crop_out)).sum(axis=0) for v in u.T]
        title = (
            f"Top {k} singular vectors of A_x on the crop: input rows {y}–{y + h - 1}, "
            f"cols {x}–{x + w - 1} → output rows {oy0}–{oy1 - 1}, cols {ox0}–{ox1 - 1} "
            "(summed over channels)"
        )
        caption = "v_i: the input patterns A_x amplifies most on the crop; u_i: what they become."
        fig = singular_vectors(s, right, left, title)
        return {
            "html": self.add_figure(fig, f"svd_{safe}.png", caption),
            "singular_values": [float(v) for v in s],
            "crop": [y, x, h, w],
        }

    def region(self, y0, y1, x0, x1) -> tuple[slice, ...]:
        all_ = slice(None)
        if self.conv.layout == "NCHW":
            return (all_, all_, slice(y0, y1), slice(x0, x1))
        return (all_, slice(y0, y1), slice(x0, x1), all_)

    def other_section(self, name: str) -> None:
        c, f = self.it.biases[name], self.it.outputs[name]
        ratio = float(np.linalg.norm(c) / max(np.linalg.norm(f), 1e-30))
        self.numbers.setdefault("outputs", {})[name] = {"kind": "other", "bias_ratio": ratio}
        self.sections.append(
            (
                f"Output '{name}' {list(f.shape)}",
                f"<p>Neither a vector nor an image; ‖c_x‖/‖F(x)‖ = {ratio:.4g}.</p>",
            )
        )

    def mask_section(self, artifacts, layer: str | None) -> None:
        from . import figures

        units = artifacts.manifest["units"]
        values = self.it.masks
        table = [
            (
                u["node"],
                u["op"],
                u["frozen"],
                ", ".join(f"{lab} {m['dtype']}{m['shape']}" for lab, m in u["masks"].items()),
            )
            for u in units
        ]
        body = _table(("node", "op", "frozen to", "masks"), table)
        spatial = lambda m: len(m["shape"]) == 4 and m["shape"][2] * m["shape"][3] > 1  # noqa: E731
        if layer is not None:
            unit = next((u for u in units if u["node"] == layer), None)
            if unit is None:
                raise InputError(
                    f"No frozen unit at node '{layer}'; units: {[u['node'] for u in units]}."
                )
        else:
            unit = next((u for u in units if any(spatial(m) for m in u["masks"].values())), None)
        if unit is not None:
            label, mask = next(iter(unit["masks"].items()))
            value = values.get(mask["output"])
            if value is not None and value.ndim == 4:
                c = value.shape[1]
                fig = figures.mask_maps(
                    value[0],
                    f"Frozen decisions of '{unit['node']}' ({unit['op']}: {label}, "
                    f"{unit['frozen']}), channels 0–{min(c, 8) - 1} of {c}",
                )
                body = (
                    self.add_figure(fig, "masks.png", "Each channel's frozen decision at x.") + body
                )
        self.sections.append((f"Frozen decisions ({len(units)} units and gates)", body))

    # -- the page ------------------------------------------------------------------------------
    def files(self, errors) -> dict[str, bytes]:
        """`errors`: the interpretation's Verification (each check against max(tol, its noise
        floor))."""
        exact = [(k, v, errors.passed(k)) for k, v in errors.items()]
        if not errors.adjoint_checked:
            exact.append(("adjoint", None, None))
        cells = "".join(
            f"<tr><td>{k}</td><td class=num data-value='{v!r}'>{v:.3e}</td>"
            f"<td class=num>{errors.noise[k]:.1e}</td>"
            f"<td class={'pass' if ok else 'fail'}>{'pass' if ok else 'FAIL'}</td></tr>"
            if v is not None
            else f"<tr><td>{k}</td><td>—</td><td>—</td><td>not checked: no adjoint graph</td></tr>"
            for k, v, ok in exact
        )
        verdict = errors.ok
        head = (
            f"<table id=exactness><tr><th>identity</th><th>relative error</th>"
            f"<th>float noise floor</th><th>≤ max({TOLERANCE:g}, 8 × floor)</th></tr>{cells}"
            "</table>"
            "<p>F(x) = A_x x + c_x (reconstruction, relative to ‖F(x)‖; conditioning "
            f"(‖A_x x‖ + ‖c_x‖)/‖F(x)‖ = {errors.conditioning:.3g}), A_x linear (linearity), "
            "⟨A z, w⟩ = ⟨z, A_xᵀ w⟩ (adjoint). The noise floor is how far the same map moves "
            "when its argument is rounded another way.</p>"
        )
        body = "".join(
            f"<h2>{html.escape(t)}</h2>\n{b}\n"
            for t, b in [
                (f"Exactness: {'all pass' if verdict else 'FAILED'}", head),
                *self.sections,
            ]
        )
        for fig in self.figures:
            data = base64.b64encode(fig.png).decode("ascii")
            body = body.replace(
                f"@@figure:{fig.file}@@",
                f"<figure><img src='data:image/png;base64,{data}' alt='{fig.file}'>"
                f"<figcaption>{html.escape(fig.caption)} ({fig.file})</figcaption></figure>",
            )
        page = PAGE.format(body=body)
        self.numbers["exactness"] = {**errors.as_dict(), "tolerance": TOLERANCE, "pass": verdict}
        self.numbers["figures"] = [f.file for f in self.figures]
        self.numbers["onnxscope_report"] = 1
        files = {f.file: f.png for f in self.figures}
        files["index.html"] = page.encode("utf-8")
        files[MARKER] = json.dumps(self.numbers, indent=1, default=_jsonable).encode("utf-8")
        return files


PAGE = """<!DOCTYPE html>
<html lang=en><head><meta charset=utf-8><title>onnxscope report</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 1em auto; padding: 0 1em; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: left; }}
td.num {{ font-family: monospace; }} .pass {{ color: #060; }} .fail {{ color: #b00; }}
img {{ max-width: 100%; }} figcaption {{ font-size: 90%; color: #444; }}
</style></head><body>
<h1>onnxscope report: F̂<sub>x</sub>(z) = A<sub>x</sub> z + c<sub>x</sub></h1>
{body}
</body></html>
"""


VOTE_COLUMNS = (
    "class",
    "output F(x)",
    "Σ votes",
    "bias c_x",
    "Σ votes + bias − F(x)",
    "bias share |c|/(|Σv|+|c|)",
)
VOTE_KEYS = ("label", "output", "votes", "bias", "residual", "share")


def _vote_record(k: int, label: str, output: float, votes: float, bias: float) -> dict:
    total = abs(votes) + abs(bias)
    return {
        "class": k,
        "label": label,
        "output": float(output),
        "votes": float(votes),
        "bias": float(bias),
        "residual": float(votes + bias - output),
        "share": abs(bias) / total if total else 0.0,
    }


def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _table(header, rows) -> str:
    esc = lambda v: html.escape(str(v))  # noqa: E731
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _named(values, name: str) -> np.ndarray:
    """One output's array from a result that is an array (one output) or a dict by name."""
    return values[name] if isinstance(values, dict) else values


def _diagonal(h: int, w: int) -> list[tuple[int, int]]:
    """Three positions at a quarter, a half and three quarters along the diagonal."""
    return list(dict.fromkeys(((h * q) // 4, (w * q) // 4) for q in (1, 2, 3)))


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_") or "output"


def _vals(values) -> str:
    return ",".join(f"{v:.6g}" for v in values)


def _summary(v: np.ndarray) -> str:
    return (
        f"{list(v.shape)} {v.dtype}, values in [{v.min():.4g}, {v.max():.4g}]" if v.size else "[]"
    )


def _jsonable(value):
    return value.tolist() if isinstance(value, np.ndarray) else str(value)


def _other_inputs(given: dict, specs: dict, wrt: str) -> dict[str, np.ndarray]:
    """Arrays for the model's other inputs: a number fills the input's shape (free dims 1), a
    string ending in .npy is loaded; inputs not given are an error."""
    feeds = {}
    for name, value in given.items():
        if name not in specs or name == wrt:
            raise InputError(
                f"'{name}' is not another input of the model; they are "
                f"{[n for n in specs if n != wrt]}."
            )
        dims, dtype = specs[name]
        if isinstance(value, str) and value.lower().endswith(".npy"):
            try:
                array = np.load(value, allow_pickle=False)
            except Exception as exc:
                raise InputError(f"Could not read '{value}' for input '{name}': {exc}") from None
        elif isinstance(value, (str, int, float)):
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in dims]
            array = np.full(shape, parse_number(value))
        else:
            array = np.asarray(value)
        feeds[name] = array.astype(dtype)
    missing = [n for n in specs if n != wrt and n not in feeds]
    if missing:
        raise InputError(
            f"The model has other input(s) {missing}: give each a value with "
            f"--other NAME=VALUE or --other NAME=FILE.npy."
        )
    return feeds


def _legacy_report(numbers: dict) -> set[str] | None:
    """The files of a report written before report.json listed them (onnxscope < issue 11)."""
    figures = numbers.get("figures")
    if numbers.get("onnxscope_report") == 1 and isinstance(figures, list):
        return {"index.html", MARKER, *(f for f in figures if isinstance(f, str))}
    return None


REPORT_SET = {"kind": "report", "index": MARKER, "legacy": _legacy_report}


def _sources(model, image, other) -> list[tuple[str, object]]:
    """The files the report reads, never to be written or deleted."""
    found = [("input model", model), ("input image", image)]
    for name, value in (other or {}).items():
        if isinstance(value, (str, os.PathLike)) and os.fspath(value).lower().endswith(".npy"):
            found.append((f"--other file of '{name}'", value))
    return found


def _check_destination(out_dir, sources) -> str:
    """The absolute path of the report folder, once checked (files.outputs.check_folder)."""
    from ..files.outputs import check_folder

    return check_folder(out_dir, sources=sources, **REPORT_SET)


def _publish(out_dir: str, files: dict[str, bytes], sources=()) -> None:
    """Publish the report's files as one set at out_dir (files.outputs.publish_folder)."""
    from ..files.outputs import publish_folder

    publish_folder(out_dir, files, sources=sources, **REPORT_SET)


# -- the `onnxscope report` subcommand (registered in cli.py) ------------------------------------


def _ints(form: str):
    """An argparse type for comma-separated integers written as `form` ('Y,X', 'Y,X,H,W')."""
    import argparse

    def parse(text: str) -> tuple[int, ...]:
        values = text.split(",")
        try:
            if len(values) != form.count(",") + 1:
                raise ValueError
            return tuple(int(v) for v in values)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {form}, got '{text}'") from None

    return parse


def _other_arg(text: str) -> tuple[str, str]:
    import argparse

    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE or NAME=FILE.npy, got '{text}'")
    return name, value


def add_parser(sub) -> None:
    """Add `report` to the CLI's subparsers."""
    sp = sub.add_parser("report", help="write an HTML report (figures, votes, rows) of one image")
    arg = sp.add_argument
    many = lambda flag, dest, type_, metavar, text: arg(  # noqa: E731 - a repeatable option
        flag, dest=dest, type=type_, metavar=metavar, action="append", help=f"{text} (repeat)"
    )
    arg("model", help="path to the .onnx model (never modified)")
    arg("image", help="PNG/JPEG image, or .npy (the input itself, or an H×W×C image)")
    arg(
        "-o",
        "--output",
        required=True,
        help="output folder: created, or replaced atomically if it holds an earlier report",
    )
    arg("--wrt", help="the input to interpret (default: the first float input)")
    arg("--device", default="cpu", choices=["cpu", "cuda"])
    many("--output-name", "outputs", str, "NAME", "report on this output only (default: all)")
    many("--class", "classes", int, "K", "output index to show votes for (default: the top)")
    arg("--top", type=int, default=3, help="how many top classes to show (3)")
    arg("--labels", type=lambda t: t.split(","), help="class names: a,b,c")
    many("--row", "rows", _ints("Y,X"), "Y,X", "output position for a row A_xᵀe_i")
    many("--column", "columns", _ints("Y,X"), "Y,X", "input position for a column A_x e_j")
    arg("--channel", type=int, default=0, help="channel of those positions (0)")
    arg(
        "--crop",
        type=_ints("Y,X,H,W"),
        metavar="Y,X,H,W",
        help="input crop for the singular vectors (central 8×8)",
    )
    arg("--svd", dest="svd_k", type=int, default=4, help="how many singular triplets (4)")
    arg("--mask-layer", metavar="NODE", help="node whose masks are shown")
    many("--other", "other", _other_arg, "NAME=VALUE", "another input: a number or a .npy file")
    arg("--layout", choices=["NCHW", "NHWC"], help="default: from the input shape")
    arg("--color", choices=["rgb", "bgr", "gray"], help="default: from the channel count")
    arg(
        "--size",
        type=_ints("H,W"),
        metavar="H,W",
        help="size for free spatial dims (default: the image's)",
    )
    arg("--scale", help="pixel scale, e.g. 1/255 (default for 8-bit images) or 1")
    arg("--mean", help="subtracted after scaling: one value or one per channel")
    arg("--std", help="divided by after the mean: one value or one per channel")
    arg("--logits", action="store_true", help="interpret the logits under Softmax outputs")


CLI_OPTIONS = (  # the write_report options the subcommand passes through as they are
    "wrt outputs classes top labels rows columns channel crop svd_k mask_layer device layout "
    "color size scale mean std logits"
).split()


def run_cli(args) -> int:
    """`onnxscope report`: write the report and print the path of its index.html."""
    options = {k: getattr(args, k) for k in CLI_OPTIONS}
    other = dict(args.other or [])
    path = write_report(args.model, args.image, args.output, other=other, **options)
    print(path)
    return 0
