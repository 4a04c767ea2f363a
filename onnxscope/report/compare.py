"""The page of `onnxscope diff --report`: one self-contained HTML file (figures inlined as PNG data)
that says in words and figures what changed between two inputs (runtime/compare.py)."""

from __future__ import annotations

import base64
import html

import numpy as np

from .figures import Figure, require_matplotlib, to_png
from .sections import _table

MAPS = 6  # spatial flip maps shown: the layers with the most changes


def comparison_page(found, first: str, second: str, x1: np.ndarray, x2: np.ndarray) -> bytes:
    """The HTML page of a Comparison between inputs A (`first`) and B (`second`, as said)."""
    require_matplotlib()
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>onnxscope diff</title><style>",
        "body{font-family:sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}",
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;",
        "padding:.2em .6em;text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}",
        "img{max-width:100%}figcaption{color:#555;font-size:.9em}</style></head><body>",
        "<h1>What changed between two inputs</h1>",
        f"<p>A: {html.escape(first)}<br>B: {html.escape(second)}<br>"
        f"Input shape {list(x1.shape)}, {found.mode} mode, output '{html.escape(found.output)}'."
        "</p>",
        f"<p>{html.escape(_finding(found, x1, x2))}</p>",
    ]
    discrete = [layer for layer in found.layers if layer.discrete]
    if discrete:
        parts.append(_figure(_flip_bars(discrete), "Share of each layer's decisions that flipped."))
    spatial = sorted(
        (layer for layer in found.layers if layer.spatial is not None and layer.changed),
        key=lambda layer: -layer.fraction,
    )[:MAPS]
    if spatial:
        parts.append(
            _figure(
                _flip_maps(spatial),
                "Where the units changed: per position, how many channels (colour scale) changed "
                "their decision or moved their gain, for the layers with the largest share.",
            )
        )
    if found.path:
        parts.append(
            _figure(
                _path_plot(found.path),
                "Decisions flipped between consecutive points of x(t) = A + t (B − A). Where no "
                "decision flips, a piecewise-linear network's A_x stays the same.",
            )
        )
    parts.append("<h2>Layers</h2>")
    parts.append(_table(*found.layer_table()))
    if found.classes:
        parts.append("<h2>Classes: F = Σ votes + bias</h2>")
        parts.append(_table(*found.class_table()))
    parts.append("</body></html>")
    return "\n".join(parts).encode()


def _finding(found, x1: np.ndarray, x2: np.ndarray) -> str:
    distance = float(np.linalg.norm((x2.astype(np.float64) - x1).ravel()))
    relative = distance / max(float(np.linalg.norm(x1.ravel())), 1e-30)
    share = found.flips / found.decisions if found.decisions else 0.0
    text = (
        f"B differs from A by {relative:.3%} of A's norm. {found.flips} of {found.decisions} "
        f"decisions flipped ({share:.3%}); the linear interpreter moved by "
        f"{found.linear_change:.3%} of its size (‖A_B − A_A‖_F / ‖A_A‖_F, {found.probes} probes)."
    )
    for c in found.classes:
        name = c.label or f"class {c.index}"
        text += (
            f" {name}: F {c.output[0]:.4g} → {c.output[1]:.4g}, of which the votes changed by "
            f"{c.votes[1] - c.votes[0]:+.4g} and the bias by {c.bias[1] - c.bias[0]:+.4g}."
        )
    return text


def _flip_bars(layers):
    fig = Figure(figsize=(8, 0.3 * len(layers) + 1.2))
    ax = fig.subplots()
    names = [f"{layer.node} ({layer.op})" for layer in layers]
    ax.barh(range(len(layers)), [100 * layer.fraction for layer in layers], color="#c0392b")
    ax.set_yticks(range(len(layers)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("decisions flipped (%)")
    return fig


def _flip_maps(layers):
    cols = min(3, len(layers))
    rows = (len(layers) + cols - 1) // cols
    fig = Figure(figsize=(3.2 * cols, 3.0 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, layer in zip(axes, layers):
        image = ax.imshow(layer.spatial, cmap="magma", interpolation="nearest")
        ax.set_title(f"{layer.node}\n{layer.changed} changed ({layer.fraction:.2%})", fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return fig


def _path_plot(path):
    fig = Figure(figsize=(7, 2.6))
    ax = fig.subplots()
    width = path[0].t1 - path[0].t0
    ax.bar([s.t0 for s in path], [s.flips for s in path], width=width, align="edge",
           color="#2c3e50", edgecolor="white")  # fmt: skip
    ax.set_xlabel("t (A at 0, B at 1)")
    ax.set_ylabel("flips in the step")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.1 * max(max(s.flips for s in path), 1))
    return fig


def _figure(fig, caption: str) -> str:
    data = base64.b64encode(to_png(fig)).decode()
    return (
        f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )
