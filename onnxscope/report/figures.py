"""Figures of an interpretation (matplotlib, Agg, PNG): votes, the logit split, rows and columns
with a zoom on their neighbourhood, the bias image, singular vectors and masks.

Every function takes plain arrays (2-D maps, or C×H×W stacks) and returns a matplotlib Figure
made without pyplot (no global state, no display); `to_png` turns it into PNG bytes. Image
panels carry a colour bar; signed maps use a diverging colour map with limits symmetric about 0
(red positive, blue negative); bar charts carry a legend instead.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

try:
    from matplotlib.figure import Figure
except ImportError:  # pragma: no cover - the [report] extra
    Figure = None

SIGNED_CMAP = "RdBu_r"
PANEL_INCHES = 2.7
SIGNS = ("all", "positive", "negative", "absolute")


@dataclass(frozen=True)
class Display:
    """How signed maps are drawn (the report's --sign, --clip, --alpha): `sign` all (red for,
    blue against), positive or negative (that part only) or absolute (|value|); the colour scale
    ends at the `clip` percentile of |value| (100: the largest; values past it saturate, so that
    a few extreme pixels do not wash out the rest); overlays on the input at opacity `alpha`."""

    sign: str = "all"
    clip: float = 99.5
    alpha: float = 0.7

    def __post_init__(self):
        from ..errors import InputError

        if self.sign not in SIGNS:
            raise InputError(f"sign must be one of {SIGNS}, not {self.sign!r}.")
        if not 50 <= self.clip <= 100:
            raise InputError(f"The colour clip is a percentile from 50 to 100, not {self.clip}.")
        if not 0 < self.alpha <= 1:
            raise InputError(f"The overlay opacity must be in (0, 1], not {self.alpha}.")

    def part(self, image: np.ndarray) -> np.ndarray:
        """The part of a signed map that is drawn."""
        if self.sign == "positive":
            return np.maximum(image, 0)
        if self.sign == "negative":
            return np.minimum(image, 0)
        return np.abs(image) if self.sign == "absolute" else image

    def limit(self, *maps: np.ndarray) -> float:
        """The colour scale's end: the clip percentile of |value| over the maps."""
        values = [np.abs(self.part(m)).ravel() for m in maps if np.size(m)]
        if not values:
            return 1e-30
        top = float(np.percentile(np.concatenate(values), self.clip))
        return top if top > 0 else symmetric_limit(*maps)

    def scale(self, limit: float) -> dict:
        """imshow's colour map and range for this sign."""
        if self.sign == "absolute":
            return {"cmap": "magma", "vmin": 0, "vmax": limit}
        if self.sign == "positive":
            return {"cmap": "Reds", "vmin": 0, "vmax": limit}
        if self.sign == "negative":
            return {"cmap": "Blues_r", "vmin": -limit, "vmax": 0}
        return {"cmap": SIGNED_CMAP, "vmin": -limit, "vmax": limit}

    def note(self) -> str:
        clipped = f"colour scale clipped at the {self.clip:g}th percentile of |value|"
        shown = {
            "all": "",
            "positive": "positive part, ",
            "negative": "negative part, ",
            "absolute": "|value|, ",
        }[self.sign]
        return f"{shown}{clipped}" if self.clip < 100 else f"{shown}full colour scale".lstrip()


DISPLAY = Display()


def require_matplotlib() -> None:
    if Figure is None:
        from ..errors import OnnxscopeError

        raise OnnxscopeError(
            "Figures need matplotlib and pillow: `pip install onnxscope[report]` "
            "(or `pip install matplotlib pillow`)."
        )


def to_png(fig) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def symmetric_limit(*maps: np.ndarray) -> float:
    """The largest |value| over the maps (a tiny positive number for all-zero maps)."""
    return max([float(np.max(np.abs(m))) for m in maps if np.size(m)] + [1e-30])


def channel_maps(stack: np.ndarray, per_channel: bool) -> tuple[list[np.ndarray], list[str], str]:
    """A C×H×W stack as 2-D maps: one per channel, or their sum; with labels and the wording
    for a title."""
    if per_channel and len(stack) > 1:
        return list(stack), [f"channel {c}" for c in range(len(stack))], "per channel"
    return [stack.sum(axis=0)], [""], "summed over channels" if len(stack) > 1 else "one channel"


def _grid(count: int, cols: int, title: str):
    """A figure of `count` panels in rows of `cols`, every axis off until a panel uses it."""
    cols = max(1, min(cols, count))
    rows = -(-count // cols)
    fig = Figure(
        figsize=(PANEL_INCHES * cols + 0.6, PANEL_INCHES * rows + 0.6), layout="constrained"
    )
    fig.suptitle(title, fontsize=11)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, axes


def _show(fig, ax, image, title, limit=None, cmap=SIGNED_CMAP, label=None, extent=None):
    """One image panel with its colour bar; `limit` makes the colour scale ±limit."""
    ax.set_axis_on()
    ax.set_xticks([])
    ax.set_yticks([])
    kw = {"vmin": -limit, "vmax": limit} if limit is not None else {}
    im = ax.imshow(image, cmap=cmap, interpolation="nearest", extent=extent, **kw)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8, label=label)
    return im


def _signed(fig, ax, image, title, display: Display, limit=None, label=None, extent=None):
    """One panel of a signed map drawn as `display` says (its own colour scale unless `limit`)."""
    limit = display.limit(image) if limit is None else limit
    ax.set_axis_on()
    ax.set_xticks([])
    ax.set_yticks([])
    im = ax.imshow(
        display.part(image), interpolation="nearest", extent=extent, **display.scale(limit)
    )
    ax.set_title(title, fontsize=9, wrap=True)
    fig.colorbar(im, ax=ax, shrink=0.8, label=label)
    return im


def vote_maps(
    picture: np.ndarray,
    maps: Sequence[np.ndarray],
    titles: Sequence[str],
    how: str,
    cols: int = 4,
    display: Display = DISPLAY,
):
    """Signed vote maps (2-D) blended over the input picture (H×W gray or H×W×3 in [0, 1]), one
    shared colour scale so that the classes compare."""
    title = f"Pixel-wise votes x ⊙ A_xᵀe_k, {how}, over the input (one colour scale)"
    fig, axes = _grid(len(maps) + 1, cols, title)
    panels = list(axes.flat)
    panels[0].imshow(picture, cmap="gray" if picture.ndim == 2 else None, interpolation="nearest")
    panels[0].set_title("input (display range stretched)", fontsize=9)
    gray = picture if picture.ndim == 2 else picture.mean(axis=2)
    limit = display.limit(*maps)
    for ax, vote, title in zip(panels[1:], maps, titles):
        ax.imshow(gray, cmap="gray", interpolation="nearest")
        _signed(fig, ax, vote, title, display, limit, label="vote").set_alpha(display.alpha)
    return fig


def logit_split(
    names: Sequence[str],
    votes: Sequence[float],
    bias: Sequence[float],
    outputs: Sequence[float],
    what: str = "output",
    per: str = "class",
):
    """Per class (or output element): Σ votes and the bias c_x[k] as bars, and the output
    (their sum) as a marker."""
    y = np.arange(len(names))
    fig = Figure(figsize=(7.5, 1.2 + 0.45 * len(names)), layout="constrained")
    ax = fig.subplots()
    ax.barh(y - 0.2, votes, 0.4, label="Σ votes (A_x x)", color="tab:blue")
    ax.barh(y + 0.2, bias, 0.4, label="bias c_x[k]", color="tab:orange")
    ax.scatter(outputs, y, marker="D", color="black", zorder=3, label=f"{what} = Σ votes + bias")
    ax.axvline(0, color="gray", lw=0.8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("value")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"The {what} split into Σ votes and bias, per {per}", fontsize=11)
    return fig


def position_maps(
    maps: Sequence[np.ndarray],
    marks: Sequence[tuple[float, float]],
    titles: Sequence[str],
    title: str,
    radius: int = 4,
    display: Display = DISPLAY,
    under: np.ndarray | None = None,
):
    """Signed maps with the position they belong to marked (×), each beside a zoom on its
    neighbourhood: the map's support (plus a pixel) where that is local, else the
    (2·radius+1)² square around the mark; drawn over the picture `under` (H×W in [0, 1]) when
    it has the maps' size."""
    fig, axes = _grid(2 * len(maps), 2, title)
    for (full, zoom), image, (my, mx), name in zip(axes.reshape(-1, 2), maps, marks, titles):
        if under is not None and under.shape[:2] == image.shape:
            full.imshow(under, cmap="gray", interpolation="nearest")
            _signed(fig, full, image, name, display).set_alpha(display.alpha)
        else:
            _signed(fig, full, image, name, display)
        full.plot([mx], [my], "x", color="black", ms=8, mew=1.5)
        (y0, x0), (y1, x1), what = zoom_box(image, (my, mx), radius)
        full.add_patch(_rectangle(x0, y0, x1, y1))
        part = image[y0:y1, x0:x1]
        extent = (x0 - 0.5, x1 - 0.5, y1 - 0.5, y0 - 0.5)
        label = f"zoom on the {what}: rows {y0}–{y1 - 1}, cols {x0}–{x1 - 1}"
        _signed(fig, zoom, part, label, display, extent=extent)
        zoom.plot([mx], [my], "x", color="black", ms=10, mew=1.5)
    return fig


def zoom_box(image: np.ndarray, mark: tuple[float, float], radius: int):
    """(y0, x0), (y1, x1) (end exclusive) of the zoom window, and what it shows."""
    h, w = image.shape
    support = np.argwhere(np.abs(image) > 1e-6 * symmetric_limit(image))
    if len(support):
        lo, hi = support.min(axis=0) - 1, support.max(axis=0) + 2
        if 2 * (hi[0] - lo[0]) <= h and 2 * (hi[1] - lo[1]) <= w:
            return (max(0, lo[0]), max(0, lo[1])), (min(h, hi[0]), min(w, hi[1])), "support"
    cy, cx = int(round(mark[0])), int(round(mark[1]))
    y0, x0 = max(0, cy - radius), max(0, cx - radius)
    return (y0, x0), (min(h, cy + radius + 1), min(w, cx + radius + 1)), "neighbourhood"


def _rectangle(x0, y0, x1, y1):
    from matplotlib.patches import Rectangle

    return Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="black", lw=1)


def signed_images(
    maps: Sequence[np.ndarray],
    titles: Sequence[str],
    title: str,
    cols: int = 4,
    display: Display = DISPLAY,
):
    """Signed 2-D maps side by side, each with its own colour scale."""
    fig, axes = _grid(len(maps), cols, title)
    for ax, image, name in zip(axes.flat, maps, titles):
        _signed(fig, ax, image, name, display)
    return fig


def singular_vectors(
    s: np.ndarray,
    right: Sequence[np.ndarray],
    left: Sequence[np.ndarray],
    title: str,
    display: Display = DISPLAY,
):
    """The top singular vectors of A_x on a crop: v_i (input side) above u_i (output side).
    Their signs are arbitrary (v_i, u_i → −v_i, −u_i), so they are drawn with both signs."""
    both = Display("all", display.clip, display.alpha)
    fig, axes = _grid(2 * len(s), len(s), title)
    for i, sigma in enumerate(s):
        _signed(fig, axes[0, i], right[i], f"v{i + 1} (input), σ{i + 1} = {sigma:.4g}", both)
        _signed(fig, axes[1, i], left[i], f"u{i + 1} (output)", both)
    return fig


def mask_maps(mask: np.ndarray, title: str, max_channels: int = 8):
    """The first channels of a frozen decision (C×H×W): on/off masks in black and white, gains
    and selected indices on a sequential colour map with its range."""
    shown = mask[:max_channels]
    fig, axes = _grid(len(shown), 4, title)
    binary = mask.dtype == bool
    if binary:  # two colours and a legend, not a continuous colour bar
        from matplotlib.colors import ListedColormap
        from matplotlib.patches import Patch

        two = ListedColormap(["#202020", "#f0c000"])
        for c, (ax, image) in enumerate(zip(axes.flat, shown)):
            ax.set_axis_on()
            ax.set_xticks([])
            ax.set_yticks([])
            ax.imshow(image.astype(np.float64), cmap=two, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"channel {c}: {100 * image.mean():.0f}% on", fontsize=9)
        handles = [Patch(color="#f0c000", label="on (passes)"), Patch(color="#202020", label="off")]
        fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=9)
        return fig
    lo, hi = float(np.min(shown)), float(np.max(shown))
    for c, (ax, image) in enumerate(zip(axes.flat, shown)):
        im = _show(fig, ax, image.astype(np.float64), f"channel {c}", cmap="viridis")
        im.set_clim(lo, hi if hi > lo else lo + 1)
    return fig


def picture_panels(panels: Sequence[tuple[np.ndarray, str]], title: str):
    """Pictures side by side (H×W gray, H×W×3 RGB in [0, 1], or an integer label map), e.g. the
    input and the output of an image-to-image model."""
    fig, axes = _grid(len(panels), len(panels), title)
    for ax, (image, name) in zip(axes.flat, panels):
        ax.set_axis_on()
        ax.set_xticks([])
        ax.set_yticks([])
        labels = np.issubdtype(image.dtype, np.integer)
        cmap = "tab20" if labels else ("gray" if image.ndim == 2 else None)
        ax.imshow(image, cmap=cmap, interpolation="nearest")
        ax.set_title(name, fontsize=9, wrap=True)
    return fig
