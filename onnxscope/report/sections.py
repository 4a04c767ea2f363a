"""The sections of a report and their numbers: `Report` collects, per section, its HTML, its
figures (as PNG bytes) and the numbers that go into report.json; onnxscope.report.page
assembles them into the files of the report."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .images import display_image, to_hwc


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
    display: object = None  # figures.Display (how signed maps are drawn)
    classes: bool = False  # vector outputs are classes (labels given, or logits under a Softmax)
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
    def facts(self, model, scope, specs, others, device, cut=(), both=False) -> None:
        from ..runtime.sessions import provider_name

        mode_note = " (the votes in tangent mode too: --mode both)" if both else ""

        it, conv = self.it, self.conv
        source = model if isinstance(model, (str, os.PathLike)) else "(in-memory ModelProto)"
        opset = next(i.version for i in scope.model.opset_import if i.domain in ("", "ai.onnx"))
        rows = [
            ("model", os.fspath(source)),
            ("opset / producer", f"{opset} / {scope.model.producer_name or '?'}"),
            ("inputs", "; ".join(f"{n} {v[0]} {v[1]}" for n, v in specs.items())),
            ("interpreted input", f"{scope.wrt} {list(it.x.shape)}"),
            ("mode", f"{scope.mode}{mode_note}"),
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
        self.numbers["facts"] = dict(rows[:7])
        self.numbers["conventions"] = conv.as_dict()
        self.sections.append(("Model and input", _table(("", ""), rows)))

    def classes_of(self, name: str, classes, top: int):
        """(the classes shown, their ordering by output, what they are, a label function)."""
        out = self.it.outputs[name].ravel()
        names = self.labels if self.labels and len(self.labels) == out.size else None
        what = "class" if names or self.classes else "output element"
        label = lambda k: f"{names[k]} ({name}[{k}])" if names else f"{name}[{k}]"  # noqa: E731
        order = [int(k) for k in np.argsort(-out, kind="stable")]
        if classes and not all(-out.size <= k < out.size for k in classes):
            raise InputError(f"Classes {classes} out of range for output '{name}' ({out.size}).")
        shown = [int(k) % out.size for k in classes] if classes else order[: max(1, top)]
        return shown, order, what, label

    def vector_section(self, name: str, classes, top: int) -> None:
        from . import figures

        it = self.it
        out = it.outputs[name].ravel()
        shown, order, what, label = self.classes_of(name, classes, top)
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
        fig = figures.vote_maps(self.picture(), maps, titles, how, display=self.display)
        caption = (
            f"Red pixels vote for the {what}, blue against ({self.display.note()}); "
            "Σ votes + bias = output."
        )
        body = "".join(
            f"<p class=finding>{html.escape(_finding(record[charted.index(k)], what))}</p>"
            for k in shown
        )
        body += self.add_figure(fig, f"votes_{_safe(name)}.png", caption)
        fig = figures.logit_split([label(k) for k in charted], sums, bias, out[charted], per=what)
        caption = "Each output as the sum of its votes (A_x x) and its bias c_x[k]."
        body += self.add_figure(fig, f"logit_split_{_safe(name)}.png", caption)
        columns = (what, *VOTE_COLUMNS[1:])
        body += _table(columns, [tuple(_fmt(c[key]) for key in VOTE_KEYS) for c in record])
        self.numbers.setdefault("outputs", {})[name] = {"kind": "vector", "classes": record}
        self.sections.append((f"Output '{name}' {list(it.outputs[name].shape)}: votes", body))

    def modes_section(self, name: str, tangent, classes, top: int) -> None:
        """`report --mode both`: each shown class's votes from the secant interpreter (this
        report's) beside the tangent one's (`tangent`, A_x the Jacobian), on one colour scale
        per class; both sum with their bias to the same output."""
        from . import figures

        shown, _, what, label = self.classes_of(name, classes, top)
        its = {"secant": self.it, "tangent": tangent}
        votes = {mode: it.x * it.rows(shown, name) for mode, it in its.items()}
        body, record = "", []
        for n, k in enumerate(shown):
            maps, how = [], ""
            for mode in its:
                (m,), _, how = figures.channel_maps(self.chw(votes[mode][n]), False)
                maps.append(m)
            sums = {mode: float(votes[mode][n].sum(dtype=np.float64)) for mode in its}
            biases = {mode: float(it.biases[name].ravel()[k]) for mode, it in its.items()}
            titles = [f"{mode}: Σ votes {sums[mode]:.3g}, bias {biases[mode]:.3g}" for mode in its]
            fig = figures.vote_maps(self.picture(), maps, titles, how, cols=3, display=self.display)
            caption = (
                f"{label(k)}: secant votes (left) and tangent votes (right), one colour scale."
            )
            body += self.add_figure(fig, f"modes_{_safe(name)}_{k}.png", caption)
            record.append({"index": k, "label": label(k), "votes": sums, "bias": biases})
        rows = [
            (r["label"], *(_fmt(r[key][mode]) for mode in its for key in ("votes", "bias")))
            for r in record
        ]
        header = (what, "secant Σ votes", "secant bias", "tangent Σ votes", "tangent bias")
        body += _table(header, rows)
        self.numbers.setdefault("modes", {})[name] = record
        self.sections.append((f"Output '{name}': votes, secant and tangent", body))

    def image_section(self, name: str, rows, columns, crop, k: int) -> None:
        from . import figures

        it, ch = self.it, self.channel
        y_shape, x_shape = it.outputs[name].shape, it.x.shape
        (oh, ow), (ih, iw) = self.spatial(y_shape), self.spatial(x_shape)
        fy, fx = ih / oh, iw / ow  # input pixels per output pixel
        rows, columns, safe = rows or _diagonal(oh, ow), columns or _diagonal(ih, iw), _safe(name)
        picture, output_picture, shown_as = self.output_picture(name)
        fig = figures.picture_panels(
            [(picture, "input x"), (output_picture, f"output F(x), {shown_as}")],
            f"The input and the output '{name}'",
        )
        body = self.add_figure(fig, f"io_{safe}.png", "What the model was given and made.")
        found = it.rows([self.flat_index(y_shape, ch, *p) for p in rows], name)
        marks = [((y + 0.5) * fy - 0.5, (x + 0.5) * fx - 0.5) for y, x in rows]
        title = f"Rows A_xᵀe_i (input-shaped, summed over channels): what output channel {ch} at i"
        body += self.positions(
            found, marks, [f"row at output {p}" for p in rows], f"{title} looks at",
            f"rows_{safe}.png", "× marks the input pixel under the output position (scaled).",
            self.gray(picture),
        )  # fmt: skip
        found = _named(it.columns([self.flat_index(x_shape, ch, *p) for p in columns]), name)
        marks = [((y + 0.5) / fy - 0.5, (x + 0.5) / fx - 0.5) for y, x in columns]
        title = f"Columns A_x e_j (output-shaped, summed over channels): where input channel {ch}"
        body += self.positions(
            found, marks, [f"column at input {p}" for p in columns], f"{title} at j goes",
            f"columns_{safe}.png", "× marks the output pixel over the input position (scaled).",
            self.gray(output_picture),
        )  # fmt: skip
        c, f = it.biases[name], it.outputs[name]
        ratio = float(np.linalg.norm(c) / max(np.linalg.norm(f), 1e-30))
        stack = self.chw(c)
        maps, titles, how = figures.channel_maps(stack, per_channel=len(stack) <= 4)
        title = f"Bias image c_x = F̂_x(0) ({how}); ‖c_x‖/‖F(x)‖ = {ratio:.3g}"
        caption = f"What the biases and unit intercepts alone produce ({self.display.note()})."
        fig = figures.signed_images(maps, titles, title, display=self.display)
        body += self.add_figure(fig, f"bias_{safe}.png", caption)
        verdict = "mostly the bias" if ratio > 0.5 else "mostly the input's votes"
        body = (
            f"<p class=finding>The output is {verdict}: the bias image c_x has "
            f"{100 * ratio:.0f} % of the norm of F(x) (‖c_x‖ / ‖F(x)‖ = {ratio:.3g}).</p>" + body
        )
        svd = self.svd_figure(name, crop, k, (fy, fx), safe)
        body += svd.pop("html")
        self.numbers.setdefault("outputs", {})[name] = {
            "kind": "image", "rows_at": rows, "columns_at": columns, "channel": ch,
            "bias_ratio": ratio, **svd,
        }  # fmt: skip
        self.sections.append((f"Output '{name}' {list(y_shape)}: rows, columns, bias", body))

    def positions(self, tensors, marks, titles, title, file, caption, under=None) -> str:
        """A figure of rows or columns (summed over channels) with a zoom beside each, drawn
        over the picture `under` (the input for rows, the output for columns)."""
        from .figures import position_maps

        maps = [self.chw(t).sum(axis=0) for t in tensors]
        fig = position_maps(maps, marks, titles, title, self.radius, self.display, under)
        return self.add_figure(fig, file, f"{caption} ({self.display.note()})")

    def output_picture(self, name: str) -> tuple[np.ndarray, np.ndarray, str]:
        """(the input picture, the output as a picture, how the output is shown): 1 or 3
        channels as an image (range stretched), more as the argmax over channels (a label map,
        as a segmentation's)."""
        stack = self.chw(self.it.outputs[name])
        if len(stack) in (1, 3):
            out = display_image(self.it.outputs[name], self.conv.layout)
            how = "range stretched"
        else:
            out, how = np.argmax(stack, axis=0), f"argmax over its {len(stack)} channels"
        return self.picture(), out, how

    @staticmethod
    def gray(picture: np.ndarray) -> np.ndarray:
        """A picture as H×W in [0, 1] (label maps scaled), to draw maps over."""
        p = picture.astype(np.float64)
        p = p.mean(axis=2) if p.ndim == 3 else p
        lo, hi = float(p.min()), float(p.max())
        return (p - lo) / (hi - lo) if hi > lo else np.zeros_like(p)

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
        u, s, vt = it.svd(k, name, input_region=region["input"], output_region=region["output"])
        right = [self.chw(v).sum(axis=0) for v in vt]
        left = [self.chw(v).sum(axis=0) for v in u]
        title = (
            f"Top {k} singular vectors of A_x on the crop: input rows {y}–{y + h - 1}, "
            f"cols {x}–{x + w - 1} → output rows {oy0}–{oy1 - 1}, cols {ox0}–{ox1 - 1} "
            "(summed over channels)"
        )
        caption = "v_i: the input patterns A_x amplifies most on the crop; u_i: what they become."
        fig = singular_vectors(s, right, left, title, self.display)
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


def _finding(record: dict, what: str) -> str:
    """One plain sentence on what decides one output: its votes or its bias."""
    share = record["share"]
    who = "the bias decides" if share > 0.5 else "the votes decide"
    return (
        f"{record['label']}: {who}: {100 * share:.0f} % of this {what}'s value comes from c_x "
        f"(Σ votes {record['votes']:.4g}, bias {record['bias']:.4g}, output "
        f"{record['output']:.4g})."
    )


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
